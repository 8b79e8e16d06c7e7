//! Route status: the router server-side applies the `Programmed` condition of every Route it
//! has a verdict on, with its own field manager (`flynn-router`), so it never touches the
//! operator's `Accepted` / `Conflict` conditions in the same list.
//!
//! Writes happen only when the verdict differs from what the Route already says, so restarts
//! and several router replicas converge without write storms: the second replica finds the
//! condition already set.

use std::collections::HashMap;

use flynn_crds::{Route, conditions};
use futures::StreamExt;
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::table::{RouteKey, RouteOutcome, TableHandle};

/// The field manager of the router's status writes.
pub const FIELD_MANAGER: &str = "flynn-router";
/// Status writes in flight at once.
const CONCURRENCY: usize = 16;

type Verdict = (bool, &'static str, String, Option<i64>);

fn verdict(o: &RouteOutcome) -> Verdict {
    (o.programmed, o.reason, o.message.clone(), o.generation)
}

fn up_to_date(o: &RouteOutcome) -> bool {
    o.current.as_ref().is_some_and(|c| {
        c.status == if o.programmed { "True" } else { "False" }
            && c.reason == o.reason
            && c.message == o.message
            && c.observed_generation == o.generation
    })
}

/// Writes `Programmed` conditions after every published table until `generations` closes.
pub async fn run(client: Client, table: TableHandle, mut generations: watch::Receiver<u64>) {
    // What we wrote last per Route, so a table published before our own write comes back
    // through the watch does not write it again.
    let mut written: HashMap<RouteKey, Verdict> = HashMap::new();
    while generations.changed().await.is_ok() {
        let t = table.load_full();
        let todo: Vec<RouteOutcome> = t
            .outcomes
            .iter()
            .filter(|o| !up_to_date(o) && written.get(&o.key) != Some(&verdict(o)))
            .cloned()
            .collect();
        let results: Vec<(RouteKey, Option<Verdict>)> = futures::stream::iter(todo)
            .map(|o| {
                let client = client.clone();
                async move {
                    let ok = write(client, &o).await;
                    let v = ok.then(|| verdict(&o));
                    (o.key, v)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (key, v) in results {
            match v {
                Some(v) => written.insert(key, v),
                None => written.remove(&key),
            };
        }
        // Forget Routes that are gone.
        if written.len() > t.outcomes.len() {
            let live: std::collections::HashSet<&RouteKey> =
                t.outcomes.iter().map(|o| &o.key).collect();
            written.retain(|k, _| live.contains(k));
        }
    }
}

async fn write(client: Client, o: &RouteOutcome) -> bool {
    let mut now = Time(Timestamp::now());
    if let Some(c) = &o.current
        && c.status == if o.programmed { "True" } else { "False" }
    {
        now = c.last_transition_time.clone();
    }
    let condition = conditions::new(
        conditions::types::PROGRAMMED,
        o.programmed,
        o.reason,
        o.message.clone(),
        o.generation,
        now,
    );
    let patch = serde_json::json!({
        "apiVersion": "flynn.io/v1alpha1",
        "kind": "Route",
        "status": { "conditions": [condition] },
    });
    let api: Api<Route> = Api::namespaced(client, &o.key.namespace);
    match api
        .patch_status(
            &o.key.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => {
            debug!(route = %o.key, programmed = o.programmed, "route status written");
            true
        }
        Err(kube::Error::Api(s)) if s.is_not_found() => true,
        Err(e) => {
            warn!(route = %o.key, error = %e, "writing route status failed; will retry");
            false
        }
    }
}
