// @fresco/client's local engine, in a dedicated Web Worker (never the page's thread: the engine
// waits for the GPU between steps). `local.js` starts it; this file loads the engine's wasm
// (`engine.js` + `engine_bg.wasm`, crates/web/src/engine.rs) on the first call and runs calls one
// at a time, in the order they came.
//
// Messages in:  {type: "run", id, endpointId, input, hubUrl}   {type: "cancel", id}
// Messages out: {type: "queued", id, position}  {type: "started", id}  {type: "log", id, message,
//               level, timestamp}  {type: "progress", id, file, loaded, total} (model downloads,
//               at most every 100 ms a file)  {type: "done", id, output, files}
//               {type: "error", id, status, body, message, error_type, fatal}
//               {type: "lost", message} (the GPU device was lost, whether or not a call ran)
// `fatal` says the engine cannot be trusted after this error (a panic, a lost device): the page
// drops this worker and starts a new one for the next call. A lost device is never usable again,
// and Burn keeps one device per wasm instance: a new device means a new worker.

import init, { LocalEngine, takePanic } from "./engine.js";

let engine;
let running = null;
const waiting = [];
const cancelled = new Set();

const post = (message, transfer = []) => self.postMessage(message, transfer);

const cancelledBody = JSON.stringify({ detail: "Request was cancelled", error_type: "client_cancelled" });

function positions() {
  waiting.forEach((job, i) => post({ type: "queued", id: job.id, position: i }));
}

self.onmessage = ({ data }) => {
  if (data.type === "run") {
    waiting.push(data);
    positions();
    pump();
  } else if (data.type === "cancel") {
    const i = waiting.findIndex((job) => job.id === data.id);
    if (i >= 0) {
      waiting.splice(i, 1);
      post({ type: "error", id: data.id, status: 400, body: cancelledBody, message: "Request was cancelled", error_type: "client_cancelled" });
      positions();
    } else if (running?.id === data.id) {
      cancelled.add(data.id);
    }
  }
};

async function start() {
  if (!self.navigator?.gpu) {
    throw failure(500, "WebGPU is not available in this browser (navigator.gpu is missing): the local mode needs a browser with WebGPU, e.g. Chrome or Edge 113+, or Safari 26+");
  }
  await init();
  return new LocalEngine((message) => post({ type: "lost", message }));
}

const failure = (status, message) => ({ status, message, body: JSON.stringify({ detail: message }) });

async function pump() {
  if (running || !waiting.length) return;
  const job = (running = waiting.shift());
  positions();
  post({ type: "started", id: job.id });
  // Blobs and Files (passed to the worker without a copy) become `blob:` URLs of this worker,
  // which the engine fetches as it fetches any input URL; revoked when the call is done.
  const blobUrls = [];
  try {
    engine ??= await start();
    const input = JSON.stringify(job.input, (_, value) => {
      if (typeof Blob === "undefined" || !(value instanceof Blob)) return value;
      const url = URL.createObjectURL(value);
      blobUrls.push(url);
      return url;
    });
    let shown = { file: null, at: 0 };
    const { output, files } = await engine.run(job.endpointId, input, job.hubUrl, {
      log: (message) => post({ type: "log", id: job.id, message, level: "INFO", timestamp: new Date().toISOString() }),
      cancelled: () => cancelled.has(job.id),
      progress: (file, loaded, total) => {
        const now = performance.now();
        if (file === shown.file && now - shown.at < 100 && loaded !== total) return;
        shown = { file, at: now };
        post({ type: "progress", id: job.id, file, loaded, total });
      },
    });
    post({ type: "done", id: job.id, output, files }, files.map((f) => f.bytes.buffer));
  } catch (e) {
    if (e && typeof e.status === "number") {
      post({ type: "error", id: job.id, ...e });
      if (e.fatal) engine = undefined;
    } else {
      // Not an answer of the engine's: a trap (a Rust panic) or a broken worker.
      let panic;
      try {
        panic = takePanic();
      } catch {}
      const message = `the local engine failed: ${panic ?? e?.message ?? e}`;
      post({ type: "error", id: job.id, ...failure(500, message), fatal: true });
      engine = undefined;
    }
  } finally {
    blobUrls.forEach((url) => URL.revokeObjectURL(url));
    cancelled.delete(job.id);
    running = null;
    pump();
  }
}
