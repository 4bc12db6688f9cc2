//! Reading a request body under a size limit and a time limit, and tokenising off the HTTP
//! threads, so that neither a slow upload nor a huge prompt holds the threads that answer
//! everyone else.

use crate::error::{ApiError, ApiResult};
use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Upper bound on the bytes of text one token can stand for, from the vocabulary: the longest
/// entry in UTF-8 bytes, counting SentencePiece's `▁` as the one space it replaces. A text
/// longer than `context × bound` bytes therefore has more tokens than the context holds and is
/// refused before tokenising. (Normalisers that delete characters could in principle beat the
/// bound; the Llama and byte-level tokenizers do not.)
pub fn bytes_per_token_bound(vocab: impl Iterator<Item = String>) -> usize {
    vocab
        .map(|p| {
            p.chars()
                .map(|c| if c == '▁' { 1 } else { c.len_utf8() })
                .sum::<usize>()
        })
        .max()
        .unwrap_or(1)
        .max(4)
}

/// The whole body, or 413 beyond `limit` bytes, or 408 when it has not arrived in `timeout`.
pub async fn read(body: Body, limit: usize, timeout: Duration) -> ApiResult<Bytes> {
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!(
                "the request body did not arrive within {} s; send it at once after the headers",
                timeout.as_secs_f64()
            ),
            kind: "invalid_request_error",
            param: None,
            code: Some("body_timeout"),
        }),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(limit)),
        Ok(Err(e)) => Err(ApiError::bad_request(format!(
            "could not read the request body: {e}"
        ))),
    }
}

pub fn too_large(limit: usize) -> ApiError {
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!(
            "the request body is larger than this server accepts ({limit} bytes, derived from the model's context length); shorten the prompt"
        ),
        kind: "invalid_request_error",
        param: None,
        code: Some("request_too_large"),
    }
}

/// Runs CPU work (tokenising) on tokio's blocking pool, at most `gate`'s permits at once, so
/// the async threads keep answering small requests and `/health`.
pub async fn off_thread<T: Send + 'static>(
    gate: &Arc<Semaphore>,
    work: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let _permit = gate
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::internal("the server is shutting down"))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("tokenising failed: {e}")))?
}
