//! Throwaway: the least a tokio HTTP/1 proxy can do (one backend connection per client
//! connection, request and response copied verbatim). Measures the bench's floor.
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen: SocketAddr = args[1].parse().unwrap();
    let backend: SocketAddr = args[2].parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let l = TcpListener::bind(listen).await.unwrap();
        loop {
            let (c, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let _ = c.set_nodelay(true);
                let _ = serve(c, backend).await;
            });
        }
    });
}

async fn serve(mut c: TcpStream, backend: SocketAddr) -> std::io::Result<()> {
    let mut b = TcpStream::connect(backend).await?;
    b.set_nodelay(true)?;
    let mut req = Vec::with_capacity(8192);
    let mut resp = Vec::with_capacity(8192);
    loop {
        req.clear();
        loop {
            if c.read_buf(&mut req).await? == 0 {
                return Ok(());
            }
            let mut h = [httparse::EMPTY_HEADER; 64];
            if httparse::Request::new(&mut h)
                .parse(&req)
                .map_err(|_| std::io::ErrorKind::InvalidData)?
                .is_complete()
            {
                break;
            }
        }
        b.write_all(&req).await?;
        resp.clear();
        loop {
            if b.read_buf(&mut resp).await? == 0 {
                return Ok(());
            }
            let mut h = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut h);
            if let httparse::Status::Complete(n) = r
                .parse(&resp)
                .map_err(|_| std::io::ErrorKind::InvalidData)?
            {
                let len: usize = r
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                    .unwrap_or(0);
                if resp.len() >= n + len {
                    break;
                }
            }
        }
        c.write_all(&resp).await?;
    }
}
