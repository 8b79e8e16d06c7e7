//! Shared pieces of the builder's tests: an in-process slug store, source tarballs of the
//! fixtures, raw HTTP and free ports.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use flynn_builder::{
    signing::{Access, SigningKey},
    store::{LocalStore, server},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

pub const TOKEN: &str = "test-token-0123456789";

/// The fixtures directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A slug store on 127.0.0.1, alive as long as the value.
pub struct Shelf {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub key: SigningKey,
    task: tokio::task::JoinHandle<()>,
}

impl Shelf {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shelf = Arc::new(server::Shelf::new(store, TOKEN.into()));
        let task = tokio::spawn(async move {
            server::serve(listener, shelf, std::future::pending())
                .await
                .unwrap();
        });
        Self {
            addr,
            dir,
            key: SigningKey::new(TOKEN.as_bytes()),
            task,
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    pub fn signed(&self, path: &str, access: Access) -> String {
        self.key.signed_url(
            &self.base(),
            path,
            access,
            Some(flynn_builder::signing::unix_now() + 600),
        )
    }
}

impl Drop for Shelf {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A .tar.gz of `dir`, written into `into`.
pub fn source_tarball(dir: &Path, into: &Path) -> PathBuf {
    let out = into.join("source.tgz");
    std::fs::write(&out, flynn_builder::slug::tar_gz_dir(dir).unwrap()).unwrap();
    out
}

/// Copies a fixture app to a temp dir (to modify it).
pub fn copy_app(name: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(fixtures().join("apps").join(name).join("."))
        .arg(d.path())
        .status()
        .unwrap();
    assert!(status.success());
    d
}

/// Writes an executable script.
pub fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Regular files under `dir`, recursively (a store's objects and any staging files).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(files_under(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// A raw HTTP/1.1 request; status, headers (lower-case names) and body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response");
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = resp[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked")
    {
        body = dechunk(&body);
    }
    (status, headers, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 2 + n + 2..];
    }
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// GETs http://127.0.0.1:port/ until it answers 200 or `timeout` passes; the body.
pub async fn wait_for_http(port: u16, timeout: Duration) -> String {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            let (status, _, body) = http(addr, "GET", "/", &[], b"").await;
            if status == 200 {
                return String::from_utf8_lossy(&body).into_owned();
            }
        }
        assert!(
            Instant::now() < deadline,
            "nothing answered on port {port} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
