//! The plan's checks reach the probes: while a plan is the coordinator's
//! current one, the assignment is the coordinator config's checks plus the
//! plan's (the plan's definition wins for an id in both), pinned to the plan's
//! sites. A SIGHUP reload replaces the assignment with the config's alone; the
//! watcher here notices, re-reads the config and publishes the merge again.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cutover_proto::v1;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::assign;
use crate::config::{self, Config};
use crate::plan::Plan;

/// Publishes config + plan checks to the probes.
pub struct Assigner {
    base: Mutex<Config>,
    path: PathBuf,
    plan: Mutex<Option<Arc<Plan>>>,
    tx: watch::Sender<Arc<v1::Assignment>>,
}

/// The config the probes should run while `plan` is current.
pub fn merged(cfg: &Config, plan: &Plan) -> Config {
    let mut out = cfg.clone();
    out.old = plan.old.clone();
    out.new = plan.new.clone();
    out.checks.retain(|c| plan.check(&c.id).is_none());
    out.checks.extend(plan.checks.iter().cloned());
    out
}

impl Assigner {
    /// An assigner over the running config and the server's assignment channel.
    pub fn new(cfg: Config, tx: watch::Sender<Arc<v1::Assignment>>) -> Arc<Self> {
        Arc::new(Self {
            path: cfg.path.clone(),
            base: Mutex::new(cfg),
            plan: Mutex::new(None),
            tx,
        })
    }

    fn wanted(&self) -> Option<v1::Assignment> {
        let base = self.base.lock().ok()?.clone();
        let plan = self.plan.lock().ok()?.clone();
        Some(assign::assignment(&match plan {
            Some(p) => merged(&base, &p),
            None => base,
        }))
    }

    fn publish(&self) {
        if let Some(a) = self.wanted()
            && self.tx.borrow().config_version != a.config_version
        {
            tracing::info!(
                config_version = format!("{:016x}", a.config_version),
                checks = a.checks.len(),
                "assignment now includes the plan's checks"
            );
            self.tx.send_replace(Arc::new(a));
        }
    }

    /// Makes `plan` the current one and publishes the merged assignment.
    pub fn set_plan(&self, plan: Arc<Plan>) {
        if let Ok(mut p) = self.plan.lock() {
            *p = Some(plan);
        }
        self.publish();
    }

    /// Re-merges after anyone else (SIGHUP reload) replaced the assignment.
    pub fn spawn_watch(self: &Arc<Self>, shutdown: CancellationToken) {
        let me = self.clone();
        let mut rx = self.tx.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    r = rx.changed() => if r.is_err() { return },
                }
                let current = rx.borrow_and_update().config_version;
                let has_plan = me.plan.lock().map(|p| p.is_some()).unwrap_or(false);
                if !has_plan || me.wanted().is_some_and(|w| w.config_version == current) {
                    continue;
                }
                match config::load(&me.path) {
                    Ok(c) => {
                        if let Ok(mut b) = me.base.lock() {
                            *b = c;
                        }
                    }
                    Err(e) => {
                        tracing::warn!("re-reading the config for the plan's assignment: {e}")
                    }
                }
                me.publish();
            }
        });
    }
}
