//! The test control plane itself (`tests/support`): what other test binaries rely on.
//!
//! Kept in its own binary because it stops and restarts the servers, which would disturb other
//! tests sharing the same control plane.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::json;
use tokio::sync::RwLock;

/// Tests that stop servers take it for writing, the others for reading: no test sees a server
/// stopped by another one.
static SERVERS: RwLock<()> = RwLock::const_new(());

fn config_map(name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some([("value".to_string(), value.to_string())].into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn kubectl_and_the_admin_client_reach_the_same_server() {
    let _shared = SERVERS.read().await;
    let control_plane = support::control_plane().await;
    let namespace = control_plane.create_namespace("harness-kubectl").await;
    let output = control_plane.kubectl(&["get", "namespace", &namespace, "-o", "name"]);
    assert!(
        output.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("namespace/{namespace}")
    );

    let version = control_plane.kubectl(&["version", "-o", "json"]);
    let version: serde_json::Value =
        serde_json::from_slice(&version.stdout).expect("kubectl version -o json");
    assert_eq!(
        version["serverVersion"]["gitVersion"], "v1.37.2",
        "{version}"
    );

    let applied = control_plane.kubectl_with_stdin(
        &["apply", "-n", &namespace, "-f", "-"],
        &serde_json::to_string(
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "from-stdin"}}),
        )
        .unwrap(),
    );
    assert!(
        applied.status.success(),
        "kubectl apply -f - failed: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    Api::<ConfigMap>::namespaced(control_plane.client(), &namespace)
        .get("from-stdin")
        .await
        .expect("the admin client sees what kubectl applied");

    let namespaces = Api::<Namespace>::all(control_plane.client());
    let first = control_plane.create_namespace("harness-kubectl").await;
    assert_ne!(first, namespace, "create_namespace names are unique");
    namespaces.get(&first).await.expect("the namespace exists");
}

#[tokio::test]
async fn service_account_tokens_carry_exactly_their_rbac() {
    let _shared = SERVERS.read().await;
    let control_plane = support::control_plane().await;
    let namespace = control_plane.create_namespace("harness-rbac").await;
    let client = control_plane.client();
    let service_accounts = Api::<ServiceAccount>::namespaced(client.clone(), &namespace);
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("reader".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    service_accounts
        .create(&PostParams::default(), &account)
        .await
        .expect("ServiceAccount created");
    Api::<ConfigMap>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &config_map("visible", "1"))
        .await
        .expect("ConfigMap created");

    let token = control_plane
        .service_account_token(&namespace, "reader")
        .await;
    let as_reader =
        Api::<ConfigMap>::namespaced(control_plane.client_with_token(&token), &namespace);
    match as_reader.get("visible").await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "expected Forbidden, got {status:?}")
        }
        other => panic!("a ServiceAccount without RBAC must be refused, got {other:?}"),
    }

    let role = Role {
        metadata: ObjectMeta {
            name: Some("read-configmaps".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &role)
        .await
        .expect("Role");
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("reader".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "read-configmaps".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "reader".into(),
            namespace: Some(namespace.clone()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(client, &namespace)
        .create(&PostParams::default(), &binding)
        .await
        .expect("RoleBinding");
    let seen = support::wait_for_named(
        "the RoleBinding to take effect",
        Duration::from_secs(10),
        || async { as_reader.get("visible").await.ok() },
    )
    .await;
    assert_eq!(seen.data.unwrap()["value"], "1");

    // The same token through kubectl, via a kubeconfig written for it.
    let kubeconfig = control_plane.kubeconfig_for_token("reader", &token);
    let output = std::process::Command::new(control_plane.bin_dir().join("kubectl"))
        .env("KUBECONFIG", &kubeconfig)
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()
        .expect("kubectl runs");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("system:serviceaccount:{namespace}:reader"),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn apiserver_restart_keeps_the_data_and_the_address() {
    let _exclusive = SERVERS.write().await;
    let control_plane = support::control_plane().await;
    let namespace = control_plane.create_namespace("harness-restart").await;
    let config_maps = Api::<ConfigMap>::namespaced(control_plane.client(), &namespace);
    config_maps
        .create(&PostParams::default(), &config_map("kept", "before"))
        .await
        .expect("created");

    control_plane.stop_apiserver();
    assert!(
        config_maps.get("kept").await.is_err(),
        "a stopped API server must not answer"
    );

    let began = Instant::now();
    control_plane
        .start_apiserver()
        .await
        .expect("the API server starts again");
    eprintln!("kube-apiserver restarted in {:.1?}", began.elapsed());
    let kept = config_maps
        .get("kept")
        .await
        .expect("the same client reaches the restarted server");
    assert_eq!(kept.data.unwrap()["value"], "before");
}

#[tokio::test]
async fn etcd_restart_keeps_the_data() {
    let _exclusive = SERVERS.write().await;
    let control_plane = support::control_plane().await;
    let namespace = control_plane.create_namespace("harness-etcd").await;
    let config_maps = Api::<ConfigMap>::namespaced(control_plane.client(), &namespace);
    config_maps
        .create(&PostParams::default(), &config_map("kept", "before"))
        .await
        .expect("created");

    let began = Instant::now();
    control_plane.restart_etcd().await;
    eprintln!(
        "etcd restarted (and kube-apiserver ready again) in {:.1?}",
        began.elapsed()
    );
    let kept = support::wait_for_named(
        "the ConfigMap to be readable after the etcd restart",
        Duration::from_secs(30),
        || async { config_maps.get("kept").await.ok() },
    )
    .await;
    assert_eq!(kept.data.unwrap()["value"], "before");
    config_maps
        .create(&PostParams::default(), &config_map("after", "written"))
        .await
        .expect("writes work again");
}

/// Parallel tests create run directories while each of them sweeps the stale ones: a directory
/// whose owner file is being written must never look dead (CI once lost an operator's run
/// directory, log and all, between its creation and the operator's start).
#[test]
fn run_directories_created_in_parallel_are_never_swept_as_stale() {
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(|| {
                (0..150)
                    .map(|_| support::process::create_run_dir().expect("create a run directory"))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let created: Vec<_> = threads
        .into_iter()
        .flat_map(|thread| thread.join().expect("a creating thread panicked"))
        .collect();
    let lost: Vec<_> = created
        .iter()
        .filter(|dir| !dir.join("owner").is_file())
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} run directories were swept while their owner was alive: {:?}",
        lost.len(),
        created.len(),
        lost.iter().take(3).collect::<Vec<_>>()
    );
}

/// The sweep's rule for a run without a readable owner: young means starting, so it stays.
#[test]
fn a_fresh_run_directory_with_an_empty_owner_file_is_not_swept() {
    let starting = std::env::temp_dir()
        .join("leaf-operator-tests")
        .join(format!("run-starting-{}", std::process::id()));
    std::fs::create_dir_all(&starting).expect("create the starting run's directory");
    std::fs::write(starting.join("owner"), "").expect("write an empty owner file");
    // Creating a run directory sweeps the stale ones first.
    support::process::create_run_dir().expect("create a run directory");
    let survived = starting.is_dir();
    let _ = std::fs::remove_dir_all(&starting);
    assert!(
        survived,
        "a run directory whose owner file was still empty was swept as stale"
    );
}
