//! The signal that tells listeners and connections to wind down.

use tokio::sync::watch;

/// Tells listeners and connections to wind down (a clone per connection).
#[derive(Debug, Clone)]
pub struct DrainSignal(watch::Receiver<bool>);

impl DrainSignal {
    /// A sender and its signal.
    pub fn new() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    /// Resolves once draining has started.
    pub async fn signaled(&mut self) {
        // An error means the sender is gone, which also means shutdown.
        let _ = self.0.wait_for(|d| *d).await;
    }

    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }
}
