//! The TrimbleConnection controller: the shared [`Context`], the watches and [`run`].
//!
//! One kube-runtime `Controller` per watch scope (all namespaces, or one per listed namespace so
//! that a namespaced install needs no cluster-wide RBAC). Each also watches Secrets as metadata
//! only and maps a changed Secret to the TrimbleConnections that reference it through its store.
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
pub mod polling;
pub mod reconcile;
pub mod status;
pub mod trigger;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, controller, reflector, watcher};
use kube::{Client, ResourceExt};

use crate::crd::TrimbleConnection;
use crate::default_account::DefaultAccount;
use crate::leader::Fence;
use crate::leaf::LeafClient;
use crate::metrics::Metrics;

pub use reconcile::Error;

/// How the reconciles of one process behave, beyond the Leaf client and the API server.
pub struct Settings {
    /// The operator's own Leaf account, for resources without `leafAuthSecretRef` (read anew at
    /// every use: a mounted Secret rotates without a restart).
    pub default_account: DefaultAccount,
    /// Leadership: whether a Leaf write may be sent now.
    pub fence: Fence,
    /// How long after its start a POST may still create a credential (request timeout + margin).
    pub in_doubt_window: Duration,
    /// The per-object schedules (see [`backoff::Schedules::with_interval_override`] for tests).
    pub schedules: backoff::Schedules,
}

/// Everything a reconcile needs, shared by all of them.
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
    pub in_doubt_window: Duration,
    /// The stores of the running controllers: the conflict check looks across all of them.
    pub stores: RwLock<Vec<Store<TrimbleConnection>>>,
    /// Every store has synced since the controllers started: until then another resource for the
    /// same Leaf user may be invisible, and no Leaf write is made.
    synced: AtomicBool,
    /// Process-wide bound on reconciles in flight (each controller is bounded too, but with one
    /// controller per namespace only this makes `--concurrency` a bound for the whole process).
    pub permits: std::sync::OnceLock<tokio::sync::Semaphore>,
    /// Objects an alert asked to look at now: a taken hint bypasses the schedule once.
    pub hints: hints::Hints,
    /// `status.credentialId` -> object, for the alerts receiver.
    pub credentials: credential_index::CredentialIndex,
    /// Reconcile-now requests into the running controllers (`reconcile_on`).
    pub triggers: trigger::Triggers,
    /// Label selector of the TrimbleConnection watch (`--label-selector`): this shard's share.
    pub label_selector: Option<String>,
    /// Whether Leaf's alerts are healthy (set once when the alerts receiver starts): while they
    /// are, periodic checks are only a backstop.
    pub alerts_health: std::sync::OnceLock<Arc<polling::AlertsHealth>>,
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
            in_doubt_window: settings.in_doubt_window,
            stores: RwLock::new(Vec::new()),
            synced: AtomicBool::new(false),
            permits: std::sync::OnceLock::new(),
            hints: hints::Hints::default(),
            credentials: credential_index::CredentialIndex::default(),
            triggers: trigger::Triggers::default(),
            label_selector: None,
            alerts_health: std::sync::OnceLock::new(),
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
            .get()
            .map_or(polling::Polling::Normal, |health| {
                health.polling(std::time::Instant::now())
            })
    }

    /// Whether every store has synced (see [`Context::synced`]'s field doc).
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
}

/// The TrimbleConnections in `store` that reference the Secret `secret` (as credentials or as
/// Leaf account).
fn referencing(
    store: &Store<TrimbleConnection>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<TrimbleConnection>> {
    let name = secret.name_any();
    let namespace = secret.namespace();
    store
        .state()
        .into_iter()
        .filter(|tc| tc.namespace() == namespace)
        .filter(|tc| {
            tc.spec.credentials_secret_ref.name == name
                || tc
                    .spec
                    .leaf_auth_secret_ref
                    .as_ref()
                    .is_some_and(|r| r.name == name)
        })
        .map(|tc| ObjectRef::from_obj(tc.as_ref()))
        .collect()
}

/// Runs the controllers until `stop` resolves (graceful: reconciles in flight finish).
///
/// `namespaces` empty means all namespaces. `on_ready` is called once every store has synced,
/// and `on_progress` after every reconcile (a liveness heartbeat).
pub async fn run(
    ctx: Arc<Context>,
    namespaces: Vec<String>,
    concurrency: u16,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
    on_ready: impl FnOnce() + Send + 'static,
    on_progress: impl Fn() + Send + Sync + 'static,
) {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    ctx.permits
        .get_or_init(|| tokio::sync::Semaphore::new(usize::from(concurrency.max(1))));
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
        // managedFields are pruned before objects enter the store: nothing here reads them, and
        // as parsed JSON they were about 2/3 of the store's memory (7.8 of 11.5 KiB per object;
        // see BENCHMARKS.md). Reconcile reads the object fresh from the API server anyway.
        let (reader, writer) = reflector::store();
        let mut watch_config = watcher::Config::default().any_semantic();
        if let Some(selector) = &ctx.label_selector {
            watch_config = watch_config.labels(selector);
        }
        let index_ctx = ctx.clone();
        let index_scope = scope.clone();
        let trimble_connections = watcher(tcs, watch_config)
            .default_backoff()
            .modify(|tc| tc.managed_fields_mut().clear())
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
        let mapper_store = store.clone();
        let on_progress = on_progress.clone();
        let scope_name = scope
            .clone()
            .unwrap_or_else(|| "all namespaces".to_string());
        let run = controller
            .watches(
                secrets,
                watcher::Config::default().any_semantic(),
                move |secret| referencing(&mapper_store, &secret),
            )
            .with_config(controller::Config::default().concurrency(concurrency))
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
