//! `limit [set TYPE RESOURCE=QUANTITY ... | unset TYPE RESOURCE ...] [--requests]`: the CPU
//! and memory of each process type (Flynn's `flynn limit`).
//!
//! Resources are part of a Release (`spec.processes.<type>.resources`), so a change makes
//! the next Release: the current one's artifact, processes and meta with the changed
//! resources, rolled out like any other. A `git push` and `flynn deploy` carry them over.
//! Limits are what a pod may use; requests what the scheduler reserves. Kubernetes makes a
//! limit without a request the request too, so `set` changes limits unless `--requests`.

use std::collections::BTreeMap;

use flynn_crds::{Release, ReleaseSpec, Resources, names, quantity};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;

use super::release::{CAUSE, release_and_roll_out};
use crate::cli::{LimitArgs, LimitCommand};
use crate::context::Ctx;
use crate::errors::{Error, Result};
use crate::output::{self, Format, Table};

const SET_EXAMPLE: &str = "flynn limit set web memory=512Mi cpu=500m";
const UNSET_EXAMPLE: &str = "flynn limit unset web memory";

pub async fn limit(ctx: &Ctx, args: &LimitArgs) -> Result<()> {
    let app = ctx.app().await?;
    let current = ctx.current_release(&app).await?;
    let (process, change, opts) = match &args.command {
        None => {
            return match ctx.output {
                Format::Table => output::print_out(&limits_table(&current).render(ctx.ui.color)),
                format => output::print_data(format, &resources_by_type(&current)),
            };
        }
        Some(LimitCommand::Set {
            process,
            pairs,
            change: opts,
        }) => (
            process,
            Change::Set(parse_quantities(
                pairs.iter().map(String::as_str),
                SET_EXAMPLE,
            )?),
            opts,
        ),
        Some(LimitCommand::Unset {
            process,
            resources,
            change: opts,
        }) => {
            for r in resources {
                check_resource_name(r, r, UNSET_EXAMPLE)?;
            }
            (process, Change::Unset(resources.clone()), opts)
        }
    };
    let side = if opts.requests {
        Side::Requests
    } else {
        Side::Limits
    };
    let Some(spec) = current.spec.processes.get(process) else {
        return Err(Error::unknown_process_type(process, &current));
    };
    let resources = changed(spec.resources.as_ref(), process, side, &change)?;
    if resources == spec.resources {
        return output::print_out(&format!(
            "No change: still release v{}\n",
            current.spec.version
        ));
    }
    let cause = format!("flynn {}", cause_text(process, side, &change));
    let name = app.name_any();
    let config = ctx.config(&app, Some(&current)).await?;
    let version = release_and_roll_out(
        ctx,
        &app,
        &config,
        |version| {
            let mut processes = current.spec.processes.clone();
            if let Some(p) = processes.get_mut(process) {
                p.resources = resources.clone();
            }
            let mut meta = current.spec.meta.clone();
            meta.insert(CAUSE.to_owned(), cause.clone());
            Release::new(
                &names::release_name(&name, version),
                ReleaseSpec {
                    app: name.clone(),
                    version,
                    artifact: current.spec.artifact.clone(),
                    config_secret: flynn_crds::config::snapshot_ref(
                        &names::release_name(&name, version),
                        &config,
                    ),
                    env: BTreeMap::new(),
                    processes,
                    meta,
                },
            )
        },
        opts.no_wait,
        opts.timeout,
    )
    .await?;
    output::print_out(&format!("Created release v{version}\n"))
}

/// Limits or requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Limits,
    Requests,
}

impl Side {
    fn singular(self) -> &'static str {
        match self {
            Side::Limits => "limit",
            Side::Requests => "request",
        }
    }
}

/// What `set` or `unset` asks.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Set(BTreeMap<String, Quantity>),
    Unset(Vec<String>),
}

fn cause_text(process: &str, side: Side, change: &Change) -> String {
    let flag = if side == Side::Requests {
        " --requests"
    } else {
        ""
    };
    match change {
        Change::Set(values) => format!("limit set {process}{flag} {}", quantities_text(values)),
        Change::Unset(keys) => format!("limit unset {process}{flag} {}", keys.join(" ")),
    }
}

/// Parses `RESOURCE=QUANTITY` arguments, checking both halves as the API server would;
/// `example` is what a bad argument's message shows.
pub fn parse_quantities<'a>(
    pairs: impl IntoIterator<Item = &'a str>,
    example: &str,
) -> Result<BTreeMap<String, Quantity>> {
    let mut values = BTreeMap::new();
    for pair in pairs {
        let (resource, value) = super::split_pair(pair, example)?;
        check_resource_name(pair, resource, example)?;
        if !quantity::parse(value).is_some_and(|v| v >= 0.0) {
            return Err(Error::bad_argument(
                pair,
                format!(
                    "{value:?} is not a quantity: cpu is in cores (0.5 or 500m), memory in bytes (512Mi, 1Gi)"
                ),
                example,
            ));
        }
        if values
            .insert(resource.to_owned(), Quantity(value.to_owned()))
            .is_some()
        {
            return Err(Error::bad_argument(
                pair,
                format!("{resource} is given twice"),
                example,
            ));
        }
    }
    Ok(values)
}

/// `cpu`, `memory`, `ephemeral-storage`, `hugepages-<size>`, or an extended resource
/// (`<domain>/<name>`, e.g. `nvidia.com/gpu`).
fn check_resource_name(arg: &str, name: &str, example: &str) -> Result<()> {
    let extended = name.split_once('/').is_some_and(|(domain, rest)| {
        !domain.is_empty() && domain.contains('.') && !rest.is_empty() && !rest.contains('/')
    });
    if matches!(name, "cpu" | "memory" | "ephemeral-storage")
        || name.starts_with("hugepages-")
        || extended
    {
        Ok(())
    } else {
        Err(Error::bad_argument(
            arg,
            format!(
                "{name:?} is not a resource: use cpu, memory, ephemeral-storage or an extended resource such as nvidia.com/gpu"
            ),
            example,
        ))
    }
}

/// The process type's resources after `change` (pure); `None` when nothing is left. A
/// request above its limit is refused here: Kubernetes would refuse every pod of the
/// release, and the rollout would only time out.
pub fn changed(
    current: Option<&Resources>,
    process: &str,
    side: Side,
    change: &Change,
) -> Result<Option<Resources>> {
    let mut r = current.cloned().unwrap_or_default();
    let map = match side {
        Side::Limits => &mut r.limits,
        Side::Requests => &mut r.requests,
    };
    match change {
        Change::Set(values) => map.extend(values.clone()),
        Change::Unset(keys) => {
            for key in keys {
                if map.remove(key).is_none() {
                    return Err(Error::bad_argument(
                        key,
                        format!("{process} has no {key} {}", side.singular()),
                        "flynn limit   # shows what is set",
                    ));
                }
            }
        }
    }
    for (resource, request) in &r.requests {
        let Some(limit) = r.limits.get(resource) else {
            continue;
        };
        if quantity::parse(&request.0) > quantity::parse(&limit.0) {
            return Err(Error::bad_argument(
                format!(
                    "{resource}={}",
                    if side == Side::Limits {
                        &limit.0
                    } else {
                        &request.0
                    }
                ),
                format!(
                    "the {resource} request of {process} ({}) would be above its limit ({}), and Kubernetes refuses such pods",
                    request.0, limit.0
                ),
                match side {
                    Side::Limits => format!(
                        "flynn limit set {process} --requests {resource}={}",
                        limit.0
                    ),
                    Side::Requests => format!("flynn limit set {process} {resource}={}", request.0),
                },
            ));
        }
    }
    Ok((!r.requests.is_empty() || !r.limits.is_empty()).then_some(r))
}

/// Every process type of the release with its resources (none: empty).
pub fn resources_by_type(release: &Release) -> BTreeMap<String, Resources> {
    release
        .spec
        .processes
        .iter()
        .map(|(t, p)| (t.clone(), p.resources.clone().unwrap_or_default()))
        .collect()
}

/// `cpu=500m memory=512Mi`.
pub fn quantities_text(m: &BTreeMap<String, Quantity>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={}", v.0))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `flynn limit` table (pure, for golden tests).
pub fn limits_table(release: &Release) -> Table {
    let mut table = Table::new(["TYPE", "REQUESTS", "LIMITS"]);
    let cell = |m: &BTreeMap<String, Quantity>| {
        if m.is_empty() {
            "-".to_owned()
        } else {
            quantities_text(m)
        }
    };
    for (process, resources) in resources_by_type(release) {
        table.row(vec![
            process,
            cell(&resources.requests),
            cell(&resources.limits),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.to_owned())
    }

    fn set(pairs: &[&str]) -> Change {
        Change::Set(parse_quantities(pairs.iter().copied(), SET_EXAMPLE).unwrap())
    }

    #[test]
    fn arguments_are_resources_and_quantities() {
        let v =
            parse_quantities(["memory=512Mi", "cpu=0.5", "nvidia.com/gpu=1"], SET_EXAMPLE).unwrap();
        assert_eq!(v["memory"], q("512Mi"));
        assert_eq!(v.len(), 3);
        for (bad, why) in [
            ("memory", "expected KEY=VALUE"),
            ("memory=512MB", "not a quantity"),
            ("memory=-1", "not a quantity"),
            ("ram=1Gi", "not a resource"),
            ("gpu=1", "not a resource"),
        ] {
            let err = parse_quantities([bad], SET_EXAMPLE)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let err = parse_quantities(["cpu=1", "cpu=2"], SET_EXAMPLE)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cpu is given twice"), "{err}");
    }

    #[test]
    fn set_and_unset_limits_and_requests() {
        let r = changed(None, "web", Side::Limits, &set(&["memory=512Mi"]))
            .unwrap()
            .unwrap();
        assert_eq!(r.limits["memory"], q("512Mi"));
        assert!(r.requests.is_empty());
        let r = changed(Some(&r), "web", Side::Requests, &set(&["memory=256Mi"]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.requests["memory"].clone(), r.limits["memory"].clone()),
            (q("256Mi"), q("512Mi"))
        );
        let r = changed(
            Some(&r),
            "web",
            Side::Limits,
            &Change::Unset(vec!["memory".into()]),
        )
        .unwrap()
        .unwrap();
        assert!(r.limits.is_empty());
        let none = changed(
            Some(&r),
            "web",
            Side::Requests,
            &Change::Unset(vec!["memory".into()]),
        )
        .unwrap();
        assert_eq!(none, None, "nothing left: no resources at all");
        let err = changed(
            None,
            "web",
            Side::Limits,
            &Change::Unset(vec!["cpu".into()]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("web has no cpu limit"), "{err}");
    }

    #[test]
    fn a_request_above_its_limit_is_refused_with_the_fix() {
        let r = changed(None, "web", Side::Requests, &set(&["memory=1Gi"]))
            .unwrap()
            .unwrap();
        let err = changed(Some(&r), "web", Side::Limits, &set(&["memory=512Mi"])).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("memory request of web (1Gi) would be above its limit (512Mi)"),
            "{text}"
        );
        let Error::BadArgument { example, .. } = err else {
            panic!("{text}")
        };
        assert_eq!(example, "flynn limit set web --requests memory=512Mi");
        // 1G is less than 1Gi: fine.
        assert!(changed(Some(&r), "web", Side::Limits, &set(&["memory=2G"])).is_ok());
    }

    #[test]
    fn the_cause_reads_like_the_command() {
        assert_eq!(
            cause_text("web", Side::Requests, &set(&["cpu=100m", "memory=1Gi"])),
            "limit set web --requests cpu=100m memory=1Gi"
        );
        assert_eq!(
            cause_text("web", Side::Limits, &Change::Unset(vec!["cpu".into()])),
            "limit unset web cpu"
        );
    }
}
