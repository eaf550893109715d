//! Queue API bodies: submit, status (polled or streamed), cancel, webhooks (fal-api.md §8).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The three states a queued request goes through. A failed or cancelled request is `Completed`
/// too, with `error` set on its status (§8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    InQueue,
    InProgress,
    Completed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InQueue => "IN_QUEUE",
            Status::InProgress => "IN_PROGRESS",
            Status::Completed => "COMPLETED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Status::InQueue, Status::InProgress, Status::Completed]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogLevel {
    Stderr,
    Stdout,
    Error,
    Info,
    Warn,
    Debug,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Stderr => "STDERR",
            LogLevel::Stdout => "STDOUT",
            LogLevel::Error => "ERROR",
            LogLevel::Info => "INFO",
            LogLevel::Warn => "WARN",
            LogLevel::Debug => "DEBUG",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        use LogLevel::*;
        [Stderr, Stdout, Error, Info, Warn, Debug]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// One log line of a running request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestLog {
    pub message: String,
    pub level: LogLevel,
    /// Always `"USER"` in fal's API.
    pub source: String,
    /// ISO 8601, UTC.
    pub timestamp: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Metrics {
    /// Seconds the handler ran.
    pub inference_time: Option<f64>,
}

/// The body of submit, status and every status-stream event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueStatus {
    pub status: Status,
    pub request_id: String,
    pub response_url: String,
    pub status_url: String,
    pub cancel_url: String,
    /// Requests ahead of this one; only while `IN_QUEUE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u64>,
    /// `null` unless logs were asked for (`?logs=1`). On the status stream each event carries only
    /// the lines that are new since the previous event; the client accumulates them.
    #[serde(default)]
    pub logs: Option<Vec<RequestLog>>,
    /// Only when `COMPLETED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// Set on a `COMPLETED` request that failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// Present on the submit response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_request_id: Option<String>,
}

/// `status` of a cancel response (§8.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CancelStatus {
    /// A queued request was removed before it started.
    Ok,
    /// A running request was asked to stop; it completes with an error once it has.
    CancellationRequested,
    AlreadyCompleted,
    NotFound,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelResponse {
    pub status: CancelStatus,
}

/// `Result<T>` of `fal.run`, `fal.subscribe` and `queue.result`: `requestId` comes from the
/// `x-fal-request-id` response header, or is `""` when it is absent (§5.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestResult<T> {
    pub data: T,
    #[serde(rename = "requestId")]
    pub request_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WebhookStatus {
    Ok,
    Error,
}

/// What is POSTed to `fal_webhook` when a request completes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookPayload {
    pub request_id: String,
    pub gateway_request_id: String,
    pub status: WebhookStatus,
    /// The result, or the error body of a failed request; `null` when it is not JSON.
    pub payload: Value,
    /// `null` on success, e.g. `"Invalid status code: 422"` on failure.
    pub error: Option<String>,
    /// Why `payload` is `null` although the request produced a body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_error: Option<String>,
}

/// `x-fal-queue-priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum QueuePriority {
    /// Served first.
    #[default]
    Normal,
    Low,
}

impl QueuePriority {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "normal" => Some(QueuePriority::Normal),
            "low" => Some(QueuePriority::Low),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            QueuePriority::Normal => "normal",
            QueuePriority::Low => "low",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_in_queue_status_has_a_position_and_null_logs() {
        let s = QueueStatus {
            status: Status::InQueue,
            request_id: "rid".into(),
            response_url: "u/requests/rid".into(),
            status_url: "u/requests/rid/status".into(),
            cancel_url: "u/requests/rid/cancel".into(),
            queue_position: Some(2),
            logs: None,
            metrics: None,
            error: None,
            error_type: None,
            gateway_request_id: None,
        };
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({"status":"IN_QUEUE","request_id":"rid","response_url":"u/requests/rid",
                   "status_url":"u/requests/rid/status","cancel_url":"u/requests/rid/cancel",
                   "queue_position":2,"logs":null})
        );
    }

    #[test]
    fn a_completed_status_parses_with_metrics_and_error() {
        let s: QueueStatus = serde_json::from_value(json!({
            "status":"COMPLETED","request_id":"r","response_url":"a","status_url":"b","cancel_url":"c",
            "logs":[{"message":"m","level":"INFO","source":"USER","timestamp":"2026-01-01T00:00:00.000Z"}],
            "metrics":{"inference_time":1.5},"error":"boom","error_type":"runner_server_error"}))
        .unwrap();
        assert_eq!(s.status, Status::Completed);
        assert_eq!(s.metrics.unwrap().inference_time, Some(1.5));
        assert_eq!(s.logs.unwrap()[0].level, LogLevel::Info);
        assert_eq!(s.error.as_deref(), Some("boom"));
    }

    #[test]
    fn results_carry_request_id_in_camel_case() {
        let r = RequestResult {
            data: json!({"a":1}),
            request_id: "rid".into(),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"data":{"a":1},"requestId":"rid"}"#
        );
    }

    #[test]
    fn cancel_statuses_are_screaming_case() {
        let body = serde_json::to_string(&CancelResponse {
            status: CancelStatus::CancellationRequested,
        })
        .unwrap();
        assert_eq!(body, r#"{"status":"CANCELLATION_REQUESTED"}"#);
        assert_eq!(
            serde_json::to_string(&CancelStatus::AlreadyCompleted).unwrap(),
            r#""ALREADY_COMPLETED""#
        );
    }

    #[test]
    fn webhook_payloads_match_fals_documented_shape() {
        let w = WebhookPayload {
            request_id: "r".into(),
            gateway_request_id: "r".into(),
            status: WebhookStatus::Error,
            payload: json!({"detail":[{"loc":["body","model_name"],"msg":"field required","type":"value_error.missing"}]}),
            error: Some("Invalid status code: 422".into()),
            payload_error: None,
        };
        let v = serde_json::to_value(&w).unwrap();
        assert_eq!(v["status"], "ERROR");
        assert_eq!(v["error"], "Invalid status code: 422");
        assert!(v.get("payload_error").is_none());
    }

    #[test]
    fn priorities_order_normal_first() {
        assert!(QueuePriority::Normal < QueuePriority::Low);
        assert_eq!(QueuePriority::parse("low"), Some(QueuePriority::Low));
        assert_eq!(QueuePriority::parse("bogus"), None);
    }
}
