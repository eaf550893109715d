//! The queue's HTTP routes, at queue.fal.run's paths and shapes, and the synchronous run path.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use fresco_protocol::EndpointId;
use fresco_protocol::error::{ErrorBody, ValidationErrorItem};
use fresco_protocol::headers;
use fresco_protocol::queue::{CancelStatus, QueuePriority, Status};
use serde_json::json;

use super::{CancelEffect, NewRequest, Queue, ResultLookup};
use crate::http::{self, RouteError, header_str};

/// Who submits: the base URL they reached this server by (outputs are stored under it) and the
/// API key's owner id (`None` on a server without keys).
pub struct Caller {
    pub base_url: String,
    pub owner: Option<String>,
}

/// Query parameters as pairs.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

fn query_flag(query: Option<&str>, name: &str) -> bool {
    query_pairs(query)
        .iter()
        .any(|(k, v)| k == name && matches!(v.as_str(), "1" | "true" | "True"))
}

fn with_request_id(mut res: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        res.headers_mut().insert(headers::REQUEST_ID, v);
    }
    res
}

/// 404 for an app this server does not run, worded as every failure of the kind is.
fn not_found_app(queue: &Queue, app: &str) -> RouteError {
    let mut served: Vec<&str> = queue.registry().app_ids().collect();
    served.sort_unstable();
    let failure = fresco_protocol::failure::Failure::not_served(app, &served);
    RouteError::from(http::json(StatusCode::NOT_FOUND, &failure.body()))
}

/// A request that does not exist (or is another key's).
pub fn request_not_found(id: &str) -> RouteError {
    RouteError::new(StatusCode::NOT_FOUND, format!("Request {id} not found"))
}

/// The cancel route's answer for a request that does not exist (or is another key's).
pub fn cancel_not_found(id: &str) -> RouteError {
    RouteError::from(cancel_answer(
        id,
        StatusCode::NOT_FOUND,
        CancelStatus::NotFound,
        "Request not found",
    ))
}

fn cancel_answer(id: &str, code: StatusCode, status: CancelStatus, detail: &str) -> Response {
    with_request_id(
        http::json(code, &json!({ "status": status, "detail": detail })),
        id,
    )
}

/// Reads what a submit carries besides the input: webhook, priority, start timeout, hint,
/// lifecycle. Every bad value is a 422 naming its header or query parameter.
fn submission(
    endpoint: &EndpointId,
    input: Vec<u8>,
    query: Option<&str>,
    hdrs: &HeaderMap,
    caller: Caller,
) -> Result<NewRequest, RouteError> {
    let mut errors = Vec::new();
    let webhook_url = query_pairs(query)
        .into_iter()
        .find(|(k, _)| k == "fal_webhook")
        .map(|(_, v)| v);
    if let Some(w) = &webhook_url
        && !url::Url::parse(w)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
    {
        errors.push(ValidationErrorItem::new(
            vec!["query".into(), "fal_webhook".into()],
            "invalid webhook URL: expected an absolute http(s) URL",
            "value_error.url",
        ));
    }
    let priority = match header_str(hdrs, headers::QUEUE_PRIORITY) {
        None => QueuePriority::Normal,
        Some(p) => QueuePriority::parse(p).unwrap_or_else(|| {
            errors.push(ValidationErrorItem::new(
                vec!["header".into(), headers::QUEUE_PRIORITY.into()],
                "value is not a valid enumeration member; permitted: 'normal', 'low'",
                "type_error.enum",
            ));
            QueuePriority::Normal
        }),
    };
    let start_timeout = match header_str(hdrs, headers::REQUEST_TIMEOUT) {
        None => None,
        Some(t) => match t.trim().parse::<f64>() {
            Ok(secs) if secs.is_finite() && secs > 0.0 => Some(secs),
            _ => {
                errors.push(ValidationErrorItem::new(
                    vec!["header".into(), headers::REQUEST_TIMEOUT.into()],
                    "the start timeout must be a positive number of seconds",
                    "value_error.number",
                ));
                None
            }
        },
    };
    let lifecycle = header_str(hdrs, headers::OBJECT_LIFECYCLE_PREFERENCE).map(str::to_owned);
    if let Some(l) = &lifecycle
        && serde_json::from_str::<fresco_protocol::storage::ObjectLifecycle>(l).is_err()
    {
        errors.push(ValidationErrorItem::new(
            vec!["header".into(), headers::OBJECT_LIFECYCLE_PREFERENCE.into()],
            "expected a JSON object like {\"expiration_duration_seconds\": 3600}",
            "value_error.json",
        ));
    }
    if !errors.is_empty() {
        return Err(RouteError::from(http::json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &fresco_protocol::ValidationErrorBody { detail: errors },
        )));
    }
    Ok(NewRequest {
        id: uuid::Uuid::new_v4().to_string(),
        endpoint: endpoint.to_string(),
        app: endpoint.app_id(),
        input,
        priority,
        start_timeout,
        webhook_url,
        base_url: caller.base_url,
        hint: header_str(hdrs, headers::RUNNER_HINT).map(str::to_owned),
        lifecycle,
        owner: caller.owner,
    })
}

/// Reads and checks a JSON input body; an absent body is the input `null`. A body must say it
/// is JSON: a page on another site can send `text/plain` without asking first.
async fn read_input(body: Body, limit: usize, hdrs: &HeaderMap) -> Result<Vec<u8>, RouteError> {
    let bytes = http::read_body(body, limit).await?;
    if !crate::access::json_content_type(hdrs, bytes.len()) {
        return Err(RouteError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "The input must be sent as Content-Type: application/json",
        ));
    }
    let value = http::parse_json(&bytes)?;
    serde_json::to_vec(&value).map_err(RouteError::internal)
}

/// What submit and run share: the endpoint must be served here, the body must be JSON within the
/// limit, the headers and query must be valid.
async fn accept(
    queue: &Queue,
    endpoint: &EndpointId,
    query: Option<&str>,
    hdrs: &HeaderMap,
    body: Body,
    caller: Caller,
    limit: usize,
) -> Result<NewRequest, RouteError> {
    let app = endpoint.app_id();
    if !queue.registry().contains(&app) {
        return Err(not_found_app(queue, &app));
    }
    let input = read_input(body, limit, hdrs).await?;
    submission(endpoint, input, query, hdrs, caller)
}

/// `POST /{id}`: queue a request.
pub async fn submit(
    queue: &Queue,
    endpoint: EndpointId,
    query: Option<&str>,
    hdrs: &HeaderMap,
    body: Body,
    caller: Caller,
    limit: usize,
) -> Result<Response, RouteError> {
    let req = accept(queue, &endpoint, query, hdrs, body, caller, limit).await?;
    let status = queue.submit(req).await?;
    tracing::info!(request_id = %status.request_id, endpoint = %endpoint, "request queued");
    let id = status.request_id.clone();
    Ok(with_request_id(http::json(StatusCode::OK, &status), &id))
}

/// `GET /{app}/requests/{id}/status[?logs=1]`: 202 while queued or running, 200 once completed.
pub async fn status(
    queue: &Queue,
    app: &str,
    id: &str,
    query: Option<&str>,
) -> Result<Response, RouteError> {
    let logs = query_flag(query, "logs");
    let Some(status) = queue.status(app, id, logs).await? else {
        return Err(request_not_found(id));
    };
    let code = if status.status == Status::Completed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(with_request_id(http::json(code, &status), id))
}

/// `GET /{app}/requests/{id}/status/stream[?logs=1]`: server-sent status events until completed.
pub async fn status_stream(
    queue: &Queue,
    app: &str,
    id: &str,
    query: Option<&str>,
) -> Result<Response, RouteError> {
    let logs = query_flag(query, "logs");
    if queue.status(app, id, false).await?.is_none() {
        return Err(request_not_found(id));
    }
    Ok(with_request_id(
        super::stream::response(queue.clone(), app.to_owned(), id.to_owned(), logs),
        id,
    ))
}

/// The stored answer of a completed request, replayed as the endpoint gave it.
fn replay(
    id: &str,
    status: u16,
    body: Vec<u8>,
    timeout_type: Option<String>,
    error_type: Option<String>,
) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = with_request_id(http::json_bytes(code, body), id);
    if let Some(t) = timeout_type.and_then(|t| HeaderValue::from_str(&t).ok()) {
        res.headers_mut().insert(headers::REQUEST_TIMEOUT_TYPE, t);
    }
    if let Some(t) = error_type.and_then(|t| HeaderValue::from_str(&t).ok()) {
        res.headers_mut().insert(headers::ERROR_TYPE, t);
    }
    res
}

/// `GET /{app}/requests/{id}`: the result.
pub async fn result(queue: &Queue, app: &str, id: &str) -> Result<Response, RouteError> {
    match queue.result(app, id).await? {
        ResultLookup::NotFound => Err(request_not_found(id)),
        ResultLookup::Pending(state) => Err(RouteError::from(with_request_id(
            http::json(
                StatusCode::BAD_REQUEST,
                &ErrorBody::new(format!(
                    "Request is still {}; poll its status until it is COMPLETED",
                    if state == Status::InQueue {
                        "in queue"
                    } else {
                        "in progress"
                    }
                )),
            ),
            id,
        ))),
        ResultLookup::Done {
            status,
            body,
            timeout_type,
            error_type,
        } => Ok(replay(id, status, body, timeout_type, error_type)),
    }
}

/// `PUT /{app}/requests/{id}/cancel`.
pub async fn cancel(queue: &Queue, app: &str, id: &str) -> Result<Response, RouteError> {
    let (code, status, detail) = match queue.cancel(app, id).await? {
        CancelEffect::Removed => (
            StatusCode::ACCEPTED,
            CancelStatus::CancellationRequested,
            "The request was removed from the queue",
        ),
        CancelEffect::Requested => (
            StatusCode::ACCEPTED,
            CancelStatus::CancellationRequested,
            "The running request was asked to stop",
        ),
        CancelEffect::AlreadyCompleted => (
            StatusCode::BAD_REQUEST,
            CancelStatus::AlreadyCompleted,
            "The request has already completed",
        ),
        CancelEffect::NotFound => return Err(cancel_not_found(id)),
    };
    Ok(cancel_answer(id, code, status, detail))
}

/// `POST /run/{id}` (as `fal.run`): runs the request through the same workers and answers with its
/// result directly. If the caller goes away first, the request is cancelled.
pub async fn run(
    queue: &Queue,
    endpoint: EndpointId,
    hdrs: &HeaderMap,
    body: Body,
    caller: Caller,
    limit: usize,
) -> Result<Response, RouteError> {
    let app = endpoint.app_id();
    let mut req = accept(queue, &endpoint, None, hdrs, body, caller, limit).await?;
    req.webhook_url = None;
    req.priority = QueuePriority::Normal;
    let mut updates = queue.subscribe();
    let id = queue.submit(req).await?.request_id;
    let mut guard = CancelOnDrop {
        queue: queue.clone(),
        app: app.clone(),
        id: Some(id.clone()),
    };
    loop {
        if let ResultLookup::Done {
            status,
            body,
            timeout_type,
            error_type,
        } = queue.result(&app, &id).await?
        {
            guard.id = None;
            return Ok(replay(&id, status, body, timeout_type, error_type));
        }
        // Only an announcement of ours can complete it; lagging just means "look again".
        loop {
            match updates.recv().await {
                Ok(u) if *u.id != *id => continue,
                _ => break,
            }
        }
    }
}

/// Cancels a synchronous run whose caller disconnected.
struct CancelOnDrop {
    queue: Queue,
    app: String,
    id: Option<String>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let (queue, app) = (self.queue.clone(), self.app.clone());
            tokio::spawn(async move {
                let _ = queue.cancel(&app, &id).await;
            });
        }
    }
}
