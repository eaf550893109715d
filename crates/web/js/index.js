// @fresco/client: fal's JavaScript client (`@fal-ai/client` 1.10.1) over fresco's protocol rules in
// WebAssembly. `core` (crates/web/src/client.rs, on crates/protocol: the code fresco's server runs)
// gives the rules both sides share — endpoint ids, every URL, server-sent events. This file is the
// rest: the API, fetch with its headers and retries, timers, streams, uploads, the error classes.
// Wire behaviour is the original's (../shared/reference/fal-api.md); the deliberate differences
// are marked "fresco:" and listed in the README.

import * as core from "./core.js";

// The wasm beside this file: fetched where `import.meta.url` is http(s) (browsers, and bundlers,
// which see the `new URL(…, import.meta.url)` and ship the file), read from disk in Node. The
// `node:fs` import is hidden from bundlers, which must not try to resolve it for a browser.
// (`initSync` with a compiled module, not wasm-bindgen's loader: the page only downloads one.)
const wasmUrl = new URL("./core_bg.wasm", import.meta.url);
let wasmBytes;
if (wasmUrl.protocol === "file:") {
  const fs = "node:fs/promises";
  const { readFile } = await import(/* webpackIgnore: true */ /* @vite-ignore */ fs);
  wasmBytes = await readFile(wasmUrl);
} else {
  const response = await fetch(wasmUrl);
  if (!response.ok) throw new Error(`@fresco/client: ${wasmUrl} answered ${response.status}`);
  wasmBytes = await response.arrayBuffer();
}
core.initSync({ module: await WebAssembly.compile(wasmBytes) });

const VERSION = "0.1.0";
// fresco: names itself after the client it mirrors (servers that key on the prefix still match).
const USER_AGENT = `@fal-ai/client/1.10.1 fresco/${VERSION}`;
const TARGET_URL_HEADER = "x-fal-target-url";
const DEFAULT_POLL_INTERVAL = 500;
const MIN_REQUEST_TIMEOUT_SECONDS = 1;
const TOKEN_EXPIRATION_SECONDS = 120;
// Files larger than this are uploaded in 10 MiB parts.
const MULTIPART_THRESHOLD = 90 * 1024 * 1024;
const MULTIPART_PART_SIZE = 10 * 1024 * 1024;

// Retries (fal-api.md §6): the defaults, and what each operation changes of the configured options.
const DEFAULT_RETRYABLE_STATUS_CODES = [429, 502, 503, 504];
const DEFAULT_RETRY_OPTIONS = {
  maxRetries: 3,
  baseDelay: 1000,
  maxDelay: 30000,
  backoffMultiplier: 2,
  retryableStatusCodes: DEFAULT_RETRYABLE_STATUS_CODES,
  enableJitter: true,
};
const RETRY_BY_OPERATION = {
  run: { maxRetries: 3, baseDelay: 500, maxDelay: 15000 },
  submit: { maxRetries: 3, baseDelay: 1000, maxDelay: 60000, retryableStatusCodes: DEFAULT_RETRYABLE_STATUS_CODES },
  status: { maxRetries: 5, baseDelay: 1000, maxDelay: 30000, retryableStatusCodes: [500, ...DEFAULT_RETRYABLE_STATUS_CODES] },
};
RETRY_BY_OPERATION.result = RETRY_BY_OPERATION.submit;
// Node's and undici's codes for a network failure worth another try, anywhere in a cause chain.
const RETRYABLE_NETWORK_CODES = new Set(
  "ECONNABORTED ECONNREFUSED ECONNRESET EAI_AGAIN EHOSTUNREACH ENETUNREACH ENOTFOUND EPIPE ETIMEDOUT UND_ERR_BODY_TIMEOUT UND_ERR_CONNECT_TIMEOUT UND_ERR_HEADERS_TIMEOUT UND_ERR_SOCKET".split(
    " ",
  ),
);
// `StorageSettings.expiresIn` names, in seconds (`never`: no expiration).
const EXPIRATION_SECONDS = { never: undefined, immediate: 60, "1h": 3600, "1d": 86400, "7d": 604800, "30d": 2592000, "1y": 31536000 };

const isBrowser = () => typeof window !== "undefined" && typeof window.document !== "undefined";
const isCloudflareWorkers = () =>
  typeof navigator !== "undefined" && navigator.userAgent === "Cloudflare-Workers";
const isPlainObject = (v) => !!v && Object.getPrototypeOf(v) === Object.prototype;

// ---------------------------------------------------------------------------------------------
// Errors

export class ApiError extends Error {
  constructor({ message, status, body, requestId, timeoutType }) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
    this.requestId = requestId || "";
    this.timeoutType = timeoutType;
  }

  /** A start timeout (`startTimeout`) expired on the server: never retried. */
  get isUserTimeout() {
    return this.status === 504 && this.timeoutType === "user";
  }
}

export class ValidationError extends ApiError {
  constructor(args) {
    super(args);
    this.name = "ValidationError";
  }

  get fieldErrors() {
    const detail = this.body?.detail;
    if (typeof detail === "string") return [{ loc: ["body"], msg: detail, type: "value_error" }];
    return detail || [];
  }

  getFieldErrors(field) {
    return this.fieldErrors.filter((e) => e.loc[e.loc.length - 1] === field);
  }
}

/** `err` would be retried, given the retryable HTTP statuses. */
export function isRetryableError(error, retryableStatusCodes) {
  if (error instanceof ApiError) {
    return !error.isUserTimeout && retryableStatusCodes.includes(error.status);
  }
  return isRetryableNetworkError(error);
}

// A network failure is retried when a Node/undici error code anywhere in its `cause` chain says
// so, or it is undici's "fetch failed"; never an abort or a timeout. Browsers' "Failed to fetch"
// is not retried (as in the original): it is also what a CORS refusal looks like.
function isRetryableNetworkError(error) {
  const seen = new Set();
  let coded = false;
  for (let e = error; e && typeof e === "object" && !seen.has(e); e = e.cause) {
    seen.add(e);
    if (e.name === "AbortError" || e.name === "TimeoutError") return false;
    if (RETRYABLE_NETWORK_CODES.has(e.code)) coded = true;
  }
  return coded || (error instanceof TypeError && /fetch failed/i.test(error.message));
}

// ---------------------------------------------------------------------------------------------
// Responses

export async function defaultResponseHandler(response) {
  const { status, statusText } = response;
  const contentType = response.headers.get("Content-Type") ?? "";
  const requestId = response.headers.get("x-fal-request-id") ?? "";
  const timeoutType = response.headers.get("x-fal-request-timeout-type") ?? undefined;
  if (!response.ok) {
    if (contentType.includes("application/json")) {
      const body = await response.json();
      const ErrorType = status === 422 ? ValidationError : ApiError;
      // fresco: fal's error bodies carry `detail`, not `message`; the original then falls back
      // to `statusText`, which is empty over HTTP/2. Ours says what went wrong.
      const message = body?.message || describeDetail(body?.detail) || statusText || `HTTP ${status}`;
      throw new ErrorType({ message, status, body, requestId, timeoutType });
    }
    throw new ApiError({ message: `HTTP ${status}: ${statusText}`, status, requestId, timeoutType });
  }
  if (contentType.includes("application/json")) return response.json();
  if (contentType.includes("application/octet-stream")) return response.arrayBuffer();
  return response.text();
}

function describeDetail(detail) {
  if (typeof detail === "string") return detail;
  const first = Array.isArray(detail) ? detail[0] : undefined;
  if (!first || typeof first.msg !== "string") return "";
  const loc = Array.isArray(first.loc) ? first.loc.filter((p) => p !== "body").join(".") : "";
  return loc ? `${loc}: ${first.msg}` : first.msg;
}

async function resultResponseHandler(response) {
  const data = await defaultResponseHandler(response);
  return { data, requestId: response.headers.get("x-fal-request-id") || "" };
}

// ---------------------------------------------------------------------------------------------
// Configuration and middleware

export function withMiddleware(...middlewares) {
  const chain = middlewares.filter(Boolean);
  return async (request) => {
    let current = request;
    for (const middleware of chain) current = await middleware(current);
    return current;
  };
}

export function withProxy({ targetUrl, when }) {
  const shouldProxy = () =>
    when === "always" ? true : typeof when === "function" ? !!when({ isBrowser: isBrowser() }) : isBrowser();
  return async (request) => {
    if ((request.headers && TARGET_URL_HEADER in request.headers) || !shouldProxy()) return request;
    return { ...request, url: targetUrl, headers: { ...request.headers, [TARGET_URL_HEADER]: request.url } };
  };
}

function credentialsFromEnv() {
  const env = typeof process !== "undefined" ? process.env : undefined;
  if (!env) return undefined;
  if (env.FAL_KEY !== undefined) return env.FAL_KEY;
  if (env.FAL_KEY_ID !== undefined && env.FAL_KEY_SECRET !== undefined) {
    return `${env.FAL_KEY_ID}:${env.FAL_KEY_SECRET}`;
  }
  return undefined;
}

const resolveCredentials = ({ credentials }) =>
  typeof credentials === "function" ? credentials() : credentials;

function createConfig(user = {}) {
  const fetch = user.fetch ?? globalThis.fetch;
  if (typeof fetch !== "function") {
    throw new Error("Your environment does not support fetch. Please provide your own fetch implementation.");
  }
  const config = {
    credentials: credentialsFromEnv,
    suppressLocalCredentialsWarning: false,
    requestMiddleware: async (request) => request,
    responseHandler: defaultResponseHandler,
    ...user,
    fetch,
  };
  config.retry = { ...DEFAULT_RETRY_OPTIONS, ...user.retry };
  if (user.proxyUrl) {
    const { url, when } = typeof user.proxyUrl === "string" ? { url: user.proxyUrl } : user.proxyUrl;
    config.requestMiddleware = withMiddleware(config.requestMiddleware, withProxy({ targetUrl: url, when }));
  }
  // Resolved here even outside browsers, as the original does (a resolver sees this call too).
  const credentials = resolveCredentials(config);
  if (isBrowser() && credentials && !config.suppressLocalCredentialsWarning) {
    console.warn(
      "The fal credentials are exposed in the browser's environment. That's not recommended for production use cases.",
    );
  }
  return config;
}

// ---------------------------------------------------------------------------------------------
// Requests

// fresco: an abort during a backoff ends it at once (the original sleeps it out first).
const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    const onAbort = () => (clearTimeout(timer), reject(signal.reason));
    const timer = setTimeout(() => (signal?.removeEventListener("abort", onAbort), resolve()), ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });

/** The delay before retry `attempt` (0-based): exponential, capped, ±25 % jitter. */
function backoffDelay(attempt, { baseDelay, backoffMultiplier, maxDelay, enableJitter }) {
  const delay = Math.min(baseDelay * backoffMultiplier ** attempt, maxDelay);
  return enableJitter ? Math.max(0, delay + 0.25 * delay * (Math.random() * 2 - 1)) : delay;
}

/** One request, retried per the client's retry options and the operation's (`options.operation`). */
async function dispatchRequest({ method, targetUrl, input, config, headers = {}, options = {} }) {
  const retry = { ...config.retry, ...RETRY_BY_OPERATION[options.operation] };
  for (let attempt = 0; ; attempt++) {
    try {
      return await sendOnce({ method, targetUrl, input, config, headers, options });
    } catch (error) {
      if (attempt >= retry.maxRetries || !isRetryableError(error, retry.retryableStatusCodes) || options.signal?.aborted) {
        throw error;
      }
      await sleep(backoffDelay(attempt, retry), options.signal);
    }
  }
}

/** A request's body: the JSON input, unless the method is GET or there is no input. */
const jsonBody = (method, input) => (method.toLowerCase() !== "get" && input ? JSON.stringify(input) : undefined);

async function sendOnce({ method, targetUrl, input, config, headers, options }) {
  const credentials = resolveCredentials(config);
  const request = await config.requestMiddleware({
    method: (method ?? options.method ?? "post").toUpperCase(),
    url: targetUrl,
    headers,
  });
  // A plain object, keys in this order: fetch's Headers appends keys that differ only in case
  // (`Accept` and `accept` become one `accept: a, b`), exactly as the original sends them.
  const allHeaders = {
    ...(credentials ? { Authorization: `Key ${credentials}` } : {}),
    Accept: "application/json",
    "Content-Type": "application/json",
    ...(isBrowser() ? {} : { "User-Agent": USER_AGENT }),
    ...request.headers,
    ...options.headers,
  };
  const { fetch } = config;
  const response = await fetch(request.url, {
    method: request.method,
    headers: allHeaders,
    ...(isCloudflareWorkers() ? {} : { mode: "cors" }),
    signal: options.signal,
    body: jsonBody(request.method, input),
  });
  return await (options.responseHandler ?? config.responseHandler)(response);
}

/** `buildUrl`: the query as the original writes it (`URLSearchParams` of the merged options), the
 * URL by the wasm. */
function buildUrl(id, options = {}) {
  const method = (options.method ?? "post").toLowerCase();
  const params = { ...options.query, ...(method === "get" ? options.input : {}) };
  return core.buildUrl(id, options.path, options.subdomain, new URLSearchParams(params).toString());
}

function requestTimeoutHeader(startTimeout) {
  if (startTimeout === undefined) return {};
  if (typeof startTimeout !== "number" || Number.isNaN(startTimeout)) {
    throw new Error(`Timeout must be a number, got ${startTimeout}`);
  }
  if (startTimeout <= MIN_REQUEST_TIMEOUT_SECONDS) {
    throw new Error(`Timeout must be greater than ${MIN_REQUEST_TIMEOUT_SECONDS} seconds`);
  }
  return { "x-fal-request-timeout": String(startTimeout) };
}

/** `StorageSettings` → the JSON of a lifecycle header, or undefined when it says nothing. */
function lifecycleJson(settings) {
  if (!settings) return undefined;
  const { expiresIn, initialAcl } = settings;
  if (typeof expiresIn === "string" && !(expiresIn in EXPIRATION_SECONDS)) {
    // fresco: the original sends no expiration for a name it does not know.
    throw new Error(`Unknown expiresIn "${expiresIn}": use never, immediate, 1h, 1d, 7d, 30d, 1y or seconds`);
  }
  const seconds = typeof expiresIn === "string" ? EXPIRATION_SECONDS[expiresIn] : expiresIn;
  const value = {};
  if (seconds !== undefined) value.expiration_duration_seconds = seconds;
  if (initialAcl) value.initial_acl = initialAcl;
  return Object.keys(value).length ? JSON.stringify(value) : undefined;
}

function lifecycleHeader(name, settings) {
  const json = lifecycleJson(settings);
  return json ? { [name]: json } : {};
}

// ---------------------------------------------------------------------------------------------
// Storage

/** `{now}.{subtype}`, the subtype cut at `-` or `;`: the name of an upload whose Blob has none. */
function defaultFileName(contentType) {
  const slash = contentType.indexOf("/");
  // fresco: a content type without "/" is a clear error (the original fails on `undefined`).
  if (slash < 0) throw new Error(`Cannot name an upload of content type "${contentType}": it has no "/"`);
  return `${Date.now()}.${contentType.slice(slash + 1).split(/[-;]/)[0]}`;
}

function createStorageClient(config) {
  const initiate = (file, contentType, multipart, lifecycle) =>
    dispatchRequest({
      method: "POST",
      targetUrl: core.storageInitiateUrl(multipart),
      input: { content_type: contentType, file_name: file.name || defaultFileName(contentType) },
      config,
      headers: lifecycleHeader("X-Fal-Object-Lifecycle", lifecycle),
    });

  async function upload(file, options = {}) {
    const contentType = file.type || "application/octet-stream";
    const multipart = file.size > MULTIPART_THRESHOLD;
    const { upload_url, file_url } = await initiate(file, contentType, multipart, options.lifecycle);
    const { fetch, responseHandler } = config;
    if (!multipart) {
      const response = await fetch(upload_url, {
        method: "PUT",
        body: file,
        headers: { "Content-Type": contentType },
      });
      await responseHandler(response);
      return file_url;
    }
    // Parts go one after another, each tried three times at once before the upload fails.
    const size = MULTIPART_PART_SIZE;
    const parts = Math.ceil(file.size / size);
    const uploaded = [];
    for (let n = 1; n <= parts; n++) {
      const chunk = file.slice((n - 1) * size, n * size);
      for (let attempt = 1; ; attempt++) {
        try {
          const response = await fetch(core.multipartUrl(upload_url, n), { method: "PUT", body: chunk });
          const { etag } = await responseHandler(response);
          uploaded.push({ partNumber: n, etag });
          break;
        } catch (error) {
          if (attempt >= 3) throw new Error("Part upload failed, retries exhausted", { cause: error });
        }
      }
    }
    const response = await fetch(core.multipartUrl(upload_url, 0), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ parts: uploaded }),
    });
    await responseHandler(response);
    return file_url;
  }

  /** Every `Blob` (and `File`) anywhere in arrays and plain objects, uploaded and replaced by its
   * URL; all uploads run at once. Everything else is left as it is. */
  async function transformInput(input) {
    if (Array.isArray(input)) return Promise.all(input.map(transformInput));
    if (typeof Blob !== "undefined" && input instanceof Blob) return upload(input);
    if (isPlainObject(input)) {
      const entries = await Promise.all(
        Object.entries(input).map(async ([key, value]) => [key, await transformInput(value)]),
      );
      return Object.fromEntries(entries);
    }
    return input;
  }

  return { upload, transformInput };
}

async function getTemporaryAuthToken(endpointId, config) {
  const { alias } = core.parseEndpointId(endpointId);
  const token = await dispatchRequest({
    method: "POST",
    targetUrl: core.tokenUrl(),
    config,
    input: { allowed_apps: [alias], token_expiration: TOKEN_EXPIRATION_SECONDS },
  });
  return typeof token !== "string" && token?.detail ? token.detail : token;
}

// ---------------------------------------------------------------------------------------------
// Streams

export class FalStream {
  constructor(endpointId, config, options) {
    this.endpointId = endpointId;
    this.config = config;
    this.options = options;
    this.url =
      options.url ??
      buildUrl(endpointId, {
        path: core.resolveEndpointPath(endpointId, undefined, "/stream"),
        query: options.queryParams,
      });
    this.listeners = new Map();
    this.buffer = [];
    this.currentData = undefined;
    this.streamClosed = false;
    this.requestId = null;
    this.wake = () => {};
    this.abortController = new AbortController();
    this.donePromise = new Promise((resolve, reject) => {
      this.signal.addEventListener("abort", () => resolve(this.currentData ?? {}));
      this.on("done", (data) => ((this.streamClosed = true), resolve(data)));
      this.on("error", (error) => ((this.streamClosed = true), reject(error)));
    });
    // A rejection nobody awaits is not an unhandled one: errors also reach `on("error")`.
    this.donePromise.catch(() => {});
    const external = options.signal;
    if (external) {
      if (external.aborted) this.abortController.abort(external.reason);
      else external.addEventListener("abort", () => this.abort(external.reason), { once: true });
    }
    this.signal.addEventListener("abort", () => this.wake());
    this.start().catch(this.handleError);
  }

  get signal() {
    return this.abortController.signal;
  }

  start = async () => {
    const { options, config } = this;
    const { input, method = "post", connectionMode = "server" } = options;
    const accept = options.accept ?? "text/event-stream";
    if (connectionMode === "client") {
      const { namespace, owner, alias, path } = core.parseEndpointId(this.endpointId);
      const app = [namespace, owner, alias, path].filter(Boolean).join("/");
      let token;
      if (options.tokenProvider) {
        token = await options.tokenProvider(app + (core.resolveEndpointPath(app, undefined, "/stream") ?? ""));
      } else {
        console.warn(
          "Using the default token provider is deprecated. Please provide a `tokenProvider` function to `fal.stream`.",
        );
        token = await getTemporaryAuthToken(this.endpointId, config);
      }
      const url = new URL(this.url);
      url.searchParams.set("fal_jwt_token", token);
      const { fetch } = config;
      const response = await fetch(url.toString(), {
        method: method.toUpperCase(),
        headers: { accept, "content-type": "application/json" },
        body: jsonBody(method, input),
        signal: this.signal,
      });
      return this.handleResponse(response);
    }
    await dispatchRequest({
      method: method.toUpperCase(),
      targetUrl: this.url,
      input,
      config,
      options: { headers: { accept }, responseHandler: this.handleResponse, signal: this.signal },
    });
  };

  handleResponse = async (response) => {
    this.requestId = response.headers.get("x-fal-request-id");
    if (!response.ok) {
      try {
        await defaultResponseHandler(response);
      } catch (error) {
        this.emit("error", error);
      }
      return;
    }
    if (!response.body) {
      this.emit("error", new ApiError({ message: "Response body is empty.", status: 400 }));
      return;
    }
    const events = (response.headers.get("content-type") ?? "").startsWith("text/event-stream")
      ? new core.SseDecoder()
      : null;
    const reader = response.body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (!events) {
          this.push(value);
          continue;
        }
        // fresco: events are decoded from bytes, so a character split between chunks survives.
        events.feed(value);
        for (let text; (text = events.next()) !== undefined; ) {
          let data;
          try {
            data = JSON.parse(text);
          } catch (error) {
            this.emit("error", error);
            continue;
          }
          this.push(data);
          this.emit("message", data);
        }
      }
    } finally {
      events?.free();
    }
    this.emit("done", this.currentData);
  };

  push(data) {
    this.buffer.push(data);
    this.currentData = data;
    this.emit("data", data);
  }

  handleError = (error) => {
    if (error?.name === "AbortError" || this.signal.aborted) return;
    this.emit(
      "error",
      error instanceof ApiError
        ? error
        : new ApiError({ message: error?.message ?? "An unknown error occurred", status: 500 }),
    );
  };

  on(type, listener) {
    if (!this.listeners.has(type)) this.listeners.set(type, []);
    this.listeners.get(type).push(listener);
  }

  emit(type, event) {
    for (const listener of this.listeners.get(type) ?? []) listener(event);
    this.wake();
  }

  // Yields every event in order; ends after the last one once the stream is done, failed or
  // aborted; never throws (errors reach `done()` and `on("error")`). fresco: woken by the events
  // themselves instead of checking every 16 ms.
  async *[Symbol.asyncIterator]() {
    for (let i = 0; ; ) {
      while (i < this.buffer.length) {
        const item = this.buffer[i++];
        if (item) yield item;
      }
      if (this.streamClosed || this.signal.aborted) return;
      await new Promise((resolve) => (this.wake = resolve));
    }
  }

  done() {
    return this.donePromise;
  }

  abort(reason) {
    if (!this.streamClosed) this.abortController.abort(reason);
  }
}

// ---------------------------------------------------------------------------------------------
// Queue

function createQueueClient(config, storage) {
  const queue = {
    async submit(endpointId, options) {
      const { webhookUrl, priority, hint, startTimeout, storageSettings, headers, ...runOptions } = options;
      const timeout = requestTimeoutHeader(startTimeout);
      const input = options.input ? await storage.transformInput(options.input) : undefined;
      const lowercased = Object.fromEntries(Object.entries(headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
      return dispatchRequest({
        method: runOptions.method,
        targetUrl: buildUrl(endpointId, {
          ...runOptions,
          input,
          subdomain: "queue",
          query: webhookUrl ? { fal_webhook: webhookUrl } : undefined,
        }),
        input,
        config,
        headers: {
          ...lowercased,
          ...lifecycleHeader("x-fal-object-lifecycle-preference", storageSettings),
          "x-fal-queue-priority": priority ?? "normal",
          ...(hint ? { "x-fal-runner-hint": hint } : {}),
          ...timeout,
        },
        options: { signal: options.abortSignal, operation: "submit" },
      });
    },

    status(endpointId, { requestId, logs = false, abortSignal }) {
      return dispatchRequest({
        method: "get",
        targetUrl: core.queueUrl(endpointId, requestId, "/status", logs),
        config,
        options: { signal: abortSignal, operation: "status" },
      });
    },

    async streamStatus(endpointId, { requestId, logs = false, connectionMode, abortSignal }) {
      return new FalStream(endpointId, config, {
        url: core.queueUrl(endpointId, requestId, "/status/stream", logs),
        method: "get",
        connectionMode,
        signal: abortSignal,
      });
    },

    async subscribeToStatus(endpointId, options) {
      return options.mode === "streaming" ? subscribeStreaming(endpointId, options) : subscribePolling(endpointId, options);
    },

    result(endpointId, { requestId, abortSignal }) {
      return dispatchRequest({
        method: "get",
        targetUrl: core.queueUrl(endpointId, requestId, "", undefined),
        config,
        options: { signal: abortSignal, operation: "result", responseHandler: resultResponseHandler },
      });
    },

    async cancel(endpointId, { requestId, abortSignal }) {
      await dispatchRequest({
        method: "put",
        targetUrl: core.queueUrl(endpointId, requestId, "/cancel", undefined),
        config,
        options: { signal: abortSignal },
      });
    },
  };

  const timedOut = (timeout) => new Error(`Client timed out waiting for the request to complete after ${timeout}ms`);

  function subscribePolling(endpointId, options) {
    const { requestId, logs = false, timeout, onQueueUpdate, abortSignal } = options;
    const pollInterval = typeof options.pollInterval === "number" ? options.pollInterval : DEFAULT_POLL_INTERVAL;
    return new Promise((resolve, reject) => {
      let pollTimer;
      let timeoutTimer;
      let settled = false;
      const settle = (fn, value) => {
        if (settled) return;
        settled = true;
        clearTimeout(pollTimer);
        clearTimeout(timeoutTimer);
        fn(value);
      };
      if (timeout) {
        timeoutTimer = setTimeout(() => {
          queue.cancel(endpointId, { requestId }).catch(() => {});
          settle(reject, timedOut(timeout));
        }, timeout);
      }
      const poll = async () => {
        try {
          const status = await queue.status(endpointId, { requestId, logs, abortSignal });
          // fresco: a status that arrives after the timeout fired no longer re-arms polling.
          if (settled) return;
          onQueueUpdate?.(status);
          if (status.status === "COMPLETED") settle(resolve, status);
          else pollTimer = setTimeout(poll, pollInterval);
        } catch (error) {
          settle(reject, error);
        }
      };
      poll();
    });
  }

  async function subscribeStreaming(endpointId, options) {
    const { requestId, logs = false, timeout, onQueueUpdate, abortSignal, connectionMode } = options;
    const stream = await queue.streamStatus(endpointId, { requestId, logs, connectionMode, abortSignal });
    const accumulated = [];
    stream.on("data", (data) => {
      if (!onQueueUpdate) return;
      if (!("logs" in data)) return onQueueUpdate(data);
      if (Array.isArray(data.logs) && data.logs.length) accumulated.push(...data.logs);
      onQueueUpdate({ ...data, logs: [...accumulated] });
    });
    let timeoutTimer;
    // fresco: a timeout rejects the subscription (the original throws inside its timer).
    const expired = new Promise((_, reject) => {
      if (!timeout) return;
      timeoutTimer = setTimeout(() => {
        stream.abort();
        queue.cancel(endpointId, { requestId }).catch(() => {});
        reject(timedOut(timeout));
      }, timeout);
    });
    try {
      const last = await Promise.race([stream.done(), expired]);
      // fresco: a stream that ended before COMPLETED (a dropped connection) is followed up by
      // polling instead of being taken for the end.
      if (last?.status === "COMPLETED" || abortSignal?.aborted) return last;
      return await subscribePolling(endpointId, { ...options, timeout: undefined });
    } finally {
      clearTimeout(timeoutTimer);
    }
  }

  return queue;
}

// ---------------------------------------------------------------------------------------------
// The client

export function createFalClient(userConfig = {}) {
  const config = createConfig(userConfig);
  const storage = createStorageClient(config);
  const queue = createQueueClient(config, storage);
  const streaming = {
    async stream(endpointId, options) {
      const input = options.input ? await storage.transformInput(options.input) : undefined;
      return new FalStream(endpointId, config, { ...options, input });
    },
  };
  const client = {
    queue,
    storage,
    streaming,
    realtime: {
      connect() {
        throw new Error("fal.realtime is not supported by @fresco/client yet; use @fal-ai/client for realtime apps");
      },
    },
    stream: streaming.stream,

    async run(endpointId, options = {}) {
      const timeout = requestTimeoutHeader(options.startTimeout);
      const input = options.input ? await storage.transformInput(options.input) : undefined;
      return dispatchRequest({
        method: options.method,
        targetUrl: buildUrl(endpointId, { ...options, input }),
        input,
        config,
        headers: { ...lifecycleHeader("x-fal-object-lifecycle-preference", options.storageSettings), ...timeout },
        options: { operation: "run", responseHandler: resultResponseHandler, signal: options.abortSignal },
      });
    },

    async subscribe(endpointId, options = {}) {
      const { request_id: requestId } = await queue.submit(endpointId, options);
      options.onEnqueue?.(requestId);
      await queue.subscribeToStatus(endpointId, { requestId, ...options });
      // fresco: the abort signal reaches the result request too.
      return queue.result(endpointId, { requestId, abortSignal: options.abortSignal });
    },
  };
  return userConfig.local ? withLocal(client, userConfig.local === true ? {} : userConfig.local) : client;
}

// fresco: `local: true | {endpoints?, hubUrl?, workerUrl?}` runs those endpoints on this device
// (local.js, loaded on the first such call); every other endpoint stays remote.
const LOCAL_ENDPOINTS = ["fal-ai/inpaint", "fal-ai/lora/image-to-image", "fal-ai/lora/inpaint"];

function withLocal(client, options) {
  const endpoints = new Set(options.endpoints ?? LOCAL_ENDPOINTS);
  let local;
  const route = (target, name) => (endpointId, opts) =>
    endpoints.has(endpointId)
      ? (local ??= import("./local.js").then((m) => m.createLocalClient(options, { ApiError, ValidationError }))).then(
          (l) => (l.queue[name] ?? l[name])(endpointId, opts),
        )
      : target[name](endpointId, opts);
  const queue = { ...client.queue };
  for (const name of ["submit", "status", "streamStatus", "subscribeToStatus", "result", "cancel"]) queue[name] = route(client.queue, name);
  return { ...client, queue, run: route(client, "run"), subscribe: route(client, "subscribe") };
}

/**
 * fresco: the local engine's model cache (the origin-private file system's `fresco-cache/`):
 * `usage()` → `{bytes, files: [{url, bytes, complete}]}`, `clear()` removes every cached file.
 */
export const localModelCache = Object.freeze({
  usage: () => import("./local.js").then((m) => m.cacheUsage()),
  clear: () => import("./local.js").then((m) => m.clearCache()),
});

let current = createFalClient();

/** The singleton: `fal.config(…)` replaces its client (nothing carries over from earlier calls). */
export const fal = Object.freeze({
  config(config) {
    current = createFalClient(config);
  },
  get queue() {
    return current.queue;
  },
  get storage() {
    return current.storage;
  },
  get streaming() {
    return current.streaming;
  },
  get realtime() {
    return current.realtime;
  },
  run: (endpointId, options) => current.run(endpointId, options),
  subscribe: (endpointId, options) => current.subscribe(endpointId, options),
  stream: (endpointId, options) => current.stream(endpointId, options),
});

export const parseEndpointId = (id) => core.parseEndpointId(id);

export const isQueueStatus = (obj) => obj && obj.status && obj.response_url;

export const isCompletedQueueStatus = (obj) => isQueueStatus(obj) && obj.status === "COMPLETED";
