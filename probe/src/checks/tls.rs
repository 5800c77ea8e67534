//! `tls`: a handshake with hostname verification against the pinned (or
//! resolved) address; reports validity, expiry, subject and issuer. The
//! certificate is recorded even when verification fails, so an operator sees
//! *which* certificate the new server presents, not just "invalid".

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use cutover_proto::v1::{FailureKind, Target, TlsDetail, TlsParams, check_result::Detail};
use futures_util::future::BoxFuture;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::{Check, CheckContext, CheckOutcome};
use crate::net::{HttpClient, Timings, micros};

/// A validated `tls` check.
#[derive(Debug)]
pub struct TlsCheck {
    host: String,
    port: u16,
    min_days_valid: u32,
}

impl TlsCheck {
    pub fn new(p: &TlsParams) -> Result<Self, String> {
        if p.host.trim().is_empty() {
            return Err("tls check needs a host".into());
        }
        let port = match p.port {
            0 => 443,
            n => u16::try_from(n).map_err(|_| format!("tls port {n} is out of range"))?,
        };
        Ok(Self {
            host: p.host.trim().to_owned(),
            port,
            min_days_valid: p.min_days_valid,
        })
    }

    async fn run_inner(&self, ctx: &CheckContext, target: Target) -> CheckOutcome {
        let route = match ctx.route(target) {
            Ok(r) => r,
            Err(f) => return f.into(),
        };
        let mut timings = Timings::default();
        let (tcp, addr) = match ctx
            .http
            .connect_tcp(&self.host, self.port, &route, &mut timings)
            .await
        {
            Ok(c) => c,
            Err(e) => return CheckOutcome::net(&e, None),
        };
        let recorder = match Recorder::new(ctx.http.roots().clone()) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                return CheckOutcome::failure(
                    FailureKind::Internal,
                    format!("building a TLS verifier: {e}"),
                    None,
                );
            }
        };
        let mut config = (**ctx.http.tls_config()).clone();
        config
            .dangerous()
            .set_certificate_verifier(recorder.clone());
        let t = Instant::now();
        let handshake = HttpClient::handshake(Arc::new(config), &self.host, addr, tcp).await;
        let handshake_us = micros(t.elapsed());

        let mut detail = TlsDetail {
            valid: handshake.is_ok(),
            remote_addr: addr.to_string(),
            handshake_us,
            ..Default::default()
        };
        let seen = recorder.end_entity.lock().ok().and_then(|g| g.clone());
        if let Some(der) = &seen {
            describe(der, &mut detail);
        }
        let days = detail.days_to_expiry;
        let has_cert = seen.is_some();
        let detail_out = Some(Detail::Tls(detail));
        if let Err(e) = handshake {
            return CheckOutcome::failure(FailureKind::Tls, e.to_string(), detail_out);
        }
        if !has_cert {
            // A successful handshake always went through our verifier.
            return CheckOutcome::failure(
                FailureKind::Internal,
                "handshake completed without a certificate",
                detail_out,
            );
        }
        if i64::from(days) < i64::from(self.min_days_valid) {
            return CheckOutcome::failure(
                FailureKind::CertExpiring,
                format!(
                    "certificate of {}:{} at {addr} expires in {days} days (minimum {})",
                    self.host, self.port, self.min_days_valid
                ),
                detail_out,
            );
        }
        CheckOutcome::success(detail_out)
    }
}

/// Fills expiry, subject and issuer from a DER certificate.
fn describe(der: &CertificateDer<'_>, detail: &mut TlsDetail) {
    match x509_parser::parse_x509_certificate(der.as_ref()) {
        Ok((_, cert)) => {
            let not_after = cert.validity().not_after.timestamp();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            detail.not_after_unix = not_after;
            // Floor division: 0.5 days left is 0 days, expired yesterday is -1.
            let days = (not_after - now).div_euclid(86_400);
            detail.days_to_expiry =
                i32::try_from(days).unwrap_or(if days < 0 { i32::MIN } else { i32::MAX });
            detail.subject = cert.subject().to_string();
            detail.issuer = cert.issuer().to_string();
        }
        Err(e) => tracing::debug!(error = %e, "cannot parse the server certificate"),
    }
}

/// The normal WebPKI verifier, plus a copy of the end-entity certificate.
#[derive(Debug)]
struct Recorder {
    inner: Arc<WebPkiServerVerifier>,
    end_entity: Mutex<Option<CertificateDer<'static>>>,
}

impl Recorder {
    fn new(
        roots: Arc<rustls::RootCertStore>,
    ) -> Result<Self, rustls::client::VerifierBuilderError> {
        let inner = WebPkiServerVerifier::builder_with_provider(
            roots,
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()?;
        Ok(Self {
            inner,
            end_entity: Mutex::new(None),
        })
    }
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut g) = self.end_entity.lock() {
            *g = Some(end_entity.clone().into_owned());
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

impl Check for TlsCheck {
    fn kind(&self) -> &'static str {
        "tls"
    }

    fn hosts(&self) -> Vec<String> {
        vec![self.host.clone()]
    }

    fn run<'a>(&'a self, ctx: &'a CheckContext, target: Target) -> BoxFuture<'a, CheckOutcome> {
        Box::pin(self.run_inner(ctx, target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Reply, TestCa, TestServer, context, sites};
    use cutover_proto::v1::Outcome;

    fn check(port: u16, min_days: u32) -> TlsCheck {
        TlsCheck::new(&TlsParams {
            host: "package.elm.test".into(),
            port: u32::from(port),
            min_days_valid: min_days,
        })
        .unwrap()
    }

    fn detail(o: &CheckOutcome) -> TlsDetail {
        match &o.detail {
            Some(Detail::Tls(d)) => d.clone(),
            other => panic!("no tls detail: {other:?}"),
        }
    }

    #[tokio::test]
    async fn valid_certificate_reports_expiry_and_names() {
        let ca = TestCa::new();
        let server = TestServer::start(Some(ca.server_config(&["package.elm.test"], 60)), |_| {
            Reply::ok("")
        })
        .await;
        let ctx = context(ca.roots(), sites("127.0.0.1", "127.0.0.1"), None);
        let out = check(server.addr.port(), 14).run(&ctx, Target::Old).await;
        assert_eq!(out.outcome, Outcome::Success, "{out:?}");
        let d = detail(&out);
        assert!(d.valid);
        assert!(
            (58..=60).contains(&d.days_to_expiry),
            "{}",
            d.days_to_expiry
        );
        assert!(d.subject.contains("package.elm.test"), "{}", d.subject);
        assert!(d.issuer.contains("cutover test CA"), "{}", d.issuer);
        assert!(d.handshake_us > 0);
    }

    #[tokio::test]
    async fn expiring_soon_fails() {
        let ca = TestCa::new();
        let server = TestServer::start(Some(ca.server_config(&["package.elm.test"], 5)), |_| {
            Reply::ok("")
        })
        .await;
        let ctx = context(ca.roots(), sites("127.0.0.1", "127.0.0.1"), None);
        let out = check(server.addr.port(), 14).run(&ctx, Target::New).await;
        assert_eq!(out.failure, FailureKind::CertExpiring, "{out:?}");
        assert!(detail(&out).valid);
    }

    #[tokio::test]
    async fn wrong_hostname_is_invalid_but_described() {
        let ca = TestCa::new();
        let server = TestServer::start(Some(ca.server_config(&["other.test"], 60)), |_| {
            Reply::ok("")
        })
        .await;
        let ctx = context(ca.roots(), sites("127.0.0.1", "127.0.0.1"), None);
        let out = check(server.addr.port(), 0).run(&ctx, Target::New).await;
        assert_eq!(out.failure, FailureKind::Tls, "{out:?}");
        let d = detail(&out);
        assert!(!d.valid);
        assert!(d.subject.contains("other.test"), "{}", d.subject);
    }
}
