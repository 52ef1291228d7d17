//! The container image, built here without a registry (`scripts/image.sh`: a static binary on
//! `scratch`, assembled with buildah) and run with podman exactly as the chart's Pod: its security
//! context, its environment and Secret volume, a projected token of the chart's ServiceAccount,
//! its probes. Proves that the image starts as non-root on a read-only root file system, answers
//! its probes and reconciles a TrimbleConnection to Ready from inside the container.

mod support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use leaf_operator::crd::TrimbleConnection;
use leaf_standin::{StandIn, StandInConfig};

use support::image::build_image;
use support::install::{
    CHART, documents, expect_success, one, repo, trimble_connection, trimble_secret, wait_for_ready,
};
use support::pod::{PodContainer, PodIdentity, inspect_image};
use support::{control_plane, wait_until};

const LEAF_TOKEN: &str = "image-test-leaf-token-4f1c";
const LEAF_USER: &str = "user-in-container";
/// The image holds one static binary and a CA bundle; anything near this is a mistake.
const MAX_IMAGE_BYTES: u64 = 40 * 1024 * 1024;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.unwrap_or_default()))
}

#[tokio::test]
async fn the_image_runs_as_the_charts_pod_and_reconciles_a_connection_to_ready() {
    let cp = control_plane().await;
    cp.install_crd().await;

    let build_started = Instant::now();
    let image = build_image();
    eprintln!("image {image} ready in {:.1?}", build_started.elapsed());
    let podman_config = tempfile::tempdir().unwrap();
    let info = inspect_image(podman_config.path(), &image);
    eprintln!(
        "image size: {} bytes ({:.1} MiB), user {}",
        info.size,
        info.size as f64 / 1024.0 / 1024.0,
        info.user
    );
    assert!(
        info.size < MAX_IMAGE_BYTES,
        "the image is {} bytes",
        info.size
    );
    // runAsNonRoot without runAsUser: the kubelet starts the image only if its USER is a
    // non-zero number.
    let uid: u32 = info
        .user
        .split(':')
        .next()
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("the image's USER {:?} is not numeric", info.user));
    assert_ne!(uid, 0, "the image runs as root");

    let release_ns = cp.create_namespace("image").await;
    let growers = cp.create_namespace("image-growers").await;
    let leaf = StandIn::start(
        StandInConfig::default()
            .with_token(LEAF_TOKEN)
            .with_user(LEAF_USER),
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(cp.client(), &release_ns);
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("leaf-account".into()),
                    ..Default::default()
                },
                string_data: Some([("token".to_string(), LEAF_TOKEN.to_string())].into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    // Install the chart as a user would (its RBAC, ServiceAccount and Deployment exist on the API
    // server); no kubelet runs here, so the container below is its Pod.
    let (repository, tag) = image.rsplit_once(':').expect("image:tag");
    let http_port = free_port();
    let chart = repo(CHART);
    let release = "lo-image";
    let watch = format!("watchNamespaces={{{growers}}}");
    let values = [
        "crds.install=false".to_string(),
        format!("image.repository={repository}"),
        format!("image.tag={tag}"),
        format!("httpPort={http_port}"),
        watch,
        format!("leaf.apiUrl={}", leaf.origin()),
        "leaf.existingSecret=leaf-account".to_string(),
        "leaf.tokenKey=token".to_string(),
    ];
    let mut args = vec![
        "install",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        &release_ns,
    ];
    for value in &values {
        args.extend(["--set", value.as_str()]);
    }
    expect_success("helm install", &cp.helm(&args));
    let manifest = expect_success(
        "helm get manifest",
        &cp.helm(&["get", "manifest", release, "--namespace", &release_ns]),
    );
    let objects = documents(&manifest);
    let deployment = one(&objects, "Deployment");

    let started = Instant::now();
    let container = PodContainer::start(
        cp,
        podman_config.path(),
        deployment,
        &image,
        PodIdentity {
            namespace: &release_ns,
            pod_name: "lo-image-leaf-operator-7d9f8-abcde",
            pod_uid: "0b7d3c1e-5f1a-4c2e-9d8b-7a6f5e4d3c2b",
        },
    )
    .await;
    // The chart's probes, on the port the template names.
    for (probe, path, port) in container.probes().to_vec() {
        wait_until(
            &format!("the {probe} ({path} on {port}) to answer 200"),
            Duration::from_secs(60),
            || async {
                if !container.running() {
                    return Err(format!("the container stopped: {:?}", container.state()));
                }
                match http_get(port, &path).await {
                    Ok((200, _)) => Ok(()),
                    Ok((status, body)) => Err(format!("{status} {body}")),
                    Err(e) => Err(e),
                }
            },
        )
        .await;
        eprintln!("{probe} {path}: 200 after {:.1?}", started.elapsed());
    }
    let ready_after = started.elapsed();

    // A TrimbleConnection reconciled from inside the container.
    let tcs: Api<TrimbleConnection> = Api::namespaced(cp.client(), &growers);
    Api::<Secret>::namespaced(cp.client(), &growers)
        .create(
            &PostParams::default(),
            &trimble_secret("farm-trimble", "image-refresh-1"),
        )
        .await
        .unwrap();
    let created_at = Instant::now();
    tcs.create(
        &PostParams::default(),
        &trimble_connection("farm", LEAF_USER, "farm-trimble"),
    )
    .await
    .unwrap();
    wait_for_ready(&tcs, "farm", "True", "CredentialValid").await;
    eprintln!(
        "container start to /readyz 200: {ready_after:.1?}; TrimbleConnection created to Ready: {:.1?}",
        created_at.elapsed()
    );
    let credential = leaf
        .credential(LEAF_USER)
        .expect("the operator in the container created the credential in Leaf");
    assert_eq!(credential.submitted_refresh_token, "image-refresh-1");

    let metrics = http_get(container.port("http"), "/metrics")
        .await
        .expect("/metrics answers")
        .1;
    let ready_line = format!(
        "leaf_operator_resource_ready{{namespace=\"{growers}\",name=\"farm\",condition=\"True\"}} 1"
    );
    assert!(
        metrics.contains(&ready_line),
        "no `{ready_line}` in /metrics"
    );

    // Deleting the connection removes the credential from Leaf (the finalizer ran in the container).
    tcs.delete("farm", &DeleteParams::default()).await.unwrap();
    wait_until(
        "the TrimbleConnection to be gone",
        Duration::from_secs(60),
        || async {
            match tcs.get_opt("farm").await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(_) => Err("still there".to_string()),
            }
        },
    )
    .await;
    assert!(
        leaf.credential(LEAF_USER).is_none(),
        "the credential is still in Leaf"
    );

    // SIGTERM, as the kubelet stops a Pod: the operator exits cleanly within its grace period.
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(30);
    let stop_started = Instant::now();
    container.stop(Duration::from_secs(grace));
    let (status, code) = container.state();
    eprintln!("stopped in {:.1?}: {status} {code}", stop_started.elapsed());
    assert_eq!(
        (status.as_str(), code),
        ("exited", 0),
        "the operator did not stop cleanly"
    );

    let logs = container.logs();
    assert!(
        logs.contains("caches synced"),
        "the operator never synced:\n{logs}"
    );
    for secret in [LEAF_TOKEN, "install-test-client-secret", "image-refresh-1"] {
        assert!(
            !logs.contains(secret),
            "the container log contains a secret value"
        );
    }
    assert!(
        !logs.contains("forbidden") && !logs.contains("Forbidden"),
        "the operator hit a permission the chart does not grant:\n{logs}"
    );
}
