// Type-checks the shipped index.d.ts (`tsc -p tests/types`, run by `cargo xtask test`): calls a
// page would make must compile, with fal-ai/inpaint's input and output typed, and the mistakes
// below must not (each `@ts-expect-error` fails the check if its line compiles).
import {
  ApiError,
  createFalClient,
  fal,
  isCompletedQueueStatus,
  localModelCache,
  parseEndpointId,
  ValidationError,
  withMiddleware,
  withProxy,
  type InpaintOutput,
  type QueueStatus,
  type Result,
} from "@fresco/client";

fal.config({ proxyUrl: "/api/fal/proxy", retry: { maxRetries: 1 } });
const client = createFalClient({ credentials: () => undefined, proxyUrl: { url: "/p", when: "always" } });
// fresco's local mode.
fal.config({ local: true });
createFalClient({ proxyUrl: "/api/fal/proxy", local: { endpoints: ["fal-ai/inpaint"], hubUrl: "https://huggingface.co" } });
// @ts-expect-error hubUrl is a string
fal.config({ local: { hubUrl: 1 } });
async function cache() {
  const { bytes, files } = await localModelCache.usage();
  const first: string | undefined = files[0]?.url;
  if (bytes > 1e9 && first && !files[0].complete) await localModelCache.clear();
}

async function usage(image: Blob) {
  const result: Result<InpaintOutput> = await fal.subscribe("fal-ai/inpaint", {
    input: { model_name: "m", prompt: "a fox", image_url: image, mask_url: "data:image/png;base64,", seed: 1 },
    logs: true,
    pollInterval: 100,
    onQueueUpdate: (update: QueueStatus) => update.status === "IN_PROGRESS" && update.logs.map((l) => l.message),
  });
  const url: string = result.data.image.url;
  const seed: number = result.data.seed;

  // @ts-expect-error: prompt is required
  await fal.subscribe("fal-ai/inpaint", { input: { model_name: "m", image_url: "u", mask_url: "u" } });
  // @ts-expect-error: steps are a number
  await fal.run("fal-ai/inpaint", { input: { model_name: "m", prompt: "p", image_url: "u", mask_url: "u", num_inference_steps: "30" } });
  // @ts-expect-error: a streaming subscription has no poll interval
  await fal.subscribe("x/y", { mode: "streaming", pollInterval: 5 });

  const lora = await client.run("fal-ai/lora/inpaint", {
    input: { model_name: "m", prompt: "p", image_url: "u", scheduler: "Euler A", num_images: 2 },
  });
  const first: string = lora.data.images[0].url;

  const anything = await client.run("someone/else", { input: { any: [1, 2] }, method: "get", path: "/x" });
  const untyped: number = anything.data.whatever;

  const { request_id } = await client.queue.submit("fal-ai/inpaint", {
    input: { model_name: "m", prompt: "p", image_url: "u", mask_url: "u" },
    webhookUrl: "https://example.com/hook",
    priority: "low",
    storageSettings: { expiresIn: "1d", initialAcl: { default: "forbid" } },
  });
  const status = await client.queue.status("fal-ai/inpaint", { requestId: request_id, logs: true });
  if (isCompletedQueueStatus(status)) status.metrics?.inference_time;
  const done = await client.queue.subscribeToStatus("fal-ai/inpaint", { requestId: request_id, timeout: 1000 });
  const completed: "COMPLETED" = done.status;
  await client.queue.cancel("fal-ai/inpaint", { requestId: request_id });

  const stream = await fal.stream("fal-ai/llm", { input: { prompt: "p" } });
  for await (const event of stream) void event;
  await stream.done();
  stream.abort();

  const fileUrl: string = await fal.storage.upload(image, { lifecycle: { expiresIn: 3600 } });
  // @ts-expect-error: not an expiration name
  await fal.storage.upload(image, { lifecycle: { expiresIn: "2d" } });

  try {
    await fal.run("x/y", {});
  } catch (error) {
    if (error instanceof ValidationError) error.getFieldErrors("prompt").map((e) => e.msg);
    else if (error instanceof ApiError) [error.status, error.requestId, error.isUserTimeout];
  }
  const { owner, alias, path } = parseEndpointId("fal-ai/flux/dev");
  const middleware = withMiddleware(withProxy({ targetUrl: "/p" }), async (r) => r);
  return [url, seed, first, untyped, completed, fileUrl, owner, alias, path, middleware];
}
void usage;
void cache;
