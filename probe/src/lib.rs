//! `cutover-probe`: a small process run by volunteers that connects out to the
//! coordinator, runs the checks it is assigned against the old and the new site,
//! and reports every result over one gRPC stream until it is acknowledged.
//!
//! The path of a result: [`session`] receives an `Assignment` and hands it to
//! [`scheduler`], which runs each check ([`checks`]) on its interval using the
//! hand-timed HTTP client and the DNS helpers in [`net`]; each result gets its
//! sequence number in [`outbox`], which keeps it until the coordinator acks it.
//!
//! What the probe may connect to is the volunteer's decision, not the
//! coordinator's: [`policy`] holds the allowed domains and the private-address
//! rule, checked when an assignment arrives and again before every connection.
//! The probe runs no commands and listens on no port.

pub mod backoff;
pub mod checks;
pub mod config;
pub mod net;
pub mod outbox;
pub mod policy;
pub mod run;
pub mod scheduler;
pub mod session;
pub mod setup;
pub mod shutdown;
pub mod trust;

#[cfg(test)]
pub(crate) mod testutil;

pub use config::{Cli, Config};
pub use run::{RunError, run};

/// Version reported in `Hello` and in the `User-Agent` of every check request.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `User-Agent` sent with every check request. The Elm registry answers 406 to
/// requests without one (see REGISTRY.md), and operators can spot probes in logs.
pub const USER_AGENT: &str = concat!("cutover-probe/", env!("CARGO_PKG_VERSION"));
