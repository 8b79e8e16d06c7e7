//! TCP routes: one listener per routed port, opened when a table gains the port and closed
//! when it loses it; each accepted connection is spliced to an endpoint of the Route.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{oneshot, watch},
};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::{
    limits::{self, ConnLimit},
    listener,
    server::DrainSignal,
    table::TableHandle,
};

/// Ports TCP Routes ask for that cannot be opened, with why, for the status writer.
pub type PortProblems = BTreeMap<u16, String>;

/// How often a port that could not be opened is tried again.
const BIND_RETRY: Duration = Duration::from_secs(5);

/// Keeps one listener per TCP route in step with the published tables.
#[derive(Debug)]
pub struct TcpProxy {
    /// The tables.
    pub table: TableHandle,
    /// Address the route ports are opened on.
    pub bind_ip: IpAddr,
    /// Limit on connecting to a backend.
    pub connect_timeout: Duration,
    /// Endpoints tried per connection.
    pub max_attempts: usize,
    /// Where the ports that cannot be opened are published (Route status reads them).
    pub problems: watch::Sender<PortProblems>,
    /// The connection limit every listener shares.
    pub limit: ConnLimit,
    /// A connection with no traffic either way for this long is closed (zero: never).
    pub idle_timeout: Duration,
}

impl TcpProxy {
    /// Runs until draining starts; `generations` fires after every table swap.
    pub async fn run(
        self,
        mut generations: watch::Receiver<u64>,
        mut drain: DrainSignal,
        tracker: TaskTracker,
    ) {
        // Dropping a port's sender stops its accept loop, which closes the listener.
        let mut open: HashMap<u16, oneshot::Sender<()>> = HashMap::new();
        loop {
            let table = self.table.load_full();
            open.retain(|port, _| {
                let keep = table.tcp.contains_key(port);
                if !keep {
                    info!(port, "closing TCP route listener");
                }
                keep
            });
            let mut problems = PortProblems::new();
            for &port in table.tcp.keys() {
                if open.contains_key(&port) {
                    continue;
                }
                let addr = SocketAddr::new(self.bind_ip, port);
                // Shared with a router that replaces this one (see `listener`).
                match listener::listen(addr) {
                    Ok(listener) => {
                        info!(%addr, "listening for TCP route");
                        let (stop_tx, stop_rx) = oneshot::channel();
                        open.insert(port, stop_tx);
                        tracker.spawn(accept_loop(
                            listener,
                            port,
                            self.table.clone(),
                            Splice {
                                connect_timeout: self.connect_timeout,
                                max_attempts: self.max_attempts,
                                limit: self.limit.clone(),
                                idle: self.idle_timeout,
                            },
                            stop_rx,
                            tracker.clone(),
                        ));
                    }
                    // Said in the Route's status, and retried.
                    Err(e) => {
                        warn!(error = %e, "cannot listen for TCP route");
                        let why = std::error::Error::source(&e)
                            .map_or_else(|| e.to_string(), ToString::to_string);
                        problems.insert(port, format!("cannot listen on {addr}: {why}"));
                    }
                }
            }
            let retry = !problems.is_empty();
            self.problems.send_if_modified(|p| {
                let changed = *p != problems;
                *p = problems;
                changed
            });
            tokio::select! {
                changed = generations.changed() => if changed.is_err() { return },
                () = drain.signaled() => return,
                () = tokio::time::sleep(BIND_RETRY), if retry => {}
            }
        }
    }
}

/// How a TCP route's connections are spliced.
#[derive(Debug, Clone)]
struct Splice {
    connect_timeout: Duration,
    max_attempts: usize,
    limit: ConnLimit,
    idle: Duration,
}

async fn accept_loop(
    listener: TcpListener,
    port: u16,
    table: TableHandle,
    splice: Splice,
    mut stop: oneshot::Receiver<()>,
    tracker: TaskTracker,
) {
    let Splice {
        connect_timeout,
        max_attempts,
        limit,
        idle,
    } = splice;
    loop {
        let (client, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(port, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => return,
        };
        // Over the limit: closed at once.
        let Some(guard) = limit.admit("tcp") else {
            continue;
        };
        let table = table.clone();
        tracker.spawn(async move {
            let _guard = guard;
            // The route as of now: a connection follows the table current when it arrives.
            let Some(entry) = table.load().tcp.get(&port).cloned() else {
                return;
            };
            entry.metrics.tcp_connection();
            let mut tried = Vec::new();
            for _ in 0..max_attempts.max(1) {
                let Some(endpoint) = entry.backend.pick(&tried).cloned() else {
                    break;
                };
                let in_flight = endpoint.start();
                match tokio::time::timeout(connect_timeout, TcpStream::connect(endpoint.addr))
                    .await
                {
                    Ok(Ok(mut upstream)) => {
                        let _ = upstream.set_nodelay(true);
                        let _ = client.set_nodelay(true);
                        let mut client = client;
                        let copied = limits::splice(&mut client, &mut upstream, idle).await;
                        debug!(route = %entry.key, %peer, ?copied, "TCP connection ended");
                        drop(in_flight);
                        return;
                    }
                    Ok(Err(e)) => {
                        debug!(route = %entry.key, addr = %endpoint.addr, error = %e, "connect failed")
                    }
                    Err(_) => debug!(route = %entry.key, addr = %endpoint.addr, "connect timed out"),
                }
                entry.metrics.connect_error();
                tried.push(endpoint.addr);
            }
            debug!(route = %entry.key, %peer, "no endpoint for TCP connection; closing it");
        });
    }
}
