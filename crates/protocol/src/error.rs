//! Error bodies: fal's FastAPI-style 422 (`{"detail":[{loc,msg,type}]}`) and its infrastructure
//! errors (`{"detail":"…","error_type":"…"}`) (fal-api.md §5.4, endpoints.md).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One element of a `loc` path: a field name or an array index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Loc {
    Field(String),
    Index(u64),
}

impl From<&str> for Loc {
    fn from(s: &str) -> Self {
        Loc::Field(s.to_owned())
    }
}

impl From<usize> for Loc {
    fn from(i: usize) -> Self {
        Loc::Index(i as u64)
    }
}

/// One validation error, pydantic style.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationErrorItem {
    pub loc: Vec<Loc>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctx: Option<Value>,
}

impl ValidationErrorItem {
    pub fn new(loc: Vec<Loc>, msg: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            loc,
            msg: msg.into(),
            kind: kind.into(),
            ctx: None,
        }
    }

    /// An error on a top-level field of the request body: `loc: ["body", field]`.
    pub fn body_field(field: &str, msg: impl Into<String>, kind: impl Into<String>) -> Self {
        Self::new(vec!["body".into(), field.into()], msg, kind)
    }

    pub fn with_ctx(mut self, ctx: Value) -> Self {
        self.ctx = Some(ctx);
        self
    }
}

/// The body of a 422 answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationErrorBody {
    pub detail: Vec<ValidationErrorItem>,
}

/// `ValidationError.fieldErrors` of the client, from any 422 body: `detail` as a list of items,
/// or a string `detail` as one item on `["body"]` of type `value_error`, or nothing (§5.3).
pub fn field_errors(body: &Value) -> Vec<ValidationErrorItem> {
    match body.get("detail") {
        Some(Value::String(msg)) => vec![ValidationErrorItem::new(
            vec!["body".into()],
            msg.clone(),
            "value_error",
        )],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| serde_json::from_value(i.clone()).ok())
            .collect(),
        _ => Vec::new(),
    }
}

/// `ValidationError.getFieldErrors(field)`: the errors whose last `loc` element is `field`.
pub fn field_errors_for(body: &Value, field: &str) -> Vec<ValidationErrorItem> {
    field_errors(body)
        .into_iter()
        .filter(|e| matches!(e.loc.last(), Some(Loc::Field(f)) if f == field))
        .collect()
}

/// The body of an infrastructure error (timeouts, cancellations, crashes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
}

impl ErrorBody {
    pub fn new(detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
            error_type: None,
        }
    }

    pub fn typed(detail: impl Into<String>, error_type: &str) -> Self {
        Self {
            detail: detail.into(),
            error_type: Some(error_type.to_owned()),
        }
    }
}

/// The `error_type` values this project sends (a subset of fal's documented categories).
pub mod error_type {
    /// The request did not start before its `x-fal-request-timeout` (a 504 with timeout type `user`).
    pub const REQUEST_TIMEOUT: &str = "request_timeout";
    /// The caller cancelled the request.
    pub const CLIENT_CANCELLED: &str = "client_cancelled";
    /// The worker running the request went away (the server was killed) too many times.
    pub const RUNNER_DISCONNECTED: &str = "runner_disconnected";
    /// The endpoint's handler failed.
    pub const RUNNER_SERVER_ERROR: &str = "runner_server_error";
    /// Something went wrong in the server itself.
    pub const INTERNAL_ERROR: &str = "internal_error";
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validation_bodies_have_fastapi_shape() {
        let body = ValidationErrorBody {
            detail: vec![
                ValidationErrorItem::body_field("prompt", "field required", "value_error.missing"),
                ValidationErrorItem::new(
                    vec!["body".into(), "loras".into(), 0usize.into()],
                    "bad",
                    "value_error",
                )
                .with_ctx(json!({"limit_value": 1})),
            ],
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"detail":[
                {"loc":["body","prompt"],"msg":"field required","type":"value_error.missing"},
                {"loc":["body","loras",0],"msg":"bad","type":"value_error","ctx":{"limit_value":1}}]})
        );
        let back: ValidationErrorBody =
            serde_json::from_value(serde_json::to_value(&body).unwrap()).unwrap();
        assert_eq!(back, body);
    }

    /// Appendix A, t2.js: the two 422 shapes and what `fieldErrors` makes of them.
    #[test]
    fn field_errors_of_the_transcript() {
        let list = json!({"detail":[{"loc":["body","prompt"],"msg":"field required","type":"value_error.missing"},
                                    {"loc":["body","image_url"],"msg":"bad","type":"value_error"}]});
        assert_eq!(field_errors(&list).len(), 2);
        let prompt = field_errors_for(&list, "prompt");
        assert_eq!(prompt.len(), 1);
        assert_eq!(prompt[0].msg, "field required");
        assert!(
            field_errors_for(&list, "body").is_empty(),
            "only the last loc element counts"
        );

        let text = json!({"detail": "bad thing"});
        assert_eq!(
            serde_json::to_value(field_errors(&text)).unwrap(),
            json!([{"loc":["body"],"msg":"bad thing","type":"value_error"}])
        );
        assert!(field_errors(&json!({"message": "x"})).is_empty());
    }

    #[test]
    fn infrastructure_errors_name_their_type() {
        let e = ErrorBody::typed("Request timed out", error_type::REQUEST_TIMEOUT);
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"detail":"Request timed out","error_type":"request_timeout"})
        );
    }
}
