//! Why a call of an endpoint did not answer with its output, as fal answers it: the HTTP status,
//! the body, the short text of the status' `error` field and the `error_type`. The server's
//! endpoints, the engine's calls (natively and in the browser) and the queue all fail through
//! this one type, so each failure is worded once.

use alloc::string::{String, ToString};
use serde_json::Value;

use crate::error::{ErrorBody, ValidationErrorBody, ValidationErrorItem, error_type};

/// The text of a cancelled request's error.
pub const CANCELLED: &str = "Request was cancelled";

/// A failed call.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// 404: the endpoint is not served here (see [`Failure::not_served`]).
    NotServed(String),
    /// 422 with fal's validation body (`{"detail": [{loc, msg, type}]}`).
    Invalid(ValidationErrorBody),
    /// 400 `client_cancelled`: the call was cancelled while it waited or ran.
    Cancelled,
    /// 500 `runner_server_error`: the endpoint failed on its own.
    Internal(String),
    /// 500 `runner_server_error`: the GPU device was lost while the call ran (its reason). The
    /// device is unusable from then on: its holder opens a new one ([`Failure::is_device_lost`]).
    DeviceLost(String),
    /// Any other status, with `{"detail": …}` (an endpoint's own refusal).
    Status { status: u16, detail: Value },
}

/// How a lost GPU device is worded, wherever it is reported.
pub fn device_lost_message(reason: &str) -> String {
    alloc::format!("the GPU device was lost ({reason})")
}

impl Failure {
    /// A 422 on one input field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Failure::Invalid(ValidationErrorBody {
            detail: alloc::vec![ValidationErrorItem::new(
                alloc::vec!["body".into(), field.into()],
                message,
                "value_error",
            )],
        })
    }

    /// 404 for `endpoint`, naming the endpoints that are served.
    pub fn not_served(endpoint: &str, served: &[&str]) -> Self {
        Failure::NotServed(alloc::format!(
            "{endpoint} is not served here: {} are",
            served.join(", ")
        ))
    }

    /// The HTTP status fal answers with.
    pub fn status(&self) -> u16 {
        match self {
            Failure::NotServed(_) => 404,
            Failure::Invalid(_) => 422,
            Failure::Cancelled => 400,
            Failure::Internal(_) | Failure::DeviceLost(_) => 500,
            Failure::Status { status, .. } => *status,
        }
    }

    /// Whether the device the call ran on is gone, so that nothing more can run on it.
    pub fn is_device_lost(&self) -> bool {
        matches!(self, Failure::DeviceLost(_))
    }

    /// The short text of the status' `error` field (and a webhook's `error`).
    pub fn message(&self) -> String {
        match self {
            Failure::NotServed(m) | Failure::Internal(m) => m.clone(),
            Failure::Invalid(body) => body
                .detail
                .first()
                .map_or_else(|| "Validation error".to_string(), |d| d.msg.clone()),
            Failure::Cancelled => CANCELLED.to_string(),
            Failure::DeviceLost(reason) => device_lost_message(reason),
            Failure::Status { detail, .. } => match detail {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            },
        }
    }

    /// fal's `error_type`, where it names one.
    pub fn error_type(&self) -> Option<&'static str> {
        match self {
            Failure::Cancelled => Some(error_type::CLIENT_CANCELLED),
            Failure::Internal(_) | Failure::DeviceLost(_) => Some(error_type::RUNNER_SERVER_ERROR),
            Failure::NotServed(_) | Failure::Invalid(_) | Failure::Status { .. } => None,
        }
    }

    /// The response body.
    pub fn body(&self) -> Value {
        let body = match self {
            Failure::Invalid(body) => serde_json::to_value(body),
            Failure::NotServed(m) => serde_json::to_value(ErrorBody::new(m.clone())),
            Failure::Status { detail, .. } => Ok(serde_json::json!({ "detail": detail })),
            Failure::Cancelled | Failure::Internal(_) | Failure::DeviceLost(_) => {
                let kind = self.error_type().unwrap_or(error_type::RUNNER_SERVER_ERROR);
                serde_json::to_value(ErrorBody::typed(self.message(), kind))
            }
        };
        body.unwrap_or(Value::Null)
    }
}

impl From<ValidationErrorBody> for Failure {
    fn from(body: ValidationErrorBody) -> Self {
        Failure::Invalid(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_failure_answers_as_fal_does() {
        assert_eq!(Failure::Cancelled.status(), 400);
        assert_eq!(
            Failure::Cancelled.body(),
            json!({"detail": "Request was cancelled", "error_type": "client_cancelled"})
        );
        let internal = Failure::Internal("boom".into());
        assert_eq!(internal.body()["detail"], "boom");
        assert_eq!(internal.error_type(), Some("runner_server_error"));
        assert!(!internal.is_device_lost());
        let lost = Failure::DeviceLost("Destroyed: device destroyed".into());
        assert!(lost.is_device_lost());
        assert_eq!(lost.status(), 500);
        assert_eq!(
            lost.body()["detail"],
            "the GPU device was lost (Destroyed: device destroyed)"
        );
        let field = Failure::field("seed", "bad");
        assert_eq!((field.status(), field.message()), (422, "bad".into()));
        assert_eq!(field.body()["detail"][0]["loc"], json!(["body", "seed"]));
        let other = Failure::not_served("a/b", &["c/d", "e/f"]);
        assert_eq!(other.status(), 404);
        assert_eq!(
            other.body(),
            json!({"detail": "a/b is not served here: c/d, e/f are"})
        );
        let own = Failure::Status {
            status: 418,
            detail: json!({"why": 1}),
        };
        assert_eq!(own.body(), json!({"detail": {"why": 1}}));
        assert_eq!((own.status(), own.message()), (418, r#"{"why":1}"#.into()));
    }
}
