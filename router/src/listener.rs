//! Listening sockets that a second router process can share: the handover.
//!
//! A router upgrade on a node (a DaemonSet on the host network, `maxSurge: 1`) starts the new
//! router while the old one still serves, on the same addresses. Every listener therefore
//! binds with `SO_REUSEADDR` + `SO_REUSEPORT`: the two processes form one reuseport group, and
//! the kernel spreads new connections over the members that listen.
//!
//! Two steps, so that a process only joins the group once it can route:
//! [`bind`] at start (bind errors and the port picked for port 0 are known at once; a bound
//! socket that does not listen gets no connections), then [`Bound::listen`] once the first
//! complete routing table is published.
//!
//! The old router closes its listeners when it starts draining. Connections the kernel had
//! queued on them but the router had not accepted yet are reset, unless
//! `net.ipv4.tcp_migrate_req` is 1 (Linux ≥ 5.14): then they move to another listener of the
//! group, the new router's. [`check_migrate_req`] says at start which it is.

use std::{io, net::SocketAddr, path::Path};

use tokio::net::{TcpListener, TcpSocket};
use tracing::{debug, warn};

use crate::{Error, metrics::Metrics};

/// Pending connections per listener (what `TcpListener::bind` uses; the kernel caps it at
/// `net.core.somaxconn`). A listener that closes hands at most this many to its successor.
const BACKLOG: u32 = 1024;

/// The sysctl that moves a closing listener's queued connections to its reuseport peers.
const MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// A TCP socket bound to its address, not listening yet: it receives no connections.
#[derive(Debug)]
pub struct Bound {
    socket: TcpSocket,
    addr: SocketAddr,
}

/// Binds `addr` so that other processes of the same user can bind it too (see the module
/// docs). A port held by a socket without `SO_REUSEPORT`, or by another user, is
/// [`Error::Bind`].
pub fn bind(addr: SocketAddr) -> Result<Bound, Error> {
    let bound = || -> io::Result<Bound> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        let addr = socket.local_addr()?;
        Ok(Bound { socket, addr })
    };
    bound().map_err(|source| Error::Bind { addr, source })
}

impl Bound {
    /// The bound address (with the port the kernel picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts listening: from here on the kernel hands this socket its share of the
    /// connections to the address. Fails if a socket bound to the address without
    /// `SO_REUSEPORT` started listening since [`bind`].
    pub fn listen(self) -> Result<TcpListener, Error> {
        let addr = self.addr;
        self.socket
            .listen(BACKLOG)
            .map_err(|source| Error::Bind { addr, source })
    }
}

/// [`bind`] and [`Bound::listen`] at once, for listeners that serve from the start.
pub fn listen(addr: SocketAddr) -> Result<TcpListener, Error> {
    bind(addr)?.listen()
}

/// Reads `net.ipv4.tcp_migrate_req` (of the router's network namespace: the node's, on the
/// host network), warns once if it is not 1, and exports it as a gauge.
pub fn check_migrate_req(metrics: &Metrics) {
    let value = std::fs::read_to_string(MIGRATE_REQ);
    let on = match &value {
        Ok(v) if v.trim() == "1" => true,
        Ok(v) => {
            warn!(
                sysctl = "net.ipv4.tcp_migrate_req",
                value = v.trim(),
                "net.ipv4.tcp_migrate_req is not 1: connections queued on this router's \
                 listeners and not accepted yet when it stops are reset (a few per router \
                 restart or upgrade) instead of moving to the router that replaces it; set it \
                 on the node with `sysctl -w net.ipv4.tcp_migrate_req=1`"
            );
            false
        }
        Err(e) => {
            warn!(
                sysctl = "net.ipv4.tcp_migrate_req",
                error = %e,
                "cannot read net.ipv4.tcp_migrate_req (Linux < 5.14?): connections queued on \
                 this router's listeners and not accepted yet when it stops are reset (a few \
                 per router restart or upgrade)"
            );
            false
        }
    };
    debug!(on, "net.ipv4.tcp_migrate_req");
    metrics.tcp_migrate_req.set(i64::from(on));
}

/// Removes what a previous run left at a unix socket's `path` (a container restarted in the
/// same pod keeps its emptyDir), so that binding it again works. Anything but a socket is
/// left alone, and binding then fails naming the path.
pub fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{Ipv4Addr, TcpStream},
        time::Duration,
    };

    use super::*;

    fn loopback(port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    }

    /// Two routers can hold one port: both bind, both listen, and connections are accepted.
    #[tokio::test]
    async fn two_routers_bind_and_listen_on_one_port() {
        let first = bind(loopback(0)).unwrap();
        let addr = first.local_addr();
        assert_ne!(addr.port(), 0);
        let second = bind(addr).unwrap();
        assert_eq!(second.local_addr(), addr);
        let (first, second) = (first.listen().unwrap(), second.listen().unwrap());
        // Connections land on either; together they get all of them.
        let clients: Vec<_> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut accepted = 0;
        for listener in [&first, &second] {
            while let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(100), listener.accept()).await
            {
                accepted += 1;
            }
        }
        assert_eq!(accepted, clients.len());
    }

    /// A bound socket that does not listen yet takes no connections from the one that does.
    #[tokio::test]
    async fn a_bound_socket_gets_no_connections_before_it_listens() {
        let serving = listen(loopback(0)).unwrap();
        let addr = serving.local_addr().unwrap();
        let _waiting = bind(addr).unwrap();
        for _ in 0..8 {
            let _client = TcpStream::connect(addr).unwrap();
            tokio::time::timeout(Duration::from_secs(1), serving.accept())
                .await
                .expect("the listening socket gets every connection")
                .unwrap();
        }
    }

    /// A port held by a process that did not ask to share it stays unavailable, and the
    /// error names the address.
    #[tokio::test]
    async fn a_port_held_without_reuseport_is_a_bind_error() {
        // std's listener sets SO_REUSEADDR but not SO_REUSEPORT.
        let held = std::net::TcpListener::bind(loopback(0)).unwrap();
        let addr = held.local_addr().unwrap();
        let err = bind(addr).unwrap_err();
        assert!(
            matches!(&err, Error::Bind { addr: a, source } if *a == addr
                && source.kind() == io::ErrorKind::AddrInUse),
            "{err:?}"
        );
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }

    /// A stale socket file is replaced; a regular file at the path is not deleted.
    #[test]
    fn only_stale_sockets_are_removed() {
        let dir = std::env::temp_dir().join(format!("flynn-router-stale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("admin.sock");
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        remove_stale_socket(&socket).unwrap();
        assert!(!socket.exists());
        remove_stale_socket(&socket).unwrap();
        let file = dir.join("file");
        std::fs::write(&file, "keep").unwrap();
        remove_stale_socket(&file).unwrap();
        assert!(file.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
