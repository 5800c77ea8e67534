//! Building blocks of `cutover demo`, which runs the whole system on loopback:
//! an authoritative DNS server the engine updates through the real `rfc2136`
//! provider ([`auth`]), a caching resolver per region with real TTL behaviour
//! ([`resolver`]), both served over UDP and TCP by [`serve`]; stand-in Elm
//! registries with fault knobs ([`registry`]) behind certificates from a CA
//! made at start ([`tls`]); a receiver for the alerts the plan sends
//! ([`receiver`]); [`run`] puts them together with the coordinator and three
//! probes and runs the short Elm plan twice.

pub mod auth;
pub mod receiver;
pub mod registry;
pub mod resolver;
pub mod run;
pub mod serve;
pub mod tls;
