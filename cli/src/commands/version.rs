//! `version`: this client, the platform installed on the cluster, and Kubernetes.

use serde::Serialize;

use crate::context::Ctx;
use crate::errors::Result;
use crate::output::{self, Format};

#[derive(Debug, Serialize)]
pub struct Versions {
    pub client: String,
    /// From the platform ConfigMap; `None` when the platform is not installed.
    pub platform: Option<String>,
    /// The API server's `gitVersion`; `None` when it cannot be reached.
    pub kubernetes: Option<String>,
}

/// The client's version: the crate's, as every workspace crate shares one.
pub const CLIENT: &str = env!("CARGO_PKG_VERSION");

pub async fn version(ctx: Option<&Ctx>) -> Result<()> {
    let mut versions = Versions {
        client: CLIENT.to_owned(),
        platform: None,
        kubernetes: None,
    };
    let mut platform_note = "not installed".to_owned();
    let mut cluster_note = "no kubeconfig".to_owned();
    if let Some(ctx) = ctx {
        match ctx.client.apiserver_version().await {
            Ok(info) => {
                versions.kubernetes = Some(info.git_version);
                let platform = ctx.platform().await;
                versions.platform = platform.version().map(str::to_owned);
                if let Some(why) = platform.missing() {
                    platform_note = format!("unknown: flynn-system/flynn-platform {why}");
                }
            }
            Err(e) => {
                cluster_note = format!("unreachable ({e})");
                platform_note = "unknown (cluster unreachable)".into();
            }
        }
    }
    match ctx.map_or(Format::Table, |c| c.output) {
        Format::Table => output::print_out(&format!(
            "client:      flynn {}\nplatform:    {}\nkubernetes:  {}\n",
            versions.client,
            versions.platform.as_deref().unwrap_or(&platform_note),
            versions.kubernetes.as_deref().unwrap_or(&cluster_note),
        )),
        format => output::print_data(format, &versions),
    }
}
