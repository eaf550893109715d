// Queue (fal-js's queue.ts, with client.ts's `subscribe`): submit a request, follow its status by
// polling or by a stream of events, fetch its result, cancel it. `subscriber` makes `subscribe`
// for any queue that answers the same way, the local mode's too (local.js).

import * as core from "./core.js";
import { dispatchRequest, buildUrl, requestTimeoutHeader } from "./request.js";
import { resultResponseHandler } from "./response.js";
import { lifecycleHeader } from "./storage.js";
import { FalStream } from "./streaming.js";

const DEFAULT_POLL_INTERVAL = 500;

export const timedOut = (timeout) => new Error(`Client timed out waiting for the request to complete after ${timeout}ms`);

/** `subscribe` over `queue`: submit, follow the status until COMPLETED, then fetch the result. */
export const subscriber = (queue) => async (endpointId, options = {}) => {
  const { request_id: requestId } = await queue.submit(endpointId, options);
  options.onEnqueue?.(requestId);
  await queue.subscribeToStatus(endpointId, { requestId, ...options });
  // fresco: the abort signal reaches the result request too.
  return queue.result(endpointId, { requestId, abortSignal: options.abortSignal });
};

export function createQueueClient(config, storage) {
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

export const isQueueStatus = (obj) => obj && obj.status && obj.response_url;

export const isCompletedQueueStatus = (obj) => isQueueStatus(obj) && obj.status === "COMPLETED";
