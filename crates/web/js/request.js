// Requests (fal-js's request.ts, retry.ts and utils.ts's URLs): one call to the API — its URL,
// headers and body, sent through the configured fetch and middleware, retried with backoff.

import * as core from "./core.js";
import { DEFAULT_RETRYABLE_STATUS_CODES, isBrowser, isCloudflareWorkers, resolveCredentials } from "./config.js";
import { isRetryableError } from "./response.js";

const VERSION = "0.1.0";
// fresco: names itself after the client it mirrors (servers that key on the prefix still match).
const USER_AGENT = `@fal-ai/client/1.10.1 fresco/${VERSION}`;
const MIN_REQUEST_TIMEOUT_SECONDS = 1;

// Retries (fal-api.md §6): what each operation changes of the configured options (`result`'s are
// `submit`'s).
const SUBMIT_RETRY = { maxRetries: 3, baseDelay: 1000, maxDelay: 60000, retryableStatusCodes: DEFAULT_RETRYABLE_STATUS_CODES };
const RETRY_BY_OPERATION = {
  run: { maxRetries: 3, baseDelay: 500, maxDelay: 15000 },
  submit: SUBMIT_RETRY,
  status: { maxRetries: 5, baseDelay: 1000, maxDelay: 30000, retryableStatusCodes: [500, ...DEFAULT_RETRYABLE_STATUS_CODES] },
  result: SUBMIT_RETRY,
};

// fresco: an abort during a backoff ends it at once (the original sleeps it out first).
const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    const onAbort = () => (clearTimeout(timer), reject(signal.reason));
    const timer = setTimeout(() => (signal?.removeEventListener("abort", onAbort), resolve()), ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });

/** A request's body: the JSON input, unless the method is GET or there is no input. */
export const jsonBody = (method, input) => (method.toLowerCase() !== "get" && input ? JSON.stringify(input) : undefined);

/** The delay before retry `attempt` (0-based): exponential, capped, ±25 % jitter. */
function backoffDelay(attempt, { baseDelay, backoffMultiplier, maxDelay, enableJitter }) {
  const delay = Math.min(baseDelay * backoffMultiplier ** attempt, maxDelay);
  return enableJitter ? Math.max(0, delay + 0.25 * delay * (Math.random() * 2 - 1)) : delay;
}

/** One request, retried per the client's retry options and the operation's (`options.operation`). */
export async function dispatchRequest({ method, targetUrl, input, config, headers = {}, options = {} }) {
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
export function buildUrl(id, options = {}) {
  const method = (options.method ?? "post").toLowerCase();
  const params = { ...options.query, ...(method === "get" ? options.input : {}) };
  return core.buildUrl(id, options.path, options.subdomain, new URLSearchParams(params).toString());
}

export function requestTimeoutHeader(startTimeout) {
  if (startTimeout === undefined) return {};
  if (typeof startTimeout !== "number" || Number.isNaN(startTimeout)) {
    throw new Error(`Timeout must be a number, got ${startTimeout}`);
  }
  if (startTimeout <= MIN_REQUEST_TIMEOUT_SECONDS) {
    throw new Error(`Timeout must be greater than ${MIN_REQUEST_TIMEOUT_SECONDS} seconds`);
  }
  return { "x-fal-request-timeout": String(startTimeout) };
}
