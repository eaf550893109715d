// Errors and responses (fal-js's response.ts, with retry.ts's verdict on an error): the error
// classes a failed call throws, which failures are worth another try, and how a response becomes
// a result.

// Node's and undici's codes for a network failure worth another try, anywhere in a cause chain.
const RETRYABLE_NETWORK_CODES = new Set(
  "ECONNABORTED ECONNREFUSED ECONNRESET EAI_AGAIN EHOSTUNREACH ENETUNREACH ENOTFOUND EPIPE ETIMEDOUT UND_ERR_BODY_TIMEOUT UND_ERR_CONNECT_TIMEOUT UND_ERR_HEADERS_TIMEOUT UND_ERR_SOCKET".split(
    " ",
  ),
);

export class ApiError extends Error {
  constructor({ message, status, body, requestId, timeoutType }) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
    this.requestId = requestId || "";
    this.timeoutType = timeoutType;
  }

  /** A start timeout (`startTimeout`) expired on the server: never retried. */
  get isUserTimeout() {
    return this.status === 504 && this.timeoutType === "user";
  }
}

export class ValidationError extends ApiError {
  constructor(args) {
    super(args);
    this.name = "ValidationError";
  }

  get fieldErrors() {
    const detail = this.body?.detail;
    if (typeof detail === "string") return [{ loc: ["body"], msg: detail, type: "value_error" }];
    return detail || [];
  }

  getFieldErrors(field) {
    return this.fieldErrors.filter((e) => e.loc[e.loc.length - 1] === field);
  }
}

/** `err` would be retried, given the retryable HTTP statuses. */
export function isRetryableError(error, retryableStatusCodes) {
  if (error instanceof ApiError) {
    return !error.isUserTimeout && retryableStatusCodes.includes(error.status);
  }
  return isRetryableNetworkError(error);
}

// A network failure is retried when a Node/undici error code anywhere in its `cause` chain says
// so, or it is undici's "fetch failed"; never an abort or a timeout. Browsers' "Failed to fetch"
// is not retried (as in the original): it is also what a CORS refusal looks like.
function isRetryableNetworkError(error) {
  const seen = new Set();
  let coded = false;
  for (let e = error; e && typeof e === "object" && !seen.has(e); e = e.cause) {
    seen.add(e);
    if (e.name === "AbortError" || e.name === "TimeoutError") return false;
    if (RETRYABLE_NETWORK_CODES.has(e.code)) coded = true;
  }
  return coded || (error instanceof TypeError && /fetch failed/i.test(error.message));
}

export async function defaultResponseHandler(response) {
  const { status, statusText } = response;
  const contentType = response.headers.get("Content-Type") ?? "";
  const requestId = response.headers.get("x-fal-request-id") ?? "";
  const timeoutType = response.headers.get("x-fal-request-timeout-type") ?? undefined;
  if (!response.ok) {
    if (contentType.includes("application/json")) {
      const body = await response.json();
      const ErrorType = status === 422 ? ValidationError : ApiError;
      // fresco: fal's error bodies carry `detail`, not `message`; the original then falls back
      // to `statusText`, which is empty over HTTP/2. Ours says what went wrong.
      const message = body?.message || describeDetail(body?.detail) || statusText || `HTTP ${status}`;
      throw new ErrorType({ message, status, body, requestId, timeoutType });
    }
    throw new ApiError({ message: `HTTP ${status}: ${statusText}`, status, requestId, timeoutType });
  }
  if (contentType.includes("application/json")) return response.json();
  if (contentType.includes("application/octet-stream")) return response.arrayBuffer();
  return response.text();
}

function describeDetail(detail) {
  if (typeof detail === "string") return detail;
  const first = Array.isArray(detail) ? detail[0] : undefined;
  if (!first || typeof first.msg !== "string") return "";
  const loc = Array.isArray(first.loc) ? first.loc.filter((p) => p !== "body").join(".") : "";
  return loc ? `${loc}: ${first.msg}` : first.msg;
}

export async function resultResponseHandler(response) {
  const data = await defaultResponseHandler(response);
  return { data, requestId: response.headers.get("x-fal-request-id") || "" };
}
