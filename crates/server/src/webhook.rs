//! Webhook delivery: at least once, with retries and exponential backoff, surviving restarts
//! (the pending deliveries are rows in SQLite, written in the same transaction as the result).

use std::time::Duration;

use rusqlite::params;
use tokio_util::sync::CancellationToken;

use crate::db::{Db, now};
use crate::outbound::Outbound;

const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_BACKOFF_SECS: f64 = 3600.0;

/// Delivers due webhooks until `stop` is cancelled.
pub async fn run(
    db: Db,
    outbound: Outbound,
    base: Duration,
    max_attempts: u32,
    stop: CancellationToken,
) {
    loop {
        let due = db
            .call(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT request_id, url, body, attempts FROM webhooks
                     WHERE delivered_at IS NULL AND failed = 0 AND next_at <= ?1 ORDER BY next_at LIMIT 16",
                )?;
                let rows = stmt.query_map([now()], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Vec<u8>>(2)?, r.get::<_, i64>(3)? as u32))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await;
        let due = match due {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("could not read pending webhooks: {e}");
                Vec::new()
            }
        };
        let idle = due.is_empty();
        for (id, url, body, attempts) in due {
            let outcome = deliver(&outbound, &id, &url, body).await;
            let attempt = attempts + 1;
            let id2 = id.clone();
            let update = match &outcome {
                Ok(()) => {
                    tracing::info!(request_id = %id, attempt, "webhook delivered");
                    db.call(move |c| c.execute("UPDATE webhooks SET delivered_at = ?2, attempts = ?3 WHERE request_id = ?1", params![id2, now(), attempt])).await
                }
                Err(err) => {
                    let failed = attempt >= max_attempts;
                    let delay =
                        (base.as_secs_f64() * 2f64.powi(attempt as i32 - 1)).min(MAX_BACKOFF_SECS);
                    tracing::warn!(request_id = %id, attempt, failed, "webhook delivery failed: {err}");
                    let err = err.clone();
                    db.call(move |c| {
                        c.execute(
                            "UPDATE webhooks SET attempts = ?2, failed = ?3, next_at = ?4, last_error = ?5 WHERE request_id = ?1",
                            params![id2, attempt, failed, now() + delay, err],
                        )
                    })
                    .await
                }
            };
            if let Err(e) = update {
                tracing::error!(request_id = %id, "could not record a webhook attempt: {e}");
            }
        }
        if idle {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// One attempt. A receiver at a private address is refused like any other URL a caller names
/// (and the refusal is retried like a failure: the operator may allow private URLs and restart).
async fn deliver(outbound: &Outbound, id: &str, url: &str, body: Vec<u8>) -> Result<(), String> {
    let url = outbound.check(url).map_err(|e| e.to_string())?;
    let res = outbound
        .client()
        .post(url)
        .header("content-type", "application/json")
        .header("x-fal-webhook-request-id", id)
        .header("x-fal-webhook-timestamp", (now() as u64).to_string())
        .timeout(ATTEMPT_TIMEOUT)
        .body(body)
        .send()
        .await
        .map_err(crate::outbound::describe)?;
    if res.status().is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {}", res.status()))
    }
}
