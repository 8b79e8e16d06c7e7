//! `flynn resource`, `flynn pg` and `flynn redis-cli` against the local cluster, in a
//! namespace of the test's own with NO operator: the test plays the operator's part by hand
//! (it writes the Resources' status and the credentials Secret), so the CLI is tested on its
//! own, against a real Postgres 15 started on the host for the test (pods reach the host at
//! the node's address) and the platform's Postgres image (`images/build postgres`).
//! Needs the local cluster: `export KUBECONFIG=$(e2e/cluster/up)`; run with
//! `cargo test -p flynn-cli --test databases`.

// Shared with cluster.rs, which uses the rest of what it re-exports.
#[allow(unused_imports)]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Out, flynn_bin, kubeconfig, restricted};
use flynn_crds::resource::Resource;
use flynn_e2e::{TestNamespace, install_flynn_crds};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// The platform's Postgres image as `images/build postgres --tag test` loads it.
const POSTGRES_IMAGE: &str = "localhost/flynn-postgres:test";
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const PASSWORD: &str = "shop-secret-pw";

/// The platform's Redis image as `images/build redis --tag test` loads it.
const REDIS_IMAGE: &str = "localhost/flynn-redis:test";

/// Builds the platform's Postgres image into the node unless it is there (blocking).
fn ensure_postgres_image() {
    ensure_image("postgres", POSTGRES_IMAGE);
}

/// Builds `images/NAME` as `image` into the node unless it is there (blocking).
fn ensure_image(name: &str, image: &str) {
    let root = restricted::workspace();
    let script = format!(
        r#"set -euo pipefail
source "{root}/e2e/cluster/lib/common.sh"
[ -S "$CONTAINERD_SOCK" ] || die "the local node is not running: start it with e2e/cluster/up"
exec 8>/tmp/flynn-{name}-image.lock; flock 8
image_present {image} && exit 0
"{root}/images/build" {name} --tag test --load"#,
        root = root.display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building {image} (images/build {name} --tag test) failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway Postgres 15 on the host, listening on the node's address with password
/// (SCRAM) authentication; database `shop` owned by role `shop`. Stopped on drop.
struct HostPostgres {
    dir: tempfile::TempDir,
    port: u16,
}

fn run_as_postgres(args: &[&str]) -> std::process::Output {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("runuser {args:?}: {e} (the tests run as root)"));
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl HostPostgres {
    fn start() -> Self {
        assert!(
            Path::new(PG_BIN).join("postgres").exists(),
            "PostgreSQL 15 is missing on the host: apt-get install postgresql-15"
        );
        let dir = tempfile::Builder::new()
            .prefix("flynn-cli-pg")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path().display().to_string();
        run_as_postgres(&["true"]);
        Command::new("chown")
            .args(["postgres", &d])
            .status()
            .unwrap();
        std::fs::write(dir.path().join("pw"), "admin-pw\n").unwrap();
        let port = {
            let l = std::net::TcpListener::bind((restricted::NODE_IP, 0)).unwrap();
            l.local_addr().unwrap().port()
        };
        run_as_postgres(&[
            &format!("{PG_BIN}/initdb"),
            "-D",
            &format!("{d}/data"),
            "-A",
            "scram-sha-256",
            "-U",
            "postgres",
            &format!("--pwfile={d}/pw"),
        ]);
        let hba = format!("{d}/data/pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).unwrap();
        text.push_str("host all all 0.0.0.0/0 scram-sha-256\n");
        std::fs::write(&hba, text).unwrap();
        run_as_postgres(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            &format!("{d}/data"),
            "-w",
            "-l",
            &format!("{d}/log"),
            "-o",
            &format!(
                "-p {port} -k {d} -c listen_addresses={} -c fsync=off",
                restricted::NODE_IP
            ),
            "start",
        ]);
        let pg = HostPostgres { dir, port };
        pg.admin(
            "postgres",
            &format!("create role shop login password '{PASSWORD}'"),
        );
        pg.admin("postgres", "create database shop owner shop");
        pg
    }

    /// Runs SQL as the superuser in `db`; its output.
    fn admin(&self, db: &str, sql: &str) -> String {
        let out = Command::new(format!("{PG_BIN}/psql"))
            .args(["-XAtq", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(restricted::NODE_IP.to_string())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .env("PGPASSWORD", "admin-pw")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for HostPostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{PG_BIN}/pg_ctl"), "-D"])
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// A namespace (Pod Security "restricted") with an App `shop` and no operator.
struct World {
    ns: TestNamespace,
    dir: tempfile::TempDir,
}

impl World {
    async fn new(test: &str) -> Self {
        let ns = TestNamespace::create(test).await;
        install_flynn_crds(ns.client()).await.unwrap();
        restricted::restrict(ns.client(), ns.name()).await;
        let w = World {
            ns,
            dir: tempfile::TempDir::new().unwrap(),
        };
        w.flynn(&["create", "shop", "--no-remote"]).await.ok();
        w
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(flynn_bin());
        cmd.arg("-n").arg(self.ns.name()).args(args);
        cmd.current_dir(self.dir.path())
            .env_remove("FLYNN_APP")
            .env("KUBECONFIG", kubeconfig())
            .env("NO_COLOR", "1")
            .env("FLYNN_POSTGRES_IMAGE", POSTGRES_IMAGE)
            .env("FLYNN_REDIS_IMAGE", REDIS_IMAGE)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    async fn flynn(&self, args: &[&str]) -> Out {
        let out = self.command(args).output().await.unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `flynn -a shop ARGS`.
    async fn shop(&self, args: &[&str]) -> Out {
        let mut all = vec!["-a", "shop"];
        all.extend(args);
        self.flynn(&all).await
    }

    /// Plays the operator: a Resource `name` of `shop`, its credentials Secret pointing at
    /// `pg`, and `Ready=True`.
    async fn provisioned_postgres(&self, name: &str, env: &str, pg: &HostPostgres) {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-credentials")},
            "type": flynn_crds::resource::SECRET_TYPE,
            "stringData": {
                "host": restricted::NODE_IP.to_string(), "port": pg.port.to_string(),
                "username": "shop", "password": PASSWORD, "database": "shop",
                "url": format!("postgres://shop:{PASSWORD}@{}:{}/shop", restricted::NODE_IP, pg.port),
            }
        }))
        .unwrap();
        self.ns
            .api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        self.resource(name, "postgres", env).await;
        self.set_ready(name, "True", "Provisioned", "").await;
    }

    async fn resource(&self, name: &str, provider: &str, env: &str) {
        let r: Resource = serde_json::from_value(json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "Resource",
            "metadata": {"name": name},
            "spec": {"app": "shop", "provider": provider, "env": env}
        }))
        .unwrap();
        self.ns
            .api::<Resource>()
            .create(&PostParams::default(), &r)
            .await
            .unwrap();
    }

    async fn set_ready(&self, name: &str, status: &str, reason: &str, message: &str) {
        let api = self.ns.api::<Resource>();
        let generation = api.get(name).await.unwrap().metadata.generation;
        let patch = json!({"status": {
            "secret": format!("{name}-credentials"),
            "conditions": [{"type": "Ready", "status": status, "reason": reason, "message": message,
                "observedGeneration": generation, "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    async fn pods_left(&self) -> Vec<String> {
        self.ns
            .api::<Pod>()
            .list(&ListParams::default().labels("flynn.io/one-off=true"))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.name)
            .collect()
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A dump whose header says another pg_dump major version made it (the real dump `valid`
/// with its pg_dump version string's major changed, same length).
fn other_major(valid: &Path, to: &Path) {
    let mut bytes = std::fs::read(valid).unwrap();
    let head = &bytes[..200.min(bytes.len())];
    // The header's last version string is pg_dump's; a string starts after its length, an
    // int whose last byte is 0 for so short a string.
    let positions: Vec<usize> = head
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"\x0015.")
        .map(|(i, _)| i + 1)
        .collect();
    let at = *positions.last().expect("a 15.x version in the dump header");
    bytes[at..at + 2].copy_from_slice(b"16");
    std::fs::write(to, bytes).unwrap();
}

#[tokio::test]
async fn pg_psql_dump_restore_round_trip_and_version_refusal() {
    ensure_postgres_image();
    let pg = HostPostgres::start();
    let w = World::new("cli-pg").await;
    w.provisioned_postgres("shop-postgres", "DATABASE_URL", &pg)
        .await;

    // psql with input piped in; its output comes back, its exit code is flynn's.
    let out = w
        .shop(&[
            "pg",
            "psql",
            "--",
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            "create table items(id int primary key, name text); insert into items select g, 'item ' || g from generate_series(1, 500) g; select count(*) from items",
        ])
        .await;
    assert_eq!(out.ok(), "CREATE TABLE\nINSERT 0 500\n500\n", "{out:#?}");
    // The twin that fails: psql's exit code passes through.
    let out = w
        .shop(&[
            "pg",
            "psql",
            "--",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "select * from nope",
        ])
        .await;
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stdout.contains("relation \"nope\" does not exist"),
        "{out:#?}"
    );

    // The pod got the password by reference only.
    let files = tempfile::TempDir::new().unwrap();
    let dump = files.path().join("shop.dump");
    let out = w.shop(&["pg", "dump", "-f", path_str(&dump)]).await;
    out.ok();
    assert!(out.stderr.contains("Dumped shop-postgres"), "{out:#?}");
    assert!(!files.path().join("shop.dump.partial").exists());
    let listing = Command::new(format!("{PG_BIN}/pg_restore"))
        .arg("-l")
        .arg(&dump)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listing.stdout).contains("TABLE DATA public items"),
        "{listing:?}"
    );

    // Dump → drop → restore: the rows are back.
    pg.admin("shop", "drop table items");
    let out = w.shop(&["pg", "restore", "-f", path_str(&dump)]).await;
    out.ok();
    assert_eq!(pg.admin("shop", "select count(*) from items"), "500");
    // A restore over existing objects fails with pg_restore's own errors ...
    let out = w.shop(&["pg", "restore", "-f", path_str(&dump)]).await;
    out.fails(1, "pg_restore failed");
    assert!(out.stderr.contains("already exists"), "{out:#?}");
    // ... and its twin with --clean replaces them.
    pg.admin("shop", "delete from items where id > 10");
    w.shop(&["pg", "restore", "-f", path_str(&dump), "--clean"])
        .await
        .ok();
    assert_eq!(pg.admin("shop", "select count(*) from items"), "500");

    // Another major version is refused before a byte is sent, the valid twin above passed.
    let dump16 = files.path().join("shop-16.dump");
    other_major(&dump, &dump16);
    pg.admin("shop", "delete from items where id > 10");
    let out = w.shop(&["pg", "restore", "-f", path_str(&dump16)]).await;
    let err = out.fails(2, "it was made by pg_dump 16.");
    assert!(err.contains("runs PostgreSQL 15"), "{out:#?}");
    assert!(err.contains("flynn pg psql < dump.sql"), "{out:#?}");
    assert_eq!(pg.admin("shop", "select count(*) from items"), "10");
    // Not a dump at all: refused without a pod.
    let sql = files.path().join("shop.sql");
    std::fs::write(&sql, "select 1;\n").unwrap();
    w.shop(&["pg", "restore", "-f", path_str(&sql)])
        .await
        .fails(2, "not a custom-format PostgreSQL dump");

    // pg_dump failing (its role may not connect) leaves no file, partial or whole.
    pg.admin("postgres", "alter role shop nologin");
    let failed = files.path().join("failed.dump");
    let out = w.shop(&["pg", "dump", "-f", path_str(&failed)]).await;
    out.fails(1, "pg_dump failed: exit code 1");
    assert!(out.stderr.contains("not permitted to log in"), "{out:#?}");
    assert!(!failed.exists() && !files.path().join("failed.dump.partial").exists());
    pg.admin("postgres", "alter role shop login");

    // Every client pod is gone.
    flynn_e2e::eventually(
        "the client pods to be deleted",
        Duration::from_secs(30),
        || w.pods_left(),
        |left| left.is_empty(),
    )
    .await;
}

#[tokio::test]
async fn redis_cli_against_a_real_redis() {
    ensure_image("redis", REDIS_IMAGE);
    let w = World::new("cli-redis").await;
    // The test's Redis: the platform's image, with a password (the operator's part).
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "redis"},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "redis", "image": REDIS_IMAGE,
                "command": ["redis-server", "--requirepass", PASSWORD, "--port", "6379", "--dir", "/tmp", "--protected-mode", "no"],
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]
        }
    }))
    .unwrap();
    let pods = w.ns.api::<Pod>();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let ip = common::eventually(
        "the test's Redis to run",
        Duration::from_secs(60),
        || async {
            let p = pods.get("redis").await.unwrap();
            let status = p.status.unwrap_or_default();
            let ready = status
                .container_statuses
                .iter()
                .flatten()
                .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()));
            status.pod_ip.filter(|_| ready)
        },
        Option::is_some,
    )
    .await
    .unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "shop-redis-credentials"},
        "stringData": {"host": ip, "port": "6379", "password": PASSWORD,
                       "url": format!("redis://:{PASSWORD}@{ip}:6379")}
    }))
    .unwrap();
    w.ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    w.resource("shop-redis", "redis", "REDIS_URL").await;
    w.set_ready("shop-redis", "True", "Provisioned", "").await;

    // Authenticated by REDISCLI_AUTH from the Secret; `$(...)` in an argument is the
    // user's text, not expanded by Kubernetes.
    let out = w
        .shop(&["redis-cli", "--", "set", "greeting", "hi $(REDISCLI_AUTH)"])
        .await;
    assert_eq!(out.ok(), "OK\n", "{out:#?}");
    let out = w.shop(&["redis-cli", "--", "get", "greeting"]).await;
    assert_eq!(out.ok(), "hi $(REDISCLI_AUTH)\n", "{out:#?}");
    // The twin without the password is refused by Redis: the credentials did the work.
    let out = w
        .shop(&[
            "redis-cli",
            "--",
            "--no-auth-warning",
            "-a",
            "wrong",
            "get",
            "greeting",
        ])
        .await;
    assert!(
        out.stdout.contains("WRONGPASS") || out.stdout.contains("invalid username-password"),
        "{out:#?}"
    );
}

#[tokio::test]
async fn which_resource_and_why_not() {
    let w = World::new("cli-pg-pick").await;
    // No resource.
    w.shop(&["pg", "psql"])
        .await
        .fails(3, "app shop has no postgres resource");
    // One, not ready: says why from its condition.
    w.resource("shop-postgres", "postgres", "DATABASE_URL")
        .await;
    w.set_ready(
        "shop-postgres",
        "False",
        "ServiceUnavailable",
        "cannot reach postgres.flynn-system:5432",
    )
    .await;
    w.shop(&["pg", "dump", "-f", "x.dump"]).await.fails(
        1,
        "resource shop-postgres is not ready: ServiceUnavailable: cannot reach postgres.flynn-system:5432",
    );
    assert!(!w.dir.path().join("x.dump").exists());
    // Two: -r picks, without it the error lists them.
    w.resource("shop-postgres-2", "postgres", "DATABASE_2_URL")
        .await;
    w.shop(&["pg", "psql"]).await.fails(
        2,
        "app shop has several postgres resources: shop-postgres, shop-postgres-2",
    );
    w.shop(&["pg", "psql", "-r", "shop-postgres-2"])
        .await
        .fails(
            1,
            "resource shop-postgres-2 is not ready: waiting for the operator",
        );
    // -r naming a Redis, or nothing of this app.
    w.resource("shop-redis", "redis", "REDIS_URL").await;
    w.shop(&["pg", "psql", "-r", "shop-redis"])
        .await
        .fails(2, "it is a redis resource, not postgres");
    w.shop(&["redis-cli", "-r", "nope"])
        .await
        .fails(3, "resource nope is not a resource of app shop");
    // The app itself.
    w.flynn(&["-a", "nope", "pg", "psql"])
        .await
        .fails(3, "app \"nope\" not found");
}

#[tokio::test]
async fn resource_add_list_remove() {
    let w = World::new("cli-resource").await;
    let api = w.ns.api::<Resource>();

    // An App that does not exist gets no Resource.
    w.flynn(&["-a", "nope", "resource", "add", "postgres", "--no-wait"])
        .await
        .fails(3, "app \"nope\" not found");
    assert!(
        api.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    let out = w.shop(&["resource", "add", "postgres", "--no-wait"]).await;
    assert_eq!(
        out.ok(),
        "Created resource shop-postgres (postgres, DATABASE_URL)\n"
    );
    let out = w
        .shop(&[
            "resource",
            "add",
            "postgres",
            "--plan",
            "small",
            "--no-wait",
        ])
        .await;
    assert_eq!(
        out.ok(),
        "Created resource shop-postgres-2 (postgres, DATABASE_2_URL)\n"
    );
    assert_eq!(
        api.get("shop-postgres-2")
            .await
            .unwrap()
            .spec
            .plan
            .as_deref(),
        Some("small")
    );
    // The name race: `shop-redis` is taken (here by a Resource with another var, as by a
    // concurrent add), so the add takes the next name instead of failing.
    w.resource("shop-redis", "redis", "CACHE_URL").await;
    let out = w.shop(&["resource", "add", "redis", "--no-wait"]).await;
    assert_eq!(
        out.ok(),
        "Created resource shop-redis-2 (redis, REDIS_2_URL)\n"
    );

    // Two adds at once: two Resources, two names, two vars.
    let (a, b) = tokio::join!(
        w.shop(&["resource", "add", "postgres", "--no-wait"]),
        w.shop(&["resource", "add", "postgres", "--no-wait"])
    );
    let mut made = vec![a.ok().to_owned(), b.ok().to_owned()];
    made.sort();
    assert_eq!(
        made,
        [
            "Created resource shop-postgres-3 (postgres, DATABASE_3_URL)\n",
            "Created resource shop-postgres-4 (postgres, DATABASE_4_URL)\n"
        ]
    );

    // Waiting: ServiceUnavailable is shown, a terminal reason fails and removes it again.
    let waiting = w
        .command(&[
            "-a",
            "shop",
            "resource",
            "add",
            "postgres",
            "--timeout",
            "60",
        ])
        .output();
    let operator = async {
        flynn_e2e::eventually(
            "the add to create shop-postgres-5",
            Duration::from_secs(30),
            || async { api.get_opt("shop-postgres-5").await.unwrap() },
            Option::is_some,
        )
        .await;
        w.set_ready(
            "shop-postgres-5",
            "False",
            "ServiceUnavailable",
            "postgres is restarting",
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        w.set_ready(
            "shop-postgres-5",
            "False",
            "UnknownPlan",
            "plan \"huge\" is not one of hobby, small",
        )
        .await;
    };
    let (out, ()) = tokio::join!(waiting, operator);
    let out = out.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("ServiceUnavailable: postgres is restarting"),
        "{stderr}"
    );
    assert!(
        stderr.contains("resource shop-postgres-5 was refused (UnknownPlan): plan \"huge\" is not one of hobby, small"),
        "{stderr}"
    );
    assert!(api.get_opt("shop-postgres-5").await.unwrap().is_none());

    // Ready, and the app has no release yet: done, saying so.
    let waiting = w
        .command(&[
            "-a",
            "shop",
            "resource",
            "add",
            "postgres",
            "--timeout",
            "60",
        ])
        .output();
    let operator = async {
        flynn_e2e::eventually(
            "the add to create shop-postgres-5",
            Duration::from_secs(30),
            || async { api.get_opt("shop-postgres-5").await.unwrap() },
            Option::is_some,
        )
        .await;
        w.set_ready("shop-postgres-5", "True", "Provisioned", "")
            .await;
    };
    let (out, ()) = tokio::join!(waiting, operator);
    let out = out.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Created resource shop-postgres-5 (postgres, DATABASE_5_URL)\n",
        "{out:?}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("its first release gets DATABASE_5_URL"));

    // list, as a table and as data.
    let out = w.shop(&["resource", "list"]).await;
    let lines: Vec<Vec<&str>> = out
        .ok()
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "PROVIDER", "ENV", "PLAN", "READY", "AGE"]
    );
    assert_eq!(lines.len(), 8, "{out:#?}");
    assert_eq!(
        lines[5][..5],
        [
            "shop-postgres-5",
            "postgres",
            "DATABASE_5_URL",
            "default",
            "yes"
        ]
    );
    assert_eq!(
        lines[2][..5],
        [
            "shop-postgres-2",
            "postgres",
            "DATABASE_2_URL",
            "small",
            "-"
        ]
    );
    let rows: serde_json::Value =
        serde_json::from_str(w.shop(&["resource", "list", "-o", "json"]).await.ok()).unwrap();
    assert_eq!(rows[4]["name"], "shop-postgres-5");
    assert_eq!(rows[4]["ready"], true);

    // remove --delete-data without a terminal needs --yes; nothing changes without it.
    let out = w
        .shop(&["resource", "remove", "shop-postgres-2", "--delete-data"])
        .await;
    out.fails(2, "refusing to delete the data of resource shop-postgres-2");
    let r = api.get("shop-postgres-2").await.unwrap();
    assert!(r.metadata.deletion_timestamp.is_none());
    assert_eq!(
        r.spec.deletion_policy,
        flynn_crds::resource::DeletionPolicy::Retain
    );
    // With --yes: the policy is set first, then the delete; flynn waits until it is gone
    // (a finalizer of the test's own holds it, as the operator's would).
    api.patch(
        "shop-postgres-2",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["flynn.io/resource"]}})),
    )
    .await
    .unwrap();
    let removing = w
        .command(&[
            "-a",
            "shop",
            "resource",
            "remove",
            "shop-postgres-2",
            "--delete-data",
            "--yes",
        ])
        .output();
    let operator = async {
        let r = flynn_e2e::eventually(
            "shop-postgres-2 to be deleting",
            Duration::from_secs(30),
            || async { api.get("shop-postgres-2").await.unwrap() },
            |r| r.metadata.deletion_timestamp.is_some(),
        )
        .await;
        assert_eq!(
            r.spec.deletion_policy,
            flynn_crds::resource::DeletionPolicy::Delete
        );
        api.patch(
            "shop-postgres-2",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    };
    let started = Instant::now();
    let (out, ()) = tokio::join!(removing, operator);
    let out = out.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Removed resource shop-postgres-2; its data was deleted\n",
        "{out:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    // The plain remove keeps the data.
    let out = w.shop(&["resource", "remove", "shop-postgres"]).await;
    assert_eq!(
        out.ok(),
        "Removed resource shop-postgres; its data is kept until the platform's retention expires\n"
    );
    w.shop(&["resource", "remove", "shop-postgres"])
        .await
        .fails(3, "resource shop-postgres is not a resource of app shop");
}

/// Peak RSS of `flynn pg dump` and `flynn pg restore` of a big table, beside the dump's size.
/// The size is FLYNN_PG_BENCH_MB (default 64; the README's figure is from 1024).
#[tokio::test]
async fn pg_dump_and_restore_stream_in_little_memory() {
    ensure_postgres_image();
    let mb: u64 = std::env::var("FLYNN_PG_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let pg = HostPostgres::start();
    let w = World::new("cli-pg-rss").await;
    w.provisioned_postgres("shop-postgres", "DATABASE_URL", &pg)
        .await;
    pg.admin("shop", "create extension if not exists pgcrypto");
    // Random bytes do not compress: the dump is about as big as the table's data (bytea is
    // dumped as hex, which compresses back to about the bytes' size).
    pg.admin(
        "shop",
        &format!(
            "create table big(id int, data bytea); alter table big owner to shop; \
             insert into big select g, gen_random_bytes(1024) from generate_series(1, {}) g; \
             drop extension pgcrypto",
            mb * 1024
        ),
    );
    let files = tempfile::TempDir::new().unwrap();
    let dump = files.path().join("big.dump");

    // A stream lost midway (the pod deleted under it) is an error and leaves no file.
    let lost = files.path().join("lost.dump");
    let lost_partial = files.path().join("lost.dump.partial");
    let dumping = w
        .command(&["-a", "shop", "pg", "dump", "-f", path_str(&lost)])
        .output();
    let killer = async {
        common::eventually(
            "the dump to be under way",
            Duration::from_secs(120),
            || async {
                std::fs::metadata(&lost_partial)
                    .map(|m| m.len())
                    .unwrap_or(0)
            },
            |len| *len > 1_000_000,
        )
        .await;
        let pods = w.ns.api::<Pod>();
        for name in w.pods_left().await {
            pods.delete(&name, &kube::api::DeleteParams::default().grace_period(0))
                .await
                .unwrap();
        }
    };
    let (out, ()) = tokio::join!(dumping, killer);
    let out = out.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: pg_dump failed: the stream from pod"),
        "{stderr}"
    );
    assert!(stderr.contains("the dump is incomplete"), "{stderr}");
    assert!(!lost.exists() && !lost_partial.exists());

    let (out, dump_peak, dump_time) =
        peak_rss(w.command(&["-a", "shop", "pg", "dump", "-f", path_str(&dump)])).await;
    assert!(out.status.success(), "{out:?}");
    let size = std::fs::metadata(&dump).unwrap().len();
    pg.admin("shop", "drop table big");
    let (out, restore_peak, restore_time) =
        peak_rss(w.command(&["-a", "shop", "pg", "restore", "-f", path_str(&dump)])).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        pg.admin("shop", "select count(*) from big"),
        (mb * 1024).to_string()
    );
    // The CLI's own size, for comparison: a command that moves no data.
    let (out, baseline, _) = peak_rss(w.command(&["-a", "shop", "resource", "list"])).await;
    assert!(out.status.success(), "{out:?}");
    eprintln!(
        "dump {:.1} MB: `flynn pg dump` peak RSS {} kB in {:.1}s, `flynn pg restore` peak RSS {} kB in {:.1}s; `flynn resource list` {} kB",
        size as f64 / 1e6,
        dump_peak,
        dump_time.as_secs_f64(),
        restore_peak,
        restore_time.as_secs_f64(),
        baseline
    );
    assert!(size > mb * 1_000_000 * 9 / 10, "the dump is {size} bytes");
    // Never the dump in memory: the peak stays well under the dump's size. (Not a bound
    // on `resource list`'s figure: that command can end between two samples, so its
    // sampled peak may be a few kB, read before the program was even loaded.)
    for peak in [dump_peak, restore_peak] {
        // A real sample of the running CLI, or the bound below would prove nothing.
        assert!(
            peak > 4_000,
            "peak RSS {peak} kB: the CLI was never sampled while it ran"
        );
        assert!(
            peak * 1024 < size / 2,
            "peak RSS {peak} kB for a {size}-byte dump ({baseline} kB sampled without data): the dump is held in memory"
        );
    }
}

/// Runs `cmd`, sampling the child's VmHWM (peak RSS, kB) until it ends.
async fn peak_rss(mut cmd: tokio::process::Command) -> (std::process::Output, u64, Duration) {
    let started = Instant::now();
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let pid = child.id().unwrap();
    let status = PathBuf::from(format!("/proc/{pid}/status"));
    let sampler = tokio::spawn(async move {
        let mut peak = 0u64;
        loop {
            let Ok(text) = std::fs::read_to_string(&status) else {
                return peak;
            };
            if let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb);
            } else {
                // A zombie has no VmHWM: it has ended.
                return peak;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let out = child.wait_with_output().await.unwrap();
    let peak = sampler.await.unwrap();
    (out, peak, started.elapsed())
}
