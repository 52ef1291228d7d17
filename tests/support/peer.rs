//! The benchmark's peer: Crossplane's provider-http, run as a process like a user would run it
//! out of cluster, wired to Leaf the way a platform team without this operator would wire it.
//!
//! One namespaced `Request` (`http.m.crossplane.io/v1alpha2`) per connection: CREATE posts the
//! Secret's values (provider-http's `{{ name:namespace:key }}` placeholders) to
//! `/users/{leafUserId}/trimble-credentials`, OBSERVE gets it, REMOVE deletes it. A namespaced
//! `ProviderConfig` holds the Leaf token in a Secret (provider-http sends its value verbatim as the
//! `Authorization` header, so the Secret holds `Bearer <token>`): provider-http cannot log in, so
//! the stand-in issues a static token. The binary and its CRDs come from `scripts/peer-tools.sh`
//! (built once from the Go module, cached by version).
//!
//! provider-http has no flag for its metrics address: controller-runtime binds `:8080`. Only one
//! peer process can run on the machine at a time; [`exclusive`] serialises the tests of a binary.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;

use super::control_plane::{ControlPlane, cached_build_dir, repo_root};
use super::process;
use super::wait::wait_until;

/// Field manager for what the harness applies for the peer.
const MANAGER: &str = "leaf-operator-peer-harness";
/// Name of the ProviderConfig (and of the Secret holding the Leaf token) in each namespace.
pub const PROVIDER_CONFIG: &str = "leaf";
/// Key of the token in that Secret.
const TOKEN_KEY: &str = "authorization";
/// The group and version of provider-http's namespaced resources.
pub const GROUP: &str = "http.m.crossplane.io";
pub const VERSION: &str = "v1alpha2";

/// Builds (once, cached) provider-http and returns the directory holding `bin/provider-http` and
/// `crds/`. Progress of a first build goes to the terminal; failures carry the script's output.
pub fn peer_dir() -> Result<PathBuf, String> {
    cached_build_dir("scripts/peer-tools.sh")
}

/// The provider-http version the cache directory holds (`VERSION` written by the build script).
pub fn peer_version(dir: &Path) -> String {
    fs::read_to_string(dir.join("VERSION"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// Holds the machine-wide right to run a peer (its metrics server binds :8080).
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The `ApiResource` of one of provider-http's namespaced kinds.
pub fn api_resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, VERSION, kind))
}

pub fn requests(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &api_resource("Request"))
}

/// Applies every CRD of the peer (server-side apply, idempotent) and waits until each is
/// Established.
pub async fn install_crds(control_plane: &ControlPlane, dir: &Path) {
    let api = Api::<CustomResourceDefinition>::all(control_plane.client());
    let mut names = Vec::new();
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("crds"))
        .unwrap_or_else(|e| panic!("failed to list {}: {e}", dir.join("crds").display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no CRDs in {}", dir.display());
    for path in files {
        let yaml = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("failed to read {}: {e}", path.display()));
        let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml)
            .unwrap_or_else(|e| panic!("{} is not a CRD: {e}", path.display()));
        let name = crd.metadata.name.clone().expect("the CRD has a name");
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("failed to apply {}: {e}", path.display()));
        names.push(name);
    }
    for name in names {
        wait_until(
            &format!("CRD {name} to be Established"),
            Duration::from_secs(30),
            || async {
                let crd = api.get(&name).await.map_err(|e| e.to_string())?;
                let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
                if conditions
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                {
                    Ok(())
                } else {
                    Err(format!("conditions {conditions:?}"))
                }
            },
        )
        .await;
    }
}

/// Creates the Secret with the Leaf token and the namespaced ProviderConfig pointing at it.
pub async fn create_provider_config(client: &kube::Client, namespace: &str, leaf_token: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(PROVIDER_CONFIG.to_string()),
            ..Default::default()
        },
        string_data: Some(
            [(TOKEN_KEY.to_string(), format!("Bearer {leaf_token}"))]
                .into_iter()
                .collect(),
        ),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the Leaf token Secret");
    let configs: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &api_resource("ProviderConfig"));
    let config: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "ProviderConfig",
        "metadata": {"name": PROVIDER_CONFIG, "namespace": namespace},
        "spec": {"credentials": {"source": "Secret", "secretRef": {
            "name": PROVIDER_CONFIG, "namespace": namespace, "key": TOKEN_KEY,
        }}},
    }))
    .expect("a ProviderConfig");
    configs
        .create(&PostParams::default(), &config)
        .await
        .expect("create the ProviderConfig");
}

/// The Leaf URL of a user's Trimble credential.
pub fn credential_url(leaf_origin: &str, user: &str) -> String {
    format!("{leaf_origin}/services/usermanagement/api/users/{user}/trimble-credentials")
}

/// The `Request` a platform team would write for one connection: CREATE posts the Secret's three
/// values (placeholders resolved by provider-http at send time), OBSERVE gets the credential,
/// REMOVE deletes it. Leaf has no update call, so there is no UPDATE mapping; without one,
/// provider-http's default up-to-date check reports "up to date" whenever the GET succeeds.
pub fn leaf_request(
    name: &str,
    namespace: &str,
    leaf_origin: &str,
    user: &str,
    secret: &str,
) -> DynamicObject {
    leaf_request_with(name, namespace, leaf_origin, user, secret, |_| {})
}

/// [`leaf_request`] with a change to `spec.forProvider` (for the feature probes' variants).
pub fn leaf_request_with(
    name: &str,
    namespace: &str,
    leaf_origin: &str,
    user: &str,
    secret: &str,
    change: impl FnOnce(&mut serde_json::Value),
) -> DynamicObject {
    let placeholder = |key: &str| format!("{{{{ {secret}:{namespace}:{key} }}}}");
    let body = serde_json::json!({
        "clientId": placeholder("clientId"),
        "clientSecret": placeholder("clientSecret"),
        "refreshToken": placeholder("refreshToken"),
    });
    let mut for_provider = serde_json::json!({
        "waitTimeout": "30s",
        "headers": {"Content-Type": ["application/json"]},
        "payload": {
            "baseUrl": credential_url(leaf_origin, user),
            "body": serde_json::to_string_pretty(&body).expect("JSON"),
        },
        "mappings": [
            {"action": "CREATE", "method": "POST", "url": ".payload.baseUrl",
             "body": "{clientId: .payload.body.clientId, clientSecret: .payload.body.clientSecret, refreshToken: .payload.body.refreshToken}"},
            {"action": "OBSERVE", "method": "GET", "url": ".payload.baseUrl"},
            {"action": "REMOVE", "method": "DELETE", "url": ".payload.baseUrl"},
        ],
    });
    change(&mut for_provider);
    serde_json::from_value(serde_json::json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "Request",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "providerConfigRef": {"name": PROVIDER_CONFIG, "kind": "ProviderConfig"},
            "forProvider": for_provider,
        },
    }))
    .expect("a valid Request")
}

/// `(status, reason, message)` of a condition of a Crossplane managed resource.
pub fn condition(object: &DynamicObject, type_: &str) -> Option<(String, String, String)> {
    let conditions = object.data.pointer("/status/conditions")?.as_array()?;
    conditions
        .iter()
        .find(|c| c.get("type").and_then(|t| t.as_str()) == Some(type_))
        .map(|c| {
            let field = |k: &str| {
                c.get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            (field("status"), field("reason"), field("message"))
        })
}

/// Ready=True: provider-http observed the credential in Leaf (crossplane's `Available`).
pub fn is_ready(object: &DynamicObject) -> bool {
    condition(object, "Ready").is_some_and(|(status, _, _)| status == "True")
}

/// Crossplane's refusal to go on after a create it cannot confirm (`external-create-pending`
/// without a later succeeded/failed): it waits for a human.
pub fn is_stuck_on_create(object: &DynamicObject) -> bool {
    condition(object, "Synced").is_some_and(|(status, _, message)| {
        status == "False" && message.contains("cannot determine creation result")
    })
}

/// The human's part for a Request stuck that way: remove the pending annotation and, since
/// crossplane's event filter ignores changes of that annotation, change another one.
pub fn unstick_patch() -> serde_json::Value {
    serde_json::json!({"metadata": {"annotations": {
        "crossplane.io/external-create-pending": null,
        "leaf-operator.test/unstuck": "by-hand",
    }}})
}

/// A one-line description of a Request's conditions (no secret values: conditions only).
pub fn describe(object: &DynamicObject) -> String {
    ["Ready", "Synced"]
        .iter()
        .map(|t| match condition(object, t) {
            Some((status, reason, message)) => format!("{t}={status} {reason} ({message})"),
            None => format!("{t}=none"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// How the peer is started.
#[derive(Clone, Debug)]
pub struct PeerOptions {
    /// `--poll`: how often each Request is observed (the refresh interval).
    pub poll: Duration,
    /// `--max-reconcile-rate`: concurrent reconciles and reconciles per second (one knob).
    pub max_reconcile_rate: u32,
}

/// A running provider-http process; killed when dropped.
pub struct Peer {
    child: Option<Child>,
    binary: PathBuf,
    log_path: PathBuf,
    kubeconfig: PathBuf,
    run_dir: PathBuf,
    options: PeerOptions,
    starts: u32,
}

impl Peer {
    /// Starts provider-http against the control plane; returns once its Request controller runs.
    pub async fn start(control_plane: &ControlPlane, dir: &Path, options: PeerOptions) -> Peer {
        let run_dir =
            process::create_run_dir().expect("failed to create a run directory for the peer");
        let mut peer = Peer {
            child: None,
            binary: dir.join("bin/provider-http"),
            log_path: run_dir.join("provider-http.log"),
            kubeconfig: control_plane.kubeconfig_path().to_path_buf(),
            run_dir,
            options,
            starts: 0,
        };
        peer.spawn().await;
        peer
    }

    async fn spawn(&mut self) {
        self.starts += 1;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("failed to open the peer log");
        let mut command = Command::new(&self.binary);
        command
            // No proxy variables: provider-http honours HTTP_PROXY for its Leaf calls.
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", &self.kubeconfig)
            .arg(format!("--poll={}s", self.options.poll.as_secs().max(1)))
            .arg(format!(
                "--max-reconcile-rate={}",
                self.options.max_reconcile_rate
            ))
            .arg("--timeout=30s")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log handle")))
            .stderr(Stdio::from(log));
        let child =
            process::spawn_tied(command, &self.run_dir).expect("failed to start provider-http");
        self.child = Some(child);
        let expected = self.starts as usize;
        let log_path = self.log_path.clone();
        wait_until(
            "provider-http to start its Request controller",
            Duration::from_secs(60),
            || {
                let log_path = log_path.clone();
                async move {
                    let log = fs::read_to_string(&log_path).unwrap_or_default();
                    if log.contains("address already in use") {
                        return Err(
                            "provider-http could not bind its metrics port :8080 (another process holds it)"
                                .to_string(),
                        );
                    }
                    let started = log
                        .lines()
                        .filter(|l| {
                            l.contains("Starting workers")
                                && l.contains("managed/request.http.m.crossplane.io")
                        })
                        .count();
                    if started >= expected {
                        Ok(())
                    } else {
                        // The log itself is not quoted: the harness prints no line it did not
                        // check for secrets (see the module doc of peer_features.rs).
                        Err(format!("not started yet; log: {}", log_path.display()))
                    }
                }
            },
        )
        .await;
    }

    /// The pid of the running process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the peer runs").id()
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::stop(&mut child, Duration::ZERO);
        }
    }

    /// Stops the process gracefully (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::stop(&mut child, Duration::from_secs(10));
        }
    }

    /// Starts the process again with the same options (after `kill` or `stop`).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// The complete output of every start so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            // Only where the log is: it is not printed, since provider-http's log is not ours to
            // vouch for (run with LEAF_TEST_KEEP=1 to keep it).
            eprintln!(
                "provider-http log: {} ({} lines)",
                self.log_path.display(),
                self.log().lines().count()
            );
        }
    }
}
