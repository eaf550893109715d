// Types of @fresco/client: the API of @fal-ai/client 1.10.1 (fal-api.md §1–§12), with the
// endpoints fresco serves typed; any other endpoint id takes and returns untyped JSON.

// ---------------------------------------------------------------------------------------------
// Endpoints

/** A file as endpoints return it. */
export interface File {
  url: string;
  content_type?: string;
  file_name?: string;
  file_size?: number;
  file_data?: string;
}

/** An image as endpoints return it. */
export interface Image extends File {
  width?: number;
  height?: number;
}

/** A file input: a URL (http(s) or `data:`; in the local mode also the page's `blob:` URLs), or a Blob/File the client uploads first (the local mode reads it in place). */
export type FileInput = string | Blob;

/** `fal-ai/inpaint`: the input. Mask: black is kept, white is painted. */
export interface InpaintInput {
  /** The base model: a Hugging Face id or the URL of a diffusers folder. */
  model_name: string;
  prompt: string;
  /** Default `""`. */
  negative_prompt?: string;
  image_url: FileInput;
  mask_url: FileInput;
  /** Default 30. */
  num_inference_steps?: number;
  /** Default 7.5. */
  guidance_scale?: number;
  /** Default: random (the output says which). */
  seed?: number;
}

/** `fal-ai/inpaint`: the output. */
export interface InpaintOutput {
  image: Image;
  seed: number;
}

export type LoraScheduler =
  | "DPM++ 2M"
  | "DPM++ 2M Karras"
  | "DPM++ 2M SDE"
  | "DPM++ 2M SDE Karras"
  | "Euler"
  | "Euler A"
  | "Euler (trailing timesteps)"
  | "LCM"
  | "LCM (trailing timesteps)"
  | "DDIM"
  | "TCD";

/** `fal-ai/lora/image-to-image`: the fields fresco serves (fal's other fields are refused by name). */
export interface LoraImageToImageInput {
  model_name: string;
  prompt: string;
  negative_prompt?: string;
  image_url: FileInput;
  num_inference_steps?: number;
  guidance_scale?: number;
  seed?: number;
  /** 0..1, default 0.5. */
  noise_strength?: number;
  /** Default 1, at most 8. */
  num_images?: number;
  scheduler?: LoraScheduler;
  prompt_weighting?: boolean;
  clip_skip?: number;
  image_format?: "jpeg" | "png";
  prediction_type?: "epsilon" | "v_prediction";
  eta?: number;
  variant?: string;
  [field: string]: unknown;
}

/** `fal-ai/lora/inpaint`: image-to-image with an optional mask. */
export interface LoraInpaintInput extends LoraImageToImageInput {
  mask_url?: FileInput;
}

export interface LoraOutput {
  images: Image[];
  seed: number;
  has_nsfw_concepts: boolean[];
  debug_latents?: File;
  debug_per_pass_latents?: File;
}

export interface EndpointTypeMap {
  "fal-ai/inpaint": { input: InpaintInput; output: InpaintOutput };
  "fal-ai/lora/image-to-image": { input: LoraImageToImageInput; output: LoraOutput };
  "fal-ai/lora/inpaint": { input: LoraInpaintInput; output: LoraOutput };
}

/** Any endpoint id; the ones in `EndpointTypeMap` are typed. */
export type EndpointType = keyof EndpointTypeMap | (string & {});
export type InputType<Id> = Id extends keyof EndpointTypeMap ? EndpointTypeMap[Id]["input"] : Record<string, any>;
export type OutputType<Id> = Id extends keyof EndpointTypeMap ? EndpointTypeMap[Id]["output"] : any;

// ---------------------------------------------------------------------------------------------
// Configuration

export type CredentialsResolver = () => string | undefined;
export type ProxyRuntimeEnv = { isBrowser: boolean };
export type ProxyRuntimeGate = "browser" | "always" | ((env: ProxyRuntimeEnv) => boolean);
export type ProxyUrlConfig = {
  url: string;
  /** Default `"browser"`: a proxy is only used in pages (not Node, workers or Deno). */
  when?: ProxyRuntimeGate;
};
export type RequestConfig = { url: string; method: string; headers?: Record<string, string | string[]> };
export type RequestMiddleware = (request: RequestConfig) => Promise<RequestConfig>;
export type RequestProxyConfig = { targetUrl: string; when?: ProxyRuntimeGate };
export type ResponseHandler<Output> = (response: Response) => Promise<Output>;

export type RetryOptions = {
  /** Default 3. */
  maxRetries: number;
  /** Milliseconds; default 1000. */
  baseDelay: number;
  /** Milliseconds; default 30000. */
  maxDelay: number;
  /** Default 2. */
  backoffMultiplier: number;
  /** Default `[429, 502, 503, 504]`. */
  retryableStatusCodes: number[];
  /** ±25 %; default true. */
  enableJitter: boolean;
};

export type Config = {
  /** A key (`FAL_KEY`, or `"id:secret"`) or a function returning one, called on every request.
   * Default: `FAL_KEY`, or `FAL_KEY_ID:FAL_KEY_SECRET`, from the environment (Node). */
  credentials?: undefined | string | CredentialsResolver;
  /** Do not warn when credentials are used in a browser. */
  suppressLocalCredentialsWarning?: boolean;
  /** Send every request to this proxy, with the real URL in `x-fal-target-url`. */
  proxyUrl?: string | ProxyUrlConfig;
  requestMiddleware?: RequestMiddleware;
  responseHandler?: ResponseHandler<any>;
  fetch?: typeof fetch;
  retry?: Partial<RetryOptions>;
  /** fresco: run these endpoints on this device's GPU (WebGPU, in a Web Worker) instead of
   * remotely. `true`: every endpoint the local engine serves, with models from huggingface.co. */
  local?: boolean | LocalConfig;
};

/** fresco: the local mode's settings. */
export type LocalConfig = {
  /** The endpoints that run locally. Default: `fal-ai/inpaint`, `fal-ai/lora/image-to-image`,
   * `fal-ai/lora/inpaint` (all the engine serves); others stay remote. */
  endpoints?: string[];
  /** Where `model_name`s that are Hugging Face ids are read: `{hubUrl}/{id}/resolve/{revision}/…`.
   * Default `https://huggingface.co`. */
  hubUrl?: string;
  /** The engine's worker script, if the page serves it somewhere other than beside index.js. */
  workerUrl?: string | URL;
};

// ---------------------------------------------------------------------------------------------
// Storage

export type ObjectExpiration = "never" | "immediate" | "1h" | "1d" | "7d" | "30d" | "1y" | number;
export type StorageACLDecision = "hide" | "forbid" | "allow";
export interface StorageACLRule {
  user: string;
  decision: StorageACLDecision;
}
export interface StorageACL {
  default?: StorageACLDecision;
  rules?: StorageACLRule[];
}
export interface StorageSettings {
  /** A name or a number of seconds. */
  expiresIn?: ObjectExpiration;
  initialAcl?: StorageACL;
}
export type UploadOptions = { lifecycle?: StorageSettings };

export interface StorageClient {
  /** Uploads a Blob/File (in 10 MiB parts above 90 MiB) and returns its URL. */
  upload(file: Blob, options?: UploadOptions): Promise<string>;
  /** The input with every Blob/File in it (in arrays and plain objects) uploaded and replaced by its URL. */
  transformInput<T>(input: T): Promise<T>;
}

// ---------------------------------------------------------------------------------------------
// Requests and the queue

export type Result<Output> = { data: Output; requestId: string };

export type RunOptions<Input> = {
  readonly input?: Input;
  readonly method?: "get" | "post" | "put" | "delete" | string;
  readonly abortSignal?: AbortSignal;
  /** Lifecycle of the outputs (`x-fal-object-lifecycle-preference`). */
  readonly storageSettings?: StorageSettings;
  /** Seconds (> 1) the request may wait to start (`x-fal-request-timeout`). */
  readonly startTimeout?: number;
};

export type UrlOptions = {
  readonly subdomain?: string;
  readonly query?: Record<string, string>;
  readonly path?: string;
};

export type QueuePriority = "low" | "normal";

export type RequestLog = {
  message: string;
  level: "STDERR" | "STDOUT" | "ERROR" | "INFO" | "WARN" | "DEBUG";
  source: "USER";
  timestamp: string;
};

export type Metrics = { inference_time: number | null };

interface BaseQueueStatus {
  status: "IN_QUEUE" | "IN_PROGRESS" | "COMPLETED";
  request_id: string;
  response_url: string;
  status_url: string;
  cancel_url: string;
}
export interface InQueueQueueStatus extends BaseQueueStatus {
  status: "IN_QUEUE";
  queue_position: number;
}
export interface InProgressQueueStatus extends BaseQueueStatus {
  status: "IN_PROGRESS";
  logs: RequestLog[];
}
export interface CompletedQueueStatus extends BaseQueueStatus {
  status: "COMPLETED";
  logs: RequestLog[];
  metrics?: Metrics;
  /** Set when the request failed or was cancelled (its `result` then throws). */
  error?: string;
  error_type?: string;
}
export type QueueStatus = InQueueQueueStatus | InProgressQueueStatus | CompletedQueueStatus;

export type SubmitOptions<Input> = RunOptions<Input> &
  UrlOptions & {
    webhookUrl?: string;
    priority?: QueuePriority;
    hint?: string;
    headers?: Record<string, string>;
  };

export type BaseQueueOptions = { requestId: string; abortSignal?: AbortSignal };
export type QueueStatusOptions = BaseQueueOptions & { logs?: boolean };
export type QueueStatusStreamOptions = QueueStatusOptions & { connectionMode?: "client" | "server" };

type QueueModeOptions =
  | { mode?: "polling"; /** Milliseconds between the end of a status call and the next; default 500. */ pollInterval?: number }
  | { mode: "streaming"; connectionMode?: "client" | "server" };

type QueueCommonSubscribeOptions = {
  onEnqueue?: (requestId: string) => void;
  onQueueUpdate?: (status: QueueStatus) => void;
  logs?: boolean;
  /** Milliseconds: give up (and cancel the request) after this long. */
  timeout?: number;
  startTimeout?: number;
  webhookUrl?: string;
  priority?: QueuePriority;
  hint?: string;
  headers?: Record<string, string>;
};

export type QueueSubscribeOptions = QueueCommonSubscribeOptions & QueueModeOptions;
export type QueueStatusSubscriptionOptions = QueueStatusOptions &
  QueueModeOptions &
  Omit<QueueCommonSubscribeOptions, "onEnqueue" | "webhookUrl">;

export interface QueueClient {
  submit<Id extends EndpointType>(endpointId: Id, options: SubmitOptions<InputType<Id>>): Promise<InQueueQueueStatus>;
  status(endpointId: string, options: QueueStatusOptions): Promise<QueueStatus>;
  streamStatus(endpointId: string, options: QueueStatusStreamOptions): Promise<FalStream<unknown, QueueStatus>>;
  subscribeToStatus(endpointId: string, options: QueueStatusSubscriptionOptions): Promise<CompletedQueueStatus>;
  result<Id extends EndpointType>(endpointId: Id, options: BaseQueueOptions): Promise<Result<OutputType<Id>>>;
  cancel(endpointId: string, options: BaseQueueOptions): Promise<void>;
}

export type WebHookResponse<Payload = any> =
  | { status: "OK"; payload: Payload; error: never; request_id: string }
  | { status: "ERROR"; payload: Payload; error: string; request_id: string };

// ---------------------------------------------------------------------------------------------
// Streams

export type StreamOptions<Input> = {
  readonly url?: string;
  readonly input?: Input;
  readonly queryParams?: Record<string, string>;
  readonly method?: "get" | "post" | "put" | "delete" | string;
  /** Default `"text/event-stream"`. */
  readonly accept?: string;
  /** `"server"` (default) goes through the proxy; `"client"` calls fal with a temporary token. */
  readonly connectionMode?: "client" | "server";
  readonly signal?: AbortSignal;
  readonly tokenProvider?: TokenProvider;
};

export type TokenProvider = (app: string) => Promise<string>;

export declare class FalStream<Input, Output> {
  on(type: "data" | "message" | "error" | "done", listener: (event: any) => void): void;
  [Symbol.asyncIterator](): AsyncGenerator<Output, void, unknown>;
  /** The last event once the stream ends; rejects on its first error. */
  done(): Promise<Output>;
  abort(reason?: string | Error): void;
  readonly signal: AbortSignal;
  readonly requestId: string | null;
}

export interface StreamingClient {
  stream<Id extends EndpointType>(
    endpointId: Id,
    options: StreamOptions<InputType<Id>>,
  ): Promise<FalStream<InputType<Id>, OutputType<Id>>>;
}

/** Not supported by @fresco/client yet: `connect` throws. */
export interface RealtimeClient {
  connect(app: string, handler: unknown): never;
}

// ---------------------------------------------------------------------------------------------
// The client

export interface FalClient {
  readonly queue: QueueClient;
  readonly realtime: RealtimeClient;
  readonly storage: StorageClient;
  readonly streaming: StreamingClient;
  run<Id extends EndpointType>(
    endpointId: Id,
    options: RunOptions<InputType<Id>> & UrlOptions,
  ): Promise<Result<OutputType<Id>>>;
  subscribe<Id extends EndpointType>(
    endpointId: Id,
    options: RunOptions<InputType<Id>> & QueueSubscribeOptions,
  ): Promise<Result<OutputType<Id>>>;
  stream: StreamingClient["stream"];
}

export declare function createFalClient(config?: Config): FalClient;

/** The singleton; `fal.config(…)` replaces its client (nothing carries over from earlier calls). */
export declare const fal: FalClient & { config(config: Config): void };

/** fresco: a file in the local engine's model cache. */
export type CachedModelFile = {
  /** The URL it was downloaded from. */
  url: string;
  /** Bytes on disk (so far, for a download that broke off and will be resumed). */
  bytes: number;
  complete: boolean;
};

/** fresco: the local engine's model cache, in this origin's private file system. */
export declare const localModelCache: {
  /** What the cache holds, and its size in bytes. */
  usage(): Promise<{ bytes: number; files: CachedModelFile[] }>;
  /** Removes every cached file (the next local call downloads its model again). While a local
   * engine loads a model through the cache, here or in another tab, it waits for that load to
   * end (the cache's Web Lock). */
  clear(): Promise<void>;
};

// ---------------------------------------------------------------------------------------------
// Errors and helpers

export declare class ApiError<Body = any> extends Error {
  constructor(args: { message: string; status: number; body?: Body; requestId?: string; timeoutType?: string });
  readonly name: "ApiError" | "ValidationError";
  readonly status: number;
  readonly body: Body;
  /** `x-fal-request-id` of the failed response ("" if absent). */
  readonly requestId: string;
  /** `x-fal-request-timeout-type` of the failed response. */
  readonly timeoutType?: string;
  /** A 504 because `startTimeout` expired: never retried. */
  readonly isUserTimeout: boolean;
}

export type ValidationErrorInfo = { msg: string; loc: Array<string | number>; type: string };

export declare class ValidationError extends ApiError<{ detail: ValidationErrorInfo[] | string }> {
  readonly name: "ValidationError";
  readonly fieldErrors: ValidationErrorInfo[];
  /** The errors whose `loc` ends in `field`. */
  getFieldErrors(field: string): ValidationErrorInfo[];
}

export declare function isRetryableError(error: unknown, retryableStatusCodes: number[]): boolean;
export declare function withMiddleware(...middlewares: Array<RequestMiddleware | undefined>): RequestMiddleware;
export declare function withProxy(config: RequestProxyConfig): RequestMiddleware;
export declare function defaultResponseHandler<Output>(response: Response): Promise<Output>;
export declare function parseEndpointId(id: string): { owner: string; alias: string; path?: string; namespace?: string };
export declare function isQueueStatus(obj: any): obj is QueueStatus;
export declare function isCompletedQueueStatus(obj: any): obj is CompletedQueueStatus;
