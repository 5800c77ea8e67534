//! The guard watcher: evaluates the plan's armed guards every `[plan] tick`
//! while a run is on its forward runbook, writes the decision log (verdict
//! changes, trips, long NO_EVIDENCE, alerts) into the journal, exports the
//! guard gauges, and hands trips to [`super::Engine::trip`].

/// One region's latest verdict for a guard, for `cutover status`.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionView {
    /// Region (`global` for non-probe sources).
    pub region: String,
    /// `PASS`, `FAIL`, `NO_EVIDENCE`.
    pub verdict: &'static str,
    /// The compared value, if any.
    pub value: Option<f64>,
}

/// A guard's state now, for `cutover status`.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardStatus {
    /// Guard id.
    pub guard: String,
    /// Tripped in this run.
    pub tripped: bool,
    /// Per region.
    pub regions: Vec<RegionView>,
}

/// Every armed guard of a run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GuardView {
    /// The run.
    pub run_id: u64,
    /// Armed guards.
    pub guards: Vec<GuardStatus>,
}
