//! The service's one error type: what went wrong, as the HTTP status and JSON body a client sees.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error of the service, with the HTTP status it answers with.
///
/// ```
/// use flowsense_service::ServiceError;
/// let e = ServiceError::NotFound("job x".into());
/// assert_eq!(e.status().as_u16(), 404);
/// assert_eq!(e.to_string(), "not found: job x");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed: TOML or JSON that does not parse, an unknown key, a bad value.
    #[error("{0}")]
    BadRequest(String),
    /// No such job (or table).
    #[error("not found: {0}")]
    NotFound(String),
    /// The request conflicts with the job's state (a name already running, a stop of a job
    /// that has ended).
    #[error("{0}")]
    Conflict(String),
    /// The request is well formed but cannot run: its source does not exist.
    #[error("{0}")]
    Unprocessable(String),
    /// The cluster cannot take jobs (starting, or a worker died).
    #[error("{0}")]
    Unavailable(String),
    /// A failure of the service itself.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    /// The HTTP status of the error.
    pub fn status(&self) -> StatusCode {
        match self {
            ServiceError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::Conflict(_) => StatusCode::CONFLICT,
            ServiceError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ServiceError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<anyhow::Error> for ServiceError {
    fn from(e: anyhow::Error) -> Self {
        ServiceError::Internal(format!("{e:#}"))
    }
}

/// The JSON body of every error response.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What is wrong, naming the key, line or job.
    pub error: String,
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(%status, error = %self, "request failed");
        }
        (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}

/// Results of the service.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;
