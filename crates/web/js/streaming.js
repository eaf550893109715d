// Streams (fal-js's streaming.ts and auth.ts): `fal.stream` and `queue.streamStatus`, a request
// whose response is read as it arrives — server-sent events, or raw chunks.

import * as core from "./core.js";
import { dispatchRequest, jsonBody, buildUrl } from "./request.js";
import { ApiError, defaultResponseHandler } from "./response.js";

const TOKEN_EXPIRATION_SECONDS = 120;

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
