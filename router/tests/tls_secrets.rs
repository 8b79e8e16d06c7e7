//! What the router keeps of a namespace's Secrets (issue 17), against the local cluster's API
//! server: a tenant whose namespace the router may read fills it with large TLS Secrets no
//! Route names, and the router holds none of them, while the Secrets its Routes name are
//! served, picked up when created late, rotated live, refused when too large and reported
//! when deleted.

mod support;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use flynn_crds::{Route, RouteSpec, conditions};
use flynn_e2e::{TestNamespace, install_flynn_crds};
use flynn_router::{Router, secrets};
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Condition};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use support::*;
use tokio::net::TcpStream;

/// Attack Secrets no Route names, and the size of each one's `tls.crt`.
const ATTACK_SECRETS: usize = 100;
const ATTACK_CRT_BYTES: usize = 1_000_000;

fn cert(name: &str) -> (String, String, CertificateDer<'static>) {
    let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    (
        c.cert.pem(),
        c.signing_key.serialize_pem(),
        c.cert.der().clone(),
    )
}

fn tls_secret(name: &str, crt: &str, key: &str) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": crt, "tls.key": key},
    }))
    .unwrap()
}

async fn create_secret(ns: &TestNamespace, name: &str, crt: &str, key: &str) {
    ns.api::<Secret>()
        .create(&PostParams::default(), &tls_secret(name, crt, key))
        .await
        .unwrap();
}

async fn create_tls_route(ns: &TestNamespace, name: &str, host: &str, secret: &str) {
    let mut spec = RouteSpec::http("app", host);
    spec.http.as_mut().unwrap().tls_secret_name = Some(secret.to_owned());
    ns.api::<Route>()
        .create(&PostParams::default(), &Route::new(name, spec))
        .await
        .unwrap();
}

/// The certificate presented for `name` (trusting only `root`), or the handshake's error.
async fn handshake(
    addr: SocketAddr,
    name: &str,
    root: &CertificateDer<'static>,
) -> Result<CertificateDer<'static>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = connector
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].clone())
}

/// The Route's `CertificateReady` once `done` holds for it.
async fn certificate_ready(
    ns: &TestNamespace,
    route: &str,
    done: impl Fn(&Condition) -> bool,
) -> Condition {
    let api = ns.api::<Route>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let found = api
            .get(route)
            .await
            .ok()
            .and_then(|r| r.status)
            .and_then(|s| {
                conditions::find(&s.conditions, conditions::types::CERTIFICATE_READY).cloned()
            });
        if let Some(c) = found.filter(|c| done(c)) {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting on CertificateReady of {}/{route}",
            ns.name()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// This process's resident set (the router runs in it), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[derive(Debug, Clone, Copy)]
struct Held {
    secrets: i64,
    bytes: i64,
    reads: u64,
    rss: u64,
}

fn held(router: &Router) -> Held {
    Held {
        secrets: router.metrics.tls_secrets_held.get(),
        bytes: router.metrics.tls_secret_bytes_held.get(),
        reads: router.metrics.tls_secret_reads.get(),
        rss: rss(),
    }
}

const MIB: f64 = 1024.0 * 1024.0;

#[tokio::test]
async fn secrets_no_route_names_cost_the_router_nothing_and_named_ones_are_served_live() {
    let ns = TestNamespace::create("router-tls-secrets").await;
    install_flynn_crds(ns.client()).await.unwrap();
    let router = router(ns.client().clone(), ns.name()).await;
    let https = router.https_addr.unwrap();

    // The valid twin: a named Secret, served by SNI.
    let (crt1, key1, der1) = cert("shop.test");
    create_secret(&ns, "shop-tls", &crt1, &key1).await;
    create_tls_route(&ns, "shop", "shop.test", "shop-tls").await;
    eventually("shop.test gets its certificate", || async {
        handshake(https, "shop.test", &der1).await.as_ref() == Ok(&der1)
    })
    .await;

    // A Secret created after the Route that names it: not found, then picked up.
    let (late_crt, late_key, late_der) = cert("late.test");
    create_tls_route(&ns, "late", "late.test", "late-tls").await;
    let c = certificate_ready(&ns, "late", |c| {
        c.reason == conditions::reasons::SECRET_NOT_FOUND
    })
    .await;
    assert_eq!(c.status, "False");
    assert!(handshake(https, "late.test", &late_der).await.is_err());
    create_secret(&ns, "late-tls", &late_crt, &late_key).await;
    eventually(
        "late.test gets the Secret created after its Route",
        || async { handshake(https, "late.test", &late_der).await.as_ref() == Ok(&late_der) },
    )
    .await;

    // A named Secret with a chain over the limit: refused, saying so, and not held.
    let (big_crt, big_key, big_der) = cert("big.test");
    let big = big_crt.repeat(secrets::MAX_TLS_CRT_BYTES / big_crt.len() + 1);
    create_secret(&ns, "big-tls", &big, &big_key).await;
    create_tls_route(&ns, "big", "big.test", "big-tls").await;
    let c = certificate_ready(&ns, "big", |c| c.reason == conditions::reasons::MALFORMED).await;
    assert!(
        c.message.contains(&format!(
            "tls.crt is {} bytes, over the router's limit of {} bytes",
            big.len(),
            secrets::MAX_TLS_CRT_BYTES
        )),
        "{}",
        c.message
    );
    assert!(handshake(https, "big.test", &big_der).await.is_err());

    let before = held(&router);
    assert_eq!(before.secrets, 2, "shop-tls and late-tls: {before:?}");
    let named_bytes = crt1.len() + key1.len() + late_crt.len() + late_key.len();
    assert_eq!(before.bytes, named_bytes as i64);

    // The attack: large TLS Secrets (a valid chain: one certificate repeated to ~1 MB) that
    // no Route names, in the namespace the router may read.
    let (junk_crt, junk_key, _) = cert("junk.test");
    let junk = junk_crt.repeat(ATTACK_CRT_BYTES / junk_crt.len());
    let started = std::time::Instant::now();
    futures::future::join_all((0..4).map(|worker| {
        let (ns, junk, junk_key) = (&ns, &junk, &junk_key);
        async move {
            for i in (worker..ATTACK_SECRETS).step_by(4) {
                create_secret(ns, &format!("junk-{i}"), junk, junk_key).await;
            }
        }
    }))
    .await;
    let created = started.elapsed();

    // Rotate the named Secret after them: once the new certificate is served, the router's
    // watch has gone past every attack Secret (a namespace's events arrive in order).
    let (crt2, key2, der2) = cert("shop.test");
    ns.api::<Secret>()
        .patch(
            "shop-tls",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"tls.crt": crt2, "tls.key": key2}})),
        )
        .await
        .unwrap();
    eventually("shop.test gets the rotated certificate", || async {
        handshake(https, "shop.test", &der2).await.as_ref() == Ok(&der2)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = held(&router);
    let attack_mib = (ATTACK_SECRETS * (junk.len() + junk_key.len())) as f64 / MIB;
    println!(
        "attack: {ATTACK_SECRETS} TLS Secrets of {:.2} MiB each ({attack_mib:.1} MiB) created in \
         {created:.1?}; router holds {} Secrets / {} bytes before, {} Secrets / {} bytes after; \
         Secret reads before {}, after {} (the rotation); process RSS {:.1} MiB before, {:.1} MiB \
         after ({:+.1} MiB)",
        (junk.len() + junk_key.len()) as f64 / MIB,
        before.secrets,
        before.bytes,
        after.secrets,
        after.bytes,
        before.reads,
        after.reads,
        before.rss as f64 / MIB,
        after.rss as f64 / MIB,
        (after.rss as f64 - before.rss as f64) / MIB,
    );
    assert_eq!(after.secrets, 2, "still only the named Secrets: {after:?}");
    let rotated_bytes = crt2.len() + key2.len() + late_crt.len() + late_key.len();
    assert_eq!(after.bytes, rotated_bytes as i64);
    // The attack Secrets were never read: only the rotated one was (once, or twice if its
    // change crossed a read in flight).
    let reads = after.reads - before.reads;
    assert!((1..=2).contains(&reads), "{reads} reads: {after:?}");
    // Bounded well below what holding the attack would take (the old watch kept each
    // Secret's parsed chain, ~0.75 MB of DER apiece): the process's own allocations while
    // creating them stay within this.
    assert!(
        ((after.rss as f64 - before.rss as f64) / MIB) < attack_mib / 4.0,
        "RSS grew from {before:?} to {after:?}"
    );

    // A named Secret deleted: its Route says so, and its certificate is no longer served.
    ns.api::<Secret>()
        .delete("shop-tls", &DeleteParams::default())
        .await
        .unwrap();
    let c = certificate_ready(&ns, "shop", |c| {
        c.reason == conditions::reasons::SECRET_NOT_FOUND
    })
    .await;
    assert_eq!(c.status, "False");
    assert!(c.message.contains("shop-tls"), "{}", c.message);
    assert!(handshake(https, "shop.test", &der2).await.is_err());
    assert_eq!(held(&router).secrets, 1, "late-tls only");
    // The twin is still served.
    assert_eq!(
        handshake(https, "late.test", &late_der).await.as_ref(),
        Ok(&late_der)
    );
    router.shutdown(Duration::from_secs(5)).await;
}
