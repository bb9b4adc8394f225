//! Error answers in the IBM Cloud error body format (`{"errors":[{code,message}],...}`),
//! the only shape of error the emulated service ever sends.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::wire::ErrorBody;

/// An error answer: status, machine-readable code, and a sentence a user can act on.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// Something went wrong on the emulator's side (e.g. OpenSSL failed); the details are
    /// logged, not sent.
    pub fn internal(what: &str, err: &dyn std::error::Error) -> Self {
        tracing::error!(error = %err, "emulator failed to {what}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            format!("The emulator failed to {what}; see its log for details."),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Json sets `content-type: application/json`, as the real service does.
        let body = ErrorBody::single(self.status.as_u16(), self.code, self.message);
        (self.status, Json(body)).into_response()
    }
}
