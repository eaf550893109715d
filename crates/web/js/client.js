// The client (fal-js's client.ts): `createFalClient`, one configuration's storage, queue and
// streaming clients with `run` and `subscribe`, and the local mode's routing.

import { createConfig } from "./config.js";
import { buildUrl, dispatchRequest, requestTimeoutHeader } from "./request.js";
import { resultResponseHandler } from "./response.js";
import { createStorageClient, lifecycleHeader } from "./storage.js";
import { FalStream } from "./streaming.js";
import { createQueueClient, subscriber } from "./queue.js";

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

    subscribe: subscriber(queue),
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
      ? (local ??= import("./local.js").then((m) => m.createLocalClient(options))).then((l) =>
          (l.queue[name] ?? l[name])(endpointId, opts),
        )
      : target[name](endpointId, opts);
  const queue = { ...client.queue };
  for (const name of ["submit", "status", "streamStatus", "subscribeToStatus", "result", "cancel"]) queue[name] = route(client.queue, name);
  return { ...client, queue, run: route(client, "run"), subscribe: route(client, "subscribe") };
}

/**
 * fresco: the local engine's model cache (the origin-private file system's `fresco-cache/`):
 * `usage()` → `{bytes, files: [{url, bytes, complete}]}`, `clear()` removes every cached file.
 * (Pure: a bundle that never imports it leaves it out.)
 */
export const localModelCache = /* @__PURE__ */ Object.freeze({
  usage: () => import("./local.js").then((m) => m.cacheUsage()),
  clear: () => import("./local.js").then((m) => m.clearCache()),
});
