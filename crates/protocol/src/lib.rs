//! The fal wire protocol, as `@fal-ai/client` 1.10.1 and `@fal-ai/server-proxy` 1.2.1 speak it
//! (see `../shared/reference/fal-api.md`), and the schemas of the endpoints fresco serves.
//!
//! Pure: no I/O, builds for `wasm32-unknown-unknown` and natively. The server and the npm module
//! both take their URLs, bodies and validation from here, so the wire format lives in one place.

pub mod endpoint;
pub mod endpoints;
pub mod error;
pub mod headers;
pub mod queue;
pub mod retry;
pub mod sse;
pub mod storage;
pub mod text;
pub mod urls;
pub mod validate;

pub use endpoint::{EndpointId, InvalidAppId};
pub use error::{ErrorBody, Loc, ValidationErrorBody, ValidationErrorItem};
pub use queue::{QueueStatus, RequestLog, RequestResult, Status};
