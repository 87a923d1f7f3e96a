//! HTTP errors in the contract's shape: `{"error": {"code", "message"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chat_core::protocol::ErrorCode;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// The code's own status unless set (408 for a body too slow).
    status: Option<StatusCode>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            status: None,
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        let message = match code {
            ErrorCode::Unavailable => "backend unavailable, retry",
            ErrorCode::Internal => "internal error",
            _ => code.as_str(),
        };
        Self::new(code, message)
    }
}

impl From<chat_core::protocol::Refusal> for ApiError {
    fn from(r: chat_core::protocol::Refusal) -> Self {
        Self::new(r.code, r.message)
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        tracing::warn!(error = %e, "redis error in HTTP handler");
        if chat_core::redis_conn::is_unavailable(&e) {
            ErrorCode::Unavailable.into()
        } else {
            ErrorCode::Internal.into()
        }
    }
}

/// Every JSON error answer: `{"error": {"code", "message"}}`, with the
/// code's HTTP status.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// The server-side failures most handlers document alike (OpenAPI only:
/// the answers themselves are [`ApiError`]s).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ServerErrors {
    #[response(status = 500, description = "Internal error")]
    Internal(ErrorBody),
    #[response(status = 503, description = "Redis unavailable, retry")]
    Unavailable(ErrorBody),
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// 400 `bad_request`, 401 `unauthorized`, 403 `forbidden`, 404
    /// `not_found`, 409 `not_joined`, 413 `too_large`, 429 `rate_limited`,
    /// 500 `internal`, 503 `unavailable` (retry).
    code: ErrorCode,
    /// For people; may change.
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status.unwrap_or_else(|| {
            StatusCode::from_u16(self.code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        });
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        (status, axum::Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
