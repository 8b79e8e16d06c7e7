//! Helpers for tests against a real Kubernetes API server.
//!
//! Tests that need a cluster use the local one from `e2e/cluster/up` (or any cluster the
//! kubeconfig points at). They never skip: without an API server they fail with a message
//! saying how to start one.
//!
//! ```no_run
//! # async fn example() {
//! use flynn_e2e::{TestNamespace, install_flynn_crds};
//!
//! let ns = TestNamespace::create("my-test").await;
//! install_flynn_crds(ns.client()).await.unwrap();
//! let apps = ns.api::<flynn_crds::App>();
//! // ... the namespace is deleted when `ns` is dropped.
//! # }
//! ```

use std::{path::Path, time::Duration};

use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config, Resource,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::wait::{await_condition, conditions},
};
use rand::Rng;

/// The kubeconfig `e2e/cluster/up` writes; used when `KUBECONFIG` is unset.
pub const LOCAL_CLUSTER_KUBECONFIG: &str = "/var/lib/flynn-cluster/admin.kubeconfig";
/// The field manager of everything these helpers apply.
pub const FIELD_MANAGER: &str = "flynn-e2e";
/// Label on every test namespace (value `true`), so leftovers are easy to find:
/// `kubectl delete ns -l flynn.io/test=true`.
pub const TEST_LABEL: &str = flynn_crds::labels::TEST;

/// How long to wait for the API server to answer before declaring there is none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a CRD may take to become Established.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a test could not get a cluster or set it up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No API server answered (or there is no usable kubeconfig).
    #[error(
        "no Kubernetes API server: start the local cluster with `export KUBECONFIG=$(e2e/cluster/up)` ({0})"
    )]
    NoCluster(String),
    /// The API server refused or failed a request.
    #[error("{action}: {source}")]
    Kube {
        /// What the helper was doing.
        action: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// Watching a CRD for its Established condition failed.
    #[error("watching CustomResourceDefinition {name}: {source}")]
    Watch {
        /// The CRD's name.
        name: String,
        /// The watch's error.
        #[source]
        source: kube::runtime::wait::Error,
    },
    /// A CRD did not become Established in time.
    #[error("CustomResourceDefinition {0} did not become Established within {ESTABLISH_TIMEOUT:?}")]
    NotEstablished(String),
}

fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube { action, source }
}

/// Client configuration for tests: `KUBECONFIG` if set, else the local cluster's kubeconfig if
/// it exists, else kube's usual inference (`~/.kube/config`, in-cluster).
pub async fn config() -> Result<Config, Error> {
    let local = Path::new(LOCAL_CLUSTER_KUBECONFIG);
    let config = if std::env::var_os("KUBECONFIG").is_none() && local.exists() {
        let kubeconfig = Kubeconfig::read_from(local)
            .map_err(|e| Error::NoCluster(format!("{}: {e}", local.display())))?;
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| Error::NoCluster(e.to_string()))?
    } else {
        Config::infer()
            .await
            .map_err(|e| Error::NoCluster(e.to_string()))?
    };
    Ok(config)
}

/// A client for a reachable API server, or [`Error::NoCluster`].
pub async fn client() -> Result<Client, Error> {
    connect(config().await?).await
}

async fn connect(config: Config) -> Result<Client, Error> {
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| Error::NoCluster(format!("{url}: {e}")))?;
    match tokio::time::timeout(CONNECT_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(e)) => Err(Error::NoCluster(format!("{url}: {e}"))),
        Err(_) => Err(Error::NoCluster(format!(
            "{url}: no answer within {CONNECT_TIMEOUT:?}"
        ))),
    }
}

/// A namespace of its own for one test, deleted when dropped.
///
/// Named `t-<test name>-<random>` and labelled [`TEST_LABEL`]`=true`. Tests in one binary run
/// in parallel, each in its own namespace, so they never see each other's objects.
pub struct TestNamespace {
    client: Client,
    config: Config,
    name: String,
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TestNamespace {
    /// Creates the namespace; panics with [`Error`]'s message if there is no cluster, so the
    /// test fails (never skips) and says how to start one.
    pub async fn create(test_name: &str) -> Self {
        match Self::try_create(test_name).await {
            Ok(ns) => ns,
            Err(err) => panic!("{err}"),
        }
    }

    /// Creates the namespace, or says why it could not.
    pub async fn try_create(test_name: &str) -> Result<Self, Error> {
        let config = config().await?;
        let client = connect(config.clone()).await?;
        let name = namespace_name(test_name, &mut rand::rng());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_LABEL.to_owned(), "true".to_owned())].into()),
                annotations: Some([("flynn.io/test-name".to_owned(), test_name.to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(kube_err(format!("creating namespace {name}")))?;
        Ok(Self {
            client,
            config,
            name,
        })
    }

    /// The client the namespace was created with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An `Api` for a namespaced kind in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    /// Deletes the namespace (without waiting for its contents to be finalized).
    ///
    /// `Drop` cannot await, and the test's runtime may be a current-thread one that is blocked
    /// right here, so the delete runs on a thread of its own with its own runtime and its own
    /// client (a `Client` is tied to the runtime that created it). The thread is joined, so the
    /// request is sent before the test process can exit.
    fn drop(&mut self) {
        let config = self.config.clone();
        let name = std::mem::take(&mut self.name);
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let client = Client::try_from(config).map_err(|e| e.to_string())?;
                match Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
                    Err(e) => Err(format!("deleting namespace {name}: {e}")),
                }
            })
        })
        .join();
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: test namespace left behind: {e}"),
            Err(_) => {
                eprintln!("warning: test namespace left behind: the deleting thread panicked")
            }
        }
    }
}

/// `t-<test name, sanitized>-<6 random>`, at most 63 characters, a valid namespace name.
fn namespace_name(test_name: &str, rng: &mut impl Rng) -> String {
    let mut slug = String::new();
    for c in test_name.chars().map(|c| c.to_ascii_lowercase()) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.truncate(48);
    let slug = slug.trim_matches('-');
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let suffix: String = (0..6)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    if slug.is_empty() {
        format!("t-{suffix}")
    } else {
        format!("t-{slug}-{suffix}")
    }
}

/// Server-side applies CRDs (field manager [`FIELD_MANAGER`], forced) and waits until each is
/// Established.
///
/// Idempotent, and safe when several tests call it at once: applying the same object with the
/// same field manager is a no-op.
pub async fn apply_crds(client: &Client, crds: &[CustomResourceDefinition]) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(crd))
            .await
            .map_err(kube_err(format!(
                "applying CustomResourceDefinition {name}"
            )))?;
    }
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        match tokio::time::timeout(ESTABLISH_TIMEOUT, established).await {
            Ok(Ok(_)) => {}
            Ok(Err(source)) => return Err(Error::Watch { name, source }),
            Err(_) => return Err(Error::NotEstablished(name)),
        }
    }
    Ok(())
}

/// [`apply_crds`] with every Flynn CRD ([`flynn_crds::crds`]).
pub async fn install_flynn_crds(client: &Client) -> Result<(), Error> {
    apply_crds(client, &flynn_crds::crds()).await
}

/// The image of the cluster tests: Debian bookworm with busybox (`busybox httpd` serves
/// `/www/index.html`, which says [`SMOKE_PAGE`]).
pub const SMOKE_IMAGE: &str = "localhost/flynn-smoke:1";
/// What the smoke image's page says.
pub const SMOKE_PAGE: &str = "hello from flynn-smoke";

/// Builds and imports the test images into the local node (idempotent; fast once built),
/// so a test also runs on its own under `cargo test`. Panics, saying how to fix it, when
/// the node is not running.
pub fn ensure_test_images() {
    run_image_script(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/cluster/test-images")),
        &[],
    );
}

/// Builds the slugbuilder and slugrunner images from the `slugbuilder`, `slugrunner` and
/// `shelf` binaries in `bin_dir` (the ones cargo built for the test, so it checks this
/// code, not a stale image) and imports them as `localhost/flynn-{slugbuilder,slugrunner}:TAG`.
/// Blocking; panics, saying how to fix it, when the node is not running.
pub fn load_builder_images(bin_dir: &std::path::Path, tag: &str) {
    let script = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../builder/image/build"
    ));
    run_image_script(
        script,
        &[
            "--bin-dir".as_ref(),
            bin_dir.as_os_str(),
            "--tag".as_ref(),
            tag.as_ref(),
        ],
    );
}

fn run_image_script(script: &std::path::Path, args: &[&std::ffi::OsStr]) {
    let out = std::process::Command::new(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}; is the node up? run `e2e/cluster/up`):\n{}{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `get` until `done` holds for what it returns, or panics after `timeout` with
/// `what` and the last value seen (so a failing test shows the state it got stuck in).
pub async fn eventually<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut get: F,
    done: impl Fn(&T) -> bool,
) -> T
where
    T: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let value = get().await;
        if done(&value) {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {value:#?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The cluster's own helm (`e2e/cluster/up` builds it into the cache), as a command.
/// Panics, saying how to get it, when it is missing.
pub fn helm() -> std::process::Command {
    let cache = std::env::var("FLYNN_CACHE")
        .unwrap_or_else(|_| format!("{}/.cache/flynn", std::env::var("HOME").unwrap_or_default()));
    let helm = format!("{cache}/cluster-bin/helm");
    assert!(
        Path::new(&helm).exists(),
        "{helm} is missing: run e2e/cluster/up (e2e/test does), which builds it"
    );
    std::process::Command::new(helm)
}

/// A loopback TCP port nothing listens on, for a server a test starts and that binds it
/// later. Chosen below the kernel's ephemeral range: a port from `bind(":0")` is only free
/// until an outgoing connection takes it as its local port, and a server that binds
/// seconds later (SeaweedFS's S3 gateway starts once its filer has joined) then fails with
/// "address already in use" (it did, in CI). Below 30000 too, clear of NodePorts. No port
/// is handed out twice by one test process, so parallel tests do not pick the same one.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let high = ephemeral_low.min(30000);
    let mut given = GIVEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut rng = rand::rng();
    for _ in 0..1000 {
        if high <= 11000 {
            break;
        }
        let port = rng.random_range(10000..high);
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    // An unusual ephemeral range: the kernel's pick, with the race above.
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a loopback port")
}

/// Whether `user` (e.g. `system:serviceaccount:flynn-system:flynn-router`) may `verb`
/// `resource` (`group` "" for the core group) in `namespace` (None: cluster-wide), as the
/// API server's authorizer answers a SubjectAccessReview: what `kubectl auth can-i --as`
/// asks.
pub async fn can_i(
    client: &Client,
    user: &str,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> bool {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    // A ServiceAccount's requests carry its groups too; RBAC may bind them.
    let groups = user
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .map(|(ns, _)| {
            vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".to_owned(),
            ]
        });
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            groups,
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.to_owned()),
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                namespace: namespace.map(str::to_owned),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api
        .create(&kube::api::PostParams::default(), &review)
        .await
        .unwrap_or_else(|e| panic!("SubjectAccessReview for {user} {verb} {resource}: {e}"));
    answer.status.is_some_and(|s| s.allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_are_valid_labels() {
        let mut rng = rand::rng();
        for test in [
            "examples_are_accepted",
            "Weird Name!!",
            "",
            "-",
            &"x".repeat(100),
            "a::b::c",
        ] {
            let name = namespace_name(test, &mut rng);
            assert!(name.len() <= 63, "{name}");
            assert_eq!(
                flynn_crds::validation::validate_dns_label(&name),
                Ok(()),
                "{test:?} -> {name}"
            );
            assert!(name.starts_with("t-"));
        }
        assert!(namespace_name("a::b", &mut rng).starts_with("t-a-b-"));
    }

    #[test]
    fn names_differ_between_calls() {
        let mut rng = rand::rng();
        assert_ne!(
            namespace_name("same", &mut rng),
            namespace_name("same", &mut rng)
        );
    }

    #[test]
    fn no_cluster_error_says_how_to_start_one() {
        let msg = Error::NoCluster("connection refused".into()).to_string();
        assert!(msg.starts_with("no Kubernetes API server: start the local cluster with `export KUBECONFIG=$(e2e/cluster/up)`"));
        assert!(msg.ends_with("(connection refused)"));
    }
}
