//! `flynn-router probe`: one GET to a running router's admin unix socket, for the kubelet's
//! exec probes (the image has no shell or curl). The socket belongs to one process, where the
//! admin TCP address may be shared with another router during a handover (see
//! [`crate::admin`]).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Why a probe did not get a 200.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Nothing listens at the socket (the router is not up, or has exited).
    #[error("connecting to {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The exchange broke off.
    #[error("asking {path}: {source}")]
    Http {
        /// The socket.
        path: PathBuf,
        /// The error.
        #[source]
        source: hyper::Error,
    },
    /// No complete answer in time.
    #[error("no answer from {path} within {timeout:?}")]
    Timeout {
        /// The socket.
        path: PathBuf,
        /// The limit.
        timeout: Duration,
    },
    /// The router answered, with something other than 200.
    #[error("{status}: {body}")]
    Status {
        /// Its status.
        status: StatusCode,
        /// Its body (why, for `/readyz`).
        body: String,
    },
}

impl ProbeError {
    /// Whether the router answered (with a status other than 200), as opposed to not
    /// answering at all.
    pub fn answered(&self) -> bool {
        matches!(self, Self::Status { .. })
    }
}

/// GETs `path` (e.g. `/readyz`) from the router whose admin socket is `socket`, within
/// `timeout` all told; the body of a 200.
pub async fn probe(socket: &Path, path: &str, timeout: Duration) -> Result<Bytes, ProbeError> {
    tokio::time::timeout(timeout, get(socket, path))
        .await
        .unwrap_or_else(|_| {
            Err(ProbeError::Timeout {
                path: socket.to_owned(),
                timeout,
            })
        })
}

async fn get(socket: &Path, path: &str) -> Result<Bytes, ProbeError> {
    let http = |source| ProbeError::Http {
        path: socket.to_owned(),
        source,
    };
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ProbeError::Connect {
            path: socket.to_owned(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    // Its errors surface as the request's.
    tokio::spawn(conn);
    let request = Request::get(path)
        .header(header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .expect("a path-only request is valid");
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(http)?
        .to_bytes();
    if status == StatusCode::OK {
        Ok(body)
    } else {
        Err(ProbeError::Status {
            status,
            body: String::from_utf8_lossy(&body).trim_end().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::UnixListener,
    };

    use super::*;

    /// A socket path of the test's own.
    fn socket(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "flynn-router-probe-{}-{name}.sock",
            std::process::id()
        ))
    }

    /// A server at `path` that answers every connection with `response`, once.
    fn answer(path: &Path, response: &'static str) -> tokio::task::JoinHandle<()> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(response.as_bytes()).await.unwrap();
        })
    }

    #[tokio::test]
    async fn a_200_is_the_body() {
        let path = socket("ok");
        let server = answer(&path, "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n");
        let got = probe(&path, "/readyz", Duration::from_secs(1)).await;
        assert_eq!(got.unwrap(), "ok\n");
        server.await.unwrap();
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn another_status_is_an_error_with_the_body() {
        let path = socket("draining");
        let server = answer(
            &path,
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 9\r\n\r\ndraining\n",
        );
        let err = probe(&path, "/readyz", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.answered());
        assert_eq!(err.to_string(), "503 Service Unavailable: draining");
        server.await.unwrap();
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn no_router_and_a_silent_router_are_errors() {
        let path = socket("none");
        let _ = std::fs::remove_file(&path);
        let err = probe(&path, "/readyz", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, ProbeError::Connect { .. }), "{err:?}");

        // Accepts (the kernel does, into the backlog) but never answers.
        let _listener = UnixListener::bind(&path).unwrap();
        let err = probe(&path, "/readyz", Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err, ProbeError::Timeout { .. }), "{err:?}");
        assert!(!err.answered());
        std::fs::remove_file(&path).unwrap();
    }
}
