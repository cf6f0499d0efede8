//! OCI distribution error responses.
//!
//! Docker drops the body of 5xx answers, so everything a user should read (an unknown package,
//! a build still running) is a 4xx with the reason in the JSON body; only trouble with the
//! backend is a 503.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error answer: status, OCI error code, one-line message.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OCI code (`MANIFEST_UNKNOWN`, `NAME_INVALID`, ...).
    pub code: &'static str,
    /// The message clients print.
    pub message: String,
    /// Seconds after which a retry may succeed.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn manifest_unknown(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", message)
    }

    pub fn backend(message: impl Into<String>) -> Self {
        ApiError {
            retry_after: Some(5),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", message)
        }
    }

    pub fn body(&self) -> String {
        serde_json::json!({
            "errors": [{ "code": self.code, "message": self.message, "detail": null }]
        })
        .to_string()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            self.body(),
        )
            .into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}
