//! Warnings for plans that are valid but risky. Each rule comes from the seed
//! runbook or from the way cutovers go wrong in practice; `docs/plan.md`
//! explains every one. Warnings never stop a plan (unless the operator runs
//! `plan check --deny-warnings`).

use std::collections::BTreeMap;
use std::time::Duration;

use super::{
    Action, Diagnostic, Guard, GuardAction, GuardMode, GuardSource, Metric, Plan, Severity, Site,
    Step, WaitFor, human_duration,
};

/// Positions the rules point at, recorded while parsing.
#[derive(Debug, Default)]
pub struct Positions {
    /// The `[plan]` table.
    pub plan: (usize, usize),
    /// Per step id.
    pub steps: BTreeMap<String, StepPos>,
    /// The first `[[fallback]]` table.
    pub fallback_first: Option<(usize, usize)>,
    /// Per guard id: the guard's table and some of its keys.
    pub guards: BTreeMap<String, StepPos>,
}

/// Where a step and its keys are.
#[derive(Debug, Default)]
pub struct StepPos {
    /// The step's table.
    pub table: (usize, usize),
    /// Each key written, by name.
    pub keys: BTreeMap<&'static str, (usize, usize)>,
}

impl Positions {
    fn at(&self, step: &Step, key: &str) -> (usize, usize) {
        self.steps
            .get(&step.id)
            .map(|p| p.keys.get(key).copied().unwrap_or(p.table))
            .unwrap_or((step.line, 1))
    }

    fn guard(&self, guard: &Guard, key: &str) -> (usize, usize) {
        self.guards
            .get(&guard.id)
            .map(|p| p.keys.get(key).copied().unwrap_or(p.table))
            .unwrap_or(self.plan)
    }
}

/// How much longer than the lowered TTL a maintenance window should be (the seed: "an order of magnitude").
pub const WINDOW_TTL_FACTOR: u32 = 10;

fn warn(at: (usize, usize), message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Warning,
        line: at.0,
        column: at.1,
        message,
    }
}

fn is_switch_to(step: &Step, site: Site) -> bool {
    matches!(&step.action, Action::Dns(d) if d.sets_site && d.to.site == site)
}

/// Every risky-plan warning for a valid plan (inline secrets are found by [`super::secrets`]).
pub fn assess(plan: &Plan, pos: &Positions) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let first_switch = plan.steps.iter().position(|s| is_switch_to(s, Site::New));

    // The lowered TTL: the one [dns] names, else the one in effect at the switch.
    let switch_ttl = first_switch.and_then(|i| match &plan.steps[i].action {
        Action::Dns(d) => Some(d.to.ttl),
        _ => None,
    });
    let lowered = plan.dns.lowered_ttl.or(switch_ttl);

    // 1. The seed: a maintenance window an order of magnitude longer than the lowered TTL.
    if let Some(ttl) = lowered {
        let min = Duration::from_secs(u64::from(ttl) * u64::from(WINDOW_TTL_FACTOR));
        for step in plan.steps.iter().chain(&plan.fallback) {
            if let Action::Announce(a) = &step.action
                && let Some(w) = &a.maintenance_window
                && w.duration < min
            {
                let hours = min.as_secs().div_ceil(3600);
                out.push(warn(
                    pos.at(step, "maintenance_window"),
                    format!(
                        "step {:?}: the maintenance window ({}) is shorter than {WINDOW_TTL_FACTOR}× the lowered TTL ({}) = {}; resolvers that stretch TTLs keep sending users to the old site, so announce at least {} (rounded up: {hours}h)",
                        step.id,
                        human_duration(w.duration),
                        human_duration(Duration::from_secs(u64::from(ttl))),
                        human_duration(min),
                        human_duration(min),
                    ),
                ));
            }
        }
    }

    // 2. A switch nobody verifies: after every switch, a verify of that site in the same runbook.
    for (steps, name) in [(&plan.steps, "[[steps]]"), (&plan.fallback, "[[fallback]]")] {
        for (i, step) in steps.iter().enumerate() {
            let Action::Dns(d) = &step.action else {
                continue;
            };
            if !d.sets_site {
                continue;
            }
            let verified = steps[i + 1..]
                .iter()
                .any(|s| matches!(&s.action, Action::Verify(v) if v.site == d.to.site));
            if !verified {
                out.push(warn(
                    pos.at(step, "set"),
                    format!(
                        "step {:?} points DNS at the {} site but no `verify` step of the {} site follows it in {name}: nothing proves users reach a working server",
                        step.id,
                        d.to.site.label(),
                        d.to.site.label()
                    ),
                ));
            }
        }
    }

    // 3. A fallback that does not restore DNS.
    if plan.fallback.is_empty() {
        out.push(warn(
            pos.plan,
            "the plan has no [[fallback]] runbook: a tripped guard or `cutover rollback` would have nothing to run".into(),
        ));
    } else if !plan.fallback.iter().any(|s| is_switch_to(s, Site::Old)) {
        out.push(warn(
            pos.fallback_first.unwrap_or(pos.plan),
            "the [[fallback]] runbook never points DNS back at the old site: add a `dns` step with `set = \"old\"`".into(),
        ));
    }

    // 4./5. The TTL is lowered before the switch, and the old TTL has drained before it.
    if let Some(si) = first_switch {
        let switch = &plan.steps[si];
        let lowering = plan.steps[..si].iter().rposition(
            |s| matches!(&s.action, Action::Dns(d) if d.sets_ttl && d.to.ttl < d.from.ttl),
        );
        match lowering {
            None => {
                let ttl = match &switch.action {
                    Action::Dns(d) => d.from.ttl,
                    _ => plan.dns.normal_ttl,
                };
                out.push(warn(
                    pos.at(switch, "set"),
                    format!(
                        "step {:?} switches DNS with the TTL at {}: no `dns` step with `ttl` lowers it first, so resolvers may keep the old address that long; lower it (e.g. `ttl = \"lowered\"`) well before the switch",
                        switch.id,
                        human_duration(Duration::from_secs(u64::from(ttl)))
                    ),
                ));
            }
            Some(li) => {
                let lower = &plan.steps[li];
                let old_ttl = match &lower.action {
                    Action::Dns(d) => d.from.ttl,
                    _ => plan.dns.normal_ttl,
                };
                let drained = plan.steps[li + 1..si].iter().any(|s| match &s.action {
                    Action::Wait(w) => match &w.until {
                        WaitFor::TtlDrained { .. } => true,
                        WaitFor::Duration(d) => d.as_secs() >= u64::from(old_ttl),
                        WaitFor::Propagation { .. } => false,
                    },
                    _ => false,
                });
                if !drained {
                    out.push(warn(
                        pos.at(switch, "set"),
                        format!(
                            "no wait between lowering the TTL (step {:?}) and the switch (step {:?}): resolvers may still hold answers cached with the old TTL ({}); add a `wait` with `until = {{ ttl_drained = true }}` or a `duration` of at least {}",
                            lower.id,
                            switch.id,
                            human_duration(Duration::from_secs(u64::from(old_ttl))),
                            human_duration(Duration::from_secs(u64::from(old_ttl)))
                        ),
                    ));
                }
            }
        }
    }

    // 6. A probe guard whose window cannot hold `min_samples` results of its check: no probe
    //    would ever vote, so the guard could only say NO_EVIDENCE. (Hash mismatches still trip
    //    through the hard-fail rule, which needs no votes.)
    for g in &plan.guards {
        let GuardSource::Probe { check, .. } = &g.source else {
            continue;
        };
        let Some(c) = plan.check(check) else {
            continue;
        };
        if g.condition.metric == Metric::HashMismatches || c.interval.is_zero() {
            continue;
        }
        let need = c.interval * g.min_samples;
        if g.window < need {
            let about = g.window.as_millis() / c.interval.as_millis();
            out.push(warn(
                pos.guard(g, "window"),
                format!(
                    "guard {:?}: check {check:?} runs every {}, so a probe has about {about} result{} in the {} window, fewer than `min_samples` = {}: no probe would ever vote and the guard could only say NO_EVIDENCE; make `window` at least {} or lower `min_samples`",
                    g.id,
                    human_duration(c.interval),
                    if about == 1 { "" } else { "s" },
                    human_duration(g.window),
                    g.min_samples,
                    human_duration(need),
                ),
            ));
        }
    }

    // 7. A guard that only alerts, with nowhere to send the alert.
    if plan.alerts.is_empty() {
        for g in &plan.guards {
            if g.action == GuardAction::Alert && g.mode == GuardMode::Enforce {
                out.push(warn(
                    pos.guard(g, "action"),
                    format!(
                        "guard {:?} only raises an alert, and [alerts] names no `channels` and no `alertmanager`: its trip would reach nobody",
                        g.id
                    ),
                ));
            }
        }
    }
    out
}
