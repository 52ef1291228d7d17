//! [`Ports`] for production: the Leaf client with this resource's account, the API server, the
//! Event publisher and the leader lease's fence.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use secrecy::SecretString;

use super::status_patch::status_patch;
use crate::controller::Context;
use crate::controller::decide::reauth::ReauthSettings;
use crate::controller::decide::transitions::Notice;
use crate::controller::engine::{Ports, StatusWriteError};
use crate::controller::link_secret;
use crate::crd::{
    CredentialEventSummary, FIELD_MANAGER, TrimbleConnection, TrimbleConnectionStatus,
};
use crate::leaf::{
    Credential, CredentialEvent, Deleted, LeafAccount, LeafError, MagicLink, MagicLinkSettings,
    NewMagicLink, SendGuard, Trimble, TrimbleCreateRequest,
};
use crate::reason::Reason;
use crate::secret::TrimbleSecret;

/// How the reconcile an alert asked for answered it (the histogram's `result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AlertAnswer {
    /// A status write landed.
    Written,
    /// The look found nothing new to write.
    Unchanged,
    /// The reconcile was interrupted.
    Failed,
}

impl AlertAnswer {
    fn as_str(self) -> &'static str {
        match self {
            Self::Written => "written",
            Self::Unchanged => "unchanged",
            Self::Failed => "failed",
        }
    }
}

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

    /// The Secrets of the resource's namespace (its link Secret is one of them).
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(
            self.ctx.client.clone(),
            &self.tc.metadata.namespace.clone().unwrap_or_default(),
        )
    }

    /// The alert's answer, once.
    pub(super) fn alert_answered(&self, answer: AlertAnswer) {
        let taken = self.alert_at.lock().expect("alert_at lock").take();
        if let Some(at) = taken {
            self.ctx
                .metrics
                .alerts
                .alert_answered(answer.as_str(), at.elapsed());
        }
    }

    /// The client's guard for a write that may leave until `send_by`: that instant on the
    /// monotonic clock, and the fence, both checked right before every send.
    fn guard(&self, send_by: jiff::Timestamp) -> (Instant, impl Fn() -> bool + Send + Sync + '_) {
        let left = Duration::try_from(send_by.duration_since(jiff::Timestamp::now()))
            .unwrap_or(Duration::ZERO);
        let now = Instant::now();
        let deadline = now.checked_add(left).unwrap_or(now);
        (deadline, move || self.may_write())
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

    async fn create_credential(
        &self,
        secret: &TrimbleSecret,
        send_by: jiff::Timestamp,
    ) -> Result<Credential, LeafError> {
        let account = self.account()?;
        let request = TrimbleCreateRequest {
            client_id: secret.client_id.clone(),
            client_secret: secret.client_secret.clone(),
            refresh_token: secret.refresh_token.clone(),
        };
        let (deadline, may_send) = self.guard(send_by);
        let guard = SendGuard {
            deadline,
            may_send: &may_send,
        };
        self.ctx
            .leaf
            .create_credential::<Trimble>(account, self.user(), &request, &guard)
            .await
    }

    async fn delete_credential(&self, send_by: jiff::Timestamp) -> Result<Deleted, LeafError> {
        let account = self.account()?;
        let (deadline, may_send) = self.guard(send_by);
        let guard = SendGuard {
            deadline,
            may_send: &may_send,
        };
        self.ctx
            .leaf
            .delete_credential::<Trimble>(account, self.user(), &guard)
            .await
    }

    async fn credential_events(&self) -> Result<Vec<CredentialEvent>, LeafError> {
        let account = self.account()?;
        self.ctx
            .leaf
            .credential_events::<Trimble>(account, self.user())
            .await
    }

    async fn trimble_app_registered(&self, app_name: Option<&str>) -> Result<bool, LeafError> {
        let account = self.account()?;
        let keys = self.ctx.leaf.trimble_app_keys(account, app_name).await?;
        Ok(match app_name {
            Some(name) => keys.iter().any(|key| key.app_name == name),
            None => !keys.is_empty(),
        })
    }

    async fn create_magic_link(
        &self,
        settings: &ReauthSettings,
        send_by: jiff::Timestamp,
    ) -> Result<MagicLink, LeafError> {
        let account = self.account()?;
        let look = MagicLinkSettings {
            company_name: settings.settings.company_name.clone(),
            company_logo: settings.settings.company_logo.clone(),
            header_image: settings.settings.header_image.clone(),
            background_color: settings.settings.background_color.clone(),
            show_leaf_user_name: settings.settings.show_leaf_user_name,
            disconnect_enabled: settings.settings.disconnect_enabled,
        };
        let request = NewMagicLink {
            expires_in_seconds: settings.expires_in.as_secs(),
            settings: &look,
        };
        let (deadline, may_send) = self.guard(send_by);
        let guard = SendGuard {
            deadline,
            may_send: &may_send,
        };
        self.ctx
            .leaf
            .create_magic_link(account, self.user(), &request, &guard)
            .await
    }

    async fn user_magic_links(&self) -> Result<Vec<MagicLink>, LeafError> {
        let account = self.account()?;
        let links = self.ctx.leaf.list_magic_links(account).await?;
        // Leaf lists every link of the API account; a record without a user is kept (the
        // decisions narrow by time, and never claim a link of another user).
        Ok(links
            .into_iter()
            .filter(|link| {
                link.leaf_user_id
                    .as_deref()
                    .is_none_or(|user| user == self.user())
            })
            .collect())
    }

    async fn get_magic_link(&self, id: &SecretString) -> Result<Option<MagicLink>, LeafError> {
        let account = self.account()?;
        self.ctx.leaf.get_magic_link(account, id).await
    }

    async fn delete_magic_link(
        &self,
        id: &SecretString,
        send_by: jiff::Timestamp,
    ) -> Result<Deleted, LeafError> {
        let account = self.account()?;
        let (deadline, may_send) = self.guard(send_by);
        let guard = SendGuard {
            deadline,
            may_send: &may_send,
        };
        self.ctx.leaf.delete_magic_link(account, id, &guard).await
    }

    async fn link_secret_free(&self, name: &str) -> Result<bool, StatusWriteError> {
        let secrets = self.secrets();
        match tokio::time::timeout(super::API_TIMEOUT, secrets.get_opt(name)).await {
            Ok(Ok(None)) => Ok(true),
            Ok(Ok(Some(existing))) => Ok(link_secret::owned_by(&existing, &self.tc)),
            Ok(Err(error)) => Err(StatusWriteError::Refused(error.to_string())),
            Err(_) => Err(StatusWriteError::TimedOut),
        }
    }

    async fn write_link_secret(
        &self,
        name: &str,
        link: &MagicLink,
    ) -> Result<(), StatusWriteError> {
        let secrets = self.secrets();
        let write = link_secret::write(&secrets, &self.tc, name, link);
        match tokio::time::timeout(super::API_TIMEOUT, write).await {
            Ok(result) => result.map_err(|error| StatusWriteError::Refused(error.to_string())),
            Err(_) => Err(StatusWriteError::TimedOut),
        }
    }

    async fn delete_link_secret(&self, name: &str) -> Result<(), StatusWriteError> {
        let secrets = self.secrets();
        let delete = link_secret::delete(&secrets, &self.tc, name);
        match tokio::time::timeout(super::API_TIMEOUT, delete).await {
            Ok(result) => result.map_err(|error| StatusWriteError::Refused(error.to_string())),
            Err(_) => Err(StatusWriteError::TimedOut),
        }
    }

    async fn write_status(&self, status: &TrimbleConnectionStatus) -> Result<(), StatusWriteError> {
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
                self.alert_answered(AlertAnswer::Written);
                Ok(())
            }
            Ok(Err(error)) => Err(StatusWriteError::Refused(error.to_string())),
            Err(_) => Err(StatusWriteError::TimedOut),
        }
    }

    async fn publish(&self, notice: &Notice) {
        if notice.reason == Reason::Rotated {
            self.ctx.metrics.record_rotation();
        }
        self.ctx
            .events
            .publish(&self.tc, notice.reason, notice.action, &notice.note)
            .await;
    }

    async fn publish_leaf_event(&self, event: &CredentialEventSummary) {
        self.ctx.events.publish_leaf_event(&self.tc, event).await;
    }
}
