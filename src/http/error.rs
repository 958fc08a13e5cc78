//! The API error type: every failure becomes a JSON `{ "error", "detail" }` response.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::ledger::IngestError;
use crate::paths::PathError;
use crate::trust::TrustError;
use crate::wire::ErrorBody;

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    detail: String,
}

impl ApiError {
    /// An error with a status, a code and a sentence.
    pub fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            error,
            detail: detail.into(),
        }
    }

    /// 400.
    pub fn bad_request(error: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 500: the cause is logged, the client sees a generic sentence.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the director could not complete the request; nothing was acknowledged",
        )
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.error.to_string(),
            detail: self.detail,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(status, "payload_too_large", rejection.body_text())
        } else {
            Self::new(status, "bad_body", rejection.body_text())
        }
    }
}

impl From<PathError> for ApiError {
    fn from(error: PathError) -> Self {
        Self::bad_request("bad_path", error.to_string())
    }
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        match error {
            IngestError::Untrusted(e @ TrustError::Signature(_)) => {
                Self::new(StatusCode::FORBIDDEN, "bad_signature", e.to_string())
            }
            IngestError::Untrusted(e @ TrustError::ForbiddenNamespace { .. }) => {
                Self::new(StatusCode::FORBIDDEN, "forbidden_namespace", e.to_string())
            }
            IngestError::Untrusted(e) => {
                Self::new(StatusCode::FORBIDDEN, "untrusted", e.to_string())
            }
            IngestError::Invalid(why) => Self::bad_request("invalid_ad", why),
            IngestError::Store(e) => Self::internal(e),
        }
    }
}
