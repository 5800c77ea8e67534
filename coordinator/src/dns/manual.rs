//! The `manual` provider: cutover cannot change the zone itself, so `apply`
//! produces the exact change an operator must make and returns at once. The
//! engine shows [`DnsProvider::manual_instructions`], waits for `cutover
//! approve`, and then proves the change with [`verify`](super::verify()).

use super::{BoxFuture, DnsProvider, ProviderError, RecordSet, RecordType, check_in_zone, fqdn};

const PROVIDER: &str = "manual";

#[derive(Debug, Clone)]
pub struct Manual {
    zone: String,
}

impl Manual {
    pub fn new(zone: &str) -> Self {
        Manual { zone: fqdn(zone) }
    }

    /// The change, spelled out: every record the name must have afterwards,
    /// in zone-file form, and that nothing else of that type may remain.
    pub fn instructions(&self, desired: &RecordSet) -> String {
        let mut s = format!(
            "In the DNS of zone {zone}, make the {rtype} records of {name} exactly these \
             (TTL {ttl} seconds), then run `cutover approve`:\n",
            zone = self.zone,
            rtype = desired.rtype,
            name = desired.name,
            ttl = desired.ttl,
        );
        for v in &desired.values {
            s.push_str(&format!(
                "    {} {} IN {} {}\n",
                desired.name, desired.ttl, desired.rtype, v
            ));
        }
        s.push_str(&format!(
            "Remove every other {} record of {}. Add the new records before removing the old \
             ones, so the name is never without an answer.",
            desired.rtype, desired.name
        ));
        s
    }
}

impl DnsProvider for Manual {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    /// There is no API to read; the authoritative servers are the only
    /// source, and [`verify`](super::verify()) asks them.
    fn read<'a>(
        &'a self,
        name: &'a str,
        rtype: RecordType,
    ) -> BoxFuture<'a, Result<Option<RecordSet>, ProviderError>> {
        Box::pin(async move {
            Err(ProviderError::fatal(
                PROVIDER,
                format!(
                    "the manual provider has no API to read {} {rtype} from; query the zone's \
                     authoritative servers instead",
                    fqdn(name)
                ),
            ))
        })
    }

    fn apply<'a>(&'a self, desired: &'a RecordSet) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            check_in_zone(PROVIDER, &self.zone, &desired.name)?;
            tracing::warn!("manual DNS change needed:\n{}", self.instructions(desired));
            Ok(())
        })
    }

    fn manual_instructions(&self, desired: &RecordSet) -> Option<String> {
        Some(self.instructions(desired))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn apply_returns_and_the_instructions_name_everything() {
        let m = Manual::new("elm-lang.org");
        let rs = RecordSet::new(
            "package.elm-lang.org",
            RecordType::A,
            300,
            &["203.0.113.20", "203.0.113.21"],
        )
        .unwrap();
        m.apply(&rs).await.unwrap();
        let text = m.manual_instructions(&rs).unwrap();
        assert!(
            text.contains("package.elm-lang.org. 300 IN A 203.0.113.20\n"),
            "{text}"
        );
        assert!(
            text.contains("package.elm-lang.org. 300 IN A 203.0.113.21\n"),
            "{text}"
        );
        assert!(text.contains("TTL 300"), "{text}");
        assert!(text.contains("cutover approve"), "{text}");
        let outside = RecordSet::new("example.com", RecordType::A, 300, &["10.0.0.1"]).unwrap();
        assert!(m.apply(&outside).await.is_err());
    }
}
