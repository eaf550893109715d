// What the browser test (client.test.mjs) runs inside a page served by `fresco serve`: the same
// calls as the Node suite (../e2e/suite.mjs), made by @fresco/client in headless Chromium, through
// the proxy route of the server that serves the page (a relative `proxyUrl`, the browser default).
// Each scenario returns plain data for the test to check. The page loads this module as it is
// (a plain ES module importing the package) and, at /bundled/, as esbuild bundled it.
import { ApiError, createFalClient, fal, ValidationError } from "./pkg/index.js";

const ECHO = "fresco/echo";
fal.config({ proxyUrl: "/api/fal/proxy" });

const png = async (name) => new Blob([await (await fetch(`/fixtures/${name}`)).arrayBuffer()], { type: "image/png" });
const bytesOf = async (url) => new Uint8Array(await (await fetch(url)).arrayBuffer());
const caught = async (promise) => {
  try {
    await promise;
    return { thrown: false };
  } catch (e) {
    return { thrown: true, name: e.name, message: e.message, status: e.status, body: e.body, requestId: e.requestId,
      isApiError: e instanceof ApiError, isValidationError: e instanceof ValidationError,
      fieldErrors: e.fieldErrors, promptErrors: e.getFieldErrors?.("delay_ms")?.length };
  }
};

export const scenarios = {
  async polling() {
    const updates = [];
    let enqueued;
    const input = { delay_ms: 300, logs: ["loading", "step 1/2", "step 2/2"] };
    const result = await fal.subscribe(ECHO, {
      input, logs: true, pollInterval: 20, onEnqueue: (id) => (enqueued = id), onQueueUpdate: (u) => updates.push(u),
    });
    return { result, enqueued, statuses: updates.map((u) => u.status), logs: updates.at(-1).logs.map((l) => l.message) };
  },

  async streaming() {
    const updates = [];
    const result = await fal.subscribe(ECHO, {
      input: { delay_ms: 300, logs: ["a", "b", "c"] }, logs: true, mode: "streaming", onQueueUpdate: (u) => updates.push(u),
    });
    return { result, last: updates.at(-1).status, logs: updates.filter((u) => u.logs?.length).at(-1).logs.map((l) => l.message) };
  },

  async run() {
    return fal.run(ECHO, { input: { sync: [1, 2, 3] } });
  },

  async blobInput() {
    const image = new Blob([new Uint8Array([137, 80, 78, 71, 1, 2, 3])], { type: "image/png" });
    const result = await fal.subscribe(ECHO, { input: { nested: [{ image_url: image }] }, pollInterval: 20 });
    const url = result.data.nested[0].image_url;
    return { url, bytes: [...(await bytesOf(url))] };
  },

  async upload() {
    const url = await fal.storage.upload(new File(["Hello, World!"], "hello.txt", { type: "text/plain" }));
    const response = await fetch(url);
    return { url, type: response.headers.get("content-type"), text: await response.text() };
  },

  async multipart() {
    const size = 91 * 1024 * 1024;
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i += 4096) bytes[i] = (i / 4096) % 251;
    const url = await fal.storage.upload(new Blob([bytes], { type: "application/octet-stream" }));
    const got = await bytesOf(url);
    let same = got.length === size;
    for (let i = 0; same && i < size; i += 4096) same = got[i] === bytes[i];
    return { length: got.length, same };
  },

  async validationError() {
    return caught(fal.subscribe(ECHO, { input: { delay_ms: "soon" }, pollInterval: 20 }));
  },

  async cancel() {
    const { request_id: requestId } = await fal.queue.submit(ECHO, { input: { delay_ms: 30000 } });
    for (let i = 0; i < 200; i++) {
      if ((await fal.queue.status(ECHO, { requestId })).status === "IN_PROGRESS") break;
      await new Promise((r) => setTimeout(r, 10));
    }
    await fal.queue.cancel(ECHO, { requestId });
    const done = await fal.queue.subscribeToStatus(ECHO, { requestId, pollInterval: 20 });
    return { status: done.status, error: done.error, result: await caught(fal.queue.result(ECHO, { requestId })) };
  },

  async abort() {
    const controller = new AbortController();
    let requestId;
    const outcome = await caught(fal.subscribe(ECHO, {
      input: { delay_ms: 1500 }, pollInterval: 20, abortSignal: controller.signal,
      onEnqueue: (id) => (requestId = id), onQueueUpdate: (u) => u.status === "IN_PROGRESS" && controller.abort(),
    }));
    const done = await fal.queue.subscribeToStatus(ECHO, { requestId, pollInterval: 20 });
    return { outcome, error: done.error ?? null };
  },

  async timeout() {
    let requestId;
    const outcome = await caught(fal.subscribe(ECHO, {
      input: { delay_ms: 20000 }, timeout: 300, pollInterval: 20, onEnqueue: (id) => (requestId = id),
    }));
    const done = await fal.queue.subscribeToStatus(ECHO, { requestId, pollInterval: 20 });
    return { outcome, errorType: done.error_type };
  },

  // Through a proxy in front of fresco's that answers 503 to the first status poll (another
  // origin: the test starts it): the poll is retried after its backoff and the call succeeds.
  async retried503(faultyProxyUrl) {
    const client = createFalClient({ proxyUrl: faultyProxyUrl });
    const started = performance.now();
    const result = await client.subscribe(ECHO, { input: { retried: true }, pollInterval: 20 });
    return { result: result.data, ms: performance.now() - started };
  },

  // Credentials in a page: a warning, unless suppressed; never in Node (the Node suite's clients).
  async credentialsWarning() {
    const warnings = [];
    const warn = console.warn;
    console.warn = (...args) => warnings.push(args.join(" "));
    try {
      createFalClient({ credentials: "key" });
      createFalClient({ credentials: "key", suppressLocalCredentialsWarning: true });
      createFalClient({ credentials: () => undefined });
    } finally {
      console.warn = warn;
    }
    return warnings;
  },

  async inpaint(modelName) {
    const updates = [];
    const result = await fal.subscribe("fal-ai/inpaint", {
      input: {
        model_name: modelName, image_url: await png("image32.png"), mask_url: await png("mask32.png"),
        prompt: "a red fox sitting in fresh snow", num_inference_steps: 3, seed: 1234,
      },
      logs: true, pollInterval: 50, onQueueUpdate: (u) => updates.push(u),
    });
    const bytes = await bytesOf(result.data.image.url);
    return { data: result.data, head: [...bytes.slice(0, 8)], length: bytes.length, logs: updates.at(-1).logs.map((l) => l.message) };
  },
};
