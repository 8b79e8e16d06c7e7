//! A Resource's credentials Secret (`<resource>-credentials`, type
//! `flynn.io/resource-credentials`, keys in `flynn_crds::resource::secret_keys`): where the
//! password is drawn and kept. It is written before the provider makes anything, and its
//! password is kept as long as it exists, so the store and the Secret always agree after
//! the provider's next pass.

use std::collections::BTreeMap;

use flynn_crds::labels;
use flynn_crds::resource::{Resource, SECRET_TYPE, secret_keys, secret_name};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use ring::rand::{SecureRandom, SystemRandom};

use super::provider::{Connection, ResourceProvider};
use super::redis::RESOURCE_LABEL;

/// Characters of a password: letters and digits, so it needs no escaping in a URL, a
/// `redis.conf` or a shell.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// 32 of 62 characters: about 190 bits.
const PASSWORD_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "Secret {secret} exists and was not made for Resource {resource} (its controller \
         owner is another object or none): Flynn will not take over or overwrite it; delete \
         or rename it, and the Resource gets its credentials there"
    )]
    NotOurs { secret: String, resource: String },
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("the operating system's random number generator failed")]
    Random,
}

/// The credentials as the controller uses them.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub name: String,
    pub password: String,
    pub url: String,
}

/// A new password from the OS's CSPRNG (rejection sampling: every character equally likely).
pub fn password() -> Result<String, Error> {
    let rng = SystemRandom::new();
    let mut out = String::with_capacity(PASSWORD_LEN);
    let limit = 256 - 256 % ALPHABET.len();
    while out.len() < PASSWORD_LEN {
        let mut buf = [0u8; 64];
        rng.fill(&mut buf).map_err(|_| Error::Random)?;
        for b in buf {
            if usize::from(b) < limit && out.len() < PASSWORD_LEN {
                out.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
    }
    Ok(out)
}

/// The data of the Secret for `connection` with `password`.
pub fn data(
    provider: &dyn ResourceProvider,
    connection: &Connection,
    password: &str,
) -> BTreeMap<String, ByteString> {
    let mut d = BTreeMap::from([
        (secret_keys::URL, provider.url(connection, password)),
        (secret_keys::HOST, connection.host.clone()),
        (secret_keys::PORT, connection.port.to_string()),
        (secret_keys::USERNAME, connection.username.clone()),
        (secret_keys::PASSWORD, password.to_owned()),
    ]);
    if let Some(db) = &connection.database {
        d.insert(secret_keys::DATABASE, db.clone());
    }
    d.into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes())))
        .collect()
}

/// Whether `secret` is `r`'s (its controller owner is `r`, by uid).
fn is_ours(secret: &Secret, r: &Resource) -> bool {
    secret.owner_references().iter().any(|o| {
        o.controller == Some(true)
            && o.kind == "Resource"
            && Some(&o.uid) == r.metadata.uid.as_ref()
    })
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .filter(|v| !v.is_empty())
}

/// The Secret of `r` (pure).
pub fn build(r: &Resource, data: BTreeMap<String, ByteString>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(&r.name_any())),
            namespace: r.namespace(),
            labels: Some(BTreeMap::from([
                (labels::APP.to_owned(), r.spec.app.clone()),
                (RESOURCE_LABEL.to_owned(), r.name_any()),
                (
                    labels::MANAGED_BY.to_owned(),
                    labels::MANAGED_BY_FLYNN.to_owned(),
                ),
            ])),
            owner_references: Some(vec![OwnerReference {
                api_version: "flynn.io/v1alpha1".into(),
                kind: "Resource".into(),
                name: r.name_any(),
                uid: r.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        type_: Some(SECRET_TYPE.into()),
        data: Some(data),
        ..Default::default()
    }
}

/// Writes `r`'s credentials Secret: made with a new password when missing; its other keys
/// brought up to date (the service moved) keeping the password it has.
#[tracing::instrument(skip_all, fields(resource = %r.name_any()))]
pub async fn ensure(
    client: &kube::Client,
    r: &Resource,
    provider: &dyn ResourceProvider,
    connection: &Connection,
) -> Result<Credentials, Error> {
    let name = secret_name(&r.name_any());
    let api: Api<Secret> = Api::namespaced(client.clone(), &r.namespace().unwrap_or_default());
    let kube_err = |action: &'static str| {
        let name = name.clone();
        move |source| Error::Kube {
            action: format!("{action} Secret {name}"),
            source,
        }
    };
    let existing = api.get_opt(&name).await.map_err(kube_err("reading"))?;
    let password = match &existing {
        Some(s) if !is_ours(s, r) => {
            return Err(Error::NotOurs {
                secret: name,
                resource: r.name_any(),
            });
        }
        Some(s) => match text(s, secret_keys::PASSWORD) {
            Some(p) => p,
            None => password()?,
        },
        None => password()?,
    };
    let want = data(provider, connection, &password);
    match existing {
        None => {
            api.create(&PostParams::default(), &build(r, want))
                .await
                .map_err(kube_err("creating"))?;
            tracing::info!(secret = %name, "credentials written");
        }
        Some(mut s)
            if s.data.as_ref() != Some(&want) || s.type_.as_deref() != Some(SECRET_TYPE) =>
        {
            if s.type_.as_deref() != Some(SECRET_TYPE) {
                // The type cannot change: made again.
                api.delete(&name, &Default::default())
                    .await
                    .map_err(kube_err("replacing"))?;
                api.create(&PostParams::default(), &build(r, want))
                    .await
                    .map_err(kube_err("creating"))?;
            } else {
                s.data = Some(want);
                api.replace(&name, &PostParams::default(), &s)
                    .await
                    .map_err(kube_err("updating"))?;
            }
        }
        Some(_) => {}
    }
    let url = provider.url(connection, &password);
    Ok(Credentials {
        name,
        password,
        url,
    })
}

/// `r`'s credentials as its Secret holds them, if it exists and is `r`'s.
pub async fn read(client: &kube::Client, r: &Resource) -> Result<Option<Credentials>, Error> {
    let name = secret_name(&r.name_any());
    let api: Api<Secret> = Api::namespaced(client.clone(), &r.namespace().unwrap_or_default());
    let found = api.get_opt(&name).await.map_err(|source| Error::Kube {
        action: format!("reading Secret {name}"),
        source,
    })?;
    Ok(found.filter(|s| is_ours(s, r)).and_then(|s| {
        Some(Credentials {
            name: name.clone(),
            password: text(&s, secret_keys::PASSWORD)?,
            url: text(&s, secret_keys::URL)?,
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_letters_and_digits_and_differ() {
        let a = password().unwrap();
        let b = password().unwrap();
        assert_eq!(a.len(), PASSWORD_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }
}
