//! The SSH host key: generated on first start and kept in a Secret, so clients see the
//! same key across restarts and reschedules (and never a "REMOTE HOST IDENTIFICATION HAS
//! CHANGED" warning).

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use russh::keys::PrivateKey;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};

/// Data key of the Secret: the OpenSSH private key.
pub const DATA_KEY: &str = "ssh_host_ed25519_key";

/// Why the host key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading host key Secret {namespace}/{name}: {source}")]
    Get {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating host key Secret {namespace}/{name}: {source}")]
    Create {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "host key Secret {namespace}/{name} has no valid data.{DATA_KEY} ({reason}): delete it to generate a new key (clients will see the key change)"
    )]
    Malformed {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error("generating a host key: {0}")]
    Generate(String),
}

/// Reads the host key from `namespace/name`, creating the Secret with a new Ed25519 key if
/// there is none. When two receivers race to create it, the loser reads the winner's key.
pub async fn load_or_create(api: &Api<Secret>, name: &str) -> Result<PrivateKey, Error> {
    let namespace = api.namespace().unwrap_or_default().to_owned();
    if let Some(secret) = get(api, name, &namespace).await? {
        return parse(&secret, &namespace, name);
    }
    let key = generate()?;
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| Error::Generate(e.to_string()))?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(
                [(
                    flynn_crds::labels::MANAGED_BY.to_owned(),
                    "flynn-gitreceiver".to_owned(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            [(
                DATA_KEY.to_owned(),
                k8s_openapi::ByteString(pem.as_bytes().to_vec()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %format!("{namespace}/{name}"), fingerprint = %key.public_key().fingerprint(Default::default()), "generated a new SSH host key");
            Ok(key)
        }
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            let secret = get(api, name, &namespace)
                .await?
                .ok_or_else(|| Error::Malformed {
                    namespace: namespace.clone(),
                    name: name.to_owned(),
                    reason: "created by someone else, then deleted".into(),
                })?;
            parse(&secret, &namespace, name)
        }
        Err(source) => Err(Error::Create {
            namespace,
            name: name.to_owned(),
            source,
        }),
    }
}

async fn get(api: &Api<Secret>, name: &str, namespace: &str) -> Result<Option<Secret>, Error> {
    api.get_opt(name).await.map_err(|source| Error::Get {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source,
    })
}

fn parse(secret: &Secret, namespace: &str, name: &str) -> Result<PrivateKey, Error> {
    let malformed = |reason: String| Error::Malformed {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        reason,
    };
    let pem = secret
        .data
        .as_ref()
        .and_then(|d| d.get(DATA_KEY))
        .ok_or_else(|| malformed("missing".into()))?;
    let key = PrivateKey::from_openssh(&pem.0).map_err(|e| malformed(e.to_string()))?;
    if key.algorithm() != russh::keys::Algorithm::Ed25519 {
        return Err(malformed(format!("{} is not ed25519", key.algorithm())));
    }
    Ok(key)
}

/// A new Ed25519 key from the operating system's randomness.
pub fn generate() -> Result<PrivateKey, Error> {
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| Error::Generate("the system random generator failed".into()))?;
    let pair = Ed25519Keypair::from_seed(&seed);
    PrivateKey::new(KeypairData::Ed25519(pair), "flynn-gitreceiver")
        .map_err(|e| Error::Generate(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_through_the_secret_format() {
        let key = generate().unwrap();
        let pem = key.to_openssh(LineEnding::LF).unwrap();
        let secret = Secret {
            data: Some(
                [(
                    DATA_KEY.into(),
                    k8s_openapi::ByteString(pem.as_bytes().to_vec()),
                )]
                .into(),
            ),
            ..Default::default()
        };
        let back = parse(&secret, "ns", "n").unwrap();
        assert_eq!(back.public_key(), key.public_key());
        assert_ne!(generate().unwrap().public_key(), key.public_key());
    }
}
