//! The RFC 2136 provider against a real BIND: a TSIG-signed UPDATE sets a new
//! A RRset and TTL, `verify` at the authoritative server agrees, `dig` sees
//! it; a wrong secret or key name is refused with a clear error and changes
//! nothing; applying twice leaves the same zone.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use cutover_coordinator::dns::{self, ProviderSpec, RecordSet, RecordType, Rfc2136Spec, SecretRef};
use cutover_e2e::addr::AddrBlock;
use cutover_e2e::bind::{self, Bind, TSIG_KEY_NAME, ZoneSpec};

const ZONE: &str = "elm.test";
const NAME: &str = "package.elm.test";

fn spec(server: SocketAddr, key_name: &str, secret_file: &str) -> ProviderSpec {
    ProviderSpec {
        provider: "rfc2136".into(),
        rfc2136: Some(Rfc2136Spec {
            server: server.to_string(),
            tsig_key_name: key_name.into(),
            tsig_algorithm: Some("hmac-sha256".into()),
            tsig_secret: SecretRef {
                file: Some(secret_file.into()),
                env: None,
            },
        }),
        digitalocean: None,
        cloudflare: None,
        route53: None,
        dreamhost: None,
    }
}

fn write_secret(dir: &Path, file: &str, secret: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(file);
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

async fn dig_a(bind: &Bind) -> (Vec<Ipv4Addr>, Option<u32>) {
    let a = bind::query(bind.addr(), NAME, "A").await.unwrap();
    assert!(a.status_noerror);
    let mut addrs = a.addresses;
    addrs.sort();
    (addrs, a.ttl)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc2136_updates_bind_with_tsig_and_verify_agrees() {
    cutover_e2e::init();
    let block = AddrBlock::acquire().unwrap();
    let dir = tempfile::Builder::new()
        .prefix("cutover-e2e-dns-")
        .tempdir()
        .unwrap();
    let ns_ip = block.add(1).unwrap();
    let old_ip = block.ip(10);
    let bind = Bind::start(
        ns_ip,
        &ZoneSpec {
            zone: ZONE.into(),
            records: vec![("package".into(), old_ip, 300)],
        },
        &dir.path().join("bind"),
        &block,
    )
    .await
    .unwrap();
    let server = SocketAddr::new(ns_ip.into(), 53);
    write_secret(dir.path(), "tsig.key", bind.tsig_secret());
    let provider = dns::build(&spec(server, TSIG_KEY_NAME, "tsig.key"), ZONE, dir.path()).unwrap();
    assert_eq!(provider.name(), "rfc2136");

    // The nameservers of the zone, found from its NS records (BIND's own glue).
    let nameservers = dns::discover_nameservers(ZONE, server).await.unwrap();
    assert_eq!(nameservers, [server]);

    // read: what BIND serves now.
    let before = provider.read(NAME, RecordType::A).await.unwrap().unwrap();
    assert_eq!(before.values, [old_ip.to_string()]);
    assert_eq!(before.ttl, 300);
    assert_eq!(
        provider
            .read("nothing.elm.test", RecordType::A)
            .await
            .unwrap(),
        None
    );

    // apply: two new addresses and a lowered TTL.
    let new = [block.ip(11), block.ip(12)];
    let desired = RecordSet::new(NAME, RecordType::A, 30, &new.map(|ip| ip.to_string())).unwrap();
    provider.apply(&desired).await.unwrap();
    let v = dns::verify(&nameservers, &desired, Duration::from_secs(10)).await;
    assert!(v.agrees_with(&desired), "{:?}", v.servers);
    assert_eq!(dig_a(&bind).await, (new.to_vec(), Some(30)));
    assert_eq!(
        provider.read(NAME, RecordType::A).await.unwrap(),
        Some(desired.clone())
    );

    // apply again: same zone.
    provider.apply(&desired).await.unwrap();
    assert_eq!(dig_a(&bind).await, (new.to_vec(), Some(30)));
    assert!(
        dns::verify(&nameservers, &desired, Duration::from_secs(5))
            .await
            .agrees_with(&desired)
    );

    // verify does not agree with something else, and says why.
    let other = RecordSet::new(NAME, RecordType::A, 30, &[block.ip(99).to_string()]).unwrap();
    let v = dns::verify(&nameservers, &other, Duration::from_secs(1)).await;
    assert!(!v.agrees_with(&other));
    assert!(v.disagreements(&other, true)[0].contains(&new[0].to_string()));
    // TTL alone differs: values agree, the full check does not.
    let ttl_only = RecordSet {
        ttl: 60,
        ..desired.clone()
    };
    let v = dns::verify(&nameservers, &ttl_only, Duration::from_secs(1)).await;
    assert!(v.agrees_on_values(&ttl_only) && !v.agrees_with(&ttl_only));

    // A wrong secret: refused with the rcode and TSIG error in words; nothing changes.
    write_secret(
        dir.path(),
        "wrong.key",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    let wrong = dns::build(&spec(server, TSIG_KEY_NAME, "wrong.key"), ZONE, dir.path()).unwrap();
    let err = wrong.apply(&other).await.unwrap_err();
    assert!(!err.retryable);
    let msg = err.to_string();
    assert!(msg.contains("NOTAUTH") && msg.contains("BADSIG"), "{msg}");
    assert!(msg.contains(TSIG_KEY_NAME), "{msg}");
    assert_eq!(dig_a(&bind).await, (new.to_vec(), Some(30)));

    // An unknown key name: BADKEY.
    let unknown = dns::build(&spec(server, "no-such-key", "tsig.key"), ZONE, dir.path()).unwrap();
    let msg = unknown.apply(&other).await.unwrap_err().to_string();
    assert!(msg.contains("NOTAUTH") && msg.contains("BADKEY"), "{msg}");
    assert_eq!(dig_a(&bind).await, (new.to_vec(), Some(30)));

    // A name outside the zone BIND serves: refused before anything is sent.
    let outside = RecordSet::new("package.other.test", RecordType::A, 30, &["10.0.0.1"]).unwrap();
    assert!(provider.apply(&outside).await.is_err());

    // A large RRset (below BIND's max-records-per-type of 100): its answer
    // does not fit a 1232-byte UDP reply, so verify and read must go on over
    // TCP after the truncated answer.
    let many: Vec<String> = (1..=90u8)
        .map(|i| Ipv4Addr::new(10, 9, 0, i).to_string())
        .collect();
    let big = RecordSet::new(NAME, RecordType::A, 30, &many).unwrap();
    provider.apply(&big).await.unwrap();
    let mut dig = tokio::process::Command::new("dig");
    dig.arg(format!("@{ns_ip}")).args([
        NAME,
        "A",
        "+norecurse",
        "+bufsize=1232",
        "+ignore",
        "+notcp",
        "+tries=1",
    ]);
    let out = dig.output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("flags:") && l.contains(" tc")),
        "the UDP answer should be truncated: {text}"
    );
    let v = dns::verify(&nameservers, &big, Duration::from_secs(10)).await;
    assert!(v.agrees_with(&big), "{:?}", v.disagreements(&big, true));
    assert_eq!(provider.read(NAME, RecordType::A).await.unwrap(), Some(big));
}

/// A server that does not answer: verify gives up at its deadline and names
/// the server; the provider's error is retryable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_servers_are_reported_not_trusted() {
    cutover_e2e::init();
    let block = AddrBlock::acquire().unwrap();
    let silent_ip = block.add(2).unwrap();
    // Bound but never answering.
    let sock = tokio::net::UdpSocket::bind((silent_ip, 53)).await.unwrap();
    let silent = sock.local_addr().unwrap();
    let want = RecordSet::new(NAME, RecordType::A, 30, &["10.0.0.1"]).unwrap();
    let started = std::time::Instant::now();
    let v = dns::verify_with(
        &[silent],
        &want,
        Duration::from_secs(2),
        dns::VerifyOptions {
            query_timeout: Duration::from_millis(500),
            ..dns::VerifyOptions::default()
        },
    )
    .await;
    assert!(!v.agrees_with(&want));
    assert!(started.elapsed() < Duration::from_secs(6));
    let d = v.disagreements(&want, true);
    assert!(
        d[0].contains(&silent.to_string()) && d[0].contains("no answer"),
        "{d:?}"
    );
    drop(sock);
}

/// Writes a `named.conf` and starts BIND on `addr`, waiting until it answers
/// for the zone.
async fn start_named(
    name: &str,
    addr: Ipv4Addr,
    dir: &Path,
    block: &AddrBlock,
    zone_stanza: &str,
    extra_options: &str,
    keys: &str,
) -> cutover_e2e::procs::Proc {
    std::fs::create_dir_all(dir).unwrap();
    let d = dir.display();
    let conf = format!(
        r#"options {{
    directory "{d}";
    listen-on port 53 {{ {addr}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    allow-query {{ any; }};
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    dnssec-validation no;
    {extra_options}
}};
controls {{ }};
logging {{ category default {{ default_stderr; }}; }};
{keys}
{zone_stanza}
"#
    );
    let conf_path = dir.join("named.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut cmd = std::process::Command::new("named");
    cmd.args(["-f", "-g", "-4", "-c"]).arg(&conf_path);
    let proc = cutover_e2e::procs::Proc::spawn(name, cmd, dir, block)
        .unwrap()
        .quiet();
    cutover_e2e::poll::until(
        &format!("{name} on {addr} to serve {ZONE}"),
        Duration::from_secs(20),
        || async move {
            let a = bind::query(addr, ZONE, "SOA").await?;
            Ok(a.status_noerror.then_some(()))
        },
    )
    .await
    .unwrap();
    proc
}

/// A primary whose key is hmac-sha512 and a secondary fed by NOTIFY and zone
/// transfer: the provider signs with SHA-512, the nameservers are discovered
/// from the NS records, and `verify` waits until both serve the new set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc2136_hmac_sha512_and_verify_waits_for_every_nameserver() {
    cutover_e2e::init();
    let block = AddrBlock::acquire().unwrap();
    let dir = tempfile::Builder::new()
        .prefix("cutover-e2e-dns-")
        .tempdir()
        .unwrap();
    let primary = block.add(1).unwrap();
    let secondary = block.add(2).unwrap();
    let old_ip = block.ip(10);
    // 64 random-looking bytes, base64: an hmac-sha512 secret.
    let secret =
        "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEg==";
    let key = format!(r#"key "cutover-512" {{ algorithm hmac-sha512; secret "{secret}"; }};"#);
    let zone_file = dir.path().join("primary").join("elm.test.zone");
    std::fs::create_dir_all(zone_file.parent().unwrap()).unwrap();
    std::fs::write(
        &zone_file,
        format!(
            "$TTL 60\n@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 60 30 600 5\n\
             @ IN NS ns1.{ZONE}.\n@ IN NS ns2.{ZONE}.\n\
             ns1 IN A {primary}\nns2 IN A {secondary}\npackage 300 IN A {old_ip}\n"
        ),
    )
    .unwrap();
    let _p = start_named(
        "named-primary",
        primary,
        &dir.path().join("primary"),
        &block,
        &format!(
            r#"zone "{ZONE}" {{ type primary; file "{}"; allow-update {{ key "cutover-512"; }};
                 allow-transfer {{ any; }}; notify explicit; also-notify {{ {secondary}; }}; }};"#,
            zone_file.display()
        ),
        &format!("notify-source {primary};"),
        &key,
    )
    .await;
    let _s = start_named(
        "named-secondary",
        secondary,
        &dir.path().join("secondary"),
        &block,
        &format!(
            r#"zone "{ZONE}" {{ type secondary; primaries {{ {primary}; }}; file "{}"; }};"#,
            dir.path().join("secondary").join("elm.test.db").display()
        ),
        &format!("transfer-source {secondary}; notify no;"),
        "",
    )
    .await;

    let server = SocketAddr::new(primary.into(), 53);
    let nameservers = dns::discover_nameservers(ZONE, server).await.unwrap();
    assert_eq!(nameservers, [server, SocketAddr::new(secondary.into(), 53)]);

    std::fs::write(dir.path().join("sha512.key"), secret).unwrap();
    let spec = ProviderSpec {
        rfc2136: Some(Rfc2136Spec {
            server: primary.to_string(),
            tsig_key_name: "cutover-512".into(),
            tsig_algorithm: Some("hmac-sha512".into()),
            tsig_secret: SecretRef {
                file: Some("sha512.key".into()),
                env: None,
            },
        }),
        ..spec(server, "unused", "unused")
    };
    let provider = dns::build(&spec, ZONE, dir.path()).unwrap();
    let desired = RecordSet::new(NAME, RecordType::A, 45, &[block.ip(11).to_string()]).unwrap();
    provider.apply(&desired).await.unwrap();
    let v = dns::verify(&nameservers, &desired, Duration::from_secs(30)).await;
    assert!(
        v.agrees_with(&desired),
        "{:?}",
        v.disagreements(&desired, true)
    );
    for ns in [primary, secondary] {
        let a = bind::query(ns, NAME, "A").await.unwrap();
        assert_eq!((a.addresses, a.ttl), (vec![block.ip(11)], Some(45)), "{ns}");
    }

    // The same key name with SHA-256 is a different key to BIND: refused.
    let wrong_alg = ProviderSpec {
        rfc2136: Some(Rfc2136Spec {
            tsig_algorithm: Some("hmac-sha256".into()),
            ..spec.rfc2136.clone().unwrap()
        }),
        ..spec.clone()
    };
    let other = RecordSet::new(NAME, RecordType::A, 45, &[block.ip(12).to_string()]).unwrap();
    let msg = dns::build(&wrong_alg, ZONE, dir.path())
        .unwrap()
        .apply(&other)
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("NOTAUTH"), "{msg}");
    assert_eq!(
        bind::query(primary, NAME, "A").await.unwrap().addresses,
        [block.ip(11)]
    );
}
