//! Live state of probes: which ones have a session now, since when, from where.
//!
//! The map is locked only when a session starts or ends (and for listings),
//! never per result. Each probe has a *seq lease*: a session holds it for its
//! whole life, so a replacing session starts only after the old one has
//! finished its in-flight commit — two sessions of one probe can never both
//! accept the same seq.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;

/// Live facts about one probe.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// A session is open.
    pub connected: bool,
    /// Last message (server clock).
    pub last_seen_unix_ms: i64,
    /// Version from the current/last Hello.
    pub version: String,
    /// Peer address of the current/last session.
    pub peer: String,
    /// Enrolled region.
    pub region: String,
    session: u64,
    cancel: Option<CancellationToken>,
}

#[derive(Debug, Default)]
struct Slot {
    live: Mutex<Live>,
    lease: Arc<tokio::sync::Mutex<()>>,
}

/// All probes seen since start.
#[derive(Debug, Default)]
pub struct Registry {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    next_session: std::sync::atomic::AtomicU64,
}

/// A session's registration; dropping it does not unregister (call [`Registry::end`]).
#[derive(Debug)]
pub struct Registration {
    /// Probe id.
    pub probe_id: String,
    /// This session's number.
    pub session: u64,
    /// Cancelled when a newer session replaces this one, the probe is revoked, or on shutdown.
    pub cancel: CancellationToken,
    slot: Arc<Slot>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Only plain bookkeeping is done under these locks; after a panic the data is still sound.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    fn slot(&self, probe_id: &str) -> Arc<Slot> {
        lock(&self.slots)
            .entry(probe_id.to_string())
            .or_default()
            .clone()
    }

    /// Registers a new session, cancelling any older one of the same probe.
    pub fn begin(
        &self,
        probe_id: &str,
        region: &str,
        version: &str,
        peer: &str,
        parent: &CancellationToken,
        now_ms: i64,
    ) -> Registration {
        let slot = self.slot(probe_id);
        let session = self
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let cancel = parent.child_token();
        let mut live = lock(&slot.live);
        if let Some(old) = live.cancel.replace(cancel.clone()) {
            old.cancel();
        }
        if live.connected {
            version_gauge(&live.version).decrement(1.0);
        } else {
            metrics::gauge!(m::PROBES_CONNECTED, m::label::REGION => region.to_string())
                .increment(1.0);
        }
        version_gauge(version).increment(1.0);
        live.connected = true;
        live.session = session;
        live.last_seen_unix_ms = now_ms;
        live.version = version.to_string();
        live.peer = peer.to_string();
        live.region = region.to_string();
        drop(live);
        Registration {
            probe_id: probe_id.to_string(),
            session,
            cancel,
            slot,
        }
    }

    /// Waits until no older session of this probe is still finishing its work.
    pub async fn lease(&self, reg: &Registration) -> OwnedMutexGuard<()> {
        reg.slot.lease.clone().lock_owned().await
    }

    /// Notes that the probe was heard from.
    pub fn seen(&self, reg: &Registration, now_ms: i64) {
        let mut live = lock(&reg.slot.live);
        if live.session == reg.session {
            live.last_seen_unix_ms = now_ms;
        }
    }

    /// Ends a session; returns true if it was still the probe's current one.
    pub fn end(&self, reg: &Registration, now_ms: i64) -> bool {
        let mut live = lock(&reg.slot.live);
        if live.session != reg.session {
            return false;
        }
        live.connected = false;
        live.cancel = None;
        live.last_seen_unix_ms = now_ms;
        metrics::gauge!(m::PROBES_CONNECTED, m::label::REGION => live.region.clone())
            .decrement(1.0);
        version_gauge(&live.version).decrement(1.0);
        true
    }

    /// Cancels the probe's current session, if any (e.g. after revocation).
    pub fn kick(&self, probe_id: &str) {
        let slot = lock(&self.slots).get(probe_id).cloned();
        if let Some(slot) = slot
            && let Some(c) = &lock(&slot.live).cancel
        {
            c.cancel();
        }
    }

    /// Live facts for every probe seen since start.
    pub fn snapshot(&self) -> HashMap<String, Live> {
        let slots: Vec<(String, Arc<Slot>)> = lock(&self.slots)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        slots
            .into_iter()
            .map(|(k, s)| (k, lock(&s.live).clone()))
            .collect()
    }

    /// Connected probes per region.
    pub fn connected_per_region(&self) -> HashMap<String, u32> {
        let mut out = HashMap::new();
        for live in self.snapshot().into_values() {
            if live.connected {
                *out.entry(live.region).or_insert(0) += 1;
            }
        }
        out
    }
}

/// `cutover_probe_versions{version}` for a probe's self-reported version.
fn version_gauge(version: &str) -> metrics::Gauge {
    metrics::gauge!(m::PROBE_VERSIONS, m::label::VERSION => m::probe_version_label(version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn newer_session_replaces_older_and_waits_for_its_lease() {
        let r = Registry::default();
        let root = CancellationToken::new();
        let a = r.begin("p", "asia", "1", "x", &root, 1);
        let lease_a = r.lease(&a).await;
        let b = r.begin("p", "asia", "1", "y", &root, 2);
        assert!(a.cancel.is_cancelled(), "the old session is told to stop");
        assert!(!b.cancel.is_cancelled());
        // b cannot get the lease while a holds it.
        let pending = tokio::time::timeout(std::time::Duration::from_millis(50), r.lease(&b)).await;
        assert!(pending.is_err());
        assert!(!r.end(&a, 3), "a is no longer current");
        drop(lease_a);
        let _lease_b = r.lease(&b).await;
        assert_eq!(r.connected_per_region().get("asia"), Some(&1));
        assert!(r.end(&b, 4));
        assert_eq!(r.connected_per_region().get("asia"), None);
    }

    #[test]
    fn connected_probes_are_counted_per_version() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let r = Registry::default();
            let root = CancellationToken::new();
            let a = r.begin("a", "asia", "0.3.0", "x", &root, 1);
            let _b = r.begin("b", "eu", "0.3.0", "x", &root, 1);
            let _c = r.begin("c", "eu", "0.2.1", "x", &root, 1);
            // a reconnects after an upgrade: the old session is replaced.
            let a2 = r.begin("a", "asia", "0.4.0", "y", &root, 2);
            assert!(!r.end(&a, 3));
            let _d = r.begin("d", "us", "made up {by a probe}", "x", &root, 3);
            let text = handle.render();
            for line in [
                "cutover_probe_versions{version=\"0.3.0\"} 1",
                "cutover_probe_versions{version=\"0.2.1\"} 1",
                "cutover_probe_versions{version=\"0.4.0\"} 1",
                "cutover_probe_versions{version=\"other\"} 1",
            ] {
                assert!(text.contains(line), "{line:?} missing from:\n{text}");
            }
            assert!(r.end(&a2, 4));
            let text = handle.render();
            assert!(
                text.contains("cutover_probe_versions{version=\"0.4.0\"} 0"),
                "{text}"
            );
        });
    }
}
