//! Databases for apps (issue 19) on the platform as the chart installs it: the python-db
//! sample pushed by git, `flynn resource add postgres` giving its next release
//! `DATABASE_URL`, a row written and read back through the router and kept across a
//! rollback, a restart of the platform's Postgres pod and a dump → remove → add → restore;
//! one app's role refused another app's database beside the same command on its own;
//! `flynn resource add redis` giving `REDIS_URL`. Every failure shows the command's output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use super::{DOMAIN, Developer, SYSTEM_NS, kubectl, output, repo, request, run, until};

/// The platform's Postgres pod (the chart's StatefulSet `<fullname>-postgres`, one pod).
const POSTGRES_POD: &str = "flynn-postgres-0";

/// An app of the developer's with its own checkout of the python-db sample.
struct DbApp<'a> {
    dev: &'a Developer,
    name: String,
    dir: PathBuf,
}

impl<'a> DbApp<'a> {
    /// `flynn create NAME` in a fresh git checkout of python-db (so the remote `flynn` of
    /// that checkout names it); pushed when `push`.
    fn create(dev: &'a Developer, name: &str, push: bool) -> Self {
        let dir = dev.home.path().join(name);
        run(Command::new("cp")
            .arg("-r")
            .arg(repo().join("builder/fixtures/apps/python-db"))
            .arg(&dir));
        let app = Self {
            dev,
            name: name.to_owned(),
            dir,
        };
        app.git(&["init", "-q", "-b", "main"]);
        app.git(&["add", "-A"]);
        app.git(&["commit", "-q", "-m", "python-db"]);
        app.flynn(&["create", name]);
        if push {
            app.git(&["push", "flynn", "main"]);
        }
        app
    }

    fn host(&self) -> String {
        format!("{}.{DOMAIN}", self.name)
    }

    fn git(&self, args: &[&str]) -> String {
        let mut c = self.dev.git(args);
        c.current_dir(&self.dir);
        run(&mut c)
    }

    /// `flynn -n NS -a APP ARGS` from the app's checkout.
    fn flynn_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.dev.flynn(&["-a", &self.name]);
        c.args(args).current_dir(&self.dir);
        c
    }

    fn flynn(&self, args: &[&str]) -> String {
        run(&mut self.flynn_cmd(args))
    }

    /// `flynn ARGS` that starts a one-off pod (`pg`), run again once when the kubelet
    /// reported the transient "failed to sync secret cache" (CreateContainerConfigError on
    /// a busy node), which the CLI takes as the pod's failure. Any other failure stands.
    fn flynn_pod(&self, args: &[&str]) -> Output {
        let out = output(&mut self.flynn_cmd(args));
        if !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("failed to sync secret cache")
        {
            eprintln!(
                "NOTE flynn {}: the kubelet's secret cache was not synced; once more",
                args.join(" ")
            );
            return output(&mut self.flynn_cmd(args));
        }
        out
    }

    /// [`Self::flynn_pod`], which must succeed: its stdout.
    fn flynn_pod_ok(&self, args: &[&str]) -> String {
        let out = self.flynn_pod(args);
        assert!(
            out.status.success(),
            "`flynn -a {} {}` failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            self.name,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A field of the Resource `resource`'s status, by jsonpath.
    fn resource_status(&self, resource: &str, jsonpath: &str) -> String {
        run(&mut kubectl(&[
            "-n",
            &self.dev.ns,
            "get",
            &format!("resources.flynn.io/{resource}"),
            "-o",
            &format!("jsonpath={{.status.{jsonpath}}}"),
        ]))
    }

    /// The name of the database the Resource made (its status.providerIds).
    fn database(&self, resource: &str) -> String {
        let db = self.resource_status(resource, "providerIds.database");
        assert!(
            db.starts_with("flynn_"),
            "Resource {resource} names no database in status.providerIds: {db:?}"
        );
        db
    }

    /// Waits until `METHOD path` through the router answers 200 with a body for which
    /// `ok` holds; returns the body.
    #[track_caller]
    fn until_answers(
        &self,
        what: &str,
        method: &str,
        path: &str,
        body: &str,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        let host = self.host();
        until(
            &format!("{method} http://{host}{path} {what}"),
            120,
            || match request(80, &host, method, path, body) {
                Ok((200, b)) if ok(&b) => Ok(b),
                other => Err(format!("{other:?}")),
            },
        )
    }

    /// The rows the app reads from its database, once it answers with `row` among them.
    #[track_caller]
    fn reads_row(&self, what: &str, row: &str) {
        self.until_answers(what, "GET", "/rows", "", |b| b.lines().any(|l| l == row));
    }
}

/// The whole databases step; the developer's namespace is `dev.ns`. Removes what it made.
pub(super) fn databases(dev: &Developer) {
    let started = Instant::now();
    let a = DbApp::create(dev, "notes", true);
    a.until_answers("to serve the pushed python-db", "GET", "/", "", |b| {
        b.trim() == "ok"
    });
    // Before the resource the app has no DATABASE_URL: the twin of what follows.
    let host = a.host();
    let before = request(80, &host, "POST", "/rows", "too-early");
    assert!(
        matches!(&before, Ok((500, b)) if b.contains("DATABASE_URL")),
        "POST /rows before `resource add postgres` should fail for want of DATABASE_URL: {before:?}"
    );

    // resource add postgres → a new release with DATABASE_URL, serving.
    let t = Instant::now();
    a.flynn(&["resource", "add", "postgres", "--timeout", "180"]);
    a.until_answers(
        "to store a row (the release with DATABASE_URL)",
        "POST",
        "/rows",
        "row-1",
        |b| b.trim().parse::<u32>().is_ok(),
    );
    eprintln!(
        "FIGURE flynn resource add postgres → the new release stores a row: {:?}",
        t.elapsed()
    );
    let env = a.flynn(&["env"]);
    assert!(env.contains("DATABASE_URL"), "flynn env after add:\n{env}");
    a.reads_row("to read back the row it stored", "row-1");
    let resource = format!("{}-postgres", a.name);
    let db_a = a.database(&resource);

    // A rollback keeps the database: the operator follows the rolled-back release (from
    // before the Resource) with a new one that has the URL. (--no-wait: the CLI's wait for
    // the release it pointed at reports the operator's follow-up as a failure, "the app
    // was pointed at <app>-vN meanwhile", and exits 1; what the app serves is checked here.)
    let out = a.flynn(&["release", "rollback", "--no-wait"]);
    a.reads_row(&format!("after `flynn release rollback` ({out})"), "row-1");
    let current = run(&mut kubectl(&[
        "-n",
        &dev.ns,
        "get",
        &format!("apps.flynn.io/{}", a.name),
        "-o",
        "jsonpath={.spec.release}",
    ]));
    let cause = run(&mut kubectl(&[
        "-n",
        &dev.ns,
        "get",
        &format!("releases.flynn.io/{current}"),
        "-o",
        "jsonpath={.spec.meta.flynn\\.io/cause}",
    ]));
    assert!(
        current != format!("{}-v1", a.name) && cause.contains("flynn resource add postgres"),
        "after the rollback to {}-v1 the app should be on a new release the Resource made; \
         it is on {current} (cause {cause:?})",
        a.name
    );

    // The platform's Postgres restarted: the row is on its claim.
    let uid = || {
        run(&mut kubectl(&[
            "-n",
            SYSTEM_NS,
            "get",
            "pod",
            POSTGRES_POD,
            "-o",
            "jsonpath={.metadata.uid}",
        ]))
    };
    let old = uid();
    run(&mut kubectl(&[
        "-n",
        SYSTEM_NS,
        "delete",
        "pod",
        POSTGRES_POD,
        "--wait=true",
    ]));
    until("the Postgres pod to be made again", 120, || {
        let out = output(&mut kubectl(&[
            "-n",
            SYSTEM_NS,
            "get",
            "pod",
            POSTGRES_POD,
            "-o",
            "jsonpath={.metadata.uid}",
        ]));
        let now = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && !now.is_empty() && now != old {
            Ok(())
        } else {
            Err(format!(
                "uid {now:?} (was {old}); {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    run(&mut kubectl(&[
        "-n",
        SYSTEM_NS,
        "wait",
        &format!("pod/{POSTGRES_POD}"),
        "--for=condition=Ready",
        "--timeout=180s",
    ]));
    let back = Instant::now();
    a.reads_row("after its Postgres pod was deleted and made again", "row-1");
    // The operator may have seen the outage (Ready=False, ServiceUnavailable, retried every
    // 30 s); `flynn pg` needs the Resource ready again.
    run(&mut kubectl(&[
        "-n",
        &dev.ns,
        "wait",
        &format!("resources.flynn.io/{resource}"),
        "--for=condition=Ready",
        "--timeout=90s",
    ]));
    eprintln!(
        "FIGURE the Postgres pod ready again → the app reads its row and the Resource is Ready: {:?}",
        back.elapsed()
    );

    // Isolation: app B's role may not connect to A's database; the same command reaches
    // B's own, and A's role reaches A's (so the refusal is the grant, not the command).
    let b = DbApp::create(dev, "ledger", false);
    b.flynn(&["resource", "add", "postgres", "--no-wait"]);
    let resource_b = format!("{}-postgres", b.name);
    run(&mut kubectl(&[
        "-n",
        &dev.ns,
        "wait",
        &format!("resources.flynn.io/{resource_b}"),
        "--for=condition=Ready",
        "--timeout=120s",
    ]));
    let db_b = b.database(&resource_b);
    assert_ne!(db_a, db_b);
    let attack = b.flynn_pod(&[
        "pg",
        "psql",
        "--",
        "-d",
        &db_a,
        "-At",
        "-c",
        "SELECT value FROM rows",
    ]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&attack.stdout),
        String::from_utf8_lossy(&attack.stderr)
    );
    assert!(
        !attack.status.success()
            && said.contains(&format!("permission denied for database \"{db_a}\""))
            && !said.contains("row-1"),
        "app {}'s role connecting to app {}'s database {db_a} should be refused with \
         \"permission denied for database\"; flynn pg psql exited {}:\n{said}",
        b.name,
        a.name,
        attack.status
    );
    let own = b.flynn_pod_ok(&["pg", "psql", "--", "-At", "-c", "SELECT current_database()"]);
    assert!(
        own.lines().any(|l| l == db_b),
        "app {}'s psql on its own database {db_b}:\n{own}",
        b.name
    );
    let twin = a.flynn_pod_ok(&[
        "pg",
        "psql",
        "--",
        "-d",
        &db_a,
        "-At",
        "-c",
        "SELECT value FROM rows",
    ]);
    assert!(
        twin.lines().any(|l| l == "row-1"),
        "app {}'s psql -d {db_a} (its own database) should read row-1:\n{twin}",
        a.name
    );

    // dump → remove (the data too) → add → restore: the row is back.
    let dump = dev.home.path().join("notes.dump");
    a.flynn_pod_ok(&["pg", "dump", "-f", dump.to_str().unwrap()]);
    assert_dump(&dump);
    a.flynn(&["resource", "remove", &resource, "--delete-data", "--yes"]);
    a.flynn(&["resource", "add", "postgres", "--timeout", "180"]);
    let db_new = a.database(&resource);
    assert_ne!(
        db_new, db_a,
        "the re-added Resource reuses the dropped database"
    );
    // The new database is empty (the twin of the restore): the app answers, without rows.
    a.until_answers(
        &format!("to use the new database {db_new}"),
        "GET",
        "/whoami",
        "",
        |b| b.contains(&format!("database={db_new}")),
    );
    // (GET /rows makes the table when it is missing, hence --clean below.)
    let empty = request(80, &host, "GET", "/rows", "");
    assert!(
        matches!(&empty, Ok((200, b)) if b.is_empty()),
        "the new database should have no rows before the restore: {empty:?}"
    );
    a.flynn_pod_ok(&["pg", "restore", "-f", dump.to_str().unwrap(), "--clean"]);
    a.reads_row("after the dump was restored into the new database", "row-1");

    // Redis: set and get through the app.
    let t = Instant::now();
    a.flynn(&["resource", "add", "redis", "--timeout", "180"]);
    a.until_answers(
        "to SET a key (the release with REDIS_URL)",
        "POST",
        "/redis/greeting",
        "hello-redis",
        |_| true,
    );
    eprintln!(
        "FIGURE flynn resource add redis → the new release sets a key: {:?}",
        t.elapsed()
    );
    let got = a.until_answers("to GET the key it set", "GET", "/redis/greeting", "", |b| {
        b.contains("hello-redis")
    });
    assert_eq!(got.trim(), "hello-redis");

    // Clean up what lives outside the namespace (databases and roles in the platform's
    // Postgres) and what holds a volume (Redis).
    a.flynn(&[
        "resource",
        "remove",
        &format!("{}-redis", a.name),
        "--delete-data",
        "--yes",
    ]);
    a.flynn(&["resource", "remove", &resource, "--delete-data", "--yes"]);
    b.flynn(&["resource", "remove", &resource_b, "--delete-data", "--yes"]);
    a.flynn(&["delete", "--yes"]);
    b.flynn(&["delete", "--yes"]);
    eprintln!("FIGURE the databases step took {:?}", started.elapsed());
}

/// A custom-format dump (`PGDMP` magic) holding the table.
fn assert_dump(path: &Path) {
    let bytes = std::fs::read(path)
        .unwrap_or_else(|e| panic!("flynn pg dump wrote no {}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"PGDMP") && bytes.windows(4).any(|w| w == b"rows"),
        "{} is not a custom-format dump of table rows ({} bytes)",
        path.display(),
        bytes.len()
    );
}
