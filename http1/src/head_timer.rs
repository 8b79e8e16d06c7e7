//! A cheap timer for hyper's HTTP/1 header read timeout.
//!
//! hyper arms the timeout for every request head it reads and drops it once the head is
//! in: with `TokioTimer` that is a timer-wheel registration and removal per request, about
//! 3-4 % of the router's CPU per request (measured A/B with the timeout off). The
//! deadlines of one connection only move forward, so this timer keeps one tokio `Sleep`
//! per connection, armed for the earliest deadline it was asked for; when it fires before
//! the deadline of the head being read, it is moved to that deadline. That is one timer
//! operation per timeout period per connection instead of two per request, with the same
//! result: a head that is not complete by its deadline fails the connection.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Instant,
};

use hyper::rt::{Sleep, Timer};

/// The timer of one connection (make one per connection).
#[derive(Debug, Clone, Default)]
pub struct HeadTimer {
    armed: Arc<Mutex<Deadline>>,
}

/// A connection's one tokio sleep and the deadline it is armed for: the head deadlines of
/// one connection, polled one after the other (also used directly by the router's own
/// HTTP/1 server, [`crate::server`]).
#[derive(Debug, Default)]
pub struct Deadline {
    armed: Option<(Instant, Pin<Box<tokio::time::Sleep>>)>,
}

impl Deadline {
    /// Ready once `deadline` has passed. Registers for a wake-up only when the sleep is
    /// first armed or moves: the sleep stays armed for an earlier deadline, and when that
    /// fires before `deadline` it is moved to `deadline`.
    pub fn poll_until(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        let (at, sleep) = self.armed.get_or_insert_with(|| {
            (
                deadline,
                Box::pin(tokio::time::sleep_until(deadline.into())),
            )
        });
        if *at > deadline {
            // An earlier deadline than the armed one (not seen in practice): honour it.
            sleep.as_mut().reset(deadline.into());
            *at = deadline;
        }
        loop {
            match sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                // The armed deadline is this one (or later): it has passed.
                Poll::Ready(()) if *at >= deadline => return Poll::Ready(()),
                // An older head's deadline passed: move on to this one (and register).
                Poll::Ready(()) => {
                    sleep.as_mut().reset(deadline.into());
                    *at = deadline;
                }
            }
        }
    }
}

impl Timer for HeadTimer {
    fn sleep(&self, duration: std::time::Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(HeadSleep {
            armed: self.armed.clone(),
            deadline,
        })
    }
}

/// One head's deadline.
#[derive(Debug)]
struct HeadSleep {
    armed: Arc<Mutex<Deadline>>,
    deadline: Instant,
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        armed.poll_until(cx, deadline)
    }
}

impl Sleep for HeadSleep {}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_head_times_out_at_its_own_deadline() {
        let timer = HeadTimer::default();
        let start = Instant::now();
        // A first head, read in time: its sleep is dropped unfired.
        let first = timer.sleep(Duration::from_millis(30));
        let _ = tokio::time::timeout(Duration::from_millis(5), first).await;
        // The next head's deadline is later; the armed one fires first and must not end it.
        let second = timer.sleep_until(start + Duration::from_millis(120));
        second.await;
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(120), "{waited:?}");
        assert!(waited < Duration::from_millis(1000), "{waited:?}");
        // An expired deadline is ready at once.
        timer.sleep_until(Instant::now()).await;
    }
}
