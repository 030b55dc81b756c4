//! Passing the upstream's answer to a `/v1` client, read whole or streamed as it arrives, and
//! settling the request's budget ticket (and its limit slot) at what the request cost.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures::StreamExt;
use saasllm_shared::db::spend::Usage;
use saasllm_shared::domain::outcomes::CostSource;
use serde_json::Value;

use saasllm_worker::reported_cost;

use super::OpenAiError;
use super::usage::{Pricing, StreamRecorder, usage_of};
use crate::budget::Ticket;
use crate::limits::Admission;

/// The 502 for a request the upstream never answered; its ticket is settled at no cost.
pub(crate) fn upstream_unreachable(ticket: Ticket, error: reqwest::Error) -> OpenAiError {
    ticket.finish(Usage {
        error: Some(error.to_string()),
        cost_source: CostSource::PriceTable,
        ..Usage::default()
    });
    OpenAiError::bad_gateway(format!("Upstream request failed: {error}"))
}

/// Reads the upstream's answer whole, settles the ticket (a success at what its `usage` says,
/// adjusted by `bill` for what the endpoint bills; a failure at no cost, with its status and the
/// start of its body) and passes the status, body and content type on.
pub(crate) async fn pass_on_whole(
    response: reqwest::Response,
    ticket: Ticket,
    admission: Option<Admission>,
    pricing: &Pricing,
    bill: impl FnOnce(&mut Usage),
) -> Result<Response, OpenAiError> {
    let status = response.status();
    let reported_cost = reported_cost(&response);
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("Upstream response was cut off: {e}"));
    let usage = match &bytes {
        Ok(body) if status.is_success() => {
            let body = serde_json::from_slice::<Value>(body).ok();
            let mut usage = usage_of(body.as_ref(), pricing, reported_cost);
            bill(&mut usage);
            usage
        }
        Ok(body) => Usage {
            http_status: Some(i32::from(status.as_u16())),
            error: Some(String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned()),
            cost_source: CostSource::PriceTable,
            ..Usage::default()
        },
        Err(message) => Usage {
            error: Some(message.clone()),
            cost_source: CostSource::PriceTable,
            ..Usage::default()
        },
    };
    if let Some(admission) = &admission {
        admission.count_tokens(usage.total_tokens.unwrap_or(0));
    }
    ticket.finish(usage);
    let bytes = bytes.map_err(OpenAiError::bad_gateway)?;
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        content_type.unwrap_or_else(|| HeaderValue::from_static("application/json")),
    );
    Ok(response)
}

/// Passes a successful upstream SSE stream on as it arrives; the upstream was asked for a usage
/// chunk, which is dropped from what the client sees when `hide_usage_chunk`.
///
/// The recorder lives as long as the body: the spend is recorded as soon as the usage chunk has
/// been read (before it and `[DONE]` reach the client, so a balance read right after the stream
/// includes it), or when the body is dropped early (client gone).
pub(crate) fn pass_on_stream(
    response: reqwest::Response,
    ticket: Ticket,
    admission: Option<Admission>,
    pricing: Pricing,
    hide_usage_chunk: bool,
) -> Response {
    let reported_cost = reported_cost(&response);
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let recorder = Arc::new(StreamRecorder::new(
        ticket,
        pricing,
        reported_cost,
        admission,
    ));
    let at_end = Arc::clone(&recorder);
    let body = response
        .bytes_stream()
        .then(move |chunk| {
            let recorder = Arc::clone(&recorder);
            async move {
                let bytes = chunk.map_err(std::io::Error::other)?;
                let (out, usage_seen) = {
                    let mut scan = recorder.scan.lock().unwrap_or_else(|p| p.into_inner());
                    (scan.pass_on(&bytes, hide_usage_chunk), scan.usage.is_some())
                };
                if usage_seen {
                    recorder.record();
                }
                Ok::<_, std::io::Error>(Bytes::from(out))
            }
        })
        .chain(futures::stream::once(async move {
            let rest = at_end.scan.lock().unwrap_or_else(|p| p.into_inner()).rest();
            at_end.record();
            Ok(Bytes::from(rest))
        }));
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        content_type.unwrap_or_else(|| HeaderValue::from_static("text/event-stream")),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
