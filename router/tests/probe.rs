//! `flynn-router probe`, the exec probe, as the kubelet runs it: its exit status and what it
//! prints, against a stand-in for a router's admin socket.

use std::{
    io::{Read, Write},
    os::unix::net::UnixListener,
    path::{Path, PathBuf},
    process::{Command, Output},
    thread::JoinHandle,
};

/// A socket path of this test's own.
fn socket(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "flynn-router-probe-bin-{}-{name}.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    path
}

/// Answers one connection at `path` with `response` once the request head is in.
fn answer_once(path: &Path, response: &'static str) -> JoinHandle<String> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert_ne!(n, 0, "the probe closed before its request was complete");
            head.extend_from_slice(&buf[..n]);
        }
        s.write_all(response.as_bytes()).unwrap();
        String::from_utf8(head).unwrap()
    })
}

fn probe(socket: &Path, path: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flynn-router"))
        .arg("probe")
        .arg("--socket")
        .arg(socket)
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn a_200_exits_0_with_the_body() {
    let path = socket("ready");
    let server = answer_once(&path, "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n");
    let out = probe(&path, "/readyz");
    let request = server.join().unwrap();
    assert!(request.starts_with("GET /readyz HTTP/1.1\r\n"), "{request}");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"ok\n");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_503_exits_1_with_the_status_and_body() {
    let path = socket("draining");
    let server = answer_once(
        &path,
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 9\r\n\r\ndraining\n",
    );
    let out = probe(&path, "/readyz");
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "503 Service Unavailable: draining\n"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn no_router_exits_2_naming_the_socket() {
    let path = socket("absent");
    let out = probe(&path, "/readyz");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
}
