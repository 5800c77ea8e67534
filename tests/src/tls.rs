//! The throwaway certificate authority: it lives in the coordinator crate
//! (`cutover demo` uses it too); re-exported here for the tests.

pub use cutover_coordinator::demo::tls::*;
