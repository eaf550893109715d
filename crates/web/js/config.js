// Configuration and middleware (fal-js's config.ts, middleware.ts and runtime.ts): a client's
// settings with their defaults, the proxy middleware, and where the code runs.

import { defaultResponseHandler } from "./response.js";

const TARGET_URL_HEADER = "x-fal-target-url";

// Retries (fal-api.md §6): the defaults (what each operation changes of them: request.js).
export const DEFAULT_RETRYABLE_STATUS_CODES = [429, 502, 503, 504];
const DEFAULT_RETRY_OPTIONS = {
  maxRetries: 3,
  baseDelay: 1000,
  maxDelay: 30000,
  backoffMultiplier: 2,
  retryableStatusCodes: DEFAULT_RETRYABLE_STATUS_CODES,
  enableJitter: true,
};

export const isBrowser = () => typeof window !== "undefined" && typeof window.document !== "undefined";
export const isCloudflareWorkers = () =>
  typeof navigator !== "undefined" && navigator.userAgent === "Cloudflare-Workers";

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

export const resolveCredentials = ({ credentials }) =>
  typeof credentials === "function" ? credentials() : credentials;

export function createConfig(user = {}) {
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
