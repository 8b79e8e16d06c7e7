//! The slug store's S3 backend against a real S3-compatible server: SeaweedFS's `weed server
//! -s3` (built from the Go module proxy by `e2e/cluster/build seaweedfs`), on loopback ports
//! with a temporary data directory, and the `shelf` binary configured for it through its
//! `SHELF_*` settings, as in a cluster. What is in the bucket is checked through the S3 API
//! (object_store), and through SeaweedFS's filer for unfinished multipart uploads.

mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use common::{TOKEN, fixtures, header, http, source_tarball, wait_for_http};
use flynn_builder::{
    build::BuildResult,
    client::HttpClient,
    digest::Sha256,
    signing::{Access, SigningKey, unix_now},
    store::{BackendSettings, S3Settings, Store, gc},
};
use flynn_e2e::free_port;
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, path::Path as Key};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SHELF: &str = env!("CARGO_BIN_EXE_shelf");
const SLUGBUILDER: &str = env!("CARGO_BIN_EXE_slugbuilder");
const SLUGRUNNER: &str = env!("CARGO_BIN_EXE_slugrunner");

const ACCESS_KEY: &str = "flynn-shelf";
const SECRET_KEY: &str = "flynn-shelf-secret-0123456789";
const BUCKET: &str = "flynn-slugs";

/// The `weed` binary `e2e/cluster/build seaweedfs` puts in the cluster's bin directory.
fn weed_binary() -> PathBuf {
    let bin_dir = std::env::var_os("FLYNN_CLUSTER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("FLYNN_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".cache/flynn")
                });
            cache.join("cluster-bin")
        });
    let weed = bin_dir.join("weed");
    assert!(
        weed.is_file(),
        "{} is missing: run `e2e/cluster/build seaweedfs` (it builds SeaweedFS from the Go module proxy; e2e/test does)",
        weed.display()
    );
    weed
}

/// Stops a child with SIGTERM, then SIGKILL after `grace`.
fn stop(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A SeaweedFS server (master, volume, filer and S3 gateway in one process) with one S3
/// identity and the test bucket; killed on drop.
struct Weed {
    child: Child,
    dir: tempfile::TempDir,
    s3: SocketAddr,
    filer: SocketAddr,
    /// gRPC ports by component: each also listens on `/tmp/seaweedfs-<component>-grpc-<port>.sock`
    /// (a fixed path), which a killed server leaves behind.
    grpc: [(&'static str, u16); 4],
}

impl Weed {
    async fn start() -> Self {
        let weed = weed_binary();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let identities = serde_json::json!({
            "identities": [{
                "name": "shelf",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }]
        });
        std::fs::write(dir.path().join("s3.json"), identities.to_string()).unwrap();
        let log = std::fs::File::create(dir.path().join("weed.log")).unwrap();
        let [
            master,
            master_grpc,
            volume,
            volume_grpc,
            filer,
            filer_grpc,
            s3,
            s3_grpc,
        ] = std::array::from_fn(|_| free_port());
        let sock = |name: &str| dir.path().join(name).display().to_string();
        let child = Command::new(&weed)
            .current_dir(dir.path())
            .args([
                // glog's files (weed.INFO, ...) go with the rest, not to /tmp.
                format!("-logdir={}", dir.path().display()),
                "server".to_owned(),
                "-dir=data".to_owned(),
                "-ip=127.0.0.1".to_owned(),
                "-ip.bind=127.0.0.1".to_owned(),
                // Never report usage to SeaweedFS's telemetry server (and, should the flag
                // ever be ignored, point it at a closed local port).
                "-master.telemetry=false".to_owned(),
                "-master.telemetry.url=http://127.0.0.1:9/".to_owned(),
                format!("-master.port={master}"),
                format!("-master.port.grpc={master_grpc}"),
                "-master.volumeSizeLimitMB=64".to_owned(),
                format!("-volume.port={volume}"),
                format!("-volume.port.grpc={volume_grpc}"),
                "-volume.max=8".to_owned(),
                // The default, 1 % of the disk, is 2.5 GB of a 250 GB disk: a nearly full
                // build machine would get no writable volume ("Not enough data nodes").
                "-volume.minFreeSpace=256MiB".to_owned(),
                "-volume.preStopSeconds=0".to_owned(),
                "-filer".to_owned(),
                format!("-filer.port={filer}"),
                format!("-filer.port.grpc={filer_grpc}"),
                format!("-filer.localSocket={}", sock("filer.sock")),
                "-s3".to_owned(),
                format!("-s3.port={s3}"),
                format!("-s3.port.grpc={s3_grpc}"),
                format!("-s3.localSocket={}", sock("s3.sock")),
                "-s3.port.iceberg=0".to_owned(),
                "-s3.port.lance=0".to_owned(),
                "-s3.config=s3.json".to_owned(),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", weed.display()));
        let weed = Self {
            child,
            dir,
            s3: ([127, 0, 0, 1], s3).into(),
            filer: ([127, 0, 0, 1], filer).into(),
            grpc: [
                ("master", master_grpc),
                ("volume", volume_grpc),
                ("filer", filer_grpc),
                ("s3", s3_grpc),
            ],
        };
        weed.create_bucket().await;
        weed
    }

    fn s3_settings(&self) -> S3Settings {
        S3Settings {
            endpoint: Some(format!("http://{}", self.s3)),
            region: None,
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(SECRET_KEY.into()),
            virtual_hosted_style: false,
        }
    }

    /// The bucket through object_store, as the shelf sees it.
    fn bucket(&self) -> Arc<dyn ObjectStore> {
        let settings = BackendSettings::s3(BUCKET, self.s3_settings());
        Arc::new(settings.s3_builder().unwrap().build().unwrap())
    }

    /// object_store has no CreateBucket; SeaweedFS creates a bucket on the first upload of an
    /// admin identity, so one put (retried until the server is up: its filer takes about
    /// 10 s to join) makes it.
    async fn create_bucket(&self) {
        // Fail fast and poll here, rather than sleep through object_store's growing backoff.
        let settings = BackendSettings::s3(BUCKET, self.s3_settings());
        let bucket = settings
            .s3_builder()
            .unwrap()
            .with_retry(RetryConfig {
                max_retries: 0,
                ..RetryConfig::default()
            })
            .build()
            .unwrap();
        let marker = Key::from("created");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match bucket.put(&marker, PutPayload::from_static(b"x")).await {
                Ok(_) => break,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "SeaweedFS's S3 gateway did not take an upload within 60 s: {e}\n{}",
                    self.log_tail()
                ),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        bucket.delete(&marker).await.unwrap();
    }

    /// The keys in the bucket, through the S3 API.
    async fn keys(&self) -> Vec<String> {
        let bucket = self.bucket();
        let mut keys: Vec<String> = bucket
            .list(None)
            .map(|m| m.unwrap().location.to_string())
            .collect()
            .await;
        keys.sort();
        keys
    }

    /// Multipart uploads begun and neither completed nor aborted: SeaweedFS keeps them under
    /// `/buckets/<bucket>/.uploads` on its filer.
    async fn open_multipart_uploads(&self) -> Vec<String> {
        let (status, _, body) = http(
            self.filer,
            "GET",
            &format!("/buckets/{BUCKET}/.uploads/"),
            &[("Accept", "application/json")],
            b"",
        )
        .await;
        if status == 404 {
            return Vec::new();
        }
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let listing: serde_json::Value = serde_json::from_slice(&body).unwrap();
        listing["Entries"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| e["FullPath"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "--- weed.log (last lines) ---\n{}",
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        // Killed outright: on SIGTERM its filer waits 15 s for a metadata flush. Its data
        // directory goes with the temp dir; its sockets in /tmp are removed here.
        let _ = self.child.kill();
        let _ = self.child.wait();
        for (component, port) in self.grpc {
            let _ = std::fs::remove_file(format!("/tmp/seaweedfs-{component}-grpc-{port}.sock"));
        }
    }
}

/// The `shelf` binary with the S3 backend on `weed`; stopped on drop.
struct ShelfProcess {
    child: Child,
    addr: SocketAddr,
    key: SigningKey,
    _log: tempfile::NamedTempFile,
}

impl ShelfProcess {
    async fn start(weed: &Weed) -> Self {
        let s3 = weed.s3_settings();
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(SHELF)
            .env("SHELF_LISTEN", addr.to_string())
            .env("SHELF_TOKEN", TOKEN)
            .env("SHELF_BACKEND", "s3")
            .env("SHELF_BUCKET", BUCKET)
            .env("SHELF_S3_ENDPOINT", s3.endpoint.unwrap())
            .env("SHELF_S3_ACCESS_KEY_ID", ACCESS_KEY)
            .env("SHELF_S3_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("RUST_LOG", "info,flynn_builder=debug")
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let mut shelf = Self {
            child,
            addr,
            key: SigningKey::new(TOKEN.as_bytes()),
            _log: log,
        };
        // Ready means the shelf listens and its backend lists the bucket.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok()
                && http(addr, "GET", "/readyz", &[], b"").await.0 == 200
            {
                break;
            }
            if let Ok(Some(status)) = shelf.child.try_wait() {
                panic!("shelf exited with {status}:\n{}", shelf.log());
            }
            assert!(
                Instant::now() < deadline,
                "shelf not ready within 30 s:\n{}",
                shelf.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        shelf
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn signed(&self, path: &str, access: Access, expires: Option<u64>) -> String {
        self.key.signed_url(&self.base(), path, access, expires)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._log.path()).unwrap_or_default()
    }
}

impl Drop for ShelfProcess {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(5));
    }
}

fn bearer() -> (&'static str, String) {
    ("Authorization", format!("Bearer {TOKEN}"))
}

fn sha(data: &[u8]) -> String {
    let mut h = Sha256::default();
    h.update(data);
    h.finish_hex()
}

/// Bytes that do not repeat within a part, so a misplaced part would show.
fn blob(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn objects_round_trip_through_s3_streamed_ranged_signed_and_deleted() {
    let weed = Weed::start().await;
    let shelf = ShelfProcess::start(&weed).await;
    let (k, v) = bearer();
    let auth = [(k, v.as_str())];

    // A multi-part upload (8 MiB parts), streamed from a file by the crate's client with its
    // checksum.
    let data = blob(20 * 1024 * 1024 + 4321);
    let digest = sha(&data);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &data).unwrap();
    let client = HttpClient::new(Some(TOKEN.into()));
    let url = format!("{}/slugs/app/v1.tgz", shelf.base());
    client
        .put_file(&url, file.path(), Some(&digest))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", shelf.log()));
    assert_eq!(weed.keys().await, ["slugs/app/v1.tgz"]);
    let meta = weed
        .bucket()
        .head(&Key::from("slugs/app/v1.tgz"))
        .await
        .unwrap();
    assert_eq!(meta.size, data.len() as u64);

    // Streamed back whole.
    let (mut body, len) = client.get(&url).await.unwrap().expect("the object");
    assert_eq!(len, Some(data.len() as u64));
    let mut hash = Sha256::default();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = body.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    assert_eq!((hash.len(), hash.finish_hex()), (data.len() as u64, digest));

    let (status, headers, body) = http(shelf.addr, "HEAD", "/slugs/app/v1.tgz", &auth, b"").await;
    assert_eq!(status, 200);
    assert!(body.is_empty());
    assert_eq!(
        header(&headers, "content-length"),
        Some(data.len().to_string().as_str())
    );
    assert_eq!(header(&headers, "accept-ranges"), Some("bytes"));

    // Ranges: across a part boundary, a suffix, and past the end.
    let boundary = 8 * 1024 * 1024;
    let range = format!("bytes={}-{}", boundary - 10, boundary + 9);
    let (status, headers, body) = http(
        shelf.addr,
        "GET",
        "/slugs/app/v1.tgz",
        &[(k, v.as_str()), ("Range", range.as_str())],
        b"",
    )
    .await;
    assert_eq!(status, 206);
    assert_eq!(body, &data[boundary - 10..boundary + 10]);
    assert_eq!(
        header(&headers, "content-range"),
        Some(format!("bytes {}-{}/{}", boundary - 10, boundary + 9, data.len()).as_str())
    );
    let (status, _, body) = http(
        shelf.addr,
        "GET",
        "/slugs/app/v1.tgz",
        &[(k, v.as_str()), ("Range", "bytes=-100")],
        b"",
    )
    .await;
    assert_eq!((status, body.as_slice()), (206, &data[data.len() - 100..]));
    let past = format!("bytes={}-", data.len());
    let (status, headers, _) = http(
        shelf.addr,
        "GET",
        "/slugs/app/v1.tgz",
        &[(k, v.as_str()), ("Range", past.as_str())],
        b"",
    )
    .await;
    assert_eq!(status, 416);
    assert_eq!(
        header(&headers, "content-range"),
        Some(format!("bytes */{}", data.len()).as_str())
    );

    // Signed URLs: a read URL without expiry reads; an expiring rw URL writes that object only.
    let target = |url: &str| url.trim_start_matches(&shelf.base()).to_owned();
    let read = shelf.signed("/slugs/app/v1.tgz", Access::Read, None);
    let (status, _, body) = http(
        shelf.addr,
        "GET",
        &target(&read),
        &[("Range", "bytes=0-9")],
        b"",
    )
    .await;
    assert_eq!((status, body.as_slice()), (206, &data[..10]));
    assert_eq!(
        http(shelf.addr, "PUT", &target(&read), &[], b"evil")
            .await
            .0,
        401
    );
    let rw = shelf.signed("/cache/app.tgz", Access::ReadWrite, Some(unix_now() + 600));
    assert_eq!(
        http(shelf.addr, "PUT", &target(&rw), &[], b"cache").await.0,
        201
    );
    let (status, _, body) = http(shelf.addr, "GET", &target(&rw), &[], b"").await;
    assert_eq!((status, body.as_slice()), (200, &b"cache"[..]));
    assert_eq!(
        http(shelf.addr, "DELETE", &target(&rw), &[], b"").await.0,
        401
    );
    assert_eq!(weed.keys().await, ["cache/app.tgz", "slugs/app/v1.tgz"]);

    // DELETE, and the 404s after it.
    assert_eq!(
        http(shelf.addr, "DELETE", "/slugs/app/v1.tgz", &auth, b"")
            .await
            .0,
        204
    );
    assert_eq!(
        http(shelf.addr, "DELETE", "/slugs/app/v1.tgz", &auth, b"")
            .await
            .0,
        404
    );
    for method in ["GET", "HEAD"] {
        assert_eq!(
            http(shelf.addr, method, "/slugs/app/v1.tgz", &auth, b"")
                .await
                .0,
            404,
            "{method}"
        );
    }
    assert_eq!(weed.keys().await, ["cache/app.tgz"]);

    // Garbage collection lists the bucket by prefix, with each object's time: a slug no
    // Release names goes; a path the builds do not make stays.
    let bucket = weed.bucket();
    bucket
        .put(
            &Key::from("slugs/ns/app/b0.tgz"),
            PutPayload::from_static(b"slug"),
        )
        .await
        .unwrap();
    let store = Store::new(bucket);
    let listed = store.list("slugs").await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].0.as_str(), "slugs/ns/app/b0.tgz");
    assert!(
        (listed[0].1 - i64::try_from(unix_now()).unwrap()).abs() < 300,
        "{listed:?}"
    );
    let swept = gc::sweep(&store, &gc::InUse::default(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(swept.deleted, ["/slugs/ns/app/b0.tgz"]);
    assert_eq!(weed.keys().await, ["cache/app.tgz"]);

    let (_, _, metrics) = http(shelf.addr, "GET", "/metrics", &[], b"").await;
    let metrics = String::from_utf8_lossy(&metrics);
    let received = data.len() + b"cache".len();
    assert!(
        metrics.contains(&format!("flynn_shelf_received_bytes_total {received}")),
        "{metrics}"
    );
    assert!(
        metrics.contains("flynn_shelf_requests_total{method=\"PUT\",code=\"201\"} 2"),
        "{metrics}"
    );
    assert!(weed.open_multipart_uploads().await.is_empty());
}

#[tokio::test]
async fn failed_uploads_leave_no_object_and_no_multipart_upload() {
    let weed = Weed::start().await;
    let shelf = ShelfProcess::start(&weed).await;
    let (k, v) = bearer();
    let zeros = "0".repeat(64);

    // Checksum mismatches: one within a part (a single PUT is never sent), one of three parts
    // (the multipart upload is aborted).
    for len in [1000, 20 * 1024 * 1024] {
        let headers = [(k, v.as_str()), ("X-Content-SHA256", zeros.as_str())];
        let (status, _, body) =
            http(shelf.addr, "PUT", "/slugs/bad.tgz", &headers, &blob(len)).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "{len}: {body}");
        assert!(body.contains("sha256"), "{body}");
    }

    // A client that goes away after two parts' worth of a 30 MB body.
    let mut s = tokio::net::TcpStream::connect(shelf.addr).await.unwrap();
    let req = format!(
        "PUT /slugs/partial.tgz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 30000000\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(&blob(17 * 1024 * 1024)).await.unwrap();
    s.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(s);

    // The abort of the dropped upload runs in the background: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let open = weed.open_multipart_uploads().await;
        if open.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "multipart uploads left open: {open:?}\n{}",
            shelf.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(weed.keys().await, Vec::<String>::new());
    let (k, v) = bearer();
    for path in ["/slugs/bad.tgz", "/slugs/partial.tgz"] {
        assert_eq!(
            http(shelf.addr, "HEAD", path, &[(k, v.as_str())], b"")
                .await
                .0,
            404,
            "{path}"
        );
    }
    let log = shelf.log();
    assert!(log.contains("multipart upload aborted"), "{log}");
}

#[tokio::test]
async fn a_slug_built_into_s3_runs_from_there() {
    let weed = Weed::start().await;
    let shelf = ShelfProcess::start(&weed).await;
    let work = tempfile::tempdir().unwrap();
    let src = source_tarball(&fixtures().join("apps/shell-procfile"), work.path());
    let result_path = work.path().join("result.json");
    let out = tokio::process::Command::new(SLUGBUILDER)
        .arg("--app")
        .arg("sh")
        .arg("--source")
        .arg(&src)
        .arg("--work-dir")
        .arg(work.path().join("w"))
        .arg("--buildpacks-dir")
        .arg(fixtures().join("buildpacks"))
        .arg("--slug-put-url")
        .arg(shelf.signed(
            "/slugs/sh/slug.tgz",
            Access::ReadWrite,
            Some(unix_now() + 600),
        ))
        .arg("--slug-url")
        .arg(shelf.signed("/slugs/sh/slug.tgz", Access::Read, None))
        .arg("--cache-url")
        .arg(shelf.signed("/cache/sh.tgz", Access::ReadWrite, Some(unix_now() + 600)))
        .arg("--result")
        .arg(&result_path)
        .env_remove("SHELF_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        shelf.log()
    );
    let result: BuildResult =
        serde_json::from_slice(&std::fs::read(&result_path).unwrap()).unwrap();
    let meta = weed
        .bucket()
        .head(&Key::from("slugs/sh/slug.tgz"))
        .await
        .unwrap();
    assert_eq!(meta.size, result.size);
    assert!(weed.keys().await.contains(&"cache/sh.tgz".to_owned()));

    let port = free_port();
    let app = tempfile::tempdir().unwrap();
    let mut runner = tokio::process::Command::new(SLUGRUNNER)
        .args(["start", "web"])
        .env("SLUG_URL", &result.url)
        .env("SLUG_SHA256", &result.sha256)
        .env("APP_DIR", app.path())
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    assert_eq!(
        wait_for_http(port, Duration::from_secs(20)).await,
        format!("Hello from a shell app on port {port}\n")
    );
    // SIGTERM, which the runner forwards to the app's process group. (SIGKILL would leave
    // the app, the leader of a group of its own, running after the test.)
    let pid = nix::unistd::Pid::from_raw(runner.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    tokio::time::timeout(Duration::from_secs(10), runner.wait())
        .await
        .expect("the runner stopped within 10 s of SIGTERM")
        .unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the app still serves port {port} after its runner exited"
    );
}
