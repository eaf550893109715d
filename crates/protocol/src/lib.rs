//! The fal wire protocol, as `@fal-ai/client` 1.10.1 and `@fal-ai/server-proxy` 1.2.1 speak it
//! (see `../shared/reference/fal-api.md`), and the schemas of the endpoints fresco serves.
//!
//! Pure: no I/O, builds for `wasm32-unknown-unknown` and natively. The server and the npm module
//! both take their URLs, bodies and validation from here, so the wire format lives in one place:
//! endpoint ids (`endpoint`), URLs (`urls`), server-sent events (`sse`), the queue's and storage's
//! bodies (`queue`, `storage`, `headers`), the schemas of the endpoints fresco serves and their 422s
//! (`endpoints`, `validate`, `error`), and why a call failed, as fal answers it (`failure`).
//! Without the default `std` feature only what the npm module's client links is built — endpoint
//! ids, URLs, server-sent events — on `core` and `alloc`.

#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod endpoint;
pub mod sse;
pub mod text;
pub mod urls;

#[cfg(feature = "std")]
pub mod endpoints;
#[cfg(feature = "std")]
pub mod error;
#[cfg(feature = "std")]
pub mod failure;
#[cfg(feature = "std")]
pub mod headers;
#[cfg(feature = "std")]
pub mod queue;
#[cfg(feature = "std")]
pub mod storage;
#[cfg(feature = "std")]
pub mod validate;

pub use endpoint::{EndpointId, InvalidAppId};
#[cfg(feature = "std")]
pub use error::{ErrorBody, Loc, ValidationErrorBody, ValidationErrorItem};
#[cfg(feature = "std")]
pub use queue::{QueueStatus, RequestLog, RequestResult, Status};
