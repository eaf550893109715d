//! `fresco/echo`: returns its input. For tests and demos of the queue: `delay_ms` makes it take
//! time, `logs` are emitted evenly across that time, and `fail` makes it fail with a given status.

use std::time::Duration;

use axum::http::StatusCode;
use fresco_protocol::error::ValidationErrorItem;
use fresco_protocol::validate::Validator;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::Value;

use super::{Endpoint, Failure, JobContext};

pub const ENDPOINT_ID: &str = "fresco/echo";
/// The longest `delay_ms` accepted (10 minutes).
pub const MAX_DELAY_MS: i128 = 600_000;

pub struct Echo;

/// What the echo was asked to do.
struct Plan {
    delay: Duration,
    logs: Vec<String>,
    fail: Option<Failure>,
}

fn plan(input: &Value) -> Result<Plan, Failure> {
    let mut v = Validator::new(input);
    let delay = v
        .integer("delay_ms", true, Some(0), Some(MAX_DELAY_MS))
        .unwrap_or(0) as u64;
    let mut logs = Vec::new();
    match v.raw("logs") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => logs.push(s.clone()),
                    _ => v.push(ValidationErrorItem::new(
                        vec!["body".into(), "logs".into(), i.into()],
                        "str type expected",
                        "type_error.str",
                    )),
                }
            }
        }
        Some(_) => v.error("logs", "value is not a valid list", "type_error.list"),
    }
    let fail = match v.raw("fail") {
        None | Some(Value::Null) => None,
        Some(Value::String(msg)) => Some(Failure::Internal(msg.clone())),
        Some(Value::Object(spec)) => {
            let status = spec.get("status").and_then(Value::as_u64).unwrap_or(500);
            match StatusCode::from_u16(status as u16)
                .ok()
                .filter(|s| (400..600).contains(&status) && s.as_u16() >= 400)
            {
                Some(code) => {
                    let detail = spec
                        .get("detail")
                        .cloned()
                        .unwrap_or_else(|| Value::String("echo failed".into()));
                    Some(Failure::Status {
                        status: code.as_u16(),
                        detail,
                    })
                }
                None => {
                    v.push(ValidationErrorItem::new(
                        vec!["body".into(), "fail".into(), "status".into()],
                        "ensure this value is an HTTP error status (400 to 599)",
                        "value_error.number.not_in_range",
                    ));
                    None
                }
            }
        }
        Some(_) => {
            v.error(
                "fail",
                "expected a message or {\"status\", \"detail\"}",
                "type_error",
            );
            None
        }
    };
    v.finish().map_err(Failure::Invalid)?;
    Ok(Plan {
        delay: Duration::from_millis(delay),
        logs,
        fail,
    })
}

impl Endpoint for Echo {
    fn run(&self, input: Value, ctx: JobContext) -> BoxFuture<'static, Result<Value, Failure>> {
        async move {
            let plan = plan(&input)?;
            // Logs are spread over the delay: one at the start, the rest evenly after it.
            let slices = plan.logs.len().max(1) as u32;
            let step = plan.delay / slices;
            let mut waited = Duration::ZERO;
            for (i, line) in plan.logs.iter().enumerate() {
                if i > 0 {
                    sleep_or_cancel(&ctx, step).await?;
                    waited += step;
                }
                ctx.info(line.clone());
            }
            sleep_or_cancel(&ctx, plan.delay.saturating_sub(waited)).await?;
            match plan.fail {
                Some(err) => Err(err),
                None => Ok(input),
            }
        }
        .boxed()
    }
}

async fn sleep_or_cancel(ctx: &JobContext, d: Duration) -> Result<(), Failure> {
    if ctx.is_cancelled() {
        return Err(Failure::Cancelled);
    }
    if d.is_zero() {
        return Ok(());
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = ctx.cancelled() => Err(Failure::Cancelled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fresco_protocol::EndpointId;
    use serde_json::json;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    fn ctx() -> (
        JobContext,
        mpsc::UnboundedReceiver<(fresco_protocol::queue::LogLevel, String)>,
        CancellationToken,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let id = EndpointId::parse(ENDPOINT_ID).unwrap();
        (
            JobContext::new("rid".into(), id, tx, cancel.clone()),
            rx,
            cancel,
        )
    }

    #[tokio::test]
    async fn returns_its_input_and_logs_in_order() {
        let (ctx, mut rx, _) = ctx();
        let input = json!({"x": [1, 2], "logs": ["a", "b"], "delay_ms": 10});
        let out = Echo.run(input.clone(), ctx).await.unwrap();
        assert_eq!(out, input);
        assert_eq!(rx.recv().await.unwrap().1, "a");
        assert_eq!(rx.recv().await.unwrap().1, "b");
    }

    #[tokio::test]
    async fn fails_as_asked() {
        let (c, _rx, _) = ctx();
        let err = Echo
            .run(json!({"fail": {"status": 503, "detail": "busy"}}), c)
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE.as_u16());
        assert_eq!(err.body(), json!({"detail": "busy"}));
        let (c, _rx, _) = ctx();
        let err = Echo.run(json!({"fail": "boom"}), c).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR.as_u16());
        assert_eq!(err.message(), "boom");
    }

    #[tokio::test]
    async fn bad_controls_are_a_422_naming_them() {
        let (c, _rx, _) = ctx();
        let err = Echo
            .run(json!({"delay_ms": "soon", "logs": [1]}), c)
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY.as_u16());
        assert_eq!(err.body()["detail"][0]["loc"], json!(["body", "delay_ms"]));
        assert_eq!(err.body()["detail"][1]["loc"], json!(["body", "logs", 0]));
    }

    #[tokio::test]
    async fn stops_when_cancelled() {
        let (c, _rx, cancel) = ctx();
        let run = tokio::spawn(Echo.run(json!({"delay_ms": 60_000}), c));
        tokio::time::sleep(Duration::from_millis(20)).await;
        cancel.cancel();
        let err = tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert_eq!(
            err.error_type(),
            Some(fresco_protocol::error::error_type::CLIENT_CANCELLED)
        );
    }
}
