//! Runs the operator's Pod, as the chart renders it, in a real container: podman with runc and
//! the cgroupfs manager (what works on this machine kind), doing for one Pod what the kubelet
//! would do, so that what runs is exactly what the chart asks for.
//!
//! From the rendered Deployment's pod template it takes: the image's entrypoint with the
//! container's `args`; its `env` (values, `fieldRef` metadata.name/namespace, `secretKeyRef` read
//! from the API server); the Pod and container security contexts (user and group when set,
//! `readOnlyRootFilesystem`, `allowPrivilegeEscalation: false`, dropped capabilities, the runtime's
//! default seccomp profile); Secret volumes (written from the API server, with `items` and
//! `defaultMode`); and, as `automountServiceAccountToken` asks, a projected ServiceAccount token
//! of the Pod's ServiceAccount (TokenRequest), the cluster CA and the namespace at
//! `/var/run/secrets/kubernetes.io/serviceaccount`. What differs, and why:
//! - `--network host`: there is no Pod network here; the API server and the Leaf stand-in are on
//!   127.0.0.1, so `KUBERNETES_SERVICE_HOST`/`PORT` point there instead of at a Service IP.
//! - Probes are polled by the test (`probe`), not by a kubelet, on the port the template names.
//! - A container that dies is not restarted.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde_yaml::Value;

use super::control_plane::ControlPlane;

/// Label on every container this module starts, with the test process's pid as value, so a later
/// run can remove containers of runs that were killed before their guard could.
const PID_LABEL: &str = "leaf-operator-test.pid";

/// `podman` with the global options that work on this machine kind: runc (crun does not) and the
/// cgroupfs manager, and a containers.conf with no default ulimits (raising RLIMIT_NOFILE needs
/// CAP_SYS_RESOURCE, which this machine lacks).
pub fn podman(config_dir: &Path) -> Command {
    let conf = config_dir.join("containers.conf");
    if !conf.exists() {
        fs::write(&conf, "[containers]\ndefault_ulimits = []\n").expect("writing containers.conf");
    }
    let mut command = Command::new("podman");
    command
        .env("CONTAINERS_CONF", &conf)
        .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
        .args(["--events-backend", "file"])
        .stdin(Stdio::null());
    command
}

fn output(mut command: Command) -> Output {
    command
        .output()
        .expect("failed to run podman (apt-get install podman runc)")
}

/// Removes containers left by test processes that no longer exist.
pub fn remove_stale_containers(config_dir: &Path) {
    let mut list = podman(config_dir);
    list.args([
        "ps",
        "--all",
        "--filter",
        &format!("label={PID_LABEL}"),
        "--format",
        &format!("{{{{.ID}}}} {{{{index .Labels \"{PID_LABEL}\"}}}}"),
    ]);
    let listed = output(list);
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        let mut parts = line.split_whitespace();
        let (Some(id), Some(pid)) = (parts.next(), parts.next()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let mut remove = podman(config_dir);
            remove.args(["rm", "--force", "--time", "0", id]);
            let _ = output(remove);
        }
    }
}

/// What the image says about itself (`podman image inspect`).
pub struct ImageInfo {
    /// Size in bytes, as podman reports it.
    pub size: u64,
    /// The `USER` of the image (`uid:gid`).
    pub user: String,
}

pub fn inspect_image(config_dir: &Path, image: &str) -> ImageInfo {
    let mut inspect = podman(config_dir);
    inspect.args([
        "image",
        "inspect",
        image,
        "--format",
        "{{.Size}} {{.Config.User}}",
    ]);
    let out = output(inspect);
    assert!(
        out.status.success(),
        "podman image inspect {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (size, user) = text.split_once(' ').unwrap_or((&text, ""));
    ImageInfo {
        size: size.parse().expect("a size in bytes"),
        user: user.to_string(),
    }
}

/// A container running the operator's Pod; removed (SIGKILL) when dropped.
pub struct PodContainer {
    pub name: String,
    config_dir: PathBuf,
    /// The host port of each named container port (host network: the same number).
    ports: BTreeMap<String, u16>,
    probes: Vec<(String, String, u16)>,
    _volumes: tempfile::TempDir,
}

/// The Pod's identity as the kubelet would give it.
pub struct PodIdentity<'a> {
    pub namespace: &'a str,
    pub pod_name: &'a str,
    pub pod_uid: &'a str,
}

impl PodContainer {
    /// Starts the first container of `deployment`'s pod template from `image`.
    pub async fn start(
        cp: &ControlPlane,
        config_dir: &Path,
        deployment: &Value,
        image: &str,
        identity: PodIdentity<'_>,
    ) -> PodContainer {
        remove_stale_containers(config_dir);
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let volumes_dir = tempfile::Builder::new()
            .prefix("leaf-operator-pod-")
            .tempdir()
            .expect("a directory for the Pod's volumes");
        // The container runs as a non-root user that must read its volumes, as in a Pod.
        fs::set_permissions(volumes_dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let name = format!(
            "leaf-operator-test-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        );

        let mut run = podman(config_dir);
        run.args(["run", "--detach", "--name", &name, "--pull", "never"])
            .args(["--label", &format!("{PID_LABEL}={}", std::process::id())])
            .args(["--network", "host"])
            .args(["--hostname", identity.pod_name]);

        // Security context: the container's fields win over the Pod's, as in Kubernetes.
        let field = |key: &str| -> Option<&Value> {
            let value = &container["securityContext"][key];
            if !value.is_null() {
                return Some(value);
            }
            let value = &pod["securityContext"][key];
            (!value.is_null()).then_some(value)
        };
        match (
            field("runAsUser").and_then(Value::as_i64),
            field("runAsGroup").and_then(Value::as_i64),
        ) {
            (Some(user), Some(group)) => {
                run.args(["--user", &format!("{user}:{group}")]);
            }
            (Some(user), None) => {
                run.args(["--user", &user.to_string()]);
            }
            // Neither set: the image's USER, which runAsNonRoot requires to be a non-zero number
            // (checked by the caller with `inspect_image`, as the kubelet does).
            (None, _) => {}
        }
        if let Some(group) = pod["securityContext"]["fsGroup"].as_i64() {
            run.args(["--group-add", &group.to_string()]);
        }
        if field("readOnlyRootFilesystem").and_then(Value::as_bool) == Some(true) {
            // --read-only-tmpfs=false: podman would otherwise mount writable /tmp and /run,
            // which a Pod does not get.
            run.args(["--read-only", "--read-only-tmpfs=false"]);
        }
        if field("allowPrivilegeEscalation").and_then(Value::as_bool) == Some(false) {
            run.args(["--security-opt", "no-new-privileges"]);
        }
        for capability in container["securityContext"]["capabilities"]["drop"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            run.args(["--cap-drop", capability.as_str().unwrap_or_default()]);
        }
        match field("seccompProfile").and_then(|p| p["type"].as_str()) {
            // podman's default profile is the runtime default.
            Some("RuntimeDefault") | None => {}
            Some(other) => panic!("seccompProfile {other} is not supported by this runner"),
        }

        // Environment.
        let secrets: Api<Secret> = Api::namespaced(cp.client(), identity.namespace);
        let api_port = cp
            .server_url()
            .rsplit(':')
            .next()
            .expect("the API server URL has a port");
        let mut env = vec![
            (
                "KUBERNETES_SERVICE_HOST".to_string(),
                "127.0.0.1".to_string(),
            ),
            ("KUBERNETES_SERVICE_PORT".to_string(), api_port.to_string()),
        ];
        for variable in container["env"].as_sequence().into_iter().flatten() {
            let key = variable["name"].as_str().expect("env name").to_string();
            let value = if let Some(value) = variable["value"].as_str() {
                value.to_string()
            } else if let Some(path) = variable["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                match path {
                    "metadata.name" => identity.pod_name.to_string(),
                    "metadata.namespace" => identity.namespace.to_string(),
                    "metadata.uid" => identity.pod_uid.to_string(),
                    other => panic!("fieldRef {other} is not supported by this runner"),
                }
            } else if !variable["valueFrom"]["secretKeyRef"].is_null() {
                let reference = &variable["valueFrom"]["secretKeyRef"];
                let secret = secrets
                    .get(reference["name"].as_str().unwrap())
                    .await
                    .expect("the Secret an env var references");
                let bytes = secret
                    .data
                    .unwrap_or_default()
                    .remove(reference["key"].as_str().unwrap())
                    .expect("the Secret key an env var references");
                String::from_utf8(bytes.0).expect("UTF-8 Secret value")
            } else {
                panic!("env {key}: this runner supports value, fieldRef and secretKeyRef only");
            };
            env.push((key, value));
        }
        for (key, value) in &env {
            // Values go through the environment of podman, not its command line (`--env KEY`
            // copies KEY from podman's own environment), so no secret shows in `ps`.
            run.env(key, value).args(["--env", key]);
        }

        // Volumes.
        let mut mounts: BTreeMap<String, PathBuf> = BTreeMap::new();
        for volume in pod["volumes"].as_sequence().into_iter().flatten() {
            let volume_name = volume["name"].as_str().expect("volume name");
            let dir = volumes_dir.path().join(volume_name);
            fs::create_dir_all(&dir).unwrap();
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
            if !volume["secret"].is_null() {
                let secret = secrets
                    .get(volume["secret"]["secretName"].as_str().unwrap())
                    .await
                    .expect("the Secret a volume references");
                let mode = volume["secret"]["defaultMode"].as_u64().unwrap_or(0o644) as u32;
                write_secret_volume(&dir, &secret, &volume["secret"]["items"], mode);
            } else {
                panic!("volume {volume_name}: this runner supports Secret volumes only");
            }
            mounts.insert(volume_name.to_string(), dir);
        }
        for mount in container["volumeMounts"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let source = &mounts[mount["name"].as_str().unwrap()];
            let target = mount["mountPath"].as_str().unwrap();
            // Secret volumes are always read-only in a Pod.
            run.args(["--volume", &format!("{}:{target}:ro", source.display())]);
        }
        if pod["automountServiceAccountToken"].as_bool() != Some(false) {
            let service_account = pod["serviceAccountName"].as_str().unwrap_or("default");
            let dir = volumes_dir.path().join("kube-api-access");
            fs::create_dir_all(&dir).unwrap();
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
            let token = cp
                .service_account_token(identity.namespace, service_account)
                .await;
            for (file, content) in [
                ("token", token.as_bytes()),
                ("ca.crt", cp.ca_pem()),
                ("namespace", identity.namespace.as_bytes()),
            ] {
                fs::write(dir.join(file), content).unwrap();
                // The kubelet's kube-api-access volume uses defaultMode 0644.
                fs::set_permissions(dir.join(file), fs::Permissions::from_mode(0o644)).unwrap();
            }
            run.args([
                "--volume",
                &format!(
                    "{}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
                    dir.display()
                ),
            ]);
        }

        // Ports and probes.
        let mut ports = BTreeMap::new();
        for port in container["ports"].as_sequence().into_iter().flatten() {
            let number = port["containerPort"].as_u64().expect("containerPort") as u16;
            if let Some(port_name) = port["name"].as_str() {
                ports.insert(port_name.to_string(), number);
            }
        }
        let mut probes = Vec::new();
        for probe in ["readinessProbe", "livenessProbe"] {
            let get = &container[probe]["httpGet"];
            if get.is_null() {
                continue;
            }
            let port = match &get["port"] {
                Value::Number(n) => n.as_u64().unwrap() as u16,
                Value::String(port_name) => ports[port_name.as_str()],
                other => panic!("{probe} port {other:?}"),
            };
            probes.push((
                probe.to_string(),
                get["path"].as_str().unwrap_or("/").to_string(),
                port,
            ));
        }

        run.arg(image);
        for arg in container["args"].as_sequence().into_iter().flatten() {
            run.arg(arg.as_str().expect("args are strings"));
        }
        let started = output(run);
        assert!(
            started.status.success(),
            "podman run failed ({}):\n{}",
            started.status,
            String::from_utf8_lossy(&started.stderr)
        );
        PodContainer {
            name,
            config_dir: config_dir.to_path_buf(),
            ports,
            probes,
            _volumes: volumes_dir,
        }
    }

    /// The port the template names `name`.
    pub fn port(&self, name: &str) -> u16 {
        self.ports[name]
    }

    /// (probe, path, port) of the template's HTTP probes.
    pub fn probes(&self) -> &[(String, String, u16)] {
        &self.probes
    }

    /// Whether the container is still running.
    pub fn running(&self) -> bool {
        self.state().0 == "running"
    }

    /// (status, exit code) as podman reports them.
    pub fn state(&self) -> (String, i64) {
        let mut inspect = podman(&self.config_dir);
        inspect.args([
            "inspect",
            &self.name,
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
        ]);
        let out = String::from_utf8_lossy(&output(inspect).stdout)
            .trim()
            .to_string();
        let (status, code) = out.split_once(' ').unwrap_or((&out, "-1"));
        (status.to_string(), code.parse().unwrap_or(-1))
    }

    /// Everything the container wrote to stdout and stderr.
    pub fn logs(&self) -> String {
        let mut logs = podman(&self.config_dir);
        logs.args(["logs", &self.name]);
        let out = output(logs);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Stops the container as the kubelet stops a Pod: SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&self, grace: Duration) {
        let mut stop = podman(&self.config_dir);
        stop.args(["stop", "--time", &grace.as_secs().to_string(), &self.name]);
        let _ = output(stop);
    }
}

impl Drop for PodContainer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().collect();
            eprintln!(
                "--- container {} log (last 60 lines) ---\n{}",
                self.name,
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
        let mut remove = podman(&self.config_dir);
        remove.args(["rm", "--force", "--time", "0", &self.name]);
        let _ = output(remove);
    }
}

/// Writes a Secret volume as the kubelet does: every key (or only `items`, under their paths),
/// with `mode`.
fn write_secret_volume(dir: &Path, secret: &Secret, items: &Value, mode: u32) {
    let data = secret.data.clone().unwrap_or_default();
    let files: Vec<(String, String)> = match items.as_sequence() {
        Some(items) => items
            .iter()
            .map(|item| {
                (
                    item["key"].as_str().unwrap().to_string(),
                    item["path"].as_str().unwrap().to_string(),
                )
            })
            .collect(),
        None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
    };
    for (key, path) in files {
        let value = data.get(&key).unwrap_or_else(|| {
            panic!("Secret key {key} is missing: the kubelet would not start the Pod")
        });
        let file = dir.join(path);
        fs::write(&file, &value.0).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(mode)).unwrap();
    }
}
