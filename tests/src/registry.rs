//! The stand-in Elm package registry: it lives in the coordinator crate
//! (`cutover demo` serves it too); re-exported here for the tests.

pub use cutover_coordinator::demo::registry::*;

#[cfg(test)]
mod tests;
