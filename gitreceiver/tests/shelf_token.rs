//! `--shelf-token-secret`: the receiver waits for the slug store to create its token Secret,
//! not ready (`/readyz`) until it has it, and gives up with an error saying what to check.

mod receiver_env;

use std::net::SocketAddr;
use std::time::Duration;

use flynn_builder::store::token;
use flynn_e2e::{TestNamespace, eventually, free_port};
use flynn_gitreceiver::pipeline::{Pipeline, PipelineSettings};
use flynn_gitreceiver::receiver::{StartError, start_when};
use kube::Client;
use receiver_env::Receiver;

const SECRET: &str = "flynn-shelf-token";

/// The pipeline `main.rs` makes with `--shelf-token-secret`.
async fn pipeline_from_secret(
    client: Client,
    namespace: String,
    timeout: Duration,
) -> Result<Pipeline, StartError> {
    let token = token::wait(&client, &namespace, SECRET, timeout).await?;
    Ok(Pipeline::new(
        client,
        PipelineSettings {
            shelf_url: "http://127.0.0.1:9".into(),
            shelf_pod_url: "http://127.0.0.1:9".into(),
            shelf_token: token,
            ..PipelineSettings::default()
        },
    ))
}

async fn http_get(addr: SocketAddr, path: &str) -> Option<(String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Some((
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_is_not_ready_until_the_store_has_created_its_token() {
    let ns = TestNamespace::create("gitreceiver-shelf-token").await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Receiver::settings(dir.path(), ns.name());
    settings.http_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    settings.repo_gc_interval = None;
    let http = settings.http_addr;
    let starting = tokio::spawn(start_when(
        settings,
        ns.client().clone(),
        pipeline_from_secret(
            ns.client().clone(),
            ns.name().to_owned(),
            Duration::from_secs(60),
        ),
    ));

    // Alive, not ready, and saying why.
    let (status, body) = eventually(
        "/readyz to answer",
        Duration::from_secs(30),
        || http_get(http, "/readyz"),
        Option::is_some,
    )
    .await
    .unwrap();
    assert!(status.contains("503"), "{status} {body}");
    assert!(body.contains("slug store token loaded: false"), "{body}");
    let (status, _) = http_get(http, "/healthz").await.unwrap();
    assert!(status.contains("200"), "{status}");
    assert!(!starting.is_finished());

    // The slug store creates it: the receiver starts and becomes ready.
    token::ensure(ns.client(), ns.name(), SECRET).await.unwrap();
    let running = tokio::time::timeout(Duration::from_secs(30), starting)
        .await
        .expect("the receiver did not start within 30 s of the Secret's creation")
        .unwrap()
        .unwrap_or_else(|e| panic!("starting: {e}"));
    tokio::time::timeout(Duration::from_secs(60), running.ready())
        .await
        .expect("the key registry did not sync within 60 s");
    let (status, body) = http_get(http, "/readyz").await.unwrap();
    assert!(status.contains("200"), "{status} {body}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_gives_up_when_the_store_never_creates_its_token() {
    let ns = TestNamespace::create("gitreceiver-shelf-token-timeout").await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Receiver::settings(dir.path(), ns.name());
    settings.repo_gc_interval = None;
    let err = start_when(
        settings,
        ns.client().clone(),
        pipeline_from_secret(
            ns.client().clone(),
            ns.name().to_owned(),
            Duration::from_secs(3),
        ),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StartError::ShelfToken(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "the slug store has not created Secret {}/{SECRET} after 3s: is it running",
            ns.name()
        )),
        "{msg}"
    );
}
