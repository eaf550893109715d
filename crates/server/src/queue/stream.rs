//! `GET …/requests/{id}/status/stream`: one `data:` event per status change (state, queue
//! position, new log lines), a keep-alive comment every 15 s, and the end of the stream right
//! after the `COMPLETED` event (fal-api.md §8.6).

use std::time::Duration;

use tokio::time::Instant;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use fresco_protocol::queue::{QueueStatus, Status};
use fresco_protocol::sse;
use tokio::sync::{broadcast, mpsc};

use super::{Queue, store};

const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(15);
/// A waiting request's position is looked up again at most this often when others move. Its
/// own changes are sent at once. Without the limit every stream would query the database on
/// every claim: with many followers, the server spent its time answering them (measured in
/// `cargo xtask bench load`).
const POSITION_EVERY: Duration = Duration::from_millis(100);

pub fn response(queue: Queue, app: String, id: String, logs: bool) -> Response {
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let updates = queue.subscribe();
    tokio::spawn(async move {
        if let Err(e) = run(queue, app, id, logs, updates, tx).await {
            tracing::debug!("status stream ended: {e}");
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|b| b.map(Ok::<_, std::convert::Infallible>))
    });
    let mut res = Response::new(Body::from_stream(stream));
    *res.status_mut() = StatusCode::OK;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}

#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    #[error("the client went away")]
    Gone,
    #[error("{0}")]
    Db(#[from] crate::db::DbError),
}

async fn run(
    queue: Queue,
    app: String,
    id: String,
    logs: bool,
    mut updates: broadcast::Receiver<super::Update>,
    tx: mpsc::Sender<Bytes>,
) -> Result<(), StreamEnd> {
    let mut sent_logs = 0u64;
    let mut last: Option<(Status, Option<u64>)> = None;
    let mut keep_alive_at = Instant::now() + KEEP_ALIVE_EVERY;
    loop {
        let looked = Instant::now();
        let (a, i, from) = (app.clone(), id.clone(), sent_logs);
        let current: Option<QueueStatus> = queue
            .db()
            .call(move |c| {
                let Some(s) = store::state(c, &i)?.filter(|s| s.app == a) else {
                    return Ok(None);
                };
                let new_logs = if logs {
                    Some(store::logs_since(c, &i, from)?)
                } else {
                    None
                };
                store::status_body(c, &s, new_logs).map(Some)
            })
            .await?;
        // The request was deleted (results expire): nothing more will come.
        let Some(status) = current else { return Ok(()) };
        let new_lines = status.logs.as_ref().map_or(0, Vec::len) as u64;
        let key = (status.status, status.queue_position);
        if last != Some(key) || new_lines > 0 {
            sent_logs += new_lines;
            last = Some(key);
            let data = serde_json::to_string(&status).unwrap_or_default();
            tx.send(Bytes::from(sse::format_event(&data)))
                .await
                .map_err(|_| StreamEnd::Gone)?;
            keep_alive_at = Instant::now() + KEEP_ALIVE_EVERY;
        }
        if status.status == Status::Completed {
            return Ok(());
        }
        let waiting = status.status == Status::InQueue;
        // Waits for a change of this request (then looks at once), or for the queue to move
        // while it waits (then looks no sooner than POSITION_EVERY after the last look).
        let mut moved = false;
        loop {
            let position_due = looked + POSITION_EVERY;
            tokio::select! {
                r = updates.recv() => match r {
                    Ok(u) if *u.id == *id => break,
                    Ok(u) => moved |= waiting && u.moves_queue,
                    // Missed announcements may have been ours.
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
                _ = tokio::time::sleep_until(position_due), if moved => break,
                _ = tokio::time::sleep_until(keep_alive_at) => {
                    tx.send(Bytes::from_static(sse::KEEP_ALIVE.as_bytes())).await.map_err(|_| StreamEnd::Gone)?;
                    keep_alive_at = Instant::now() + KEEP_ALIVE_EVERY;
                }
                _ = tx.closed() => return Err(StreamEnd::Gone),
            }
        }
    }
}
