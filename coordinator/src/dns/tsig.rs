//! TSIG (RFC 8945): signing a DNS message with a shared secret and checking
//! the signature on the reply, with HMAC-SHA256 or HMAC-SHA512 from `ring`.
//! Done by hand on the wire bytes so that hickory's DNSSEC feature (and its
//! crypto back ends) stay out of the build.

use ring::hmac;

/// TSIG RR type and the class it uses.
const TYPE_TSIG: u16 = 250;
const CLASS_ANY: u16 = 255;
/// Seconds of clock skew allowed either way (RFC 8945 recommends 300).
pub const FUDGE: u16 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    HmacSha256,
    HmacSha512,
}

impl Algorithm {
    /// `hmac-sha256` / `hmac-sha512` (a trailing dot and case are ignored).
    pub fn from_name(name: &str) -> Result<Self, String> {
        match name
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase()
            .as_str()
        {
            "hmac-sha256" => Ok(Algorithm::HmacSha256),
            "hmac-sha512" => Ok(Algorithm::HmacSha512),
            other => Err(format!(
                "TSIG algorithm `{other}` is not supported; use hmac-sha256 or hmac-sha512"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::HmacSha512 => "hmac-sha512",
        }
    }

    fn ring(self) -> hmac::Algorithm {
        match self {
            Algorithm::HmacSha256 => hmac::HMAC_SHA256,
            Algorithm::HmacSha512 => hmac::HMAC_SHA512,
        }
    }
}

/// A TSIG key: its name (as the server knows it), algorithm and secret.
#[derive(Clone)]
pub struct Key {
    name: String,
    algorithm: Algorithm,
    key: hmac::Key,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Key {
    pub fn new(name: &str, algorithm: Algorithm, secret: &[u8]) -> Result<Self, String> {
        let name = super::fqdn(name);
        if name == "." {
            return Err("the TSIG key name is empty".into());
        }
        if secret.is_empty() {
            return Err(format!("the TSIG secret of key {name} is empty"));
        }
        Ok(Key {
            name,
            algorithm,
            key: hmac::Key::new(algorithm.ring(), secret),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Appends a TSIG RR to `msg` (an encoded message without one) and bumps
    /// ARCOUNT. Returns the signed message and its MAC, which the reply's
    /// signature covers.
    pub fn sign(&self, msg: &[u8], time_signed: u64) -> Result<(Vec<u8>, Vec<u8>), String> {
        self.sign_after(&[], msg, time_signed)
    }

    /// Server side: signs `reply` (encoded, without a TSIG RR) to a request
    /// whose MAC was `request_mac` (from [`Key::verify_request`]).
    pub fn sign_response(
        &self,
        reply: &[u8],
        request_mac: &[u8],
        time_signed: u64,
    ) -> Result<Vec<u8>, String> {
        let mut prefix = Vec::with_capacity(request_mac.len() + 2);
        prefix.extend_from_slice(&(request_mac.len() as u16).to_be_bytes());
        prefix.extend_from_slice(request_mac);
        Ok(self.sign_after(&prefix, reply, time_signed)?.0)
    }

    /// Server side: checks the TSIG on a request signed with this key.
    /// Returns the request without its TSIG RR (original ID, ARCOUNT less
    /// one), ready to parse, and its MAC, which the reply's signature covers.
    pub fn verify_request(&self, msg: &[u8], now: u64) -> Result<(Vec<u8>, Vec<u8>), TsigFailure> {
        let tsig = find_tsig(msg).map_err(TsigFailure::Malformed)?;
        let Some(tsig) = tsig else {
            return Err(TsigFailure::Unsigned);
        };
        if super::fqdn(&tsig.key_name) != self.name
            || Algorithm::from_name(&tsig.algorithm).ok() != Some(self.algorithm)
        {
            return Err(TsigFailure::Rejected(17));
        }
        let mut body = msg[..tsig.start].to_vec();
        body[0..2].copy_from_slice(&tsig.original_id.to_be_bytes());
        let arcount = u16::from_be_bytes([body[10], body[11]]).saturating_sub(1);
        body[10..12].copy_from_slice(&arcount.to_be_bytes());
        let mut data = body.clone();
        data.extend_from_slice(&self.variables(tsig.time_signed, tsig.error, &tsig.other));
        hmac::verify(&self.key, &data, &tsig.mac).map_err(|_| TsigFailure::BadMac)?;
        if now.abs_diff(tsig.time_signed) > u64::from(tsig.fudge) {
            return Err(TsigFailure::BadTime {
                signed: tsig.time_signed,
                now,
            });
        }
        Ok((body, tsig.mac))
    }

    /// Signs `prefix ++ msg ++ variables` and appends the TSIG RR to `msg`.
    fn sign_after(
        &self,
        prefix: &[u8],
        msg: &[u8],
        time_signed: u64,
    ) -> Result<(Vec<u8>, Vec<u8>), String> {
        if msg.len() < 12 {
            return Err("message shorter than a DNS header".into());
        }
        let mut data = prefix.to_vec();
        data.extend_from_slice(msg);
        data.extend_from_slice(&self.variables(time_signed, 0, &[]));
        let mac = hmac::sign(&self.key, &data).as_ref().to_vec();

        let mut rdata = name_wire(self.algorithm.name());
        rdata.extend_from_slice(&time48(time_signed));
        rdata.extend_from_slice(&FUDGE.to_be_bytes());
        rdata.extend_from_slice(&(mac.len() as u16).to_be_bytes());
        rdata.extend_from_slice(&mac);
        rdata.extend_from_slice(&msg[0..2]); // original ID
        rdata.extend_from_slice(&0u16.to_be_bytes()); // error
        rdata.extend_from_slice(&0u16.to_be_bytes()); // other len

        let mut out = msg.to_vec();
        let arcount = u16::from_be_bytes([msg[10], msg[11]])
            .checked_add(1)
            .ok_or("too many additional records")?;
        out[10..12].copy_from_slice(&arcount.to_be_bytes());
        out.extend_from_slice(&name_wire(&self.name));
        out.extend_from_slice(&TYPE_TSIG.to_be_bytes());
        out.extend_from_slice(&CLASS_ANY.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
        Ok((out, mac))
    }

    /// The TSIG variables of RFC 8945 §4.3.3 (key name, class, TTL,
    /// algorithm, time, fudge, error, other data).
    fn variables(&self, time_signed: u64, error: u16, other: &[u8]) -> Vec<u8> {
        let mut v = name_wire(&self.name);
        v.extend_from_slice(&CLASS_ANY.to_be_bytes());
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&name_wire(self.algorithm.name()));
        v.extend_from_slice(&time48(time_signed));
        v.extend_from_slice(&FUDGE.to_be_bytes());
        v.extend_from_slice(&error.to_be_bytes());
        v.extend_from_slice(&(other.len() as u16).to_be_bytes());
        v.extend_from_slice(other);
        v
    }

    /// Checks the TSIG on a reply to a request whose MAC was `request_mac`.
    /// `now` is the current time in seconds since the epoch.
    pub fn verify_response(
        &self,
        reply: &[u8],
        request_mac: &[u8],
        now: u64,
    ) -> Result<(), TsigFailure> {
        let tsig = find_tsig(reply).map_err(TsigFailure::Malformed)?;
        let Some(tsig) = tsig else {
            return Err(TsigFailure::Unsigned);
        };
        if tsig.error != 0 {
            return Err(TsigFailure::Rejected(tsig.error));
        }
        if super::fqdn(&tsig.key_name) != self.name {
            return Err(TsigFailure::Malformed(format!(
                "signed with key {} instead of {}",
                tsig.key_name, self.name
            )));
        }
        if Algorithm::from_name(&tsig.algorithm).ok() != Some(self.algorithm) {
            return Err(TsigFailure::Malformed(format!(
                "signed with algorithm {} instead of {}",
                tsig.algorithm,
                self.algorithm.name()
            )));
        }
        let mut data = Vec::with_capacity(reply.len() + 64);
        data.extend_from_slice(&(request_mac.len() as u16).to_be_bytes());
        data.extend_from_slice(request_mac);
        let mut body = reply[..tsig.start].to_vec();
        body[0..2].copy_from_slice(&tsig.original_id.to_be_bytes());
        let arcount = u16::from_be_bytes([body[10], body[11]]).saturating_sub(1);
        body[10..12].copy_from_slice(&arcount.to_be_bytes());
        data.extend_from_slice(&body);
        data.extend_from_slice(&self.variables(tsig.time_signed, tsig.error, &tsig.other));
        hmac::verify(&self.key, &data, &tsig.mac).map_err(|_| TsigFailure::BadMac)?;
        if now.abs_diff(tsig.time_signed) > u64::from(tsig.fudge) {
            return Err(TsigFailure::BadTime {
                signed: tsig.time_signed,
                now,
            });
        }
        Ok(())
    }
}

/// Why a reply's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TsigFailure {
    #[error("the reply is not signed")]
    Unsigned,
    #[error("the server rejected our signature: TSIG error {}", tsig_error_words(*.0))]
    Rejected(u16),
    #[error("the reply's TSIG signature does not verify with our key")]
    BadMac,
    #[error("the reply was signed at {signed}, too far from our clock ({now})")]
    BadTime { signed: u64, now: u64 },
    #[error("malformed TSIG in the reply: {0}")]
    Malformed(String),
}

/// `BADSIG (the MAC did not verify: the secret differs)` etc.
pub fn tsig_error_words(code: u16) -> String {
    let (name, meaning) = match code {
        16 => (
            "BADSIG",
            "the signature did not verify: the server has a different secret for this key",
        ),
        17 => (
            "BADKEY",
            "the server does not know this key name or algorithm",
        ),
        18 => (
            "BADTIME",
            "the clocks differ by more than the allowed fudge",
        ),
        22 => ("BADTRUNC", "bad truncation"),
        _ => ("unknown", "unknown TSIG error"),
    };
    format!("{name} ({code}): {meaning}")
}

/// A TSIG RR found at the end of a message.
#[derive(Debug, Clone)]
struct Found {
    /// Offset of the TSIG RR in the message.
    start: usize,
    key_name: String,
    algorithm: String,
    time_signed: u64,
    fudge: u16,
    mac: Vec<u8>,
    original_id: u16,
    error: u16,
    other: Vec<u8>,
}

/// Walks the message to its last additional record and decodes it if it is
/// a TSIG RR.
fn find_tsig(msg: &[u8]) -> Result<Option<Found>, String> {
    let mut r = Reader { buf: msg, pos: 12 };
    if msg.len() < 12 {
        return Err("shorter than a header".into());
    }
    let count = |i: usize| usize::from(u16::from_be_bytes([msg[i], msg[i + 1]]));
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    if ar == 0 {
        return Ok(None);
    }
    for _ in 0..qd {
        r.name()?;
        r.take(4)?;
    }
    for _ in 0..(an + ns + ar - 1) {
        r.name()?;
        r.take(8)?;
        let len = usize::from(r.u16()?);
        r.take(len)?;
    }
    let start = r.pos;
    let key_name = r.name()?;
    if r.u16()? != TYPE_TSIG {
        return Ok(None);
    }
    r.take(6)?; // class, TTL
    let rdlen = usize::from(r.u16()?);
    let rdata_end = r.pos + rdlen;
    let algorithm = r.name()?;
    let t = r.take(6)?;
    let time_signed = t.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let fudge = r.u16()?;
    let mac_len = usize::from(r.u16()?);
    let mac = r.take(mac_len)?.to_vec();
    let original_id = r.u16()?;
    let error = r.u16()?;
    let other_len = usize::from(r.u16()?);
    let other = r.take(other_len)?.to_vec();
    if r.pos != rdata_end {
        return Err("TSIG RDATA length mismatch".into());
    }
    Ok(Some(Found {
        start,
        key_name,
        algorithm,
        time_signed,
        fudge,
        mac,
        original_id,
        error,
        other,
    }))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let end = end.ok_or("message ends early")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Reads a (possibly compressed) name at the cursor; returns it as text.
    fn name(&mut self) -> Result<String, String> {
        let mut labels: Vec<String> = Vec::new();
        let mut pos = self.pos;
        let mut jumped = false;
        for _ in 0..128 {
            let len = *self.buf.get(pos).ok_or("name runs past the end")?;
            match len {
                0 => {
                    if !jumped {
                        self.pos = pos + 1;
                    }
                    return Ok(if labels.is_empty() {
                        ".".into()
                    } else {
                        labels.join(".") + "."
                    });
                }
                l if l & 0xC0 == 0xC0 => {
                    let lo = *self.buf.get(pos + 1).ok_or("pointer runs past the end")?;
                    if !jumped {
                        self.pos = pos + 2;
                    }
                    jumped = true;
                    pos = (usize::from(l & 0x3F) << 8) | usize::from(lo);
                }
                l => {
                    let l = usize::from(l);
                    let label = self
                        .buf
                        .get(pos + 1..pos + 1 + l)
                        .ok_or("label runs past the end")?;
                    labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
                    pos += 1 + l;
                }
            }
        }
        Err("name compression loop".into())
    }
}

/// A name in uncompressed, lowercase wire form.
fn name_wire(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        let l = label.to_ascii_lowercase();
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
    out
}

fn time48(t: u64) -> [u8; 6] {
    let b = t.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_verifies_a_signed_request_and_its_signed_reply_verifies() {
        let key = Key::new("demo-key", Algorithm::HmacSha256, b"secret").unwrap();
        let mut request = vec![0u8; 12];
        request[0..2].copy_from_slice(&0x1234u16.to_be_bytes());
        let (signed, client_mac) = key.sign(&request, 1_000_000).unwrap();
        let (body, mac) = key.verify_request(&signed, 1_000_010).unwrap();
        assert_eq!(body, request);
        assert_eq!(mac, client_mac);
        let mut reply = request.clone();
        reply[2] = 0x80;
        let signed_reply = key.sign_response(&reply, &mac, 1_000_011).unwrap();
        key.verify_response(&signed_reply, &client_mac, 1_000_012)
            .unwrap();

        let other = Key::new("demo-key", Algorithm::HmacSha256, b"other").unwrap();
        assert_eq!(
            other.verify_request(&signed, 1_000_010),
            Err(TsigFailure::BadMac)
        );
        let renamed = Key::new("other-key", Algorithm::HmacSha256, b"secret").unwrap();
        assert_eq!(
            renamed.verify_request(&signed, 1_000_010),
            Err(TsigFailure::Rejected(17))
        );
        assert!(matches!(
            key.verify_request(&signed, 2_000_000),
            Err(TsigFailure::BadTime { .. })
        ));
        assert_eq!(
            key.verify_request(&request, 1_000_000),
            Err(TsigFailure::Unsigned)
        );
    }

    /// A reply as a server builds it: the request MAC, the reply, the variables.
    fn signed_reply(key: &Key, request_id: u16, request_mac: &[u8], time: u64) -> Vec<u8> {
        // Header: ID, QR+opcode UPDATE, NOERROR, one zone record.
        let mut reply = request_id.to_be_bytes().to_vec();
        reply.extend_from_slice(&[0xA8, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        reply.extend_from_slice(&name_wire("elm.test"));
        reply.extend_from_slice(&[0, 6, 0, 1]);
        let mut data = (request_mac.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(request_mac);
        data.extend_from_slice(&reply);
        data.extend_from_slice(&key.variables(time, 0, &[]));
        let mac = hmac::sign(&key.key, &data).as_ref().to_vec();
        let mut rdata = name_wire(key.algorithm.name());
        rdata.extend_from_slice(&time48(time));
        rdata.extend_from_slice(&FUDGE.to_be_bytes());
        rdata.extend_from_slice(&(mac.len() as u16).to_be_bytes());
        rdata.extend_from_slice(&mac);
        rdata.extend_from_slice(&request_id.to_be_bytes());
        rdata.extend_from_slice(&[0, 0, 0, 0]);
        reply[11] = 1;
        reply.extend_from_slice(&name_wire(&key.name));
        reply.extend_from_slice(&[0, 250, 0, 255, 0, 0, 0, 0]);
        reply.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        reply.extend_from_slice(&rdata);
        reply
    }

    #[test]
    fn sign_appends_a_tsig_rr_that_verifies() {
        let key = Key::new("cutover-test", Algorithm::HmacSha256, b"0123456789abcdef").unwrap();
        let mut msg = vec![0x12, 0x34, 0x28, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        msg.extend_from_slice(&name_wire("elm.test"));
        msg.extend_from_slice(&[0, 6, 0, 1]);
        let (signed, mac) = key.sign(&msg, 1_700_000_000).unwrap();
        assert_eq!(&signed[10..12], &[0, 1], "ARCOUNT counts the TSIG");
        assert_eq!(mac.len(), 32);
        let found = find_tsig(&signed).unwrap().unwrap();
        assert_eq!(found.start, msg.len());
        assert_eq!(found.key_name, "cutover-test.");
        assert_eq!(found.algorithm, "hmac-sha256.");
        assert_eq!(found.time_signed, 1_700_000_000);
        assert_eq!(found.original_id, 0x1234);
        assert_eq!(found.mac, mac);
        // The MAC covers the unsigned message and the variables.
        let mut data = msg.clone();
        data.extend_from_slice(&key.variables(1_700_000_000, 0, &[]));
        assert!(hmac::verify(&key.key, &data, &mac).is_ok());
    }

    #[test]
    fn replies_are_checked() {
        for alg in [Algorithm::HmacSha256, Algorithm::HmacSha512] {
            let key = Key::new("k.", alg, b"secret-bytes").unwrap();
            let t = 1_700_000_000;
            let req_mac = vec![7u8; 32];
            let good = signed_reply(&key, 0x4242, &req_mac, t);
            assert_eq!(key.verify_response(&good, &req_mac, t + 5), Ok(()));
            // Another request's MAC, a flipped bit, another secret, a stale clock.
            assert_eq!(
                key.verify_response(&good, &[8u8; 32], t),
                Err(TsigFailure::BadMac)
            );
            let mut flipped = good.clone();
            flipped[3] ^= 1;
            assert_eq!(
                key.verify_response(&flipped, &req_mac, t),
                Err(TsigFailure::BadMac)
            );
            let other = Key::new("k.", alg, b"other-secret").unwrap();
            assert_eq!(
                other.verify_response(&good, &req_mac, t),
                Err(TsigFailure::BadMac)
            );
            assert!(matches!(
                key.verify_response(&good, &req_mac, t + 3600),
                Err(TsigFailure::BadTime { .. })
            ));
            // Unsigned: header only.
            assert_eq!(
                key.verify_response(&[0u8; 12], &req_mac, t),
                Err(TsigFailure::Unsigned)
            );
        }
    }

    #[test]
    fn algorithms_by_name() {
        assert_eq!(
            Algorithm::from_name("HMAC-SHA512.").unwrap(),
            Algorithm::HmacSha512
        );
        assert!(
            Algorithm::from_name("hmac-md5")
                .unwrap_err()
                .contains("hmac-md5")
        );
        assert!(tsig_error_words(16).starts_with("BADSIG"));
    }
}
