//! The least an HTTP/1 proxy on tokio can do, as a yardstick for `benches/bench.sh`
//! (`FLOOR=1` adds it as target `floor`): one backend connection per client connection,
//! each request head and response copied verbatim (no routing, no header rewriting, no
//! timeouts, no metrics; bodies only by Content-Length). Not a product: it shows how much
//! of a proxy's CPU per request is the kernel's, which no proxy can save.
//!
//! Usage: floor_proxy LISTEN_ADDR BACKEND_ADDR

use std::{io, net::SocketAddr};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(backend)) = (args.next(), args.next()) else {
        eprintln!("usage: floor_proxy LISTEN_ADDR BACKEND_ADDR");
        std::process::exit(2);
    };
    let parse = |a: String| -> io::Result<SocketAddr> {
        a.parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{a}: {e}")))
    };
    let (listen, backend) = (parse(listen)?, parse(backend)?);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = TcpListener::bind(listen).await?;
            loop {
                let (client, _) = listener.accept().await?;
                tokio::spawn(async move {
                    let _ = relay(client, backend).await;
                });
            }
        })
}

/// Relays request/response pairs between `client` and its own backend connection.
async fn relay(mut client: TcpStream, backend: SocketAddr) -> io::Result<()> {
    client.set_nodelay(true)?;
    let mut upstream = TcpStream::connect(backend).await?;
    upstream.set_nodelay(true)?;
    let (mut req, mut resp) = (Vec::with_capacity(8192), Vec::with_capacity(8192));
    loop {
        req.clear();
        while !complete(&req, true)? {
            if client.read_buf(&mut req).await? == 0 {
                return Ok(());
            }
        }
        upstream.write_all(&req).await?;
        resp.clear();
        while !complete(&resp, false)? {
            if upstream.read_buf(&mut resp).await? == 0 {
                return Ok(());
            }
        }
        client.write_all(&resp).await?;
    }
}

/// Whether `buf` holds a whole request head (`request`) or a whole response (head and
/// Content-Length body).
fn complete(buf: &[u8], request: bool) -> io::Result<bool> {
    let invalid = |e: httparse::Error| io::Error::new(io::ErrorKind::InvalidData, e);
    let mut headers = [httparse::EMPTY_HEADER; 64];
    if request {
        return Ok(httparse::Request::new(&mut headers)
            .parse(buf)
            .map_err(invalid)?
            .is_complete());
    }
    let mut r = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = r.parse(buf).map_err(invalid)? else {
        return Ok(false);
    };
    let length: usize = r
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
        .unwrap_or(0);
    Ok(buf.len() >= head + length)
}
