//! Leader election on a coordination.k8s.io Lease, so two replicas run with one active.
//!
//! kube-rs has no elector; this follows kubert's design rather than the merge-patch
//! crates: every write is a `replace` carrying the resourceVersion read just before, so
//! two candidates racing for an expired Lease cannot both win (the loser gets a 409).
//! Timings are client-go's defaults: a 15 s lease, renewed every 2 s, given up when not
//! renewed for 10 s (before anyone else may take it).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

/// Where the Lease lives and who we are.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per replica: the pod name.
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    /// An object the Lease is garbage-collected with (the chart's ConfigMap), so that
    /// uninstalling the platform leaves no Lease behind.
    pub owner: Option<OwnerReference>,
}

impl LeaseConfig {
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            owner: None,
        }
    }

    #[must_use]
    pub fn owned_by(mut self, owner: OwnerReference) -> Self {
        self.owner = Some(owner);
        self
    }
}

/// A held leadership. `lost()` resolves when the Lease could not be renewed in time
/// (the caller must stop reconciling at once: someone else may take over).
#[derive(Debug)]
pub struct Leadership {
    lost: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
    api: Api<Lease>,
    config: LeaseConfig,
}

impl Leadership {
    /// Resolves when leadership is lost.
    pub async fn lost(&self) {
        let mut rx = self.lost.clone();
        let _ = rx.wait_for(|lost| *lost).await;
    }

    /// A future that resolves when leadership is lost, for `graceful_shutdown_on`.
    pub fn lost_signal(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut rx = self.lost.clone();
        async move {
            let _ = rx.wait_for(|lost| *lost).await;
        }
    }

    /// Stops renewing and hands the Lease back, so a standby takes over after one retry
    /// period instead of a whole lease duration.
    pub async fn release(self) {
        self.task.abort();
        if let Ok(mut lease) = self.api.get(&self.config.name).await
            && holder(&lease) == Some(self.config.identity.as_str())
        {
            let spec = lease.spec.get_or_insert_with(Default::default);
            spec.holder_identity = None;
            spec.renew_time = None;
            spec.lease_duration_seconds = Some(1);
            match self
                .api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => tracing::info!(lease = %self.config.name, "released leadership"),
                Err(e) => tracing::warn!(error = %e, "could not release the lease; it will expire"),
            }
        }
    }
}

/// Dropping a leadership stops renewing (without handing the Lease back: it expires).
impl Drop for Leadership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until this replica holds the Lease, then keeps renewing it in the background.
pub async fn acquire(client: Client, config: LeaseConfig) -> Leadership {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut logged = false;
    loop {
        match try_acquire_or_renew(&api, &config).await {
            Ok(Round::Held) => break,
            Ok(Round::Conflict) => {}
            Ok(Round::HeldByOther) => {
                if !logged {
                    tracing::info!(lease = %config.name, "another replica leads; standing by");
                    logged = true;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, lease = %config.name, "leader election failed; retrying")
            }
        }
        tokio::time::sleep(config.retry_period).await;
    }
    tracing::info!(lease = %config.name, identity = %config.identity, "acquired leadership");

    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(renew_loop(api.clone(), config.clone(), tx));
    Leadership {
        lost: rx,
        task,
        api,
        config,
    }
}

async fn renew_loop(api: Api<Lease>, config: LeaseConfig, lost: watch::Sender<bool>) {
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(config.retry_period).await;
        match try_acquire_or_renew(&api, &config).await {
            Ok(Round::Held) => last_renewed = tokio::time::Instant::now(),
            // Lost a write race: read again next round (bounded by the renew deadline).
            Ok(Round::Conflict) if last_renewed.elapsed() < config.renew_deadline => {}
            Ok(Round::Conflict | Round::HeldByOther) => {
                tracing::error!(lease = %config.name, "another replica took the lease");
                let _ = lost.send(true);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "renewing the lease failed");
                if last_renewed.elapsed() >= config.renew_deadline {
                    tracing::error!(lease = %config.name, "could not renew the lease in time; stepping down");
                    let _ = lost.send(true);
                    return;
                }
            }
        }
    }
}

fn holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
}

/// The outcome of one election round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// We hold the Lease.
    Held,
    /// Another replica holds an unexpired Lease.
    HeldByOther,
    /// Someone wrote the Lease between our read and our write.
    Conflict,
}

/// One election round.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    config: &LeaseConfig,
) -> Result<Round, kube::Error> {
    let now = Timestamp::now();
    let duration_secs = i32::try_from(config.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let existing = match api.get_opt(&config.name).await? {
        Some(lease) => lease,
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    owner_references: config.owner.clone().map(|o| vec![o]),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(config.identity.clone()),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_duration_seconds: Some(duration_secs),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Round::Held),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Round::Conflict),
                Err(e) => Err(e),
            };
        }
    };

    let spec = existing.spec.clone().unwrap_or_default();
    let ours = spec.holder_identity.as_deref() == Some(config.identity.as_str());
    let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(MicroTime(renewed)), Some(secs)) => {
            *renewed + SignedDuration::from_secs(i64::from(secs)) < now
        }
        _ => true,
    };
    if !ours && !expired && spec.holder_identity.is_some() {
        return Ok(Round::HeldByOther);
    }

    let mut lease = existing;
    // A Lease made before it had an owner gets one on the next write.
    if let Some(owner) = &config.owner {
        let refs = lease.metadata.owner_references.get_or_insert_with(Vec::new);
        if !refs.iter().any(|r| r.uid == owner.uid) {
            refs.push(owner.clone());
        }
    }
    let s = lease.spec.get_or_insert_with(Default::default);
    if !ours {
        s.acquire_time = Some(MicroTime(now));
        s.lease_transitions = Some(s.lease_transitions.unwrap_or(0) + 1);
        s.holder_identity = Some(config.identity.clone());
    }
    s.renew_time = Some(MicroTime(now));
    s.lease_duration_seconds = Some(duration_secs);
    // `replace` sends the resourceVersion we read: a concurrent writer makes this a 409.
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(Round::Held),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Round::Conflict),
        Err(e) => Err(e),
    }
}
