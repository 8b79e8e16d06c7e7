//! Idle keep-alive connections to one endpoint.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use super::BackendConn;

/// Upper bound of idle connections kept per endpoint.
const MAX_IDLE: usize = 256;

/// Idle connections, most recently used last (LIFO keeps few connections warm). The lock is
/// held for one push or pop, never across I/O.
#[derive(Debug, Default)]
pub struct ConnPool {
    idle: Mutex<Vec<(BackendConn, Instant)>>,
}

impl ConnPool {
    /// An idle connection younger than `max_idle` at `now` that still looks open, if any.
    /// (The time is the caller's: a request reads the clock once for all its uses.)
    pub fn checkout(&self, max_idle: Duration, now: Instant) -> Option<BackendConn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((mut conn, since)) = idle.pop() {
            if now.saturating_duration_since(since) < max_idle && conn.is_usable() {
                return Some(conn);
            }
        }
        None
    }

    /// Returns a connection whose last response was read in full (about `now`).
    pub fn checkin(&self, mut conn: BackendConn, now: Instant) {
        conn.reused = true;
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((conn, now));
        }
    }

    /// Closes every idle connection.
    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
