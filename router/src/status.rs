//! Route status: the router server-side applies the `Programmed` condition of every Route it
//! has a verdict on (and `CertificateReady` of those naming a TLS Secret), with its own field
//! manager (`flynn-router`), so it never touches the operator's `Accepted` / `Conflict`
//! conditions in the same list. A condition left out of an apply is removed (server-side
//! apply drops what this manager no longer sets), so `CertificateReady` goes with the
//! Secret's name.
//!
//! Writes happen only when the verdict differs from what the Route already says, so restarts
//! and several router replicas converge without write storms: the second replica finds the
//! condition already set.

use std::collections::HashMap;

use flynn_crds::{Route, conditions};
use futures::StreamExt;
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::table::{RouteKey, RouteOutcome, Table, TableHandle};
use crate::tcp_proxy::PortProblems;

/// The field manager of the router's status writes.
pub const FIELD_MANAGER: &str = "flynn-router";
/// Status writes in flight at once.
const CONCURRENCY: usize = 16;

type Verdict = (
    bool,
    &'static str,
    String,
    Option<i64>,
    Option<crate::table::CertVerdict>,
);

fn verdict(o: &RouteOutcome) -> Verdict {
    (
        o.programmed,
        o.reason,
        o.message.clone(),
        o.generation,
        o.certificate.clone(),
    )
}

fn same(
    c: Option<&Condition>,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> bool {
    c.is_some_and(|c| {
        c.status == if ok { "True" } else { "False" }
            && c.reason == reason
            && c.message == message
            && c.observed_generation == generation
    })
}

fn up_to_date(o: &RouteOutcome) -> bool {
    same(
        o.current.as_ref(),
        o.programmed,
        o.reason,
        &o.message,
        o.generation,
    ) && match &o.certificate {
        Some(cert) => same(
            o.current_certificate.as_ref(),
            cert.ready,
            cert.reason,
            &cert.message,
            o.generation,
        ),
        None => o.current_certificate.is_none(),
    }
}

/// The table's outcomes, with TCP Routes whose port cannot be opened not programmed.
fn outcomes(t: &Table, problems: &PortProblems) -> Vec<RouteOutcome> {
    let unavailable: HashMap<&RouteKey, &String> = t
        .tcp
        .iter()
        .filter_map(|(port, entry)| Some((&entry.key, problems.get(port)?)))
        .collect();
    t.outcomes
        .iter()
        .map(|o| match unavailable.get(&o.key) {
            Some(why) if o.programmed => RouteOutcome {
                programmed: false,
                reason: conditions::reasons::PORT_UNAVAILABLE,
                message: format!("{why}; retrying every few seconds"),
                ..o.clone()
            },
            _ => o.clone(),
        })
        .collect()
}

/// Writes `Programmed` conditions after every published table, and when a TCP Route's
/// port opens or fails to, until `generations` closes.
pub async fn run(
    client: Client,
    table: TableHandle,
    mut generations: watch::Receiver<u64>,
    mut port_problems: watch::Receiver<PortProblems>,
) {
    // What we wrote last per Route, so a table published before our own write comes back
    // through the watch does not write it again.
    let mut written: HashMap<RouteKey, Verdict> = HashMap::new();
    let mut ports_open = true;
    loop {
        tokio::select! {
            changed = generations.changed() => if changed.is_err() { return },
            changed = port_problems.changed(), if ports_open => {
                // The TCP proxy is gone (draining): only tables matter now.
                if changed.is_err() {
                    ports_open = false;
                    continue;
                }
            }
        }
        let t = table.load_full();
        let all = outcomes(&t, &port_problems.borrow_and_update());
        let todo: Vec<RouteOutcome> = all
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

/// When a condition last changed status: kept from `current` unless the status flips.
fn since(current: Option<&Condition>, ok: bool) -> Time {
    match current {
        Some(c) if c.status == if ok { "True" } else { "False" } => c.last_transition_time.clone(),
        _ => Time(Timestamp::now()),
    }
}

async fn write(client: Client, o: &RouteOutcome) -> bool {
    let mut conds = vec![conditions::new(
        conditions::types::PROGRAMMED,
        o.programmed,
        o.reason,
        o.message.clone(),
        o.generation,
        since(o.current.as_ref(), o.programmed),
    )];
    if let Some(cert) = &o.certificate {
        conds.push(conditions::new(
            conditions::types::CERTIFICATE_READY,
            cert.ready,
            cert.reason,
            cert.message.clone(),
            o.generation,
            since(o.current_certificate.as_ref(), cert.ready),
        ));
    }
    let patch = serde_json::json!({
        "apiVersion": "flynn.io/v1alpha1",
        "kind": "Route",
        "status": { "conditions": conds },
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
