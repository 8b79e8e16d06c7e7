//! `route list | add http DOMAIN[/PATH] | add tcp [--port N] | update NAME ... | remove NAME`.
//!
//! A new Route is checked by the operator, which marks it `Accepted`, or not with the reason
//! (flynn_crds::ownership: a host belongs to the namespace that claimed it first, a domain +
//! path or TCP port to the oldest Route of that namespace, TCP ports to the platform's
//! range). `add` waits for that verdict: a refused Route would never serve, so it is removed
//! again and the command fails with the reason (naming a Route of this namespace, or only
//! the namespace that owns the host or port).

use std::time::Duration;

use flynn_crds::conditions::{self, types};
use flynn_crds::validation::{DOMAIN_PATTERN, validate_process_type};
use flynn_crds::{HttpRoute, Route, RouteSpec, RouteType, names};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde::Serialize;

use crate::cli::{RouteAdd, RouteArgs, RouteCommand, RouteUpdateArgs};
use crate::context::Ctx;
use crate::errors::{Error, Result};
use crate::output::{self, Format, Table, note};

/// How long `add` waits for the operator's verdict before leaving it pending.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn route(ctx: &Ctx, args: &RouteArgs) -> Result<()> {
    let app = ctx.app().await?.name_any();
    match &args.command {
        None | Some(RouteCommand::List) => list(ctx, &app).await,
        Some(RouteCommand::Add(add)) => match add {
            RouteAdd::Http {
                target,
                process,
                tls_secret,
                sticky,
                https_redirect,
                no_drain_backends,
            } => {
                // Domain and path come from TARGET.
                let http = HttpRoute {
                    domain: String::new(),
                    path: String::new(),
                    tls_secret_name: tls_secret.clone(),
                    sticky: *sticky,
                    drain_backends: !*no_drain_backends,
                    https_redirect: *https_redirect,
                };
                add_http(ctx, &app, target, process, http).await
            }
            RouteAdd::Tcp { port, process } => add_tcp(ctx, &app, *port, process).await,
        },
        Some(RouteCommand::Update(args)) => update(ctx, &app, args).await,
        Some(RouteCommand::Remove { name }) => remove(ctx, &app, name).await,
    }
}

/// Splits `example.com/api` into domain and path (`/` when none), checking the domain.
pub fn parse_http_target(target: &str) -> Result<(String, String)> {
    const EXAMPLE: &str = "flynn route add http www.example.com/api";
    let (domain, path) = match target.find('/') {
        Some(i) => (&target[..i], target[i..].to_owned()),
        None => (target, "/".to_owned()),
    };
    if !is_domain(domain) {
        return Err(Error::bad_argument(
            target,
            format!("{domain:?} is not a lower-case DNS name (pattern {DOMAIN_PATTERN})"),
            EXAMPLE,
        ));
    }
    if path.contains(char::is_whitespace) {
        return Err(Error::bad_argument(
            target,
            "the path may not contain spaces",
            EXAMPLE,
        ));
    }
    Ok((domain.to_owned(), path))
}

/// `DOMAIN_PATTERN` without a regex engine: dot-separated RFC 1123 labels, optionally after `*.`.
fn is_domain(domain: &str) -> bool {
    let rest = domain.strip_prefix("*.").unwrap_or(domain);
    !rest.is_empty()
        && domain.len() <= 253
        && rest
            .split('.')
            .all(|label| flynn_crds::validation::validate_dns_label(label).is_ok())
}

/// A Route name from the app and what it routes: `shop-www.example.com-api`, a valid
/// object name (an RFC 1123 subdomain).
pub fn route_name(app: &str, what: &str) -> String {
    let mut name = String::with_capacity(app.len() + what.len() + 1);
    name.push_str(app);
    name.push('-');
    for c in what.replace('*', "wildcard").chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' {
            c
        } else {
            '-'
        };
        // No empty labels or labels that start/end with '-'.
        let last = name.chars().last();
        match (last, c) {
            (Some('-' | '.'), '-' | '.') => {}
            _ => name.push(c),
        }
    }
    name.truncate(253);
    name.trim_end_matches(['-', '.']).to_owned()
}

/// Whether two Routes claim the same traffic: HTTP domain + path, or TCP port.
fn same_key(a: &RouteSpec, b: &RouteSpec) -> bool {
    match (&a.http, &b.http, a.tcp, b.tcp) {
        (Some(x), Some(y), _, _) => x.domain == y.domain && x.path == y.path,
        (_, _, Some(x), Some(y)) => x.port == y.port,
        _ => false,
    }
}

/// What a Route routes, for people: `www.example.com/api`, `:5432`.
fn describe(spec: &RouteSpec) -> String {
    match (&spec.http, &spec.tcp) {
        (Some(http), _) if http.path == "/" => http.domain.clone(),
        (Some(http), _) => format!("{}{}", http.domain, http.path),
        (None, Some(tcp)) => format!(":{}", tcp.port),
        (None, None) => "-".into(),
    }
}

/// An HTTP Route's settings that differ from the defaults, for people:
/// `tls=www-tls,sticky,https-redirect,no-drain` (one word, so tables split on
/// whitespace); `-` when none.
fn options(spec: &RouteSpec) -> String {
    let Some(http) = &spec.http else {
        return "-".into();
    };
    let mut out = Vec::new();
    if let Some(secret) = &http.tls_secret_name {
        out.push(format!("tls={secret}"));
    }
    if http.sticky {
        out.push("sticky".into());
    }
    if http.https_redirect {
        out.push("https-redirect".into());
    }
    if !http.drain_backends {
        out.push("no-drain".into());
    }
    if out.is_empty() {
        "-".into()
    } else {
        out.join(",")
    }
}

/// The operator's verdict on a Route.
fn verdict(route: &Route) -> String {
    let status = route.status.clone().unwrap_or_default();
    if conditions::is_true(&status.conditions, types::CONFLICT) {
        return match status.conflicts_with {
            Some(owner) => format!("conflict ({owner})"),
            None => "conflict".into(),
        };
    }
    if conditions::is_true(&status.conditions, types::ACCEPTED) {
        return "accepted".into();
    }
    "pending".into()
}

/// One line of `flynn route list`.
#[derive(Debug, Serialize)]
pub struct RouteRow {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub route: String,
    pub process: String,
    pub options: String,
    pub status: String,
    pub url: Option<String>,
}

fn route_row(route: &Route) -> RouteRow {
    RouteRow {
        name: route.name_any(),
        type_: match route.spec.type_ {
            RouteType::Http => "http".into(),
            RouteType::Tcp => "tcp".into(),
        },
        route: describe(&route.spec),
        process: route.spec.process.clone(),
        options: options(&route.spec),
        status: verdict(route),
        url: route.status.as_ref().and_then(|s| s.url.clone()),
    }
}

/// The `flynn route list` table (pure, for golden tests).
pub fn routes_table(routes: &[Route], now: Timestamp) -> Table {
    let mut table = Table::new([
        "NAME", "TYPE", "ROUTE", "PROCESS", "OPTIONS", "STATUS", "URL", "AGE",
    ]);
    for route in routes {
        let row = route_row(route);
        table.row(vec![
            row.name,
            row.type_,
            row.route,
            row.process,
            row.options,
            row.status,
            row.url.unwrap_or_else(|| "-".into()),
            output::age(output::created(&route.metadata), now),
        ]);
    }
    table
}

async fn app_routes(ctx: &Ctx, app: &str) -> Result<Vec<Route>> {
    let mut routes = ctx
        .api::<Route>()
        .list(&ListParams::default().fields(&format!("spec.app={app}")))
        .await
        .map_err(Error::kube(format!("listing the routes of app {app}")))?
        .items;
    routes.sort_by_key(|r| r.name_any());
    Ok(routes)
}

async fn list(ctx: &Ctx, app: &str) -> Result<()> {
    let routes = app_routes(ctx, app).await?;
    match ctx.output {
        Format::Table if routes.is_empty() => {
            note(
                ctx.ui,
                "no routes: add one with `flynn route add http DOMAIN`",
            );
            Ok(())
        }
        Format::Table => {
            output::print_out(&routes_table(&routes, Timestamp::now()).render(ctx.ui.color))
        }
        format => output::print_data(format, &routes.iter().map(route_row).collect::<Vec<_>>()),
    }
}

fn check_process(process: &str) -> Result<()> {
    validate_process_type(process).map_err(|e| {
        Error::bad_argument(
            process,
            e.to_string(),
            "flynn route add http example.com -t web",
        )
    })
}

async fn add_http(
    ctx: &Ctx,
    app: &str,
    target: &str,
    process: &str,
    options: HttpRoute,
) -> Result<()> {
    check_process(process)?;
    let (domain, path) = parse_http_target(target)?;
    let mut spec = RouteSpec::http(app, &domain);
    spec.process = process.to_owned();
    spec.http = Some(HttpRoute {
        domain: domain.clone(),
        path: path.clone(),
        ..options
    });
    let name = route_name(
        app,
        &format!("{domain}{}", if path == "/" { "" } else { &path }),
    );
    let what = if path == "/" {
        format!("domain {domain}")
    } else {
        format!("domain {domain} path {path}")
    };
    let route = create_and_judge(ctx, &name, spec, &what).await?;
    print_added(&route)
}

async fn add_tcp(ctx: &Ctx, app: &str, port: Option<u16>, process: &str) -> Result<()> {
    check_process(process)?;
    if let Some(port) = port {
        if port == 0 {
            return Err(Error::bad_argument(
                "0",
                "the port must be 1-65535",
                "flynn route add tcp --port 5432",
            ));
        }
        let spec = RouteSpec::tcp(app, process, i32::from(port));
        let route = create_and_judge(
            ctx,
            &route_name(app, &format!("tcp-{port}")),
            spec,
            &format!("TCP port {port}"),
        )
        .await?;
        return print_added(&route);
    }
    // No port given: try free-looking ones; the operator's conflict check is the arbiter,
    // since Routes in namespaces we cannot list may hold a port.
    let used: Vec<i32> = ctx
        .api::<Route>()
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("listing routes"))?
        .items
        .iter()
        .filter_map(|r| r.spec.tcp.map(|t| t.port))
        .collect();
    // From the platform's range: a port outside it would be refused.
    let range = ctx.platform().await.tcp_port_range();
    let span = u32::from(range.last - range.first) + 1;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut last = None;
    for attempt in 0..5u32 {
        let offset = seed.wrapping_add(attempt.wrapping_mul(7919)) % span;
        let port = i32::from(range.first) + offset as i32;
        if used.contains(&port) {
            continue;
        }
        let spec = RouteSpec::tcp(app, process, port);
        match create_and_judge(
            ctx,
            &route_name(app, &format!("tcp-{port}")),
            spec,
            &format!("TCP port {port}"),
        )
        .await
        {
            Ok(route) => return print_added(&route),
            Err(e @ Error::RouteConflict { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        Error::bad_argument(
            "--port",
            "no free port found",
            "flynn route add tcp --port 5432",
        )
    }))
}

/// Creates the Route and waits for the operator's verdict; a conflicting Route is removed.
async fn create_and_judge(ctx: &Ctx, name: &str, spec: RouteSpec, what: &str) -> Result<Route> {
    let api = ctx.api::<Route>();
    // A clash in this namespace is refused before anything is created. The operator's verdict
    // below covers other namespaces, but it orders Routes by creation time in whole seconds,
    // so a new Route could otherwise win against one made in the same second.
    let existing = api
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("listing routes"))?;
    if let Some(owner) = existing
        .items
        .iter()
        .find(|r| r.name_any() != name && same_key(&r.spec, &spec))
    {
        return Err(Error::RouteConflict {
            what: what.to_owned(),
            owner: format!("{}/{}", ctx.namespace, owner.name_any()),
        });
    }
    let route = Route::new(name, spec);
    match api.create(&PostParams::default(), &route).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            return Err(Error::RouteExists {
                route: name.to_owned(),
            });
        }
        Err(e) => return Err(Error::kube(format!("creating route {name}"))(e)),
    }
    let deadline = tokio::time::Instant::now() + VERDICT_TIMEOUT;
    loop {
        let route = api
            .get(name)
            .await
            .map_err(Error::kube(format!("getting route {name}")))?;
        let status = route.status.clone().unwrap_or_default();
        let refused = conditions::find(&status.conditions, types::ACCEPTED)
            .filter(|c| c.status == "False")
            .map(|c| c.message.clone());
        if conditions::is_true(&status.conditions, types::CONFLICT) || refused.is_some() {
            let _ = api.delete(name, &DeleteParams::default()).await;
            // A Route of this namespace is named; another namespace's never is (the
            // operator says only which namespace owns the host or port).
            return Err(match (status.conflicts_with, refused) {
                (Some(owner), _) => Error::RouteConflict {
                    what: what.to_owned(),
                    owner,
                },
                (None, Some(why)) => Error::RouteRefused {
                    what: what.to_owned(),
                    why,
                },
                (None, None) => Error::RouteConflict {
                    what: what.to_owned(),
                    owner: "another route".into(),
                },
            });
        }
        if conditions::is_true(&status.conditions, types::ACCEPTED) {
            return Ok(route);
        }
        if tokio::time::Instant::now() >= deadline {
            note(
                ctx.ui,
                &format!(
                    "route {name} is not accepted yet: is the operator running? (`flynn route list` shows its status)"
                ),
            );
            return Ok(route);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn print_added(route: &Route) -> Result<()> {
    let target = describe(&route.spec);
    let url = route
        .status
        .as_ref()
        .and_then(|s| s.url.clone())
        .unwrap_or(target);
    output::print_out(&format!(
        "Added route {}: {url} → {}\n",
        route.name_any(),
        route.spec.process
    ))
}

/// The app's Route `name`, or [`Error::RouteNotFound`].
async fn get_route(ctx: &Ctx, app: &str, name: &str) -> Result<Route> {
    ctx.api::<Route>()
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("getting route {name}")))?
        .filter(|r| r.spec.app == app)
        .ok_or_else(|| Error::RouteNotFound {
            route: name.to_owned(),
            app: app.to_owned(),
        })
}

/// The merge patch `flynn route update` sends (pure): only the fields asked for. A TCP
/// Route takes only `--type`; asking nothing is a usage error.
pub fn update_patch(route: &Route, args: &RouteUpdateArgs) -> Result<serde_json::Value> {
    const EXAMPLE: &str = "flynn route update NAME --tls-secret www-tls --https-redirect";
    let flag = |on: bool, off: bool| (on || off).then_some(on);
    let mut http = serde_json::Map::new();
    if let Some(secret) = &args.tls_secret {
        http.insert("tlsSecretName".into(), secret.clone().into());
    } else if args.no_tls_secret {
        http.insert("tlsSecretName".into(), serde_json::Value::Null);
    }
    for (key, value) in [
        ("sticky", flag(args.sticky, args.no_sticky)),
        (
            "httpsRedirect",
            flag(args.https_redirect, args.no_https_redirect),
        ),
        (
            "drainBackends",
            flag(args.drain_backends, args.no_drain_backends),
        ),
    ] {
        if let Some(v) = value {
            http.insert(key.into(), v.into());
        }
    }
    let mut spec = serde_json::Map::new();
    if let Some(process) = &args.process {
        check_process(process)?;
        spec.insert("process".into(), process.clone().into());
    }
    if !http.is_empty() {
        if route.spec.http.is_none() {
            return Err(Error::bad_argument(
                route.name_any(),
                "a TCP route has no certificate, stickiness, redirect or draining: only --type applies",
                "flynn route update NAME -t TYPE",
            ));
        }
        spec.insert("http".into(), http.into());
    }
    if spec.is_empty() {
        return Err(Error::bad_argument(
            route.name_any(),
            "nothing to change: give --type, --tls-secret/--no-tls-secret, --sticky/--no-sticky, --https-redirect/--no-https-redirect or --drain-backends/--no-drain-backends",
            EXAMPLE,
        ));
    }
    Ok(serde_json::json!({ "spec": spec }))
}

async fn update(ctx: &Ctx, app: &str, args: &RouteUpdateArgs) -> Result<()> {
    let name = &args.name;
    let route = get_route(ctx, app, name).await?;
    let patch = update_patch(&route, args)?;
    let updated = ctx
        .api::<Route>()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube(format!("updating route {name}")))?;
    output::print_out(&format!(
        "Updated route {name}: {} → {} ({})\n",
        describe(&updated.spec),
        updated.spec.process,
        options(&updated.spec)
    ))
}

async fn remove(ctx: &Ctx, app: &str, name: &str) -> Result<()> {
    let api = ctx.api::<Route>();
    get_route(ctx, app, name).await?;
    api.delete(name, &DeleteParams::default())
        .await
        .map_err(Error::kube(format!("removing route {name}")))?;
    output::print_out(&format!("Removed route {name}\n"))?;
    if name == names::default_route_name(app) {
        note(
            ctx.ui,
            "the operator recreates the default route unless the app sets `defaultRoute: false`",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_targets_split_into_domain_and_path() {
        assert_eq!(
            parse_http_target("example.com").unwrap(),
            ("example.com".into(), "/".into())
        );
        assert_eq!(
            parse_http_target("example.com/api/v1").unwrap(),
            ("example.com".into(), "/api/v1".into())
        );
        assert_eq!(
            parse_http_target("*.example.com").unwrap().0,
            "*.example.com"
        );
        for bad in ["Example.com", "exa_mple.com", "", "/api", "a..b"] {
            let err = parse_http_target(bad).unwrap_err();
            assert_eq!(err.exit_code(), crate::errors::exit::USAGE, "{bad}");
        }
    }

    fn update_args(change: impl FnOnce(&mut RouteUpdateArgs)) -> RouteUpdateArgs {
        let mut args = RouteUpdateArgs {
            name: "r".into(),
            process: None,
            tls_secret: None,
            no_tls_secret: false,
            sticky: false,
            no_sticky: false,
            https_redirect: false,
            no_https_redirect: false,
            drain_backends: false,
            no_drain_backends: false,
        };
        change(&mut args);
        args
    }

    #[test]
    fn an_update_patches_only_what_it_names() {
        let http = Route::new("r", RouteSpec::http("shop", "www.example.com"));
        let tcp = Route::new("r", RouteSpec::tcp("shop", "db", 5432));
        let patch = update_patch(
            &http,
            &update_args(|a| {
                a.tls_secret = Some("www-tls".into());
                a.no_sticky = true;
                a.https_redirect = true;
            }),
        )
        .unwrap();
        assert_eq!(
            patch,
            serde_json::json!({"spec": {"http": {"tlsSecretName": "www-tls", "sticky": false, "httpsRedirect": true}}})
        );
        let patch = update_patch(&http, &update_args(|a| a.no_tls_secret = true)).unwrap();
        assert_eq!(
            patch,
            serde_json::json!({"spec": {"http": {"tlsSecretName": null}}})
        );
        let patch = update_patch(&tcp, &update_args(|a| a.process = Some("db2".into()))).unwrap();
        assert_eq!(patch, serde_json::json!({"spec": {"process": "db2"}}));

        let err = update_patch(&tcp, &update_args(|a| a.sticky = true)).unwrap_err();
        assert!(err.to_string().contains("only --type applies"), "{err}");
        let err = update_patch(&http, &update_args(|_| {})).unwrap_err();
        assert!(err.to_string().contains("nothing to change"), "{err}");
    }

    #[test]
    fn options_name_what_differs_from_the_defaults() {
        let mut spec = RouteSpec::http("shop", "www.example.com");
        assert_eq!(options(&spec), "-");
        let http = spec.http.as_mut().unwrap();
        http.tls_secret_name = Some("www-tls".into());
        http.sticky = true;
        http.https_redirect = true;
        http.drain_backends = false;
        assert_eq!(options(&spec), "tls=www-tls,sticky,https-redirect,no-drain");
    }

    #[test]
    fn route_names_are_valid_object_names() {
        assert_eq!(
            route_name("shop", "www.example.com"),
            "shop-www.example.com"
        );
        assert_eq!(
            route_name("shop", "example.com/api/v1/"),
            "shop-example.com-api-v1"
        );
        assert_eq!(
            route_name("shop", "*.example.com"),
            "shop-wildcard.example.com"
        );
        assert_eq!(route_name("shop", "tcp-5432"), "shop-tcp-5432");
    }
}
