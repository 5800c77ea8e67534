//! The cutover coordinator: ingests probe results over gRPC, keeps the
//! evidence windows, serves the operator's admin API and `/metrics`, and runs
//! the migration plan ([`plan`] → [`engine`], crash-safe through [`journal`]).
//!
//! The path of a result: [`ingest`] (authenticate, dedupe) → [`writer`]
//! (group commit into [`store`]) → `Ack` → [`evidence`] (windows in
//! [`aggregate`], counters in [`metrics`]) → [`admin`] `Status` and `/metrics`.

pub mod admin;
pub mod admin_plan;
pub mod aggregate;
pub mod alerts;
pub mod assign;
pub mod auth;
pub mod cli;
pub mod config;
pub mod demo;
pub mod dns;
pub mod engine;
pub mod evidence;
pub mod ingest;
pub mod journal;
pub mod localtime;
pub mod metrics;
pub mod operator;
pub mod plan;
pub mod registry;
pub mod rpc;
pub mod server;
pub mod shutdown;
pub mod sources;
pub mod store;
pub mod verdict;
pub mod writer;
