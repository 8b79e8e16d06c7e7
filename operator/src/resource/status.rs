//! A Resource's status: built up by the reconcile, written once at its end, with an Event
//! when `Ready` changes reason.

use flynn_crds::conditions::{self, reasons, types};
use flynn_crds::resource::{Resource, ResourceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::{Error, ResourceContext};
use crate::FIELD_MANAGER;

/// The status a reconcile writes, starting from what the Resource has.
#[derive(Debug)]
pub struct Report {
    resource: Resource,
    pub status: ResourceStatus,
}

impl Report {
    pub fn new(r: &Resource) -> Self {
        let mut status = r.status.clone().unwrap_or_default();
        status.env = Some(r.env_name().to_owned());
        status.observed_generation = r.metadata.generation;
        Self {
            resource: r.clone(),
            status,
        }
    }

    /// Writes `Ready=False` with `reason` and `message`; then `action`.
    pub async fn not_ready(
        &mut self,
        ctx: &ResourceContext,
        reason: &str,
        message: String,
        action: Action,
    ) -> Result<Action, Error> {
        self.write(ctx, false, reason, message).await?;
        Ok(action)
    }

    /// Writes `Ready=True` (`Provisioned`); then `action`.
    pub async fn ready(
        &mut self,
        ctx: &ResourceContext,
        message: String,
        action: Action,
    ) -> Result<Action, Error> {
        self.write(ctx, true, reasons::PROVISIONED, message).await?;
        Ok(action)
    }

    async fn write(
        &mut self,
        ctx: &ResourceContext,
        ready: bool,
        reason: &str,
        message: String,
    ) -> Result<(), Error> {
        let r = &self.resource;
        let before = conditions::find(&self.status.conditions, types::READY).cloned();
        conditions::set(
            &mut self.status.conditions,
            conditions::new(
                types::READY,
                ready,
                reason,
                message.clone(),
                r.metadata.generation,
                Time(k8s_openapi::jiff::Timestamp::now()),
            ),
        );
        if r.status.as_ref() == Some(&self.status) {
            return Ok(());
        }
        let api: Api<Resource> =
            Api::namespaced(ctx.base.client.clone(), &r.namespace().unwrap_or_default());
        let patch = serde_json::json!({
            "apiVersion": "flynn.io/v1alpha1",
            "kind": "Resource",
            "status": self.status,
        });
        match api
            .patch_status(
                &r.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(patch),
            )
            .await
        {
            Ok(_) => {}
            // Gone meanwhile (its finalizer was removed): nothing to say.
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(source) => {
                return Err(Error::Kube {
                    action: format!("writing status of Resource {}", r.name_any()),
                    source,
                });
            }
        }
        if before.as_ref().map(|c| c.reason.as_str()) != Some(reason) {
            let warning = !ready && ![reasons::PROVISIONING, reasons::DELETING].contains(&reason);
            ctx.base.event(r, warning, reason, message).await;
        }
        Ok(())
    }
}
