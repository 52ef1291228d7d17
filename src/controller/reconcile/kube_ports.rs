//! [`Ports`] for production: the Leaf client with this resource's account, the API server, the
//! Event publisher and the leader lease's fence.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use kube::api::{Api, Patch, PatchParams};

use super::status_patch::status_patch;
use crate::controller::Context;
use crate::controller::engine::Ports;
use crate::crd::{
    CredentialEventSummary, FIELD_MANAGER, TrimbleConnection, TrimbleConnectionStatus,
};
use crate::leaf::{
    Credential, CredentialEvent, LeafAccount, LeafError, Trimble, TrimbleCreateRequest,
};
use crate::reason::Reason;
use crate::secret::TrimbleSecret;

/// The IO of one reconcile of `tc`, as `account`.
pub(super) struct KubePorts<'a> {
    pub ctx: &'a Context,
    pub tc: Arc<TrimbleConnection>,
    pub api: Api<TrimbleConnection>,
    /// None when the resource has no usable account (the engine then never calls Leaf).
    pub account: Option<LeafAccount>,
    /// When the alert this reconcile answers arrived: the first status write that lands after
    /// it is the alert's answer (the time-from-alert-to-status histogram). Taken once.
    pub alert_at: Mutex<Option<Instant>>,
}

impl KubePorts<'_> {
    fn account(&self) -> Result<&LeafAccount, LeafError> {
        self.account.as_ref().ok_or_else(|| LeafError::Config {
            detail: "no Leaf account for this resource".to_string(),
        })
    }

    fn user(&self) -> &str {
        &self.tc.spec.leaf_user_id
    }

    /// The alert's answer, once: `result` is `written` (a status write landed), `unchanged` or
    /// `failed`.
    pub(super) fn alert_answered(&self, result: &'static str) {
        let taken = self.alert_at.lock().expect("alert_at lock").take();
        if let Some(at) = taken {
            self.ctx.metrics.alerts.alert_answered(result, at.elapsed());
        }
    }
}

impl Ports for KubePorts<'_> {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }

    fn may_write(&self) -> bool {
        let holds = self.ctx.fence.holds();
        if !holds {
            tracing::warn!(
                "leadership fence: not sending a Leaf write, this replica may no longer lead"
            );
        }
        holds
    }

    async fn get_credential(&self) -> Result<Option<Credential>, LeafError> {
        let account = self.account()?;
        self.ctx
            .leaf
            .get_credential::<Trimble>(account, self.user())
            .await
    }

    async fn create_credential(&self, secret: &TrimbleSecret) -> Result<Credential, LeafError> {
        let account = self.account()?;
        let request = TrimbleCreateRequest {
            client_id: secret.client_id.clone(),
            client_secret: secret.client_secret.clone(),
            refresh_token: secret.refresh_token.clone(),
        };
        self.ctx
            .leaf
            .create_credential::<Trimble>(account, self.user(), &request)
            .await
    }

    async fn delete_credential(&self) -> Result<(), LeafError> {
        let account = self.account()?;
        self.ctx
            .leaf
            .delete_credential::<Trimble>(account, self.user())
            .await
    }

    async fn credential_events(&self) -> Result<Vec<CredentialEvent>, LeafError> {
        let account = self.account()?;
        self.ctx
            .leaf
            .credential_events::<Trimble>(account, self.user())
            .await
    }

    async fn write_status(&self, status: &TrimbleConnectionStatus) -> Result<(), String> {
        let params = PatchParams {
            // Named, so managedFields say who wrote the status (not "unknown").
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        let name = self.tc.metadata.name.clone().unwrap_or_default();
        let patch = Patch::Merge(status_patch(status));
        // Bounded: a hanging API server must not hold a reconcile (and its permit) forever.
        let write = self.api.patch_status(&name, &params, &patch);
        match tokio::time::timeout(super::API_TIMEOUT, write).await {
            Ok(Ok(_)) => {
                self.alert_answered("written");
                Ok(())
            }
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("the API server did not answer in time".to_string()),
        }
    }

    async fn publish(&self, reason: Reason, action: &str, note: &str) {
        if reason == Reason::Rotated {
            self.ctx.metrics.record_rotation();
        }
        self.ctx
            .events
            .publish(&self.tc, reason, action, note)
            .await;
    }

    async fn publish_leaf_event(&self, event: &CredentialEventSummary) {
        self.ctx.events.publish_leaf_event(&self.tc, event).await;
    }
}
