//! `key add | list | remove`: the SSH key registry `git push` authenticates against.
//!
//! Each key is a Secret in the platform's keys namespace, written exactly as
//! gitreceiver/README.md specifies; the user and groups come from a SelfSubjectReview, so
//! the key maps to whoever the kubeconfig authenticates as.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use serde::Serialize;

use crate::cli::KeyCommand;
use crate::context::Ctx;
use crate::errors::{Error, Result};
use crate::output::{self, Format, Table, note};
use crate::sshkey::PublicKey;

pub use flynn_crds::ssh_key::{
    EXPIRES, FINGERPRINT, GROUPS, LABEL, PUBLIC_KEY as DATA_KEY, SECRET_TYPE, USER,
};

pub async fn run(ctx: &Ctx, command: &KeyCommand) -> Result<()> {
    let namespace = ctx.platform().await.keys_namespace()?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let (user, groups) = whoami(ctx).await?;
    match command {
        KeyCommand::Add { file, expires } => {
            let expires = expires
                .as_deref()
                .map(|e| {
                    flynn_crds::ssh_key::expiry_from(e, Timestamp::now()).map_err(|problem| {
                        Error::BadArgument {
                            arg: e.to_owned(),
                            problem,
                            example: "flynn key add --expires 90d".into(),
                        }
                    })
                })
                .transpose()?;
            add(ctx, &api, file.as_deref(), &user, &groups, expires).await
        }
        KeyCommand::List => list(ctx, &api, &user).await,
        KeyCommand::Remove { fingerprint } => remove(&api, fingerprint, &user).await,
    }
}

/// The current Kubernetes user and groups, as the API server sees them.
async fn whoami(ctx: &Ctx) -> Result<(String, Vec<String>)> {
    let review = Api::<SelfSubjectReview>::all(ctx.client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(Error::kube(
            "asking the API server who you are (SelfSubjectReview)",
        ))?;
    let info = review.status.and_then(|s| s.user_info).unwrap_or_default();
    Ok((
        info.username.unwrap_or_default(),
        info.groups.unwrap_or_default(),
    ))
}

/// `FILE`, else ~/.ssh/id_ed25519.pub, else ~/.ssh/id_rsa.pub.
fn key_file(file: Option<&Path>) -> Result<PathBuf> {
    if let Some(file) = file {
        return Ok(file.to_owned());
    }
    let ssh = PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".ssh");
    let candidates = [ssh.join("id_ed25519.pub"), ssh.join("id_rsa.pub")];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .ok_or_else(|| Error::NoKeyFile {
            looked_at: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The registry Secret for `key` owned by `user` (pure; the README's format): the groups
/// one per line, exactly as the API server listed them; a group that cannot be written so
/// (a newline in its name) is refused.
pub fn key_secret(
    key: &PublicKey,
    user: &str,
    groups: &[String],
    expires: Option<Timestamp>,
) -> Result<Secret> {
    let groups = flynn_crds::ssh_key::encode_groups(groups).map_err(|e| Error::BadArgument {
        arg: "your groups".into(),
        problem: e.to_string(),
        example: String::new(),
    })?;
    let mut annotations = BTreeMap::from([
        (USER.to_owned(), user.to_owned()),
        (GROUPS.to_owned(), groups),
        (FINGERPRINT.to_owned(), key.fingerprint()),
    ]);
    if let Some(at) = expires {
        annotations.insert(EXPIRES.to_owned(), at.to_string());
    }
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(key.secret_name()),
            labels: Some(BTreeMap::from([(LABEL.to_owned(), "true".to_owned())])),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        type_: Some(SECRET_TYPE.to_owned()),
        data: Some(BTreeMap::from([(
            DATA_KEY.to_owned(),
            ByteString(key.line().into_bytes()),
        )])),
        ..Secret::default()
    })
}

async fn add(
    ctx: &Ctx,
    api: &Api<Secret>,
    file: Option<&Path>,
    user: &str,
    groups: &[String],
    expires: Option<Timestamp>,
) -> Result<()> {
    let path = key_file(file)?;
    let text = std::fs::read_to_string(&path).map_err(|e| Error::BadKey {
        path: path.display().to_string(),
        problem: e.to_string(),
    })?;
    let key = PublicKey::parse(&text).map_err(|e| Error::BadKey {
        path: path.display().to_string(),
        problem: e.to_string(),
    })?;
    let fingerprint = key.fingerprint();
    let secret = key_secret(&key, user, groups, expires)?;
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            let existing = api
                .get(&key.secret_name())
                .await
                .map_err(Error::kube("reading the registered key"))?;
            let owner = existing
                .annotations()
                .get(USER)
                .cloned()
                .unwrap_or_default();
            if owner != user {
                return Err(Error::KeyTaken { fingerprint, owner });
            }
            // The user's own key: bring its groups (and expiry) up to date, which is how a
            // change of group membership reaches pushes (and how a key is renewed).
            let mut updated = secret;
            updated.metadata.resource_version = existing.metadata.resource_version.clone();
            api.replace(&key.secret_name(), &PostParams::default(), &updated)
                .await
                .map_err(Error::kube(format!("updating key {fingerprint}")))?;
            note(
                ctx.ui,
                &format!(
                    "key {fingerprint} was already registered for {user}: its groups{} are updated",
                    if expires.is_some() { " and expiry" } else { "" }
                ),
            );
            return Ok(());
        }
        Err(e) => return Err(Error::kube(format!("registering key {fingerprint}"))(e)),
    }
    let until = expires
        .map(|at| format!(", expires {at}"))
        .unwrap_or_default();
    output::print_out(&format!(
        "Added key {fingerprint} ({}) for {user}{until}\n",
        path.display()
    ))
}

/// One line of `flynn key list`.
#[derive(Debug, Serialize)]
pub struct KeyRow {
    pub fingerprint: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub comment: String,
    pub created: Option<String>,
    /// RFC 3339, when the key has an expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

fn key_row(secret: &Secret) -> KeyRow {
    let key = secret
        .data
        .as_ref()
        .and_then(|d| d.get(DATA_KEY))
        .and_then(|b| PublicKey::parse(&String::from_utf8_lossy(&b.0)).ok());
    KeyRow {
        fingerprint: secret
            .annotations()
            .get(FINGERPRINT)
            .cloned()
            .unwrap_or_default(),
        type_: key
            .as_ref()
            .map(|k| k.algorithm.clone())
            .unwrap_or_else(|| "?".into()),
        comment: key.map(|k| k.comment).unwrap_or_default(),
        created: output::created(&secret.metadata).map(|t| t.to_string()),
        expires: secret.annotations().get(EXPIRES).cloned(),
    }
}

/// The `flynn key list` table (pure, for golden tests).
pub fn keys_table(secrets: &[Secret], now: Timestamp) -> Table {
    let mut table = Table::new(["FINGERPRINT", "TYPE", "COMMENT", "AGE"]);
    for secret in secrets {
        let row = key_row(secret);
        table.row(vec![
            row.fingerprint,
            row.type_,
            row.comment,
            output::age(output::created(&secret.metadata), now),
        ]);
    }
    table
}

async fn own_keys(api: &Api<Secret>, user: &str) -> Result<Vec<Secret>> {
    let mut keys: Vec<Secret> = api
        .list(&ListParams::default().labels(&format!("{LABEL}=true")))
        .await
        .map_err(Error::kube("listing SSH keys"))?
        .items
        .into_iter()
        .filter(|s| s.annotations().get(USER).map(String::as_str) == Some(user))
        .collect();
    keys.sort_by_key(|s| s.annotations().get(FINGERPRINT).cloned());
    Ok(keys)
}

async fn list(ctx: &Ctx, api: &Api<Secret>, user: &str) -> Result<()> {
    let keys = own_keys(api, user).await?;
    match ctx.output {
        Format::Table if keys.is_empty() => {
            note(
                ctx.ui,
                &format!("no keys registered for {user}: add one with `flynn key add`"),
            );
            Ok(())
        }
        Format::Table => {
            output::print_out(&keys_table(&keys, Timestamp::now()).render(ctx.ui.color))
        }
        format => output::print_data(format, &keys.iter().map(key_row).collect::<Vec<_>>()),
    }
}

async fn remove(api: &Api<Secret>, fingerprint: &str, user: &str) -> Result<()> {
    let wanted = if fingerprint.starts_with("SHA256:") {
        fingerprint.to_owned()
    } else {
        format!("SHA256:{fingerprint}")
    };
    let keys = own_keys(api, user).await?;
    let Some(secret) = keys
        .iter()
        .find(|s| s.annotations().get(FINGERPRINT) == Some(&wanted))
    else {
        return Err(Error::KeyNotFound {
            fingerprint: wanted,
            user: user.to_owned(),
        });
    };
    api.delete(&secret.name_any(), &DeleteParams::default())
        .await
        .map_err(Error::kube(format!("removing key {wanted}")))?;
    output::print_out(&format!("Removed key {wanted}\n"))
}
