//! The TrimbleConnection controller: the shared [`Context`], the watches and [`run`].
//!
//! One kube-runtime `Controller` per watch scope (all namespaces, or one per listed namespace so
//! that a namespaced install needs no cluster-wide RBAC). Each also watches Secrets as metadata
//! only and maps a changed Secret to the TrimbleConnections that reference it through its store
//! ([`secret_triggers`]: one scan per change, one per listing).
//! What a reconcile does is decided by the pure [`decide`] and carried out by [`engine`] through
//! its IO ports; [`reconcile`] binds both to kube-runtime; what it writes is computed by the pure
//! [`status`].
//!
//! Choices where the contract is silent:
//! - Deleting a suspended resource with `deletionPolicy: Delete` still deletes the Leaf
//!   credential: the deletion is the user's explicit, later request.
//! - A missing or unusable Leaf account during deletion (its Secret already gone, as when a whole
//!   namespace is deleted) never blocks: the credential is left in Leaf and a Warning Event says so.
//! - Leaf refusing a POST (`CredentialRejected`) marks those Secret values as used: they are not
//!   sent again, even on `reconcile-requested-at`, until the Secret changes.
//! - A credential that vanished from Leaf is `CredentialInvalid` (a person must supply a new
//!   refresh token; the old one was consumed), never silently re-created from the same values.
//! - `suspend` is not an answer to `reconcile-requested-at`: the annotation is echoed only once a
//!   reconcile actually runs.
//! - `Ready` is `Unknown` only for a Leaf status the operator does not know; `Suspended` and every
//!   waiting state are `False` (kstatus reads that as "in progress").
//! - `Reconciling=True` accompanies Creating, Rotating, Deleting, LeafUnavailable and
//!   SecretNotFound; `Stalled=True` the reasons `Reason::is_stalled` lists.
//! - With a list of namespaces, one controller runs per namespace (no cluster-wide RBAC needed);
//!   a semaphore makes `--concurrency` a bound for the whole process, and the conflict check
//!   looks across all their stores, and waits until every one of them has synced.
//! - `--label-selector` narrows the TrimbleConnection watch to this deployment's shard; the
//!   conflict check sees only the shard's objects (a Leaf user must stay within one shard).
//! - Alerts reach the controller through three small pieces: the [`credential_index`] fed by an
//!   `inspect` on the watch stream, [`hints`] (a taken hint bypasses the schedule once) and
//!   [`trigger`] (`reconcile_on`).

pub mod backoff;
pub mod conflict;
pub mod credential_index;
pub mod decide;
pub mod engine;
pub mod events;
pub mod hints;
pub mod link_secret;
pub mod polling;
pub mod reconcile;
pub mod secret_triggers;
pub mod status;
pub mod trigger;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;
use kube::runtime::{Controller, WatchStreamExt, controller, reflector, watcher};

use crate::crd::TrimbleConnection;
use crate::default_account::DefaultAccount;
use crate::leader::Fence;
use crate::leaf::LeafClient;
use crate::metrics::Metrics;
use crate::reason::{CONDITION_READY, CONDITION_STALLED};

pub use reconcile::Error;

/// How the reconciles of one process behave, beyond the Leaf client and the API server.
pub struct Settings {
    /// The operator's own Leaf account, for resources without `leafAuthSecretRef` (read anew at
    /// every use: a mounted Secret rotates without a restart).
    pub default_account: DefaultAccount,
    /// Leadership: whether a Leaf write may be sent now.
    pub fence: Fence,
    /// The send deadline, the window of a write in doubt and the read-lag allowance.
    pub windows: decide::Windows,
    /// The per-object schedules (see [`backoff::Schedules::with_interval_override`] for tests).
    pub schedules: backoff::Schedules,
    /// How many reconciles may run at once (`--concurrency`), in each controller and in the
    /// whole process.
    pub concurrency: u16,
    /// Label selector of the TrimbleConnection watch (`--label-selector`): this shard's share.
    pub label_selector: Option<String>,
    /// Whether Leaf's alerts are healthy, when the alerts receiver is configured (None: alerts
    /// are off and every resource is checked at its own interval). The alerts module reports to
    /// the same value; the schedule only reads it.
    pub alerts_health: Option<Arc<polling::AlertsHealth>>,
    /// `--observe-only`: every resource is handled as `managementPolicy: Observe`.
    pub observe_only: bool,
    /// `--reauthorization-default`: the policy of resources without `spec.reauthorization`.
    pub reauthorization_default: crate::crd::ReauthorizationPolicy,
}

/// Everything a reconcile needs, shared by all of them.
///
/// Every field is set by [`Context::new`] from its [`Settings`]; no other module assigns one
/// later. What changes while the process runs changes inside its own type: the stores and the
/// synced flag (written by [`run`]), the hints, the credential index and the triggers.
pub struct Context {
    pub client: Client,
    pub leaf: LeafClient,
    /// The operator's own Leaf account, for resources without `leafAuthSecretRef`.
    pub default_account: DefaultAccount,
    pub metrics: Arc<Metrics>,
    pub events: events::Events,
    pub schedules: backoff::Schedules,
    /// Leadership: checked immediately before every Leaf write.
    pub fence: Fence,
    /// The send deadline, the window of a write in doubt and the read-lag allowance.
    pub windows: decide::Windows,
    /// The stores of the running controllers: the conflict check looks across all of them.
    pub stores: RwLock<Vec<Store<TrimbleConnection>>>,
    /// Every store has synced since the controllers started: until then another resource for the
    /// same Leaf user may be invisible, and no Leaf write is made.
    synced: AtomicBool,
    /// Each controller's bound on reconciles in flight, and the size of `permits`.
    concurrency: u16,
    /// Process-wide bound on reconciles in flight (each controller is bounded too, but with one
    /// controller per namespace only this makes `--concurrency` a bound for the whole process).
    /// Created with the Context, so it outlives every leadership term's controllers.
    permits: tokio::sync::Semaphore,
    /// Objects an alert asked to look at now: a taken hint bypasses the schedule once.
    pub hints: hints::Hints,
    /// `status.credentialId` -> object, for the alerts receiver.
    pub credentials: credential_index::CredentialIndex,
    /// Reconcile-now requests into the running controllers (`reconcile_on`).
    pub triggers: trigger::Triggers,
    /// Label selector of the TrimbleConnection watch (`--label-selector`): this shard's share.
    label_selector: Option<String>,
    /// `--observe-only`: no resource writes to Leaf, whatever its `managementPolicy`.
    pub observe_only: bool,
    /// `--reauthorization-default`: the policy of resources without `spec.reauthorization`.
    pub reauthorization_default: crate::crd::ReauthorizationPolicy,
    /// Whether Leaf's alerts are healthy (None: no receiver): while they are, periodic checks are
    /// only a backstop. Read through [`Context::polling`].
    alerts_health: Option<Arc<polling::AlertsHealth>>,
}

impl Context {
    pub fn new(
        client: Client,
        leaf: LeafClient,
        metrics: Arc<Metrics>,
        identity: String,
        settings: Settings,
    ) -> Self {
        Self {
            events: events::Events::new(client.clone(), identity),
            client,
            leaf,
            default_account: settings.default_account,
            metrics,
            schedules: settings.schedules,
            fence: settings.fence,
            windows: settings.windows,
            stores: RwLock::new(Vec::new()),
            synced: AtomicBool::new(false),
            concurrency: settings.concurrency,
            // A semaphore of 0 permits would block every reconcile; validation refuses 0 anyway.
            permits: tokio::sync::Semaphore::new(usize::from(settings.concurrency.max(1))),
            hints: hints::Hints::default(),
            credentials: credential_index::CredentialIndex::default(),
            triggers: trigger::Triggers::default(),
            label_selector: settings.label_selector,
            alerts_health: settings.alerts_health,
            observe_only: settings.observe_only,
            reauthorization_default: settings.reauthorization_default,
        }
    }

    /// A snapshot of the current stores.
    pub fn stores(&self) -> Vec<Store<TrimbleConnection>> {
        self.stores.read().expect("stores lock").clone()
    }

    /// Every TrimbleConnection in every store (for the conflict check and the ready gauge).
    pub fn all_objects(&self) -> Vec<Arc<TrimbleConnection>> {
        self.stores()
            .iter()
            .flat_map(|store| store.state())
            .collect()
    }

    /// How periodic checks are paced now: each resource's interval, or the alerts backstop.
    pub fn polling(&self) -> polling::Polling {
        self.alerts_health
            .as_ref()
            .map_or(polling::Polling::Normal, |health| {
                health.polling(std::time::Instant::now())
            })
    }

    /// Whether every store has synced (see [`Context::synced`]'s field doc).
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
}

/// What the controller's store keeps of an object: only what reads the store. Those are the
/// conflict check (name, namespace, uid, creation time, `spec.leafUserId`), the Secret mapper
/// (`spec`'s Secret references), the polling switch (uid, `spec.refreshInterval`), the ready and
/// stalled gauges (the Ready condition's status, a true Stalled condition's reason), the credential index
/// (`status.credentialId`) and kube-runtime with its finalizer helper (name, namespace,
/// resourceVersion, finalizers, deletionTimestamp). Reconcile reads the object fresh from the API
/// server, so nothing else is kept.
///
/// Why: the store is the operator's largest memory. managedFields alone were 7.8 of 11.5 KiB per
/// object (BENCHMARKS.md, issue 7); at 20,000 objects the rest still cost 3.2 KiB each, of which
/// labels (a B-tree node of about 0.5 KiB even for one label), annotations (`kubectl apply`'s
/// last-applied copy of the whole object), the status' messages, events and token hashes, and the
/// conditions other than Ready and a true Stalled are unread here (BENCHMARKS.md, issue 12).
pub fn slim_for_store(tc: &mut TrimbleConnection) {
    tc.metadata.managed_fields = None;
    tc.metadata.annotations = None;
    tc.metadata.labels = None;
    if let Some(status) = tc.status.as_mut() {
        // Ready (any status) and a true Stalled are all the gauges read; Reconciling and a false
        // Stalled are two of the three conditions a resource usually has.
        let mut conditions: Vec<_> = std::mem::take(&mut status.conditions)
            .into_iter()
            .filter(|c| {
                c.type_ == CONDITION_READY || (c.type_ == CONDITION_STALLED && c.status == "True")
            })
            .map(
                |c| k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                    message: String::new(),
                    ..c
                },
            )
            .collect();
        // The collect reuses the original allocation; give back what the filter dropped.
        conditions.shrink_to_fit();
        *status = crate::crd::TrimbleConnectionStatus {
            observed_generation: status.observed_generation,
            conditions,
            credential_id: status.credential_id.take(),
            ..crate::crd::TrimbleConnectionStatus::default()
        };
    }
}

/// Runs the controllers until `stop` resolves (graceful: reconciles in flight finish).
///
/// `namespaces` empty means all namespaces, else one controller per namespace; each reconciles at
/// most the Context's concurrency at once, and all of them together too (its permits). `on_ready`
/// is called once every store has synced, and `on_progress` after every reconcile (a liveness
/// heartbeat).
pub async fn run(
    ctx: Arc<Context>,
    namespaces: Vec<String>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
    on_ready: impl FnOnce() + Send + 'static,
    on_progress: impl Fn() + Send + Sync + 'static,
) {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let stop = stop.shared();
    let on_progress = Arc::new(on_progress);
    let mut stores = Vec::new();
    let mut runs = Vec::new();
    for scope in scopes {
        let (tcs, secrets): (Api<TrimbleConnection>, Api<PartialObjectMeta<Secret>>) = match &scope
        {
            Some(ns) => (
                Api::namespaced(ctx.client.clone(), ns),
                Api::namespaced(ctx.client.clone(), ns),
            ),
            None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
        };
        // Objects are slimmed before they enter the store (see `slim_for_store`): reconcile reads
        // the object fresh from the API server, the store serves only the lookups listed there.
        let (reader, writer) = reflector::store();
        let mut watch_config = watcher::Config::default().any_semantic();
        if let Some(selector) = &ctx.label_selector {
            watch_config = watch_config.labels(selector);
        }
        let index_ctx = ctx.clone();
        let index_scope = scope.clone();
        let trimble_connections = watcher(tcs, watch_config)
            .default_backoff()
            .modify(slim_for_store)
            .reflect(writer)
            .inspect(move |event| {
                if let Ok(event) = event {
                    index_ctx.credentials.observe(index_scope.as_deref(), event);
                }
            })
            .applied_objects();
        let controller = Controller::for_stream(trimble_connections, reader)
            .reconcile_on(ctx.triggers.subscribe(scope.clone()));
        let store = controller.store();
        stores.push(store.clone());
        let on_progress = on_progress.clone();
        let scope_name = scope
            .clone()
            .unwrap_or_else(|| "all namespaces".to_string());
        let secret_events =
            watcher(secrets, watcher::Config::default().any_semantic()).default_backoff();
        let run = controller
            .reconcile_on(secret_triggers::secret_triggers(
                secret_events,
                store.clone(),
            ))
            .with_config(controller::Config::default().concurrency(ctx.concurrency))
            .graceful_shutdown_on(stop.clone())
            .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
            .for_each(move |result| {
                match result {
                    Ok((object, _action)) => tracing::debug!(%object, "reconciled"),
                    Err(error) => tracing::debug!(%error, "reconcile failed"),
                }
                on_progress();
                futures::future::ready(())
            });
        tracing::info!(scope = %scope_name, "watching TrimbleConnections");
        runs.push(run.boxed());
    }
    *ctx.stores.write().expect("stores lock") = stores.clone();
    ctx.synced.store(false, Ordering::Release);
    let synced_ctx = ctx.clone();
    let readiness = async move {
        for store in &stores {
            // The store's readiness future wakes only its last poller (the controller polls it
            // too), so look again periodically rather than wait once.
            loop {
                match tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready())
                    .await
                {
                    Ok(Ok(())) => break,
                    Ok(Err(_)) => return,
                    Err(_) => continue,
                }
            }
        }
        synced_ctx.synced.store(true, Ordering::Release);
        synced_ctx.credentials.set_synced(true);
        tracing::info!("caches synced; reconciling");
        on_ready();
    };
    tokio::spawn(readiness);
    futures::future::join_all(runs).await;
    // Stopped stores are no longer updated: a replica that lost leadership must not keep
    // exporting their stale content (the ready gauge reads these stores).
    ctx.synced.store(false, Ordering::Release);
    ctx.stores.write().expect("stores lock").clear();
    ctx.credentials.clear();
    ctx.triggers.clear();
    tracing::info!("controller stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_keeps_what_its_readers_use_and_nothing_else() {
        let mut tc: TrimbleConnection = serde_json::from_value(serde_json::json!({
            "apiVersion": "withleaf.io/v1alpha1",
            "kind": "TrimbleConnection",
            "metadata": {
                "name": "farm", "namespace": "growers", "uid": "u-1", "resourceVersion": "7",
                "generation": 2, "creationTimestamp": "2026-01-01T00:00:00Z",
                "deletionTimestamp": "2026-01-02T00:00:00Z",
                "finalizers": ["withleaf.io/trimble-credential"],
                "labels": {"shard": "a"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            },
            "spec": {"leafUserId": "user-1", "credentialsSecretRef": {"name": "creds"},
                     "leafAuthSecretRef": {"name": "acct"}, "refreshInterval": "5m"},
            "status": {
                "observedGeneration": 2,
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "CredentialInvalid",
                     "message": "long text", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                    {"type": "Reconciling", "status": "False", "reason": "CredentialInvalid",
                     "message": "text", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                    {"type": "Stalled", "status": "True", "reason": "CredentialInvalid",
                     "message": "more text", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                ],
                "credentialId": "c-1", "credentialStatus": "UNAUTHENTICATED",
                "scopes": ["openid"], "secretFingerprint": "f", "sentRefreshTokens": ["h"],
                "recentEvents": [{"id": "e", "summary": "s"}],
            },
        }))
        .expect("a TrimbleConnection");
        let spec = tc.spec.clone();
        slim_for_store(&mut tc);
        let m = &tc.metadata;
        assert_eq!(
            (m.name.as_deref(), m.namespace.as_deref(), m.uid.as_deref()),
            (Some("farm"), Some("growers"), Some("u-1"))
        );
        assert_eq!(m.resource_version.as_deref(), Some("7"));
        assert_eq!(m.generation, Some(2));
        assert!(m.creation_timestamp.is_some() && m.deletion_timestamp.is_some());
        assert_eq!(
            m.finalizers.as_deref(),
            Some(&["withleaf.io/trimble-credential".to_string()][..])
        );
        assert_eq!(
            (&m.labels, &m.annotations, &m.managed_fields),
            (&None, &None, &None)
        );
        assert_eq!(tc.spec, spec, "the spec is kept whole");
        let status = tc.status.as_ref().expect("status");
        assert_eq!(status.credential_id.as_deref(), Some("c-1"));
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!(crate::metrics::ready_gauge::ready_status(&tc), "False");
        assert_eq!(
            crate::metrics::ready_gauge::stalled_reason(&tc),
            Some("CredentialInvalid")
        );
        assert!(status.conditions.iter().all(|c| c.message.is_empty()));
        let kept: Vec<_> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(kept, ["Ready", "Stalled"], "Reconciling is not read here");
        assert_eq!(
            status.conditions.capacity(),
            2,
            "the dropped one's room is given back"
        );
        // A false Stalled says nothing the gauges read: only Ready stays.
        let mut healthy = tc.clone();
        let stalled = &mut healthy.status.as_mut().expect("status").conditions[1];
        stalled.status = "False".into();
        slim_for_store(&mut healthy);
        let kept: Vec<_> = healthy
            .status
            .as_ref()
            .expect("status")
            .conditions
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(kept, ["Ready"]);
        assert_eq!(crate::metrics::ready_gauge::stalled_reason(&healthy), None);
        assert!(
            status.scopes.is_empty()
                && status.sent_refresh_tokens.is_empty()
                && status.recent_events.is_empty()
                && status.credential_status.is_none()
        );
    }
}
