//! One push per App at a time. A second push waits (and is told who it waits for) up to a
//! timeout. Pushes to different Apps run in parallel.
//!
//! The lock lives in this process: the receiver runs as one replica because the bare
//! repositories are on one volume (see the README).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

use crate::command::RepoPath;

#[derive(Debug, Default)]
struct Slot {
    lock: Arc<tokio::sync::Mutex<()>>,
    /// Who holds the lock, for the waiting message.
    holder: Mutex<Option<String>>,
}

/// The per-App locks.
#[derive(Debug, Default)]
pub struct AppLocks {
    slots: Mutex<HashMap<(String, String), Arc<Slot>>>,
}

/// Held while a push to one App runs; shared (in an `Arc`) between the SSH session and the
/// pipeline, so the lock is released when the build ends, not when the client goes away.
#[derive(Debug)]
pub struct AppGuard {
    slot: Arc<Slot>,
    _guard: OwnedMutexGuard<()>,
}

impl Drop for AppGuard {
    fn drop(&mut self) {
        *self.slot.holder.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Another push held the App for longer than the timeout.
#[derive(Debug, thiserror::Error)]
#[error(
    "another push to {app} (by {holder}) is still running after {waited:?}: try again when it has finished"
)]
pub struct Busy {
    pub app: String,
    pub holder: String,
    pub waited: Duration,
}

impl AppLocks {
    fn slot(&self, repo: &RepoPath) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .entry((repo.namespace.clone(), repo.app.clone()))
            .or_default()
            .clone()
    }

    /// Takes the App's lock for `user` if nobody has it.
    pub fn try_acquire(&self, repo: &RepoPath, user: &str) -> Option<AppGuard> {
        let slot = self.slot(repo);
        let guard = slot.lock.clone().try_lock_owned().ok()?;
        *slot.holder.lock().unwrap_or_else(|e| e.into_inner()) = Some(user.to_owned());
        Some(AppGuard {
            slot,
            _guard: guard,
        })
    }

    /// Takes the App's lock for `user`. If someone else has it, calls `waiting` once with
    /// the holder's name and waits up to `timeout`.
    pub async fn acquire(
        &self,
        repo: &RepoPath,
        user: &str,
        timeout: Duration,
        waiting: impl FnOnce(&str),
    ) -> Result<AppGuard, Busy> {
        let slot = self.slot(repo);
        let guard = match slot.lock.clone().try_lock_owned() {
            Ok(g) => g,
            Err(_) => {
                let holder = slot
                    .holder
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                    .unwrap_or_else(|| "someone".into());
                waiting(&holder);
                match tokio::time::timeout(timeout, slot.lock.clone().lock_owned()).await {
                    Ok(g) => g,
                    Err(_) => {
                        return Err(Busy {
                            app: repo.app.clone(),
                            holder,
                            waited: timeout,
                        });
                    }
                }
            }
        };
        *slot.holder.lock().unwrap_or_else(|e| e.into_inner()) = Some(user.to_owned());
        Ok(AppGuard {
            slot,
            _guard: guard,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(app: &str) -> RepoPath {
        RepoPath {
            namespace: "ns".into(),
            app: app.into(),
        }
    }

    #[tokio::test]
    async fn second_push_waits_and_names_the_holder() {
        let locks = Arc::new(AppLocks::default());
        let first = locks
            .acquire(&repo("a"), "alice", Duration::from_secs(1), |_| {
                panic!("free")
            })
            .await
            .unwrap();
        // A different App is not blocked.
        let _other = locks
            .acquire(&repo("b"), "bob", Duration::from_secs(1), |_| {
                panic!("free")
            })
            .await
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = tokio::spawn({
            let locks = locks.clone();
            async move {
                locks
                    .acquire(&repo("a"), "bob", Duration::from_secs(5), |h| {
                        tx.send(h.to_owned()).unwrap()
                    })
                    .await
                    .map(|_| ())
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(rx.try_recv().unwrap(), "alice");
        drop(first);
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn try_acquire_never_waits() {
        let locks = AppLocks::default();
        let first = locks.try_acquire(&repo("a"), "gc").unwrap();
        assert!(locks.try_acquire(&repo("a"), "gc").is_none());
        let err = locks
            .acquire(&repo("a"), "bob", Duration::from_millis(20), |_| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("by gc"), "{err}");
        drop(first);
        assert!(locks.try_acquire(&repo("a"), "gc").is_some());
    }

    #[tokio::test]
    async fn times_out() {
        let locks = AppLocks::default();
        let _first = locks
            .acquire(&repo("a"), "alice", Duration::from_secs(1), |_| {})
            .await
            .unwrap();
        let err = locks
            .acquire(&repo("a"), "bob", Duration::from_millis(20), |_| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("by alice"), "{err}");
    }
}
