//! Reading JSON request bodies the way the service does: whatever the content type (the
//! documented `curl -d` examples send form-encoded headers), at most [`BODY_LIMIT`] bytes,
//! and every failure answered in the IBM error format.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::api_error::ApiError;

/// Largest accepted request body. A CSR for a 4096-bit key is under 2 KiB.
pub(crate) const BODY_LIMIT: usize = 64 * 1024;

/// The JSON object in `body`, or `None` when the body is empty (which several calls allow).
pub(crate) fn parse_json<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<Option<T>, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                format!("The request body is larger than {BODY_LIMIT} bytes."),
            )
        } else {
            ApiError::bad_request(
                "invalid_request_body",
                format!(
                    "The request body could not be read: {}",
                    rejection.body_text()
                ),
            )
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        ApiError::bad_request(
            "invalid_request_body",
            format!("The request body is not the expected JSON object: {e}."),
        )
    })
}
