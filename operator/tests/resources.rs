//! Resources against the local cluster and a real Postgres (a throwaway server of the
//! host's postgresql-15, started by each test on a free port in a temp dir, as the
//! platform's service would be): provisioning, isolation between Resources, convergence
//! after an interrupted reconcile and an outage of the service, env conflicts, the App
//! appearing late, the Releases with and without the URL, Delete and Retain.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{NONROOT_IMAGE, T, eventually, get};
use flynn_crds::conditions::{self, types};
use flynn_crds::resource::{Resource, SECRET_TYPE, secret_keys, secret_name};
use flynn_crds::{App, Release, config};
use flynn_operator::resource::postgres::{self, PostgresSettings};
use flynn_operator::resource::provider::{ResourceProvider, store_name};
use flynn_operator::resource::redis::{RESOURCE_LABEL, RedisSettings};
use flynn_operator::resource::secret;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

/// The operator's Secret access through the resources grant: only where an App is.
#[tokio::test]
async fn the_operator_may_use_secrets_only_in_namespaces_holding_an_app() {
    use flynn_operator::grants::{Grant, Grants};
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
    let ns = common::namespace("res-grant").await;
    let client = ns.client().clone();
    let role_name = format!("{}-resources", ns.name());
    let role = ClusterRole {
        metadata: kube::api::ObjectMeta {
            name: Some(role_name.clone()),
            labels: Some([("flynn.io/test".to_owned(), "true".to_owned())].into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".to_owned()]),
            verbs: ["get", "create", "update", "patch", "delete"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let roles = Api::<ClusterRole>::all(client.clone());
    roles.create(&PostParams::default(), &role).await.unwrap();
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "operator"}})).unwrap();
    ns.api::<ServiceAccount>()
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let grant: Grant = format!("{role_name}={}/operator", ns.name())
        .parse()
        .unwrap();
    let _op = common::start(&ns, |s| {
        s.grants = Grants {
            resources: Some(grant),
            ..Grants::default()
        }
    });
    let user = format!("system:serviceaccount:{}:operator", ns.name());
    let can = |verb: &'static str, ns: String| {
        let (client, user) = (client.clone(), user.clone());
        async move { flynn_e2e::can_i(&client, &user, verb, "", "secrets", Some(&ns)).await }
    };
    // The attack: no App here yet, so no Secret here; and never in kube-system, nor a list.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!can("get", ns.name().to_owned()).await);
    app_without_release(&ns, "shop").await;
    eventually(
        "the grant",
        T,
        || can("get", ns.name().to_owned()),
        |ok| *ok,
    )
    .await;
    assert!(can("create", ns.name().to_owned()).await);
    assert!(!can("list", ns.name().to_owned()).await, "by name only");
    assert!(!can("get", "kube-system".to_owned()).await);
    ns.api::<App>()
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the grant withdrawn",
        T,
        || can("get", ns.name().to_owned()),
        |ok| !*ok,
    )
    .await;
    let _ = roles.delete(&role_name, &DeleteParams::default()).await;
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A throwaway Postgres on 127.0.0.1; stopped and removed on drop.
struct Pg {
    dir: PathBuf,
    port: u16,
    password: String,
    child: Option<Child>,
}

fn as_postgres(bin: &str) -> Command {
    let path = Path::new(PG_BIN).join(bin);
    assert!(
        path.exists(),
        "{} is missing: these tests run a throwaway Postgres 15 (apt-get install postgresql-15)",
        path.display()
    );
    // Postgres refuses to run as root: the tests run it as the package's `postgres` user.
    let root =
        std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
    if root {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--clear-groups",
            "--",
        ])
        .arg(path);
        c
    } else {
        Command::new(path)
    }
}

impl Pg {
    fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("flynn-pg-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let password = "admin-secret".to_owned();
        std::fs::write(dir.join("pw"), &password).unwrap();
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status();
        let out = as_postgres("initdb")
            .args(["-U", "postgres", "--auth=scram-sha-256", "-E", "UTF8"])
            .arg(format!("--pwfile={}", dir.join("pw").display()))
            .arg("-D")
            .arg(dir.join("data"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut pg = Self {
            dir,
            port,
            password,
            child: None,
        };
        pg.up();
        pg
    }

    /// Starts the server (again) and waits until it answers.
    fn up(&mut self) {
        let child = as_postgres("postgres")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ok = as_postgres("pg_isready")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "postgres did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (fast shutdown: connections are ended), as an outage.
    fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    fn settings(&self) -> PostgresSettings {
        PostgresSettings {
            host: Some("127.0.0.1".into()),
            port: self.port,
            admin_user: "postgres".into(),
            admin_password: self.password.clone(),
        }
    }

    async fn login(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .password(password)
            .dbname(db)
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(conn);
        Ok(client)
    }

    async fn admin(&self) -> tokio_postgres::Client {
        self.login("postgres", &self.password, "postgres")
            .await
            .unwrap()
    }

    async fn count(&self, sql: &str, name: &str) -> i64 {
        self.admin()
            .await
            .query_one(sql, &[&name])
            .await
            .unwrap()
            .get(0)
    }

    async fn database_exists(&self, name: &str) -> bool {
        self.count("SELECT count(*) FROM pg_database WHERE datname = $1", name)
            .await
            == 1
    }

    async fn role_exists(&self, name: &str) -> bool {
        self.count("SELECT count(*) FROM pg_roles WHERE rolname = $1", name)
            .await
            == 1
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.down();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        .into()
}

fn resource(name: &str, app: &str, provider: &str, extra: serde_json::Value) -> Resource {
    let mut spec = json!({"app": app, "provider": provider});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "flynn.io/v1alpha1", "kind": "Resource",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

/// `Ready`'s (status, reason, message).
fn ready(r: &Option<Resource>) -> Option<(String, String, String)> {
    let c = conditions::find(&r.as_ref()?.status.as_ref()?.conditions, types::READY)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn wait_reason(api: &Api<Resource>, name: &str, reason: &str) -> Resource {
    eventually(
        &format!("Resource {name} Ready reason {reason}"),
        T,
        || get(api, name),
        |r| ready(r).is_some_and(|(_, why, _)| why == reason),
    )
    .await
    .unwrap()
}

async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(
        &format!("{name} gone"),
        T,
        || get(api, name),
        Option::is_none,
    )
    .await;
}

/// The App's config now: its current Release's snapshot (or its initial Secret).
async fn app_config(client: &kube::Client, apps: &Api<App>, app: &str) -> BTreeMap<String, String> {
    let app = apps.get(app).await.unwrap();
    let current = match &app.spec.release {
        Some(r) => Some(
            Api::<Release>::namespaced(client.clone(), &app.namespace().unwrap())
                .get(r)
                .await
                .unwrap(),
        ),
        None => None,
    };
    config::load(client, &app, current.as_ref()).await.unwrap()
}

fn text(s: &Secret, key: &str) -> String {
    String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

/// An App serving nothing yet (no processes), at its first image Release.
async fn app_with_release(ns: &flynn_e2e::TestNamespace, name: &str) {
    let mut release = common::release(name, 1, NONROOT_IMAGE, json!({}));
    let vars = BTreeMap::from([("PLAIN".to_owned(), "kept".to_owned())]);
    release.spec.config_secret = config::snapshot_ref(&release.name_any(), &vars);
    let release = ns
        .api::<Release>()
        .create(&PostParams::default(), &release)
        .await
        .unwrap();
    config::save(ns.client(), &release, &vars, &PostParams::default())
        .await
        .unwrap();
    ns.api::<App>()
        .create(
            &PostParams::default(),
            &common::app(name, &format!("{name}-v1"), json!({}), json!({})),
        )
        .await
        .unwrap();
}

async fn app_without_release(ns: &flynn_e2e::TestNamespace, name: &str) {
    let app: App = serde_json::from_value(json!({
        "apiVersion": "flynn.io/v1alpha1", "kind": "App",
        "metadata": {"name": name}, "spec": {},
    }))
    .unwrap();
    ns.api::<App>()
        .create(&PostParams::default(), &app)
        .await
        .unwrap();
}

fn fast(pg: &Pg) -> impl FnOnce(&mut flynn_operator::Settings) {
    let settings = pg.settings();
    move |s| {
        s.postgres = settings;
        s.error_backoff = Duration::from_millis(200);
    }
}

#[tokio::test]
async fn a_postgres_resource_gets_a_database_only_its_role_enters_and_its_url_in_a_release() {
    let pg = Pg::start();
    let (ns, _op) = common::setup_with("res-provision", fast(&pg)).await;
    let client = ns.client().clone();
    let (resources, apps, secrets) = (ns.api::<Resource>(), ns.api::<App>(), ns.api::<Secret>());
    app_with_release(&ns, "shop").await;
    let pp = PostParams::default();
    let added = std::time::Instant::now();
    resources
        .create(&pp, &resource("db", "shop", "postgres", json!({})))
        .await
        .unwrap();
    resources
        .create(
            &pp,
            &resource(
                "db2",
                "shop",
                "postgres",
                json!({"env": "DATABASE_2_URL", "deletionPolicy": "Delete"}),
            ),
        )
        .await
        .unwrap();
    let db = wait_reason(&resources, "db", "Provisioned").await;
    let db2 = wait_reason(&resources, "db2", "Provisioned").await;
    eprintln!(
        "two postgres Resources added to provisioned and released in {:?}",
        added.elapsed()
    );
    assert!(
        db.finalizers()
            .contains(&flynn_crds::resource::FINALIZER.to_owned())
    );
    let status = db.status.clone().unwrap();
    assert_eq!(status.secret.as_deref(), Some("db-credentials"));
    assert_eq!(status.env.as_deref(), Some("DATABASE_URL"));
    assert_eq!(status.plan.as_deref(), Some("hobby"));
    assert_eq!(status.provider_ids["database"], store_name(&db));

    // The Secret: its type, every key, owned by its Resource.
    let s = secrets.get(&secret_name("db")).await.unwrap();
    assert_eq!(s.type_.as_deref(), Some(SECRET_TYPE));
    let owner = &s.owner_references()[0];
    assert_eq!(
        (owner.uid.as_str(), owner.controller),
        (db.uid().unwrap().as_str(), Some(true))
    );
    let (user, password, database) = (
        text(&s, secret_keys::USERNAME),
        text(&s, secret_keys::PASSWORD),
        text(&s, secret_keys::DATABASE),
    );
    assert_eq!(database, store_name(&db));
    assert_eq!(text(&s, secret_keys::PORT), pg.port.to_string());
    let url = text(&s, secret_keys::URL);
    assert_eq!(
        url,
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{database}",
            pg.port
        )
    );
    let s2 = secrets.get(&secret_name("db2")).await.unwrap();
    let (user2, password2, database2) = (
        text(&s2, secret_keys::USERNAME),
        text(&s2, secret_keys::PASSWORD),
        text(&s2, secret_keys::DATABASE),
    );

    // Its role works in its own database...
    let own = pg.login(&user, &password, &database).await.unwrap();
    own.batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('row')")
        .await
        .unwrap();
    // ...and is refused by the other Resource's (the attack), which its own role enters
    // (the twin).
    let refused = pg.login(&user, &password, &database2).await.unwrap_err();
    assert_eq!(
        refused.as_db_error().map(|d| d.code().code()),
        Some("42501"),
        "insufficient privilege expected: {refused}"
    );
    pg.login(&user2, &password2, &database2).await.unwrap();
    // A wrong password is refused too.
    assert!(pg.login(&user, "wrong", &database).await.is_err());
    let limit: i32 = pg
        .admin()
        .await
        .query_one(
            "SELECT rolconnlimit FROM pg_roles WHERE rolname = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(limit, 20, "the hobby plan's connection limit");

    // The App's current Release has both URLs in its snapshot, and neither the App, the
    // Release nor a Deployment has the password in plain text.
    let config = eventually(
        "both URLs in the App's config",
        T,
        || app_config(&client, &apps, "shop"),
        |c| c.contains_key("DATABASE_URL") && c.contains_key("DATABASE_2_URL"),
    )
    .await;
    assert_eq!(config["DATABASE_URL"], url);
    assert_eq!(config["DATABASE_2_URL"], text(&s2, secret_keys::URL));
    assert_eq!(
        config["PLAIN"], "kept",
        "the Release's other config carries over"
    );
    let app = apps.get("shop").await.unwrap();
    let current = app.spec.release.clone().unwrap();
    assert_ne!(current, "shop-v1");
    let release = ns.api::<Release>().get(&current).await.unwrap();
    assert!(release.spec.env.is_empty());
    assert!(release.spec.config_secret.is_some());
    assert_eq!(release.spec.artifact.image.as_deref(), Some(NONROOT_IMAGE));
    for (what, text) in [
        ("App", serde_json::to_string(&app).unwrap()),
        ("Release", serde_json::to_string(&release).unwrap()),
        (
            "Deployments",
            serde_json::to_string(
                &ns.api::<k8s_openapi::api::apps::v1::Deployment>()
                    .list(&Default::default())
                    .await
                    .unwrap(),
            )
            .unwrap(),
        ),
    ] {
        assert!(
            !text.contains(&password),
            "the password is in plain text in the {what}"
        );
    }
    let released = [db.clone(), db2.clone()]
        .iter()
        .filter_map(|r| r.status.clone()?.release)
        .count();
    assert!(released >= 1, "status.release names the Release made");

    // A rollback to the Release from before the Resources: the URLs come back in a new
    // Release (as after a push that read the config before they were added).
    common::merge(&apps, "shop", json!({"spec": {"release": "shop-v1"}})).await;
    // (Each Resource's reconcile restores its own var: two Releases at most.)
    let config = eventually(
        "both URLs again after the rollback",
        T,
        || app_config(&client, &apps, "shop"),
        |c| c.contains_key("DATABASE_URL") && c.contains_key("DATABASE_2_URL"),
    )
    .await;
    assert_eq!(config["DATABASE_URL"], url);
    let back = apps.get("shop").await.unwrap().spec.release.unwrap();
    assert!(back != "shop-v1" && back != current, "{back}");

    // Retain: the URL leaves the App, the role can no longer log in, the data stays.
    resources
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&resources, "db").await;
    let config = app_config(&client, &apps, "shop").await;
    assert!(!config.contains_key("DATABASE_URL"), "{config:?}");
    assert!(
        config.contains_key("DATABASE_2_URL"),
        "the other Resource's URL stays"
    );
    assert!(pg.database_exists(&database).await);
    assert!(
        pg.login(&user, &password, &database).await.is_err(),
        "a retained database's role must not log in"
    );
    let comment: Option<String> = pg
        .admin()
        .await
        .query_one(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            &[&database],
        )
        .await
        .unwrap()
        .get(0);
    assert!(comment.unwrap().starts_with("flynn-retained-at="));

    // The retention sweep drops the retained database (here: retention zero) and leaves
    // the live one of db2 alone.
    let provider = postgres::Postgres {
        settings: pg.settings(),
    };
    let dropped = provider.sweep(Duration::ZERO).await.unwrap();
    assert_eq!(dropped, vec![database.clone()]);
    assert!(!pg.database_exists(&database).await && !pg.role_exists(&user).await);
    assert!(
        pg.database_exists(&database2).await,
        "a live database is never swept"
    );

    // Delete: the data goes with the Resource.
    resources
        .delete("db2", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&resources, "db2").await;
    assert!(!pg.database_exists(&database2).await && !pg.role_exists(&user2).await);
    let config = app_config(&client, &apps, "shop").await;
    assert!(!config.contains_key("DATABASE_2_URL"), "{config:?}");
    assert_eq!(config["PLAIN"], "kept");
    let _ = provider.kind();
}

#[tokio::test]
async fn an_operator_stopped_between_the_secret_and_the_store_converges_on_the_secrets_password() {
    let pg = Pg::start();
    let ns = common::namespace("res-interrupted").await;
    let client = ns.client().clone();
    let (resources, apps) = (ns.api::<Resource>(), ns.api::<App>());
    app_without_release(&ns, "shop").await;
    let r = resources
        .create(
            &PostParams::default(),
            &resource("db", "shop", "postgres", json!({})),
        )
        .await
        .unwrap();
    // What a first reconcile did before it stopped: the Secret written, then a role made
    // (with another password, as by an older Secret) and no database.
    let provider = postgres::Postgres {
        settings: pg.settings(),
    };
    let connection = provider.connection(&r);
    let written = secret::ensure(&client, &r, &provider, &connection)
        .await
        .unwrap();
    let name = store_name(&r);
    pg.admin()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {} LOGIN PASSWORD 'stale'",
            postgres::ident(&name)
        ))
        .await
        .unwrap();
    assert!(!pg.database_exists(&name).await);

    let _op = common::start(&ns, fast(&pg));
    let db = wait_reason(&resources, "db", "Provisioned").await;
    let s = ns.api::<Secret>().get(&secret_name("db")).await.unwrap();
    assert_eq!(
        text(&s, secret_keys::PASSWORD),
        written.password,
        "the password is kept"
    );
    pg.login(&name, &written.password, &name).await.unwrap();
    assert!(
        pg.login(&name, "stale", &name).await.is_err(),
        "the stale password is gone"
    );
    // No Release yet: the URL waits in the App's initial config for the first push.
    assert!(apps.get("shop").await.unwrap().spec.release.is_none());
    let initial = ns
        .api::<Secret>()
        .get(&config::initial_name("shop"))
        .await
        .unwrap();
    assert_eq!(config::vars(&initial).unwrap()["DATABASE_URL"], written.url);
    assert!(db.status.unwrap().release.is_none());
    assert_eq!(
        app_config(&client, &apps, "shop").await["DATABASE_URL"],
        written.url
    );
}

#[tokio::test]
async fn the_service_down_is_waited_for_and_a_resource_deleted_meanwhile_leaves_nothing() {
    let mut pg = Pg::start();
    let (ns, _op) = common::setup_with("res-outage", fast(&pg)).await;
    let resources = ns.api::<Resource>();
    app_with_release(&ns, "shop").await;
    let pp = PostParams::default();
    resources
        .create(
            &pp,
            &resource(
                "gone",
                "shop",
                "postgres",
                json!({"env": "GONE_URL", "deletionPolicy": "Delete"}),
            ),
        )
        .await
        .unwrap();
    let gone = wait_reason(&resources, "gone", "Provisioned").await;
    let gone_name = store_name(&gone);
    assert!(pg.database_exists(&gone_name).await);

    pg.down();
    resources
        .create(&pp, &resource("db", "shop", "postgres", json!({})))
        .await
        .unwrap();
    let db = wait_reason(&resources, "db", "ServiceUnavailable").await;
    let (_, _, msg) = ready(&Some(db)).unwrap();
    assert!(msg.contains(&format!("127.0.0.1:{}", pg.port)), "{msg}");
    resources
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    let gone = eventually(
        "gone waiting for the service to delete its data",
        T,
        || get(&resources, "gone"),
        |r| {
            ready(r)
                .is_some_and(|(_, why, m)| why == "ServiceUnavailable" && m.starts_with("deleting"))
        },
    )
    .await;
    assert!(
        gone.is_some(),
        "the finalizer holds it until its data is dropped"
    );

    pg.up();
    wait_reason(&resources, "db", "Provisioned").await;
    wait_gone(&resources, "gone").await;
    assert!(
        !pg.database_exists(&gone_name).await,
        "its database is dropped"
    );
    assert!(!pg.role_exists(&gone_name).await, "its role is dropped");
}

#[tokio::test]
async fn two_resources_under_one_var_the_younger_is_refused_and_takes_over_when_the_older_goes() {
    let pg = Pg::start();
    let (ns, _op) = common::setup_with("res-conflict", fast(&pg)).await;
    let client = ns.client().clone();
    let (resources, apps, secrets) = (ns.api::<Resource>(), ns.api::<App>(), ns.api::<Secret>());
    app_with_release(&ns, "shop").await;
    let pp = PostParams::default();
    resources
        .create(
            &pp,
            &resource(
                "first",
                "shop",
                "postgres",
                json!({"deletionPolicy": "Delete"}),
            ),
        )
        .await
        .unwrap();
    wait_reason(&resources, "first", "Provisioned").await;
    // The attack: a second Resource for the same var; the twin: one with its own var.
    resources
        .create(
            &pp,
            &resource(
                "second",
                "shop",
                "postgres",
                json!({"deletionPolicy": "Delete"}),
            ),
        )
        .await
        .unwrap();
    resources
        .create(
            &pp,
            &resource(
                "third",
                "shop",
                "postgres",
                json!({"env": "DATABASE_2_URL", "deletionPolicy": "Delete"}),
            ),
        )
        .await
        .unwrap();
    let second = wait_reason(&resources, "second", "EnvConflict").await;
    let (_, _, msg) = ready(&Some(second)).unwrap();
    assert!(
        msg.contains("first") && msg.contains("DATABASE_URL"),
        "{msg}"
    );
    wait_reason(&resources, "third", "Provisioned").await;
    let first_url = text(
        &secrets.get("first-credentials").await.unwrap(),
        secret_keys::URL,
    );
    let config = eventually(
        "third's URL in the config",
        T,
        || app_config(&client, &apps, "shop"),
        |c| c.contains_key("DATABASE_2_URL"),
    )
    .await;
    assert_eq!(config["DATABASE_URL"], first_url, "the older keeps the var");
    assert!(
        secrets
            .get_opt("second-credentials")
            .await
            .unwrap()
            .is_none(),
        "nothing made for the refused one"
    );

    resources
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    wait_reason(&resources, "second", "Provisioned").await;
    let second_url = text(
        &secrets.get("second-credentials").await.unwrap(),
        secret_keys::URL,
    );
    eventually(
        "second's URL in the config",
        T,
        || app_config(&client, &apps, "shop"),
        |c| c.get("DATABASE_URL") == Some(&second_url),
    )
    .await;
    for name in ["second", "third"] {
        resources
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
        wait_gone(&resources, name).await;
    }
}

#[tokio::test]
async fn refusals_say_what_is_wrong_and_a_late_app_is_provisioned_when_it_comes() {
    let pg = Pg::start();
    let (ns, _op) = common::setup_with("res-refusals", fast(&pg)).await;
    let client = ns.client().clone();
    let (resources, apps) = (ns.api::<Resource>(), ns.api::<App>());
    let pp = PostParams::default();

    // No App yet.
    resources
        .create(
            &pp,
            &resource(
                "early",
                "later",
                "postgres",
                json!({"deletionPolicy": "Delete"}),
            ),
        )
        .await
        .unwrap();
    let early = wait_reason(&resources, "early", "AppNotFound").await;
    assert!(ready(&Some(early)).unwrap().2.contains("later"));
    app_without_release(&ns, "later").await;
    wait_reason(&resources, "early", "Provisioned").await;
    assert!(
        app_config(&client, &apps, "later")
            .await
            .contains_key("DATABASE_URL")
    );

    // An unknown plan (the attack) beside a known one (the twin).
    resources
        .create(
            &pp,
            &resource(
                "huge",
                "later",
                "postgres",
                json!({"plan": "enterprise", "env": "HUGE_URL"}),
            ),
        )
        .await
        .unwrap();
    resources
        .create(
            &pp,
            &resource(
                "std",
                "later",
                "postgres",
                json!({"plan": "standard", "env": "STD_URL", "deletionPolicy": "Delete"}),
            ),
        )
        .await
        .unwrap();
    let huge = wait_reason(&resources, "huge", "UnknownPlan").await;
    let (_, _, msg) = ready(&Some(huge)).unwrap();
    assert!(msg.contains("hobby") && msg.contains("standard"), "{msg}");
    let std = wait_reason(&resources, "std", "Provisioned").await;
    let limit: i32 = pg
        .admin()
        .await
        .query_one(
            "SELECT rolconnlimit FROM pg_roles WHERE rolname = $1",
            &[&store_name(&std)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(limit, 100);

    // Redis is not enabled on this operator: said, with how to enable it.
    resources
        .create(&pp, &resource("cache", "later", "redis", json!({})))
        .await
        .unwrap();
    let cache = wait_reason(&resources, "cache", "ProviderDisabled").await;
    assert!(ready(&Some(cache)).unwrap().2.contains("redis.enabled"));
    for name in ["early", "huge", "std", "cache"] {
        resources
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
        wait_gone(&resources, name).await;
    }
}

#[tokio::test]
async fn a_secret_of_the_credentials_name_made_by_someone_else_is_never_taken_over() {
    let pg = Pg::start();
    let (ns, _op) = common::setup_with("res-foreign-secret", fast(&pg)).await;
    let (resources, secrets) = (ns.api::<Resource>(), ns.api::<Secret>());
    app_without_release(&ns, "shop").await;
    let pp = PostParams::default();
    // The attack: a team's own Secret where db's credentials would go.
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": {"name": "db-credentials"},
        "stringData": {"password": "theirs"},
    }))
    .unwrap();
    let foreign = secrets.create(&pp, &foreign).await.unwrap();
    resources
        .create(
            &pp,
            &resource(
                "db",
                "shop",
                "postgres",
                json!({"deletionPolicy": "Delete"}),
            ),
        )
        .await
        .unwrap();
    // The twin: the same App, a Secret name that is free.
    resources
        .create(
            &pp,
            &resource(
                "db2",
                "shop",
                "postgres",
                json!({"env": "DATABASE_2_URL", "deletionPolicy": "Delete"}),
            ),
        )
        .await
        .unwrap();
    wait_reason(&resources, "db2", "Provisioned").await;
    let db = eventually(
        "db refusing the foreign Secret",
        T,
        || get(&resources, "db"),
        |r| ready(r).is_some_and(|(_, _, m)| m.contains("was not made for Resource db")),
    )
    .await;
    assert_eq!(ready(&db).unwrap().0, "False");
    let after = secrets.get("db-credentials").await.unwrap();
    assert_eq!(
        after.resource_version(),
        foreign.resource_version(),
        "left as it was"
    );
    assert!(!pg.database_exists(&store_name(db.as_ref().unwrap())).await);
    // Once the name is free, db is provisioned.
    secrets
        .delete("db-credentials", &DeleteParams::default())
        .await
        .unwrap();
    wait_reason(&resources, "db", "Provisioned").await;
    for name in ["db", "db2"] {
        resources
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
        wait_gone(&resources, name).await;
    }
}

#[tokio::test]
async fn a_postgres_resource_on_a_platform_without_postgres_says_how_to_enable_it() {
    let ns = common::namespace("res-disabled").await;
    let _op = common::start(&ns, |_| {});
    let resources = ns.api::<Resource>();
    app_without_release(&ns, "shop").await;
    resources
        .create(
            &PostParams::default(),
            &resource("db", "shop", "postgres", json!({})),
        )
        .await
        .unwrap();
    let db = wait_reason(&resources, "db", "ProviderDisabled").await;
    assert!(ready(&Some(db)).unwrap().2.contains("postgres.enabled"));
    assert!(
        ns.api::<Secret>()
            .get_opt("db-credentials")
            .await
            .unwrap()
            .is_none()
    );
    resources
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&resources, "db").await;
}

/// The cluster has no Redis image nor a StorageClass yet (the chart's Redis image comes
/// with the platform): this checks the objects and the URL, not a running server.
#[tokio::test]
async fn a_redis_resource_gets_its_server_objects_owned_and_fenced_and_its_url() {
    let ns = common::namespace("res-redis").await;
    let _op = common::start(&ns, |s| {
        s.redis = RedisSettings {
            image: Some(NONROOT_IMAGE.into()),
            storage_class: None,
        };
    });
    let client = ns.client().clone();
    let (resources, apps) = (ns.api::<Resource>(), ns.api::<App>());
    app_with_release(&ns, "shop").await;
    resources
        .create(
            &PostParams::default(),
            &resource(
                "cache",
                "shop",
                "redis",
                json!({"deletionPolicy": "Delete"}),
            ),
        )
        .await
        .unwrap();
    let cache = wait_reason(&resources, "cache", "Provisioning").await;
    assert!(
        ready(&Some(cache.clone()))
            .unwrap()
            .2
            .contains("cache-redis-0")
    );
    let sts = ns.api::<StatefulSet>().get("cache-redis").await.unwrap();
    assert_eq!(sts.owner_references()[0].uid, cache.uid().unwrap());
    let spec = sts.spec.unwrap();
    assert_eq!(
        spec.persistent_volume_claim_retention_policy
            .unwrap()
            .when_deleted
            .as_deref(),
        Some("Delete")
    );
    ns.api::<Service>().get("cache-redis").await.unwrap();
    let np = ns.api::<NetworkPolicy>().get("cache-redis").await.unwrap();
    let from = serde_json::to_string(&np.spec.unwrap().ingress).unwrap();
    assert!(from.contains("\"flynn.io/app\":\"shop\""), "{from}");
    let conf = ns.api::<Secret>().get("cache-redis").await.unwrap();
    let s = ns.api::<Secret>().get("cache-credentials").await.unwrap();
    let password = text(&s, secret_keys::PASSWORD);
    assert!(text(&conf, "redis.conf").contains(&format!("requirepass {password}")));
    let url = text(&s, secret_keys::URL);
    assert_eq!(
        url,
        format!(
            "redis://default:{password}@cache-redis.{}.svc:6379",
            ns.name()
        )
    );
    eventually(
        "REDIS_URL in the App's config",
        T,
        || app_config(&client, &apps, "shop"),
        |c| c.get("REDIS_URL") == Some(&url),
    )
    .await;
    let labelled = common::list(&ns.api::<Secret>(), &format!("{RESOURCE_LABEL}=cache")).await;
    assert_eq!(labelled.len(), 2, "the credentials and the config");

    resources
        .delete("cache", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&resources, "cache").await;
    eventually(
        "REDIS_URL gone",
        T,
        || app_config(&client, &apps, "shop"),
        |c| !c.contains_key("REDIS_URL"),
    )
    .await;
    // The garbage collector removes what the Resource owned.
    wait_gone(&ns.api::<StatefulSet>(), "cache-redis").await;
}
