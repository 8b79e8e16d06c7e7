//! Apps for namespaces that enforce Pod Security "restricted": a slug run by the slugrunner
//! image built from this workspace's builder, served to the pods by the test process, and a
//! non-root twin of the smoke image.
//!
//! Shared by path (`#[path]`) with cli/tests/common and examples/pod_security_bench.rs,
//! so it uses only what those have too: flynn-crds, flynn-e2e, kube, k8s-openapi,
//! serde_json, tokio, tar, flate2 and ring.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use flynn_crds::{Release, pod_security};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The smoke image (busybox httpd serving the smoke page from `/www`) with a numeric
/// non-root user, [`NONROOT_UID`]: an image app that passes `runAsNonRoot`. The smoke image
/// itself runs as root.
pub const NONROOT_IMAGE: &str = "localhost/flynn-smoke-nonroot:1";
/// The user of [`NONROOT_IMAGE`]; not the slug user, so a test can tell the image's own user
/// from one forced on it.
pub const NONROOT_UID: i64 = 65532;
/// The node's address: the host and every pod reach it, so the slug is served there.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
/// What the slug's web process serves at `/`.
pub const SLUG_PAGE: &str = "hello from a slug";

/// The workspace root.
pub fn workspace() -> PathBuf {
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("Cargo.lock").exists() {
        dir = dir.parent().expect("the workspace root has Cargo.lock");
    }
    dir.to_owned()
}

/// Labels `namespace` to enforce Pod Security "restricted" (latest version): the API
/// server then refuses any pod that does not pass it.
pub async fn restrict(client: &kube::Client, namespace: &str) {
    let patch = json!({"metadata": {"labels": {
        pod_security::ENFORCE_LABEL: pod_security::RESTRICTED,
        pod_security::ENFORCE_VERSION_LABEL: "latest",
    }}});
    Api::<Namespace>::all(client.clone())
        .patch(namespace, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("labelling namespace {namespace} restricted: {e}"));
}

fn run_script(script: &str) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap_or_else(|e| panic!("running bash: {e}"));
    assert!(
        out.status.success(),
        "{script}\nfailed ({}; is the node up? run `e2e/cluster/up`):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds and imports [`NONROOT_IMAGE`] into the node once (blocking): the base root
/// filesystem and busybox, as e2e/cluster/test-images makes the smoke image, with user
/// [`NONROOT_UID`].
pub fn ensure_nonroot_image() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let cluster = workspace().join("e2e/cluster");
        run_script(&format!(
            r#"set -euo pipefail
source "{cluster}/lib/common.sh"
source "$CLUSTER_DIR/lib/rootfs.sh"
[ -S "$CONTAINERD_SOCK" ] || die "the local node is not running: start it with e2e/cluster/up"
exec 8>/tmp/flynn-smoke-nonroot.lock; flock 8
image_present {NONROOT_IMAGE} && exit 0
base=$(base_rootfs)
extra=$(mktemp -d); trap 'rm -rf "$extra"' EXIT
install -D -m 755 /bin/busybox "$extra/usr/local/bin/busybox"
mkdir -p "$extra/www"
echo "hello from flynn-smoke" > "$extra/www/index.html"
"$CLUSTER_DIR/load-image" --user {NONROOT_UID}:{NONROOT_UID} "$base" "$extra" {NONROOT_IMAGE}"#,
            cluster = cluster.display()
        ));
    });
}

const BUILDER_BINARIES: [&str; 3] = ["slugbuilder", "slugrunner", "shelf"];

/// The newest modification time of the files under `path`.
fn newest(path: &Path) -> std::time::SystemTime {
    let meta = std::fs::metadata(path).unwrap();
    if !meta.is_dir() {
        return meta.modified().unwrap();
    }
    std::fs::read_dir(path)
        .unwrap()
        .map(|e| newest(&e.unwrap().path()))
        .max()
        .unwrap_or(std::time::UNIX_EPOCH)
}

/// Whether `dir` holds the builder's binaries, built after its last source change.
fn fresh_builder_binaries(dir: &Path) -> bool {
    let root = workspace();
    let sources = [
        root.join("builder/src"),
        root.join("builder/Cargo.toml"),
        root.join("Cargo.lock"),
    ]
    .iter()
    .map(|p| newest(p))
    .max()
    .unwrap();
    BUILDER_BINARIES.iter().all(|b| {
        std::fs::metadata(dir.join(b))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t > sources)
    })
}

/// Builds the slugrunner (and slugbuilder) image from this workspace's builder as
/// `localhost/flynn-slugrunner:TAG` once per process (blocking; one TAG per process);
/// returns its name.
///
/// The binaries are flynn-builder's: they are taken from a target directory where they are
/// newer than every builder source (`cargo test --workspace` builds them; so do the git
/// receiver's tests), else built into `target/builder-test-bins` (not the shared target
/// directory: cargo holds its lock while tests run). As gitreceiver/tests/pipeline_env does.
pub fn ensure_slugrunner_image(tag: &str) -> String {
    static DONE: OnceLock<String> = OnceLock::new();
    let image = DONE.get_or_init(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("target"));
        let candidates = [
            target.join("debug"),
            target.join("release"),
            target.join("gitreceiver-test-bins/debug"),
            target.join("builder-test-bins/debug"),
        ];
        let bin_dir = match candidates.iter().find(|d| fresh_builder_binaries(d)) {
            Some(dir) => dir.clone(),
            None => {
                let bins_target = target.join("builder-test-bins");
                let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
                let out = Command::new(&cargo)
                    .args(["build", "--locked", "-p", "flynn-builder", "--bins"])
                    .env("CARGO_TARGET_DIR", &bins_target)
                    .current_dir(workspace())
                    .output()
                    .unwrap_or_else(|e| panic!("running cargo: {e}"));
                assert!(
                    out.status.success(),
                    "cargo build -p flynn-builder --bins failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                bins_target.join("debug")
            }
        };
        flynn_e2e::load_builder_images(&bin_dir, tag);
        format!("localhost/flynn-slugrunner:{tag}")
    });
    assert!(
        image.ends_with(&format!(":{tag}")),
        "{image} was built, not {tag}"
    );
    image.clone()
}

/// A slug: the gzip'd tarball and its SHA-256 (hex).
#[derive(Debug, Clone)]
pub struct Slug {
    pub bytes: Vec<u8>,
    pub sha256: String,
}

/// A slug whose `web` process proves it may write where apps write, then serves the slug's
/// directory (`/app`) on `$PORT`: `/` says [`SLUG_PAGE`], `/whoami.txt` the uid and gid it
/// runs as, `/tmp.txt` what it wrote to and read back from `/tmp`.
pub fn web_slug() -> Slug {
    let procfile = "web: id -u > whoami.txt && id -g >> whoami.txt && echo tmp-ok > /tmp/t \
                    && cp /tmp/t tmp.txt && exec python3 -m http.server \"$PORT\"\n";
    let index = format!("<p>{SLUG_PAGE}</p>\n");
    slug(&[("Procfile", procfile, 0o644), ("index.html", &index, 0o644)])
}

/// A slug of `files` (path relative to `/app`, content, mode), as the slugbuilder packs one.
pub fn slug(files: &[(&str, &str, u32)]) -> Slug {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, content, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        tar.append_data(&mut header, format!("./{path}"), content.as_bytes())
            .unwrap();
    }
    let bytes = tar.into_inner().unwrap().finish().unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let sha256 = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Slug { bytes, sha256 }
}

/// A slug Release: `web` runs the Procfile's web process (`start web`) on 5000.
pub fn slug_release(app: &str, version: i64, url: &str, slug: &Slug) -> Release {
    serde_json::from_value(json!({
        "apiVersion": "flynn.io/v1alpha1", "kind": "Release",
        "metadata": {"name": format!("{app}-v{version}")},
        "spec": {
            "app": app, "version": version,
            "artifact": {"slug": {"url": url, "sha256": slug.sha256, "size": slug.bytes.len()}},
            "processes": {"web": {"ports": [{"port": 5000}]}}
        }
    }))
    .unwrap()
}

/// Serves one file at `/<name>` over plain HTTP on the node's address while it lives.
#[derive(Debug)]
pub struct FileServer {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl FileServer {
    pub async fn start(name: &str, body: Vec<u8>) -> Self {
        let listener = tokio::net::TcpListener::bind((IpAddr::V4(NODE_IP), 0))
            .await
            .expect("binding the node's address 10.88.0.1: is the local cluster up?");
        let url = format!("http://{}/{name}", listener.local_addr().unwrap());
        let body = Arc::new(body);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let body = body.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&body).await;
                });
            }
        });
        Self { url, task }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `GET path` from `addr` (HTTP/1.0): the status code and the body, or why not.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    s.read_to_end(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    Ok((code, body.to_owned()))
}
