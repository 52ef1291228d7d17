//! Leaves the machine as the node found it: the machine-wide lock that lets only one test node
//! run at a time, and the teardown of everything a node leaves outside its processes (the runc
//! containers of its Pods, their mounts and network namespaces, the bridge, kube-proxy's iptables
//! rules, the cgroups), run before a node starts (a run killed with SIGKILL left it) and when the
//! test binary exits (an `atexit` handler, so also after failures).

use std::ffi::{CString, c_char, c_int};
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use super::{BRIDGE, CGROUP_ROOT, NODE_DIR, NODE_NAME};

unsafe extern "C" {
    fn flock(fd: c_int, operation: c_int) -> c_int;
    fn umount2(target: *const c_char, flags: c_int) -> c_int;
    fn kill(pid: c_int, signal: c_int) -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn atexit(callback: extern "C" fn()) -> c_int;
}

const LOCK_EX: c_int = 2;
const MNT_DETACH: c_int = 2;
const SIGKILL: c_int = 9;

/// Outside [`NODE_DIR`], which the teardown removes.
const LOCK_FILE: &str = "/tmp/leaf-test-node.lock";

/// Waits until no other test binary on the machine runs a node, then holds the lock until this
/// process exits (the kernel releases it with the file descriptor, also after SIGKILL).
pub fn machine_lock() -> Result<(), String> {
    static LOCK: OnceLock<fs::File> = OnceLock::new();
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .map_err(|e| format!("failed to open {LOCK_FILE}: {e}"))?;
    // SAFETY: flock on a file descriptor this function owns; it blocks until the lock is free.
    if unsafe { flock(file.as_raw_fd(), LOCK_EX) } != 0 {
        return Err(format!(
            "failed to lock {LOCK_FILE}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let _ = LOCK.set(file);
    Ok(())
}

/// What the exit handler needs: the node's own process ids and the tools directory.
#[derive(Default)]
struct AtExit {
    pids: Vec<i32>,
    tools: Option<PathBuf>,
}

fn at_exit() -> &'static Mutex<AtExit> {
    static STATE: OnceLock<Mutex<AtExit>> = OnceLock::new();
    STATE.get_or_init(|| Mutex::new(AtExit::default()))
}

/// Registers the exit handler. Called after the control plane started: `atexit` handlers run in
/// reverse order, so this one runs before `process.rs` kills the control plane, and stops the
/// kubelet before anything it would restart is removed.
pub fn teardown_at_exit(tools: &Path) {
    at_exit().lock().unwrap().tools = Some(tools.to_path_buf());
    // SAFETY: registering a plain `extern "C"` function pointer has no preconditions.
    unsafe { atexit(teardown_now) };
}

/// Records a node process (kubelet, containerd, ...) for the exit handler to kill first.
pub fn record_pid(pid: u32) {
    at_exit().lock().unwrap().pids.push(pid as i32);
}

extern "C" fn teardown_now() {
    let Ok(state) = at_exit().try_lock() else {
        return;
    };
    for &pid in &state.pids {
        // SAFETY: plain syscalls on this process's own children.
        unsafe {
            kill(pid, SIGKILL);
            waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    if let Some(tools) = &state.tools {
        teardown(tools);
    }
}

/// Removes every trace of a node: its leftover processes, containers, mounts, network, iptables
/// rules, cgroups and [`NODE_DIR`]. Idempotent; each step tolerates what is already gone.
pub fn teardown(tools: &Path) {
    kill_processes_naming(NODE_DIR);
    remove_shim_sockets(&Path::new(NODE_DIR).join("runc"));
    delete_runc_containers(&Path::new(NODE_DIR).join("runc"));
    unmount_under(NODE_DIR);
    let _ = quiet(Command::new("ip").args(["link", "delete", BRIDGE]));
    // kube-proxy's own cleanup removes exactly the chains and rules it creates.
    let _ = quiet(Command::new(tools.join("kube-proxy")).arg("--cleanup"));
    remove_kubelet_iptables_chains();
    remove_cgroups();
    remove_container_log_links();
    remove_fixed_paths();
    let _ = fs::remove_dir_all(NODE_DIR);
}

/// The chains the kubelet itself creates (kube-proxy's cleanup leaves them): its canaries, the
/// iptables-mode hint and KUBE-FIREWALL with its jumps from INPUT and OUTPUT. No other kubelet
/// runs on the machine (the lock), so every such chain is this node's.
fn remove_kubelet_iptables_chains() {
    for iptables in ["iptables", "ip6tables"] {
        let rules: [&[&str]; 9] = [
            &["-t", "filter", "-D", "INPUT", "-j", "KUBE-FIREWALL"],
            &["-t", "filter", "-D", "OUTPUT", "-j", "KUBE-FIREWALL"],
            &["-t", "filter", "-F", "KUBE-FIREWALL"],
            &["-t", "filter", "-X", "KUBE-FIREWALL"],
            &["-t", "filter", "-X", "KUBE-KUBELET-CANARY"],
            &["-t", "nat", "-X", "KUBE-KUBELET-CANARY"],
            &["-t", "mangle", "-X", "KUBE-KUBELET-CANARY"],
            &["-t", "mangle", "-X", "KUBE-IPTABLES-HINT"],
            &["-t", "mangle", "-X", "KUBE-PROXY-CANARY"],
        ];
        for rule in rules {
            let _ = quiet(Command::new(iptables).args(rule));
        }
    }
}

fn quiet(command: &mut Command) -> std::io::Result<std::process::ExitStatus> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
}

/// The containerd shims outlive containerd (they are re-parented to init by design); their
/// command line names the node's containerd socket, under [`NODE_DIR`].
fn kill_processes_naming(marker: &str) {
    let own = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            // SAFETY: a plain syscall on a process whose command line names the node's directory.
            unsafe { kill(pid as c_int, SIGKILL) };
        }
    }
}

/// Each shim listens on `/run/containerd/s/<sha256 of "<containerd socket>/<namespace>/<id>">`, a
/// fixed directory whatever containerd's configuration says; a killed shim leaves its socket.
/// The ids are the sandboxes' (one shim per Pod), which runc knows as containers.
fn remove_shim_sockets(runc_root: &Path) {
    use sha2::{Digest, Sha256};
    const SHIM_SOCKETS: &str = "/run/containerd/s";
    let address = super::containerd::socket();
    let Ok(namespaces) = fs::read_dir(runc_root) else {
        return;
    };
    for namespace in namespaces.flatten() {
        let Ok(containers) = fs::read_dir(namespace.path()) else {
            continue;
        };
        for container in containers.flatten() {
            let key = address
                .join(namespace.file_name())
                .join(container.file_name());
            let hash = hex::encode(Sha256::digest(key.as_os_str().as_encoded_bytes()));
            let _ = fs::remove_file(Path::new(SHIM_SOCKETS).join(hash));
        }
    }
    // Only removed when empty: another containerd's shims may use them.
    let _ = fs::remove_dir(SHIM_SOCKETS);
    let _ = fs::remove_dir("/run/containerd");
}

/// Containers outlive their shim too: `runc delete --force` kills each and removes its cgroups.
/// The node's runc keeps its state under its own root (containerd's runc option `Root`).
fn delete_runc_containers(runc_root: &Path) {
    let Ok(namespaces) = fs::read_dir(runc_root) else {
        return;
    };
    for namespace in namespaces.flatten() {
        let root = namespace.path();
        let Ok(containers) = fs::read_dir(&root) else {
            continue;
        };
        for container in containers.flatten() {
            let _ = quiet(
                Command::new("runc")
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force"])
                    .arg(container.file_name()),
            );
        }
    }
}

/// Unmounts (lazily, deepest first) every mount point under `dir`: the Pods' volumes, the
/// containers' root file systems and the network namespaces' nsfs mounts.
fn unmount_under(dir: &str) {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| p == dir || p.starts_with(&format!("{dir}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for point in points {
        if let Ok(target) = CString::new(point) {
            // SAFETY: a plain syscall with a NUL-terminated path.
            unsafe { umount2(target.as_ptr(), MNT_DETACH) };
        }
    }
}

/// The kubelet's cgroups, under [`CGROUP_ROOT`] in every cgroup v1 hierarchy (deepest first:
/// a cgroup directory is removed with rmdir once it has no children).
fn remove_cgroups() {
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for hierarchy in hierarchies.flatten() {
        let root = hierarchy.path().join(CGROUP_ROOT.trim_start_matches('/'));
        let mut dirs = Vec::new();
        collect_dirs(&root, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            let _ = fs::remove_dir(dir);
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    out.push(dir.to_path_buf());
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_dirs(&entry.path(), out);
        }
    }
}

/// What the kubelet and libcni put at fixed paths: the device plugin socket, and libcni's cache
/// of each Pod's network results (`<network>-<sandbox>-eth0`, with the loopback's
/// `cni-loopback-<sandbox>-lo`) in /var/lib/cni/results. Directories go only when empty.
fn remove_fixed_paths() {
    let _ = fs::remove_file("/var/lib/kubelet/device-plugins/kubelet.sock");
    for dir in ["/var/lib/kubelet/device-plugins", "/var/lib/kubelet"] {
        let _ = fs::remove_dir(dir);
    }
    let results = Path::new("/var/lib/cni/results");
    if let Ok(entries) = fs::read_dir(results) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(sandbox) = name
                .strip_prefix(&format!("{NODE_NAME}-"))
                .and_then(|rest| rest.strip_suffix("-eth0"))
            else {
                continue;
            };
            let _ = fs::remove_file(entry.path());
            let _ = fs::remove_file(results.join(format!("cni-loopback-{sandbox}-lo")));
        }
    }
    for dir in [
        "/var/lib/cni/results",
        "/var/lib/cni",
        "/var/log/containers",
    ] {
        let _ = fs::remove_dir(dir);
    }
}

/// The kubelet links each container's log into /var/log/containers (a fixed path); the links of
/// this node point into [`NODE_DIR`].
fn remove_container_log_links() {
    let Ok(entries) = fs::read_dir("/var/log/containers") else {
        return;
    };
    for entry in entries.flatten() {
        if fs::read_link(entry.path()).is_ok_and(|target| target.starts_with(NODE_DIR)) {
            let _ = fs::remove_file(entry.path());
        }
    }
}
