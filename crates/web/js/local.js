// @fresco/client's local mode: `fal.config({ local: … })` routes the endpoints the engine serves
// to a dedicated Web Worker (engine-worker.js) that runs them on this device's GPU through WebGPU.
// client.js imports this file only when a call goes local, so a page that never does downloads
// none of it (nor the engine's wasm, which the worker loads on its first call).
//
// The calls keep the remote API's shapes: `submit` answers an IN_QUEUE status, `status` and
// `onQueueUpdate` see IN_QUEUE → IN_PROGRESS (with the logs: loading, a line per step) →
// COMPLETED, `result` is `{data, requestId}` with each image's `url` a `blob:` URL of this page,
// failures are the same `ApiError`/`ValidationError` with fal's bodies. Updates are pushed by the
// worker as they happen, so polling and streaming subscriptions both see every one. `subscribe`
// and `run` are the remote client's `subscribe` (queue.js's `subscriber`) over this local queue.

import { ApiError, ValidationError } from "./response.js";
import { subscriber, timedOut } from "./queue.js";

const DEFAULT_HUB_URL = "https://huggingface.co";

// The engine's model cache (crates/diffusion/src/web/cache.rs): in the origin-private file system,
// each file `<h>.bin` (its bytes) beside `<h>.json` (`{url, status, size, complete}`).
const CACHE_DIR = "fresco-cache";
/** The model cache's Web Lock, shared with the engine (`fresco_diffusion::web::lock::NAME`). */
const CACHE_LOCK = "fresco-model-cache";

async function cacheDir() {
  const root = await globalThis.navigator?.storage?.getDirectory?.();
  if (!root) return { root: null, dir: null };
  try {
    return { root, dir: await root.getDirectoryHandle(CACHE_DIR) };
  } catch (e) {
    if (e?.name === "NotFoundError") return { root, dir: null };
    throw e;
  }
}

/** `localModelCache.usage()`: the cached files (404s the cache remembers are not files). */
export async function cacheUsage() {
  const { dir } = await cacheDir();
  const files = [];
  if (dir) {
    for await (const [name, handle] of dir.entries()) {
      if (!name.endsWith(".json")) continue;
      let meta;
      try {
        meta = JSON.parse(await (await handle.getFile()).text());
      } catch {
        continue;
      }
      if (meta.status !== 200) continue;
      let bytes = 0;
      try {
        bytes = (await (await dir.getFileHandle(name.replace(/\.json$/, ".bin"))).getFile()).size;
      } catch {}
      files.push({ url: meta.url, bytes, complete: Boolean(meta.complete) && bytes === meta.size });
    }
  }
  files.sort((a, b) => a.url.localeCompare(b.url));
  return { bytes: files.reduce((sum, f) => sum + f.bytes, 0), files };
}

/** `localModelCache.clear()`: waits for a model that is loading (here or in another tab). */
export async function clearCache() {
  const { root, dir } = await cacheDir();
  if (!dir) return;
  const clear = async () => {
    try {
      await root.removeEntry(CACHE_DIR, { recursive: true });
    } catch (e) {
      if (e?.name === "NotFoundError") return;
      if (e?.name === "NoModificationAllowedError" || e?.name === "InvalidModificationError") {
        throw new Error("the model cache is in use (a local call is loading a model, here or in another tab): try again when it is done");
      }
      throw e;
    }
  };
  // The engine holds this lock while it loads a model through the cache
  // (crates/diffusion/src/web/lock.rs).
  return globalThis.navigator?.locks ? navigator.locks.request(CACHE_LOCK, clear) : clear();
}

const newRequestId = () =>
  globalThis.crypto?.randomUUID?.() ?? `${Date.now().toString(16)}-${Math.random().toString(16).slice(2)}`;

/**
 * The local client: `{queue, run, subscribe}` for the routed endpoints. `options`:
 * `{hubUrl?, workerUrl?}`. Its errors are response.js's classes, the remote client's, so
 * `instanceof` works whichever way a call ran.
 */
export function createLocalClient(options) {
  const hubUrl = (options.hubUrl ?? DEFAULT_HUB_URL).replace(/\/+$/, "");
  const requests = new Map();
  let worker;

  function startWorker() {
    if (worker) return worker;
    if (typeof Worker === "undefined") {
      throw new ApiError({
        message: "the local mode needs Web Workers and WebGPU (a browser); this environment has no Worker",
        status: 500,
        body: { detail: "Web Workers are not available here" },
      });
    }
    // Written out literally, so that bundlers (Vite, webpack) see the worker and ship it.
    worker = options.workerUrl
      ? new Worker(options.workerUrl, { type: "module", name: "fresco-engine" })
      : new Worker(new URL("./engine-worker.js", import.meta.url), { type: "module", name: "fresco-engine" });
    worker.onmessage = ({ data }) => receive(data);
    worker.onerror = (event) => {
      event.preventDefault?.();
      lose(`the local engine's worker failed to start or crashed: ${event.message ?? "unknown error"}`);
    };
    return worker;
  }

  // The worker is dropped (a crash, a panic, a lost device) and the next call starts a new one,
  // with a new device. The call it was running fails with `message`; the calls waiting behind it
  // go to the new worker in the order they came when `requeue` (a lost device, a panic in one
  // call), or fail too (a worker that could not start would fail them again).
  function lose(message, { requeue = false } = {}) {
    worker?.terminate();
    worker = undefined;
    const waiting = [];
    for (const request of requests.values()) {
      if (request.settled) continue;
      if (requeue && request.status === "IN_QUEUE") waiting.push(request);
      else settle(request, { status: 500, message, error_type: "runner_server_error", body: JSON.stringify({ detail: message, error_type: "runner_server_error" }) });
    }
    if (!waiting.length) return;
    const target = startWorker();
    for (const request of waiting) target.postMessage(request.message);
  }

  const urls = (endpointId, requestId) => {
    const base = `local:${endpointId}/requests/${requestId}`;
    return { response_url: base, status_url: `${base}/status`, cancel_url: `${base}/cancel` };
  };

  function snapshot(request, withLogs) {
    const status = { status: request.status, request_id: request.id, ...urls(request.endpointId, request.id) };
    if (request.status === "IN_QUEUE") status.queue_position = request.position;
    else status.logs = withLogs ? [...request.logs] : null;
    // fresco: the model download's progress, `{file, loaded, total}` (bytes), while it runs.
    if (request.status === "IN_PROGRESS" && request.progress) status.progress = { ...request.progress };
    if (request.status === "COMPLETED") {
      status.metrics = { inference_time: request.inferenceTime ?? null };
      if (request.error) {
        status.error = request.error.message;
        if (request.error.error_type) status.error_type = request.error.error_type;
      }
    }
    return status;
  }

  function notify(request) {
    for (const listener of request.listeners) listener();
  }

  function settle(request, error, data) {
    request.settled = true;
    request.status = "COMPLETED";
    request.inferenceTime = request.startedAt ? (performance.now() - request.startedAt) / 1000 : null;
    if (error) {
      request.error = error;
      let body;
      try {
        body = JSON.parse(error.body);
      } catch {
        body = { detail: error.message };
      }
      const Class = error.status === 422 ? ValidationError : ApiError;
      request.reject(new Class({ message: error.message, status: error.status, body, requestId: request.id }));
    } else {
      request.resolve({ data, requestId: request.id });
    }
    notify(request);
  }

  function receive(message) {
    if (message.type === "lost") return lose(message.message, { requeue: true });
    const request = requests.get(message.id);
    if (!request || request.settled) return;
    switch (message.type) {
      case "queued":
        request.position = message.position;
        break;
      case "started":
        request.status = "IN_PROGRESS";
        request.startedAt = performance.now();
        break;
      case "progress":
        request.progress = { file: message.file, loaded: message.loaded, total: message.total };
        break;
      case "log":
        request.logs.push({ message: message.message, level: message.level, source: "USER", timestamp: message.timestamp });
        break;
      case "done": {
        // The images' bytes become `blob:` URLs of this page (the output names them `local:N`).
        const blobUrls = message.files.map((f) => URL.createObjectURL(new Blob([f.bytes], { type: f.content_type })));
        const data = JSON.parse(message.output, (key, value) =>
          key === "url" && typeof value === "string" && value.startsWith("local:") ? blobUrls[Number(value.slice(6))] : value,
        );
        return settle(request, null, data);
      }
      case "error":
        settle(request, message);
        if (message.fatal) lose(message.message, { requeue: true });
        return;
    }
    notify(request);
  }

  function find(endpointId, requestId) {
    const request = requests.get(requestId);
    if (!request || request.endpointId !== endpointId) {
      throw new ApiError({ message: "Request not found", status: 404, body: { detail: `no local request ${requestId} for ${endpointId}` }, requestId });
    }
    return request;
  }

  const aborted = (signal) => signal.reason ?? new DOMException("This operation was aborted", "AbortError");

  const queue = {
    async submit(endpointId, { input, abortSignal } = {}) {
      if (abortSignal?.aborted) throw aborted(abortSignal);
      const target = startWorker();
      const id = newRequestId();
      const request = { id, endpointId, status: "IN_QUEUE", position: 0, logs: [], listeners: new Set(), settled: false };
      request.result = new Promise((resolve, reject) => Object.assign(request, { resolve, reject }));
      // Nobody may ever ask for the result of a submitted call: that is not an unhandled rejection.
      request.result.catch(() => {});
      request.message = { type: "run", id, endpointId, input: input ?? {}, hubUrl };
      requests.set(id, request);
      target.postMessage(request.message);
      return snapshot(request, false);
    },

    async status(endpointId, { requestId, logs = false }) {
      return snapshot(find(endpointId, requestId), logs);
    },

    async streamStatus(endpointId, { requestId, logs = false, abortSignal }) {
      return new LocalStatusStream(find(endpointId, requestId), (r) => snapshot(r, logs), abortSignal);
    },

    async subscribeToStatus(endpointId, { requestId, logs = false, timeout, onQueueUpdate, abortSignal }) {
      const request = find(endpointId, requestId);
      return new Promise((resolve, reject) => {
        let timer;
        const update = () => {
          const status = snapshot(request, logs);
          onQueueUpdate?.(status);
          if (status.status === "COMPLETED") done(resolve, status);
        };
        const stop = () => {
          queue.cancel(endpointId, { requestId }).catch(() => {});
          done(reject, aborted(abortSignal));
        };
        const done = (fn, value) => {
          request.listeners.delete(update);
          abortSignal?.removeEventListener("abort", stop);
          clearTimeout(timer);
          fn(value);
        };
        if (abortSignal?.aborted) return stop();
        abortSignal?.addEventListener("abort", stop);
        if (timeout) {
          timer = setTimeout(() => {
            queue.cancel(endpointId, { requestId }).catch(() => {});
            done(reject, timedOut(timeout));
          }, timeout);
        }
        request.listeners.add(update);
        update();
      });
    },

    async result(endpointId, { requestId, abortSignal }) {
      const request = find(endpointId, requestId);
      if (!abortSignal) return request.result;
      return Promise.race([
        request.result,
        new Promise((_, reject) => {
          if (abortSignal.aborted) reject(aborted(abortSignal));
          abortSignal.addEventListener("abort", () => reject(aborted(abortSignal)), { once: true });
        }),
      ]);
    },

    // A call still waiting is dropped; a running one stops before its next step. Either way its
    // result is a 400 `client_cancelled`, as the server answers.
    async cancel(endpointId, { requestId }) {
      const request = find(endpointId, requestId);
      if (!request.settled) worker?.postMessage({ type: "cancel", id: requestId });
    },
  };

  const subscribe = subscriber(queue);
  return {
    queue,
    subscribe,
    // A local `run` is a subscription that reports nothing on the way.
    run: (endpointId, options = {}) => subscribe(endpointId, { ...options, onQueueUpdate: undefined, onEnqueue: undefined }),
  };
}

/** `queue.streamStatus` for a local call: `on("data")`, `done()`, `abort()`, `for await`. */
class LocalStatusStream {
  constructor(request, snapshot, signal) {
    this.listeners = { data: [], error: [], done: [] };
    this.buffer = [];
    this.waiters = [];
    this.finished = false;
    this.last = undefined;
    this.ended = new Promise((resolve) => (this.end = resolve));
    const update = () => {
      if (this.finished) return;
      const status = snapshot(request);
      this.last = status;
      this.emit("data", status);
      if (status.status === "COMPLETED") this.close();
    };
    this.stop = () => request.listeners.delete(update);
    request.listeners.add(update);
    signal?.addEventListener("abort", () => this.abort(), { once: true });
    queueMicrotask(update);
  }

  on(type, listener) {
    this.listeners[type]?.push(listener);
  }

  emit(type, value) {
    for (const listener of this.listeners[type] ?? []) listener(value);
    if (type === "data") {
      const waiter = this.waiters.shift();
      if (waiter) waiter({ value, done: false });
      else this.buffer.push(value);
    }
  }

  close() {
    this.finished = true;
    this.stop();
    this.emit("done", this.last);
    for (const waiter of this.waiters.splice(0)) waiter({ value: undefined, done: true });
    this.end(this.last);
  }

  abort() {
    if (!this.finished) this.close();
  }

  done() {
    return this.ended;
  }

  [Symbol.asyncIterator]() {
    return {
      next: () => {
        if (this.buffer.length) return Promise.resolve({ value: this.buffer.shift(), done: false });
        if (this.finished) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => this.waiters.push(resolve));
      },
      return: () => {
        this.abort();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}
