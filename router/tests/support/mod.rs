//! Test support: backends in a network namespace of the test's own, EndpointSlices naming
//! them, a router in-process, and a small HTTP client.
//!
//! The API server refuses EndpointSlice addresses on loopback, so backends listen on
//! addresses in `10.77.<n>.0/24` inside a namespace that each test creates (`ip netns add` +
//! a veth pair) and deletes when dropped. A backend's socket is created by a thread that has
//! entered the namespace; the socket stays there while Tokio drives it from any thread.

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use flynn_router::{Config, Router};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with a veth pair to the host: host side `10.77.<n>.1/24`.
pub struct Netns {
    pub name: String,
    subnet: u8,
    next: AtomicUsize,
}

impl Netns {
    pub fn create() -> Self {
        let used = String::from_utf8(
            Command::new("ip")
                .args(["-4", "-o", "addr"])
                .output()
                .expect("ip addr")
                .stdout,
        )
        .unwrap();
        // Tests of one process take turns through the subnets from a random start; other
        // processes' subnets show up in `ip addr`.
        static NEXT: std::sync::OnceLock<AtomicUsize> = std::sync::OnceLock::new();
        let next = NEXT.get_or_init(|| AtomicUsize::new(rand::random_range(0..254)));
        let subnet = loop {
            let n = (next.fetch_add(1, Ordering::SeqCst) % 254 + 1) as u8;
            if !used.contains(&format!("10.77.{n}.")) {
                break n;
            }
        };
        let tag: u32 = rand::random_range(0..0xff_ffff);
        let name = format!("flrt-{tag:06x}");
        let host_if = format!("flrt{tag:06x}h");
        ip(&["netns", "add", &name]);
        let ns = Self {
            name: name.clone(),
            subnet,
            next: AtomicUsize::new(10),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &name,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("10.77.{subnet}.1/24"),
            "dev",
            &host_if,
        ]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ip(&["-n", &name, "link", "set", "eth0", "up"]);
        ns
    }

    /// A fresh address inside the namespace.
    pub fn new_ip(&self) -> Ipv4Addr {
        let k = self.next.fetch_add(1, Ordering::SeqCst) as u8;
        let addr = Ipv4Addr::new(10, 77, self.subnet, k);
        ip(&[
            "-n",
            &self.name,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        addr
    }

    /// A listener on `addr` inside the namespace.
    pub fn listen(&self, addr: SocketAddr) -> TcpListener {
        let path = format!("/run/netns/{}", self.name);
        let std = std::thread::spawn(move || {
            let f = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            // The address was just added: wait for DAD-free IPv4 to be usable.
            let l = std::net::TcpListener::bind(addr).expect("bind in netns");
            l.set_nonblocking(true).unwrap();
            l
        })
        .join()
        .unwrap();
        TcpListener::from_std(std).unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth pair, and with it the host end.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A test HTTP backend: answers `<name>` with `x-backend: <name>`; `/headers` answers the
/// request headers as JSON; `/slow` waits 500 ms; an Upgrade request gets `101` and an echo.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Backend {
    /// A backend on a new address in `ns`: every accepted connection is served by
    /// `serve(connection, hits, name)`. Connections live in a set owned by the accept task:
    /// killing the backend closes them all, like a crashed process.
    fn spawn<F, Fut>(ns: &Netns, name: &str, port: u16, serve: F) -> Arc<Self>
    where
        F: Fn(TcpStream, Arc<AtomicUsize>, String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let addr = SocketAddr::new(IpAddr::V4(ns.new_ip()), port);
        let listener = ns.listen(addr);
        let hits = Arc::new(AtomicUsize::new(0));
        let (n, h) = (name.to_owned(), hits.clone());
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                conns.spawn(serve(stream, h.clone(), n.clone()));
            }
        });
        Arc::new(Self {
            name: name.to_owned(),
            addr,
            hits,
            task: Mutex::new(Some(task)),
        })
    }

    pub async fn http(ns: &Netns, name: &str, port: u16) -> Arc<Self> {
        Self::spawn(ns, name, port, |stream, h, n| async move {
            let svc = service_fn(move |req| handle(n.clone(), h.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        })
    }

    /// A TCP echo backend.
    pub async fn echo(ns: &Netns, name: &str, port: u16) -> Arc<Self> {
        Self::spawn(ns, name, port, |mut stream, h, _| async move {
            h.fetch_add(1, Ordering::SeqCst);
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        })
    }

    /// A backend that answers one request per connection, keeps the connection open, and
    /// closes it when the next request arrives, without answering: a keep-alive close that
    /// crosses the proxy's next request (an idle timeout, a process exiting).
    pub async fn one_request_per_connection(ns: &Netns, name: &str, port: u16) -> Arc<Self> {
        Self::spawn(ns, name, port, |mut stream, h, body| async move {
            if read_head(&mut stream).await.is_none() {
                return;
            }
            h.fetch_add(1, Ordering::SeqCst);
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-backend: {body}\r\n\r\n{body}",
                body.len()
            );
            if stream.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
            // The next request is read, then the connection closes unanswered.
            let _ = read_head(&mut stream).await;
        })
    }

    /// A backend that speaks HTTP/1.1 by hand, so that a test knows the exact bytes the
    /// router gets. It serves any number of requests per connection and answers by path:
    /// `/len` [`SCRIPTED_LEN`] (hop-by-hop headers included); `/chunked` a chunked body with
    /// a trailer ([`SCRIPTED_CHUNKED_BODY`]), written in three pieces; `/close` a body that
    /// ends when it closes the connection; `/headers` the request head it received,
    /// verbatim, as a `Content-Length` body; `/hang` nothing at all; any other path its name. A request with a body
    /// (`Content-Length` or chunked) gets `got N bytes`; a HEAD request a head saying
    /// `content-length: 5` and no body.
    pub async fn scripted(ns: &Netns, name: &str, port: u16) -> Arc<Self> {
        Self::spawn(ns, name, port, scripted_connection)
    }

    /// Kills the backend: its listener and every connection close.
    pub fn kill(&self) {
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads one request head (up to the blank line); `None` when the connection ends first.
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(head)
}

/// The scripted backend's whole answer to `GET /len`.
pub const SCRIPTED_LEN: &str = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\
    connection: keep-alive, x-private\r\nkeep-alive: timeout=5\r\nx-private: 1\r\nx-kept: 1\r\n\r\nhello";

/// The scripted backend's chunked body for `GET /chunked`, framing and trailer included.
pub const SCRIPTED_CHUNKED_BODY: &[u8] = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n";

/// A request as the scripted backend read it.
struct ScriptedRequest {
    /// The head, verbatim (request line to blank line).
    head: Vec<u8>,
    method: String,
    path: String,
    /// It came with a body (chunked, or a `Content-Length` above zero).
    has_body: bool,
    body: Vec<u8>,
}

async fn scripted_connection(mut stream: TcpStream, hits: Arc<AtomicUsize>, name: String) {
    let mut buf = Vec::new();
    while let Some(req) = scripted_request(&mut stream, &mut buf).await {
        hits.fetch_add(1, Ordering::SeqCst);
        let (pieces, close) = scripted_response(&req, &name);
        for (i, piece) in pieces.iter().enumerate() {
            if i > 0 {
                // Separate reads on the router's side: its copy must stream.
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            if stream.write_all(piece).await.is_err() {
                return;
            }
        }
        if close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// What the scripted backend answers to `req`: the pieces to write, and whether to close
/// the connection after them.
fn scripted_response(req: &ScriptedRequest, name: &str) -> (Vec<Vec<u8>>, bool) {
    fn with_length(extra: &str, body: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{extra}\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    }
    if req.has_body {
        let body = format!("got {} bytes", req.body.len());
        return (vec![with_length("", body.as_bytes())], false);
    }
    if req.method == "HEAD" {
        return (
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-kept: 1\r\n\r\n".to_vec()],
            false,
        );
    }
    match req.path.as_str() {
        "/len" => (vec![SCRIPTED_LEN.as_bytes().to_vec()], false),
        "/chunked" => {
            let mut whole =
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n".to_vec();
            whole.extend_from_slice(SCRIPTED_CHUNKED_BODY);
            // Head and part of the first chunk; the rest of the chunks; the last chunk and
            // the trailer.
            let cut1 = whole.len() - SCRIPTED_CHUNKED_BODY.len() + 6;
            let cut2 = whole.len() - b"0\r\nx-sum: 11\r\n\r\n".len();
            (
                vec![
                    whole[..cut1].to_vec(),
                    whole[cut1..cut2].to_vec(),
                    whole[cut2..].to_vec(),
                ],
                false,
            )
        }
        "/close" => (
            vec![
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil ".to_vec(),
                b"close".to_vec(),
            ],
            true,
        ),
        // Never answered: the router's backend timeout must end it.
        "/hang" => (vec![], false),
        "/headers" => (
            vec![with_length("content-type: text/plain\r\n", &req.head)],
            false,
        ),
        _ => (vec![with_length("", name.as_bytes())], false),
    }
}

/// Reads one request (head and body) from `stream`, `buf` holding what was read beyond the
/// previous one; `None` when the connection ends first or the request is not HTTP/1.
async fn scripted_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<ScriptedRequest> {
    let mut head = Vec::new();
    loop {
        let line = take_line(stream, buf).await?;
        head.extend_from_slice(&line);
        if line == b"\r\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?;
    let path = target.split('?').next().unwrap_or_default().to_owned();
    let header = |name: &str| {
        lines
            .clone()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_ascii_lowercase())
    };
    let mut body = Vec::new();
    let has_body;
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        has_body = true;
        loop {
            let line = take_line(stream, buf).await?;
            let line = String::from_utf8_lossy(&line);
            let size = line.trim().split(';').next()?.trim();
            let size = usize::from_str_radix(size, 16).ok()?;
            if size == 0 {
                while take_line(stream, buf).await? != b"\r\n" {}
                break;
            }
            if !fill(stream, buf, size + 2).await {
                return None;
            }
            body.extend(buf.drain(..size));
            buf.drain(..2);
        }
    } else {
        let length = match header("content-length") {
            Some(v) => v.parse::<usize>().ok()?,
            None => 0,
        };
        has_body = length > 0;
        if !fill(stream, buf, length).await {
            return None;
        }
        body.extend(buf.drain(..length));
    }
    Some(ScriptedRequest {
        head,
        method,
        path,
        has_body,
        body,
    })
}

/// Reads from `stream` until `buf` holds at least `n` bytes; `false` when it ends first.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    while buf.len() < n {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
    true
}

/// Takes one CRLF-ended line (CRLF included) from the front of `buf`, reading as needed.
async fn take_line(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut searched = 0;
    loop {
        if let Some(at) = buf[searched..].windows(2).position(|w| w == b"\r\n") {
            return Some(buf.drain(..searched + at + 2).collect());
        }
        searched = buf.len().saturating_sub(1);
        let want = buf.len() + 1;
        if !fill(stream, buf, want).await {
            return None;
        }
    }
}

/// How long a [`RawClient`] waits for any one read.
pub const RAW_TIMEOUT: Duration = Duration::from_secs(10);

/// How a response body read by [`RawClient`] was framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFraming {
    /// No body (a response to HEAD, 1xx, 204, 304).
    Empty,
    /// `Content-Length`.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closed.
    UntilClose,
}

/// A response as a [`RawClient`] read it off the wire.
#[derive(Debug)]
pub struct RawResponse {
    /// The status line and headers, verbatim, through the blank line.
    pub head: String,
    pub status: u16,
    /// The headers in order, as received.
    pub headers: Vec<(String, String)>,
    pub framing: RawFraming,
    /// The body as received, chunk framing and trailers included.
    pub wire_body: Vec<u8>,
    /// The body's content (chunks joined).
    pub body: Vec<u8>,
    /// The trailers of a chunked body.
    pub trailers: Vec<(String, String)>,
}

impl RawResponse {
    /// The values of header `name` (any case), in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    /// The body's content as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl std::fmt::Display for RawResponse {
    /// The response as received, escaped: head and body bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut all = self.head.as_bytes().to_vec();
        all.extend_from_slice(&self.wire_body);
        write!(f, "\"{}\"", all.escape_ascii())
    }
}

/// A raw HTTP/1.1 client connection: requests go out as written, responses are read as
/// framed, every read bounded by [`RAW_TIMEOUT`]. Bytes beyond one response stay buffered
/// for the next (pipelining).
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// What the response being read consumed so far (for error messages).
    current: Vec<u8>,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
            current: Vec::new(),
        }
    }

    /// Writes `bytes` in one call; panics if that fails.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .unwrap_or_else(|e| panic!("writing \"{}\": {e}", bytes.escape_ascii()));
    }

    /// Writes `bytes`, failures returned (a server may close while a request is written).
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads more; `Ok(0)` at EOF (a reset counts as EOF).
    async fn read_some(&mut self) -> Result<usize, String> {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(RAW_TIMEOUT, self.stream.read(&mut chunk)).await {
            Err(_) => Err(format!("nothing more within {RAW_TIMEOUT:?}")),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(0),
            Ok(Err(e)) => Err(format!("read failed: {e}")),
        }
    }

    /// `n` bytes from the front of the buffer, reading as needed.
    async fn take(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            if self.read_some().await? == 0 {
                return Err("EOF".into());
            }
        }
        let taken: Vec<u8> = self.buf.drain(..n).collect();
        self.current.extend_from_slice(&taken);
        Ok(taken)
    }

    /// One CRLF-ended line, CRLF included.
    async fn line(&mut self) -> Result<Vec<u8>, String> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return self.take(at + 2).await;
            }
            if self.read_some().await? == 0 {
                return Err("EOF".into());
            }
        }
    }

    /// Reads the next response; `head_request`: it answers a HEAD request (no body). The
    /// error says what went wrong and what of the response had come.
    pub async fn response(&mut self, head_request: bool) -> Result<RawResponse, String> {
        self.current.clear();
        let read = self.read_response(head_request).await;
        read.map_err(|e| {
            format!(
                "{e}; received \"{}\", then unread \"{}\"",
                self.current.escape_ascii(),
                self.buf.escape_ascii()
            )
        })
    }

    /// [`RawClient::response`], panicking with `what` on failure.
    pub async fn expect(&mut self, what: &str, head_request: bool) -> RawResponse {
        match self.response(head_request).await {
            Ok(r) => r,
            Err(e) => panic!("{what}: no complete response: {e}"),
        }
    }

    async fn read_response(&mut self, head_request: bool) -> Result<RawResponse, String> {
        let mut head = Vec::new();
        loop {
            let line = self.line().await?;
            head.extend_from_slice(&line);
            if line == b"\r\n" {
                break;
            }
        }
        let head = String::from_utf8(head).map_err(|e| format!("head not UTF-8: {e}"))?;
        let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let headers = parse_header_lines(lines)?;
        let mut resp = RawResponse {
            head: head.clone(),
            status,
            headers,
            framing: RawFraming::Empty,
            wire_body: Vec::new(),
            body: Vec::new(),
            trailers: Vec::new(),
        };
        let start = self.current.len();
        resp.framing = if head_request || status < 200 || status == 204 || status == 304 {
            RawFraming::Empty
        } else if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            RawFraming::Chunked
        } else if let Some(v) = resp.header("content-length") {
            RawFraming::Length(
                v.trim()
                    .parse()
                    .map_err(|_| format!("content-length {v:?}"))?,
            )
        } else {
            RawFraming::UntilClose
        };
        match resp.framing {
            RawFraming::Empty => {}
            RawFraming::Length(n) => resp.body = self.take(n).await?,
            RawFraming::Chunked => loop {
                let line = self.line().await?;
                let text = String::from_utf8_lossy(&line);
                let size = text.trim().split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size, 16)
                    .map_err(|_| format!("bad chunk size line {text:?}"))?;
                if size == 0 {
                    let mut trailer_lines = Vec::new();
                    loop {
                        let line = self.line().await?;
                        if line == b"\r\n" {
                            break;
                        }
                        trailer_lines.push(String::from_utf8_lossy(&line).trim_end().to_owned());
                    }
                    resp.trailers = parse_header_lines(trailer_lines.iter().map(String::as_str))?;
                    break;
                }
                let data = self.take(size).await?;
                resp.body.extend_from_slice(&data);
                if self.take(2).await? != b"\r\n" {
                    return Err("chunk data not followed by CRLF".into());
                }
            },
            RawFraming::UntilClose => {
                while self
                    .read_some()
                    .await
                    .map_err(|e| format!("close-delimited body: no EOF: {e}"))?
                    > 0
                {}
                let rest = std::mem::take(&mut self.buf);
                self.current.extend_from_slice(&rest);
                resp.body = rest;
            }
        }
        resp.wire_body = self.current[start..].to_vec();
        Ok(resp)
    }

    /// Waits for the server to close the connection: `Ok` at EOF (or a reset) with nothing
    /// more received, else what came instead.
    pub async fn closed(&mut self) -> Result<(), String> {
        loop {
            if !self.buf.is_empty() {
                return Err(format!(
                    "received \"{}\" instead of EOF",
                    self.buf.escape_ascii()
                ));
            }
            if self.read_some().await? == 0 && self.buf.is_empty() {
                return Ok(());
            }
        }
    }
}

fn parse_header_lines<'a>(
    lines: impl Iterator<Item = &'a str>,
) -> Result<Vec<(String, String)>, String> {
    lines
        .map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.to_owned(), v.trim().to_owned()))
                .ok_or_else(|| format!("bad header line {l:?}"))
        })
        .collect()
}

async fn handle(
    name: String,
    hits: Arc<AtomicUsize>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    hits.fetch_add(1, Ordering::SeqCst);
    if req.headers().contains_key(http::header::UPGRADE) {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(Full::new(Bytes::new()))
            .unwrap();
        return Ok(resp);
    }
    let body = match req.uri().path() {
        "/headers" => {
            let h: BTreeMap<String, String> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            serde_json::to_string(&h).unwrap()
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            name.clone()
        }
        _ => name.clone(),
    };
    Ok(Response::builder()
        .header("x-backend", &name)
        .body(Full::new(Bytes::from(body)))
        .unwrap())
}

/// Creates or replaces EndpointSlice `name` for Service `service`: `(addr, ready)` pairs, all
/// on `port`.
pub async fn put_slice(
    api: &Api<EndpointSlice>,
    name: &str,
    service: &str,
    port: u16,
    endpoints: &[(IpAddr, bool)],
) {
    let eps: Vec<_> = endpoints
        .iter()
        .map(|(ip, ready)| json!({"addresses": [ip.to_string()], "conditions": {"ready": ready}}))
        .collect();
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/service-name": service,
            "endpointslice.kubernetes.io/managed-by": "flynn-router-tests",
        }},
        "addressType": "IPv4",
        "ports": [{"name": "", "port": port, "protocol": "TCP"}],
        "endpoints": eps,
    });
    api.patch(
        name,
        &PatchParams::apply("flynn-router-tests").force(),
        &Patch::Apply(&slice),
    )
    .await
    .unwrap();
}

/// A router on loopback ephemeral ports, watching only `namespace`.
pub async fn router(client: kube::Client, namespace: &str) -> Router {
    router_with(client, namespace, |_| {}).await
}

/// [`router`] with its configuration changed by `tweak` first.
pub async fn router_with(
    client: kube::Client,
    namespace: &str,
    tweak: impl FnOnce(&mut Config),
) -> Router {
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut config = Config {
        http_addr: SocketAddr::new(lo, 0),
        https_addr: Some(SocketAddr::new(lo, 0)),
        admin_addr: SocketAddr::new(lo, 0),
        tcp_bind_ip: lo,
        namespace: Some(namespace.to_owned()),
        sticky_key: b"test".to_vec(),
        ..Config::default()
    };
    tweak(&mut config);
    let r = Router::start(client, config).await.unwrap();
    assert!(
        r.wait_for(Duration::from_secs(30), |_| true).await,
        "router never became ready"
    );
    r
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// One HTTP/1.1 client connection.
pub struct H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>);

impl H1 {
    pub async fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).await.unwrap();
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn.with_upgrades());
        Self(tx)
    }

    pub async fn get(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> Got {
        let mut b = Request::get(path).header("host", host);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.0.ready().await.unwrap();
        let resp = self
            .0
            .send_request(b.body(Empty::new()).unwrap())
            .await
            .unwrap();
        collect(resp).await
    }
}

pub async fn collect(resp: Response<Incoming>) -> Got {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// One request on a new connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Got {
    H1::connect(addr).await.get(host, path, &[]).await
}

/// Polls until `f` holds (the router follows the API server asynchronously).
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An HTTP/2 client on `io` (TLS that negotiated h2, or plain TCP for h2c), its connection
/// driven in the background.
pub async fn h2_client<I>(io: I) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(io),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    tx
}
