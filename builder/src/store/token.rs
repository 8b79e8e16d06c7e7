//! The slug store's token kept in a Secret that no chart render owns.
//!
//! The token is the store's bearer token *and* the key that signs every slug URL a Release
//! carries, so it must never change behind the platform's back. A Helm template that
//! generates it (`randAlphaNum`) regenerates it on `helm template`, an Argo CD sync or a
//! reinstall, and every Release's slug URL stops working. Instead the store creates it once,
//! at runtime, with [`ensure`] (`shelf --token-secret NAMESPACE/NAME`): a Secret labelled
//! `app.kubernetes.io/managed-by: flynn-shelf`, which Helm neither replaces nor deletes. The
//! git receiver, which signs the URLs, only reads it, with [`wait`].
//!
//! A Secret the platform team made (data key `token`, at least [`MIN_LEN`] characters) works
//! the same way: [`ensure`] reads it and never changes it.

use std::{fmt, str::FromStr, time::Duration};

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};

/// Data key of the token in the Secret.
pub const DATA_KEY: &str = "token";
/// Length of a token [`ensure`] generates (alphanumeric: about 285 bits).
pub const GENERATED_LEN: usize = 48;
/// Shortest token the store accepts (wherever it comes from).
pub const MIN_LEN: usize = 16;
/// Value of `app.kubernetes.io/managed-by` on the Secret [`ensure`] creates.
pub const MANAGED_BY: &str = "flynn-shelf";
/// Annotation describing the Secret [`ensure`] creates.
pub const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
const DESCRIPTION: &str = "The slug store's (shelf) bearer token and the key of every slug URL \
    Releases carry, created once by the store. Do not edit or delete it: every Release's slug \
    URL would stop working.";
/// How often [`wait`] looks again.
const POLL: Duration = Duration::from_secs(2);

/// `NAMESPACE/NAME` of the token Secret (the `--token-secret` flag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

impl FromStr for SecretRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
            {
                Ok(Self {
                    namespace: namespace.into(),
                    name: name.into(),
                })
            }
            _ => Err(format!("{s:?} is not <namespace>/<name>")),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why the token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading the slug store token Secret {namespace}/{name}: {source}")]
    Get {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("creating the slug store token Secret {namespace}/{name}: {source}")]
    Create {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "may not {verb} the slug store token Secret {namespace}/{name}: grant this ServiceAccount `{verb}` on Secrets in namespace {namespace} ({source})"
    )]
    Forbidden {
        verb: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "Secret {namespace}/{name} has no usable data.{DATA_KEY} ({reason}), and the slug store never overwrites it: put the token under the key `{DATA_KEY}` (at least {MIN_LEN} characters), name another Secret, or delete this one for the slug store to create it"
    )]
    Malformed {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error(
        "the slug store has not created Secret {namespace}/{name} after {}s: is it running, with --token-secret {namespace}/{name} (SHELF_TOKEN_SECRET)?{}",
        waited.as_secs(),
        last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
    )]
    Timeout {
        namespace: String,
        name: String,
        waited: Duration,
        /// The last API error while waiting, if the last attempt failed.
        last_error: Option<String>,
    },
    #[error("generating a slug store token: the system random generator failed")]
    Generate,
}

impl TokenError {
    fn from_kube(verb: &'static str, namespace: &str, name: &str, source: kube::Error) -> Self {
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        let forbidden = matches!(&source, kube::Error::Api(s) if s.is_forbidden());
        let source = Box::new(source);
        match (forbidden, verb) {
            (true, _) => Self::Forbidden {
                verb,
                namespace,
                name,
                source,
            },
            (_, "create") => Self::Create {
                namespace,
                name,
                source,
            },
            _ => Self::Get {
                namespace,
                name,
                source,
            },
        }
    }
}

/// The token in `namespace/name`, creating the Secret with a new random token if there is
/// none (the slug store's side). When two stores race to create it, the loser reads the
/// winner's. A Secret without a usable `token` is an error: it is never overwritten.
pub async fn ensure(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<String, TokenError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    // Created, deleted and created again between our get and create: give up after a few.
    for _ in 0..3 {
        if let Some(secret) = get(&api, namespace, name).await? {
            return parse(&secret, namespace, name);
        }
        let token = generate()?;
        match api
            .create(&PostParams::default(), &new_secret(name, &token))
            .await
        {
            Ok(_) => {
                tracing::info!(secret = %format!("{namespace}/{name}"), "created the slug store token");
                return Ok(token);
            }
            // Another replica was first: read its token.
            Err(kube::Error::Api(status)) if status.is_already_exists() => continue,
            Err(source) => return Err(TokenError::from_kube("create", namespace, name, source)),
        }
    }
    Err(TokenError::Malformed {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        reason: "it keeps being created and deleted by someone else".into(),
    })
}

/// The token in `namespace/name` once it exists (the readers' side: the slug store creates
/// it). Looks every 2 seconds, logging once that it waits; API errors other than a refusal
/// are retried. After `timeout`, [`TokenError::Timeout`]. A refusal (RBAC) and a Secret
/// without a usable token are errors at once: waiting would not fix them.
pub async fn wait(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<String, TokenError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut logged = false;
    loop {
        let last_error = match get(&api, namespace, name).await {
            Ok(Some(secret)) => return parse(&secret, namespace, name),
            Ok(None) => {
                if !logged {
                    tracing::info!(
                        secret = %format!("{namespace}/{name}"),
                        timeout = ?timeout,
                        "waiting for the slug store to create its token Secret"
                    );
                    logged = true;
                }
                None
            }
            Err(e @ TokenError::Forbidden { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "reading the slug store token failed; trying again");
                Some(e.to_string())
            }
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(TokenError::Timeout {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                waited: timeout,
                last_error,
            });
        }
        // The last look is at the deadline.
        tokio::time::sleep(POLL.min(deadline - now)).await;
    }
}

async fn get(api: &Api<Secret>, namespace: &str, name: &str) -> Result<Option<Secret>, TokenError> {
    api.get_opt(name)
        .await
        .map_err(|source| TokenError::from_kube("get", namespace, name, source))
}

/// The Secret [`ensure`] creates.
fn new_secret(name: &str, token: &str) -> Secret {
    use flynn_crds::labels::{MANAGED_BY as MANAGED_BY_LABEL, PART_OF};
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(
                [
                    (PART_OF.to_owned(), "flynn".to_owned()),
                    (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
                ]
                .into(),
            ),
            annotations: Some([(DESCRIPTION_ANNOTATION.to_owned(), DESCRIPTION.to_owned())].into()),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some([(DATA_KEY.to_owned(), ByteString(token.as_bytes().to_vec()))].into()),
        ..Default::default()
    }
}

/// The token of a Secret: `data.token`, surrounding whitespace removed (a file made with
/// `echo` ends in a newline), at least [`MIN_LEN`] characters.
pub fn parse(secret: &Secret, namespace: &str, name: &str) -> Result<String, TokenError> {
    let malformed = |reason: String| TokenError::Malformed {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        reason,
    };
    let raw = secret
        .data
        .as_ref()
        .and_then(|d| d.get(DATA_KEY))
        .ok_or_else(|| malformed("missing".into()))?;
    let token = std::str::from_utf8(&raw.0)
        .map_err(|_| malformed("not UTF-8".into()))?
        .trim();
    if token.is_empty() {
        return Err(malformed("empty".into()));
    }
    if token.len() < MIN_LEN {
        return Err(malformed(format!("{} characters", token.len())));
    }
    if token.chars().any(|c| c.is_control()) {
        return Err(malformed("it contains control characters".into()));
    }
    Ok(token.to_owned())
}

/// A new token: [`GENERATED_LEN`] characters from `[A-Za-z0-9]`, from the operating system's
/// randomness, unbiased (bytes of 248 and above are drawn again).
pub fn generate() -> Result<String, TokenError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // 248 = 4 * 62: below it, `b % 62` is uniform.
    const LIMIT: u8 = (256 - 256 % ALPHABET.len()) as u8;
    let rng = ring::rand::SystemRandom::new();
    let mut token = String::with_capacity(GENERATED_LEN);
    let mut buf = [0u8; 64];
    while token.len() < GENERATED_LEN {
        ring::rand::SecureRandom::fill(&rng, &mut buf).map_err(|_| TokenError::Generate)?;
        for b in buf {
            if b < LIMIT && token.len() < GENERATED_LEN {
                token.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_refs_are_namespace_slash_name() {
        assert_eq!(
            "flynn-system/flynn-shelf-token".parse::<SecretRef>(),
            Ok(SecretRef {
                namespace: "flynn-system".into(),
                name: "flynn-shelf-token".into()
            })
        );
        for bad in ["", "/", "name", "ns/", "/name", "a/b/c"] {
            let err = bad.parse::<SecretRef>().unwrap_err();
            assert!(err.contains("<namespace>/<name>"), "{bad}: {err}");
        }
        let r: SecretRef = "a/b".parse().unwrap();
        assert_eq!(r.to_string(), "a/b");
    }

    #[test]
    fn generated_tokens_are_48_alphanumerics_and_differ() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), GENERATED_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
        // All 62 characters turn up (the alphabet is not cut short).
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            seen.extend(generate().unwrap().chars());
        }
        assert_eq!(seen.len(), 62);
    }

    #[test]
    fn the_created_secret_is_labelled_and_parses_back() {
        let secret = new_secret("flynn-shelf-token", "0123456789abcdefXYZ");
        let labels = secret.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/part-of"], "flynn");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "flynn-shelf");
        assert!(
            secret.metadata.annotations.as_ref().unwrap()[DESCRIPTION_ANNOTATION].contains("slug")
        );
        assert_eq!(
            parse(&secret, "ns", "flynn-shelf-token").unwrap(),
            "0123456789abcdefXYZ"
        );
    }

    #[test]
    fn unusable_tokens_are_refused_with_what_to_fix() {
        let with = |data: Option<&[u8]>| Secret {
            data: data.map(|d| [(DATA_KEY.to_owned(), ByteString(d.to_vec()))].into()),
            ..Default::default()
        };
        for (secret, why) in [
            (with(None), "missing"),
            (with(Some(b"  \n")), "empty"),
            (with(Some(b"short")), "5 characters"),
            (with(Some(b"\xff\xfe0123456789abcdef")), "not UTF-8"),
            (with(Some(b"0123456789\x00abcdef")), "control"),
        ] {
            let err = parse(&secret, "flynn-system", "tok")
                .unwrap_err()
                .to_string();
            assert!(err.contains("Secret flynn-system/tok"), "{err}");
            assert!(err.contains(why), "{err}");
            assert!(err.contains("never overwrites it"), "{err}");
        }
        // A trailing newline (`echo token > file`) is not part of the token.
        assert_eq!(
            parse(&with(Some(b"0123456789abcdef\n")), "n", "s").unwrap(),
            "0123456789abcdef"
        );
    }

    #[test]
    fn the_timeout_says_what_to_check() {
        let err = TokenError::Timeout {
            namespace: "flynn-system".into(),
            name: "flynn-shelf-token".into(),
            waited: Duration::from_secs(300),
            last_error: None,
        }
        .to_string();
        assert!(
            err.starts_with("the slug store has not created Secret flynn-system/flynn-shelf-token after 300s: is it running"),
            "{err}"
        );
    }
}
