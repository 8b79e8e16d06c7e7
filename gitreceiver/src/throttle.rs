//! A per-source-address rate limit on new SSH connections, applied before the server says
//! a word. Key exchange costs the server real CPU (an X25519 or ML-KEM operation per
//! connection), so one address opening connections as fast as it can is a cheap way to
//! exhaust it (the DHEat attack, CVE-2002-20001, which ssh-audit checks for). A token
//! bucket per address: `burst` connections at once, refilled at `rate` per second; git
//! opens one connection per push, far below either.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The limiter.
#[derive(Debug)]
pub struct Throttle {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl Throttle {
    /// `rate` connections per second per address, `burst` at once.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst: burst.max(1.0),
            buckets: Mutex::default(),
        }
    }

    /// Whether a new connection from `ip` may proceed now.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        // Forget addresses whose bucket is full again, so the table stays small.
        if buckets.len() > 4096 {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let refill = now.saturating_duration_since(bucket.last).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_a_burst_then_the_rate_per_address() {
        let t = Throttle::new(5.0, 3.0);
        let now = Instant::now();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert!((0..3).all(|_| t.allow(a, now)));
        assert!(!t.allow(a, now));
        assert!(t.allow(b, now), "another address has its own bucket");
        assert!(
            t.allow(a, now + Duration::from_millis(200)),
            "one token per 1/rate s"
        );
        assert!(!t.allow(a, now + Duration::from_millis(210)));
    }
}
