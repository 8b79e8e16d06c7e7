//! The Postgres provider: a database and a role of their own on the platform's Postgres
//! service for each Resource, as Flynn's `flynn/postgres` gave one.
//!
//! - The role and the database are both named [`store_name`] (`flynn_<uid>`); the role logs
//!   in with the password of the Resource's credentials Secret, sent as a SCRAM-SHA-256
//!   verifier computed here (the password itself never reaches the server or its logs), at
//!   most the plan's number of connections, with no attribute beyond LOGIN.
//! - The database is owned by the role; `CONNECT` and `TEMPORARY` are revoked from PUBLIC,
//!   so no other Resource's role can connect to it.
//! - Every step checks before it makes and is re-run on each reconcile, so a store half-made
//!   by an operator that stopped converges, and the password is set again each time (a
//!   Secret re-made with a new password is what logs in).
//! - Deprovisioning: `Delete` drops the database (`WITH (FORCE)`: open connections are
//!   ended) and the role; `Retain` disables the role's login, ends its connections and
//!   stamps the database's comment with the time, and [`sweep`] drops it once the retention
//!   has passed. All `IF EXISTS`: nothing half-made stays, whatever was made.
//!
//! The operator speaks to Postgres without TLS: the service is reached over the cluster
//! network only (its Service is not exposed), and the role passwords go as SCRAM verifiers.
//! The admin password goes in SCRAM's challenge-response too, never in clear.

use std::time::Duration;

use flynn_crds::resource::{DeletionPolicy, Provider, Resource};
use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tokio_postgres::NoTls;

use super::provider::{
    Connection, Plan, ProviderError, Provisioned, Request, ResourceProvider, store_name,
};

/// How the operator reaches the platform's Postgres (`FLYNN_POSTGRES_*`).
#[derive(Clone, Debug, Default)]
pub struct PostgresSettings {
    /// Unset: the provider is disabled.
    pub host: Option<String>,
    pub port: u16,
    /// A superuser: it makes roles and databases, and drops databases other roles own.
    pub admin_user: String,
    pub admin_password: String,
}

/// The plans: the connection limit of the role.
pub const PLANS: &[Plan] = &[
    Plan {
        name: "hobby",
        summary: "20 connections",
        connection_limit: 20,
        memory_mib: 0,
        storage_gib: 0,
    },
    Plan {
        name: "standard",
        summary: "100 connections",
        connection_limit: 100,
        memory_mib: 0,
        storage_gib: 0,
    },
];

/// How long a connection to the service may take before it counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The comment a retained database carries: `flynn-retained-at=<RFC 3339>; resource=<ns>/<name>`.
const RETAINED_PREFIX: &str = "flynn-retained-at=";

#[derive(Clone, Debug)]
pub struct Postgres {
    pub settings: PostgresSettings,
}

/// `name` as a quoted identifier (`"` doubled): names come from uids, but every identifier
/// is quoted all the same.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as a string literal (`'` doubled; an escape string when it holds a backslash, so
/// it means the same whatever `standard_conforming_strings` is).
pub fn literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if text.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// A Postgres error as the Resource's status says it: what failed, where, and Postgres's
/// own message.
fn unavailable(
    settings: &PostgresSettings,
    doing: &str,
    e: &tokio_postgres::Error,
) -> ProviderError {
    let detail = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    };
    ProviderError::Unavailable(format!(
        "the platform's Postgres at {}:{} {doing}: {detail}",
        settings.host.as_deref().unwrap_or_default(),
        settings.port
    ))
}

impl Postgres {
    /// A session as the admin user on the `postgres` database.
    async fn admin(&self) -> Result<tokio_postgres::Client, ProviderError> {
        let s = &self.settings;
        let mut config = tokio_postgres::Config::new();
        config
            .host(s.host.as_deref().unwrap_or_default())
            .port(s.port)
            .user(&s.admin_user)
            .password(&s.admin_password)
            .dbname("postgres")
            .application_name("flynn-operator")
            .connect_timeout(CONNECT_TIMEOUT);
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| unavailable(s, "refused the operator's connection", &e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres admin session ended");
            }
        });
        Ok(client)
    }

    async fn exists(
        &self,
        db: &tokio_postgres::Client,
        query: &str,
        name: &str,
    ) -> Result<bool, ProviderError> {
        db.query_opt(query, &[&name])
            .await
            .map(|row| row.is_some())
            .map_err(|e| unavailable(&self.settings, "could not be read", &e))
    }

    async fn run(&self, db: &tokio_postgres::Client, sql: &str) -> Result<(), ProviderError> {
        // The statement is logged without its literal (it may hold a password verifier).
        let shown: String = sql.split(" PASSWORD ").next().unwrap_or(sql).to_owned();
        db.batch_execute(sql)
            .await
            .map_err(|e| unavailable(&self.settings, &format!("refused `{shown}`"), &e))
    }

    async fn provision_store(
        &self,
        resource: &Resource,
        plan: &Plan,
        password: &str,
    ) -> Result<(), ProviderError> {
        let db = self.admin().await?;
        let name = store_name(resource);
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        let attributes = format!(
            "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {} PASSWORD {}",
            plan.connection_limit,
            literal(&verifier)
        );
        // Role first: a database needs its owner. Each step is checked, so a second pass
        // over a half-made store completes it.
        if self
            .exists(&db, "SELECT 1 FROM pg_roles WHERE rolname = $1", &name)
            .await?
        {
            self.run(&db, &format!("ALTER ROLE {} {attributes}", ident(&name)))
                .await?;
        } else {
            self.run(&db, &format!("CREATE ROLE {} {attributes}", ident(&name)))
                .await?;
        }
        if !self
            .exists(&db, "SELECT 1 FROM pg_database WHERE datname = $1", &name)
            .await?
        {
            self.run(
                &db,
                &format!("CREATE DATABASE {} OWNER {}", ident(&name), ident(&name)),
            )
            .await?;
        }
        let (d, r) = (ident(&name), ident(&name));
        let owner = format!(
            "{}/{}",
            resource.namespace().unwrap_or_default(),
            resource.name_any()
        );
        self.run(
            &db,
            &format!(
                "ALTER DATABASE {d} OWNER TO {r}; \
                 REVOKE ALL ON DATABASE {d} FROM PUBLIC; \
                 GRANT CONNECT, TEMPORARY ON DATABASE {d} TO {r}; \
                 COMMENT ON DATABASE {d} IS {}",
                literal(&format!("flynn-resource={owner}"))
            ),
        )
        .await?;
        Ok(())
    }

    async fn deprovision_store(
        &self,
        resource: &Resource,
        policy: DeletionPolicy,
    ) -> Result<(), ProviderError> {
        let db = self.admin().await?;
        let name = store_name(resource);
        let has_db = self
            .exists(&db, "SELECT 1 FROM pg_database WHERE datname = $1", &name)
            .await?;
        let has_role = self
            .exists(&db, "SELECT 1 FROM pg_roles WHERE rolname = $1", &name)
            .await?;
        match (policy, has_db) {
            (DeletionPolicy::Retain, true) => {
                if has_role {
                    self.run(&db, &format!("ALTER ROLE {} NOLOGIN", ident(&name)))
                        .await?;
                }
                db.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                    &[&name],
                )
                .await
                .map_err(|e| {
                    unavailable(&self.settings, "could not end the role's sessions", &e)
                })?;
                // The first retention time stays: a deprovision run again must not
                // postpone the sweep.
                let comment: Option<String> = db
                    .query_one(
                        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
                        &[&name],
                    )
                    .await
                    .map_err(|e| unavailable(&self.settings, "could not be read", &e))?
                    .get(0);
                if !comment.is_some_and(|c| c.starts_with(RETAINED_PREFIX)) {
                    let stamp = format!(
                        "{RETAINED_PREFIX}{}; resource={}/{}",
                        Timestamp::now(),
                        resource.namespace().unwrap_or_default(),
                        resource.name_any()
                    );
                    self.run(
                        &db,
                        &format!(
                            "COMMENT ON DATABASE {} IS {}",
                            ident(&name),
                            literal(&stamp)
                        ),
                    )
                    .await?;
                }
                tracing::info!(database = %name, "retained");
            }
            // Delete, or Retain with nothing to keep (the database was never made).
            _ => {
                self.run(
                    &db,
                    &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(&name)),
                )
                .await?;
                self.run(&db, &format!("DROP ROLE IF EXISTS {}", ident(&name)))
                    .await?;
                tracing::info!(database = %name, "dropped");
            }
        }
        Ok(())
    }

    /// Drops the retained databases (and their roles) whose retention has passed; the
    /// names dropped.
    pub async fn sweep(&self, retention: Duration) -> Result<Vec<String>, ProviderError> {
        let db = self.admin().await?;
        let rows = db
            .query(
                "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database \
                 WHERE datname LIKE 'flynn\\_%'",
                &[],
            )
            .await
            .map_err(|e| unavailable(&self.settings, "could not list databases", &e))?;
        let now = Timestamp::now();
        let mut dropped = vec![];
        for row in rows {
            let name: String = row.get(0);
            let comment: Option<String> = row.get(1);
            let Some(at) = comment.as_deref().and_then(retained_at) else {
                continue;
            };
            let age = now.duration_since(at);
            if age.as_secs_f64() < retention.as_secs_f64() {
                continue;
            }
            self.run(
                &db,
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(&name)),
            )
            .await?;
            self.run(&db, &format!("DROP ROLE IF EXISTS {}", ident(&name)))
                .await?;
            tracing::info!(database = %name, retained_at = %at, "retention passed: dropped");
            dropped.push(name);
        }
        Ok(dropped)
    }
}

/// When a retained database's comment says it was retained.
fn retained_at(comment: &str) -> Option<Timestamp> {
    let rest = comment.strip_prefix(RETAINED_PREFIX)?;
    rest.split(';').next()?.trim().parse().ok()
}

impl ResourceProvider for Postgres {
    fn kind(&self) -> Provider {
        Provider::Postgres
    }

    fn disabled(&self) -> Option<String> {
        self.settings.host.is_none().then(|| {
            "this platform runs no Postgres service: the platform team enables it with the \
             chart value postgres.enabled=true (the operator then gets FLYNN_POSTGRES_HOST)"
                .to_owned()
        })
    }

    fn plans(&self) -> &[Plan] {
        PLANS
    }

    fn connection(&self, resource: &Resource) -> Connection {
        let name = store_name(resource);
        Connection {
            host: self.settings.host.clone().unwrap_or_default(),
            port: self.settings.port,
            username: name.clone(),
            database: Some(name.clone()),
            ids: [
                ("database".to_owned(), name.clone()),
                ("role".to_owned(), name),
            ]
            .into(),
        }
    }

    fn url(&self, c: &Connection, password: &str) -> String {
        format!(
            "postgres://{}:{}@{}:{}/{}",
            c.username,
            password,
            c.host,
            c.port,
            c.database.as_deref().unwrap_or_default()
        )
    }

    fn provision<'a>(
        &'a self,
        request: &'a Request<'a>,
    ) -> BoxFuture<'a, Result<Provisioned, ProviderError>> {
        async move {
            self.provision_store(request.resource, request.plan, request.password)
                .await?;
            Ok(Provisioned::Ready)
        }
        .boxed()
    }

    fn deprovision<'a>(
        &'a self,
        request: &'a Request<'a>,
        policy: DeletionPolicy,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        self.deprovision_store(request.resource, policy).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted_whatever_they_hold() {
        assert_eq!(ident("flynn_ab12"), "\"flynn_ab12\"");
        assert_eq!(ident("a\"; DROP ROLE x; --"), "\"a\"\"; DROP ROLE x; --\"");
        assert_eq!(literal("plain"), "'plain'");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("a\\'b"), "E'a\\\\''b'");
    }

    #[test]
    fn a_retained_comment_gives_its_time_and_other_comments_none() {
        let at = retained_at("flynn-retained-at=2026-12-08T01:00:00Z; resource=team/db").unwrap();
        assert_eq!(at.to_string(), "2026-12-08T01:00:00Z");
        assert!(retained_at("flynn-resource=team/db").is_none());
        assert!(retained_at("flynn-retained-at=yesterday; resource=team/db").is_none());
    }
}
