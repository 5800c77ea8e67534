//! The one place domain errors become `tonic::Status`.
//!
//! Messages are written for the person reading the probe's or CLI's log:
//! they say what was wrong and what to do.

use tonic::Status;

use crate::ingest::{AuthFailure, SessionError};
use crate::store::StoreError;

impl From<AuthFailure> for Status {
    fn from(e: AuthFailure) -> Self {
        match e {
            AuthFailure::Store(e) => Status::unavailable(format!(
                "coordinator cannot check the token right now ({e}); retry later"
            )),
            other => Status::unauthenticated(other.to_string()),
        }
    }
}

impl From<SessionError> for Status {
    fn from(e: SessionError) -> Self {
        let msg = e.to_string();
        match e {
            SessionError::NotHello | SessionError::Malformed(_) => Status::invalid_argument(msg),
            SessionError::HelloTimeout | SessionError::Idle(_) => Status::deadline_exceeded(msg),
            SessionError::Oversized { .. } => Status::resource_exhausted(msg),
            SessionError::Replaced => Status::aborted(msg),
            SessionError::Revoked => Status::unauthenticated(msg),
            SessionError::Storage(_) | SessionError::Stopped => Status::unavailable(msg),
            SessionError::Transport(s) => s,
        }
    }
}

/// Admin-side errors.
pub fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::InvalidRegion(_) => Status::invalid_argument(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}
