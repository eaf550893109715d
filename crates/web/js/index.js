// @fresco/client: fal's JavaScript client (`@fal-ai/client` 1.10.1) over fresco's protocol rules in
// WebAssembly. `core` (crates/web/src/client.rs, on crates/protocol: the code fresco's server runs)
// gives the rules both sides share — endpoint ids, every URL, server-sent events. The modules
// beside this file are the rest, named for the original's files: config.js (configuration,
// middleware), request.js (fetch with its headers and retries), response.js (the error classes,
// responses), storage.js (uploads), streaming.js (streams), queue.js (the queue, its timers),
// client.js (`createFalClient`, the local mode's routing). This file loads the wasm and exports
// the API.
// Wire behaviour is the original's (../shared/reference/fal-api.md); the deliberate differences
// are marked "fresco:" and listed in the README.

import * as core from "./core.js";
import { createFalClient } from "./client.js";

// The wasm beside this file: fetched where `import.meta.url` is http(s) (browsers, and bundlers,
// which see the `new URL(…, import.meta.url)` and ship the file), read from disk in Node. The
// `node:fs` import is hidden from bundlers, which must not try to resolve it for a browser.
// (`initSync` with a compiled module, not wasm-bindgen's loader: the page only downloads one.)
// The other modules import `core` too, and call it only from their functions: none runs before
// this module's evaluation, and so the wasm's initialisation, has ended.
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

export { parseEndpointId } from "./core.js";
export { ApiError, ValidationError, isRetryableError, defaultResponseHandler } from "./response.js";
export { withMiddleware, withProxy } from "./config.js";
export { FalStream } from "./streaming.js";
export { isQueueStatus, isCompletedQueueStatus } from "./queue.js";
export { createFalClient, localModelCache } from "./client.js";

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
