//! What every SSH connection of a running receiver shares: its settings, the key registry,
//! the authorizer, the App locks, the push slots, the hook server and the metrics. Made
//! once by [`receiver::start`](crate::receiver::start); read by the SSH server and the
//! repository cleanup.

use std::sync::Arc;

use crate::admission::PushSlots;
use crate::authz::Authorizer;
use crate::hook::server::HookServer;
use crate::keys::KeyRegistry;
use crate::locks::AppLocks;
use crate::metrics::Metrics;
use crate::settings::Settings;

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    pub settings: Arc<Settings>,
    pub keys: KeyRegistry,
    pub authorizer: Authorizer,
    pub locks: AppLocks,
    /// How many pushes run at once (in all, per namespace).
    pub pushes: Arc<PushSlots>,
    pub hooks: Arc<HookServer>,
    pub metrics: Arc<Metrics>,
}
