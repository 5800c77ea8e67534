//! Turning the records an API holds (each with its own id) into the desired
//! RRset with the fewest writes, in an order that never leaves the name
//! without records: first change or create, then delete the extras.

use super::{RecordSet, RecordType, fqdn};

/// One record as an id-per-record API (DigitalOcean, Cloudflare) lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    pub id: String,
    /// Canonical text form.
    pub value: String,
    pub ttl: u32,
}

/// A write, in the order it must be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Set value and TTL of an existing record.
    Update {
        id: String,
        value: String,
    },
    Create {
        value: String,
    },
    Delete {
        id: String,
    },
}

/// The writes that turn `existing` into exactly `values` at `ttl`; empty when
/// nothing needs to change (the idempotent case). Records that already hold
/// a desired value are kept (their TTL fixed if needed); a surplus record is
/// reused for a missing value before anything is created; deletions come last.
pub fn plan(existing: &[Existing], values: &[String], ttl: u32) -> Vec<Change> {
    let mut updates = Vec::new();
    let mut creates = Vec::new();
    let mut deletes = Vec::new();
    let mut kept: Vec<&str> = Vec::new();
    let mut surplus: Vec<&Existing> = Vec::new();
    for e in existing {
        if values.contains(&e.value) && !kept.contains(&e.value.as_str()) {
            kept.push(&e.value);
            if e.ttl != ttl {
                updates.push(Change::Update {
                    id: e.id.clone(),
                    value: e.value.clone(),
                });
            }
        } else {
            surplus.push(e);
        }
    }
    let mut surplus = surplus.into_iter();
    for v in values.iter().filter(|v| !kept.contains(&v.as_str())) {
        match surplus.next() {
            Some(e) => updates.push(Change::Update {
                id: e.id.clone(),
                value: v.clone(),
            }),
            None => creates.push(Change::Create { value: v.clone() }),
        }
    }
    for e in surplus {
        deletes.push(Change::Delete { id: e.id.clone() });
    }
    updates.into_iter().chain(creates).chain(deletes).collect()
}

/// The RRset a list of records makes (lowest TTL if they differ).
pub fn to_set(name: &str, rtype: RecordType, existing: &[Existing]) -> Option<RecordSet> {
    let ttl = existing.iter().map(|e| e.ttl).min()?;
    let mut values: Vec<String> = existing.iter().map(|e| e.value.clone()).collect();
    values.sort();
    values.dedup();
    Some(RecordSet {
        name: fqdn(name),
        rtype,
        ttl,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(id: &str, value: &str, ttl: u32) -> Existing {
        Existing {
            id: id.into(),
            value: value.into(),
            ttl,
        }
    }

    fn vals(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn nothing_to_do_when_equal() {
        let e = [ex("1", "10.0.0.1", 60), ex("2", "10.0.0.2", 60)];
        assert!(plan(&e, &vals(&["10.0.0.1", "10.0.0.2"]), 60).is_empty());
    }

    #[test]
    fn switch_reuses_the_record_and_deletes_last() {
        let e = [ex("1", "10.0.0.1", 300), ex("2", "10.0.0.2", 300)];
        let p = plan(&e, &vals(&["10.0.0.9"]), 60);
        assert_eq!(
            p,
            [
                Change::Update {
                    id: "1".into(),
                    value: "10.0.0.9".into()
                },
                Change::Delete { id: "2".into() },
            ]
        );
    }

    #[test]
    fn creates_when_no_record_is_spare_and_fixes_ttls() {
        let e = [ex("1", "10.0.0.1", 300)];
        let p = plan(&e, &vals(&["10.0.0.1", "10.0.0.2"]), 60);
        assert_eq!(
            p,
            [
                Change::Update {
                    id: "1".into(),
                    value: "10.0.0.1".into()
                },
                Change::Create {
                    value: "10.0.0.2".into()
                },
            ]
        );
        assert_eq!(
            plan(&[], &vals(&["10.0.0.1"]), 60),
            [Change::Create {
                value: "10.0.0.1".into()
            }]
        );
    }

    #[test]
    fn duplicates_are_removed() {
        let e = [ex("1", "10.0.0.1", 60), ex("2", "10.0.0.1", 60)];
        assert_eq!(
            plan(&e, &vals(&["10.0.0.1"]), 60),
            [Change::Delete { id: "2".into() }]
        );
    }
}
