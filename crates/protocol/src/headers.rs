//! Header names of the fal wire protocol (fal-api.md §0).

/// The request id of a response: `Result.requestId` is read from it.
pub const REQUEST_ID: &str = "x-fal-request-id";
/// `user` on a 504 means the caller's start timeout expired (the client does not retry it).
pub const REQUEST_TIMEOUT_TYPE: &str = "x-fal-request-timeout-type";
/// Start timeout in seconds, sent on run and submit.
pub const REQUEST_TIMEOUT: &str = "x-fal-request-timeout";
/// `normal` (default) or `low`, sent on every submit.
pub const QUEUE_PRIORITY: &str = "x-fal-queue-priority";
/// A hint for the runner that should take the request.
pub const RUNNER_HINT: &str = "x-fal-runner-hint";
/// Lifecycle of the objects a request creates (JSON), on run and submit.
pub const OBJECT_LIFECYCLE_PREFERENCE: &str = "x-fal-object-lifecycle-preference";
/// Lifecycle of an uploaded object (JSON), on upload initiate.
pub const OBJECT_LIFECYCLE: &str = "x-fal-object-lifecycle";
/// The real target of a request sent to a proxy.
pub const TARGET_URL: &str = "x-fal-target-url";
/// Which proxy forwarded a request.
pub const CLIENT_PROXY: &str = "x-fal-client-proxy";
/// A machine-readable failure category.
pub const ERROR_TYPE: &str = "x-fal-error-type";
/// Every header of the protocol starts with this; a proxy forwards only these.
pub const PREFIX: &str = "x-fal-";
/// The route `@fal-ai/server-proxy` mounts by default.
pub const DEFAULT_PROXY_ROUTE: &str = "/api/fal/proxy";
