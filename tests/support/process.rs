//! Child processes of a test binary (etcd, kube-apiserver) that never outlive it.
//!
//! Three layers make sure no process is left behind, whatever way the test binary ends:
//! - every child is spawned with `PR_SET_PDEATHSIG = SIGKILL`, so the kernel kills it when the test
//!   binary dies, even by SIGKILL. The signal fires when the *thread* that forked the child exits,
//!   so children are forked from one long-lived spawner thread, never from a test's own thread;
//! - an `atexit` handler kills and reaps the children and removes the run directory when the test
//!   harness exits normally or after failures (libtest calls `exit`);
//! - each run records its owner and its children's pids in its own temp directory; a later run
//!   kills the recorded processes of runs whose owner is gone and removes their directories.

use std::ffi::{c_int, c_ulong};
use std::fs;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

unsafe extern "C" {
    fn prctl(option: c_int, ...) -> c_int;
    fn getppid() -> c_int;
    fn kill(pid: c_int, signal: c_int) -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn atexit(callback: extern "C" fn()) -> c_int;
}

const PR_SET_PDEATHSIG: c_int = 1;
const SIGKILL: c_int = 9;
const SIGTERM: c_int = 15;

/// Set `LEAF_TEST_KEEP=1` to keep the run directory (logs, etcd data) after the tests end.
const KEEP_ENV: &str = "LEAF_TEST_KEEP";

/// What the `atexit` handler cleans up.
#[derive(Default)]
struct Registry {
    pids: Vec<i32>,
    run_dirs: Vec<PathBuf>,
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        // SAFETY: registering a plain `extern "C"` function pointer has no preconditions.
        unsafe { atexit(cleanup_at_exit) };
        Mutex::new(Registry::default())
    })
}

extern "C" fn cleanup_at_exit() {
    // `try_lock`: a thread still holding the lock at exit must not turn exit into a hang.
    let Ok(registry) = registry().try_lock() else {
        return;
    };
    for &pid in &registry.pids {
        // SAFETY: plain syscalls on pids this process spawned and has not reaped yet.
        unsafe {
            kill(pid, SIGKILL);
            waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    if std::env::var_os(KEEP_ENV).is_none() {
        for dir in &registry.run_dirs {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// The root under which every test run keeps its directory.
fn runs_root() -> PathBuf {
    std::env::temp_dir().join("leaf-operator-tests")
}

/// This process's start time in clock ticks since boot; with the pid it identifies the process
/// even after the pid is reused.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; fields are counted after the command name, which is in parentheses and may
    // contain spaces.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// Creates this run's directory (recording its owner) after cleaning up runs whose owner died.
pub fn create_run_dir() -> io::Result<PathBuf> {
    let root = runs_root();
    fs::create_dir_all(&root)?;
    clean_stale_runs(&root);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let pid = std::process::id();
    let dir = root.join(format!("run-{pid}-{nanos:09}"));
    fs::create_dir_all(&dir)?;
    let owner = format!("{pid} {}\n", start_time(pid).unwrap_or(0));
    // Written aside and renamed: a parallel sweep must never read a half-written owner.
    fs::write(dir.join("owner.partial"), owner)?;
    fs::rename(dir.join("owner.partial"), dir.join("owner"))?;
    registry().lock().unwrap().run_dirs.push(dir.clone());
    Ok(dir)
}

fn owner_alive(run_dir: &Path) -> bool {
    let owner = fs::read_to_string(run_dir.join("owner")).unwrap_or_default();
    let mut fields = owner.split_whitespace().map(|f| f.parse::<u64>().ok());
    let (Some(Some(pid)), Some(Some(started))) = (fields.next(), fields.next()) else {
        // No readable owner (yet): the run is either starting right now or long dead.
        return fs::metadata(run_dir)
            .and_then(|m| m.modified())
            .map(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(60))
            .unwrap_or(false);
    };
    start_time(pid as u32) == Some(started)
}

fn clean_stale_runs(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if !dir.is_dir() || owner_alive(&dir) {
            continue;
        }
        let marker = dir.to_string_lossy().into_owned();
        for pid in fs::read_to_string(dir.join("pids"))
            .unwrap_or_default()
            .lines()
        {
            let Ok(pid) = pid.trim().parse::<i32>() else {
                continue;
            };
            // Only a process whose command line names that run's directory is one of ours: the
            // pid may have been reused by something else since.
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&marker) {
                // SAFETY: a plain syscall; the pid was checked to belong to that stale run.
                unsafe { kill(pid, SIGKILL) };
            }
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

/// The long-lived thread every child is forked from (see the module doc for why).
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnJob>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (jobs, inbox) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("control-plane-spawner".into())
            .spawn(move || {
                for (mut command, reply) in inbox {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("failed to start the control-plane spawner thread");
        Mutex::new(jobs)
    })
}

/// Spawns `command` so that it dies with this process, and records its pid in `run_dir/pids`.
pub fn spawn_tied(mut command: Command, run_dir: &Path) -> io::Result<Child> {
    let parent = std::process::id() as c_int;
    // SAFETY: the hook only makes async-signal-safe syscalls (prctl, getppid).
    unsafe {
        command.pre_exec(move || {
            if prctl(PR_SET_PDEATHSIG, SIGKILL as c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl; then nobody would kill us.
            if getppid() != parent {
                return Err(io::Error::other(
                    "the test binary exited while starting its child",
                ));
            }
            Ok(())
        });
    }
    let (reply, answer) = mpsc::channel();
    spawner()
        .lock()
        .unwrap()
        .send((command, reply))
        .map_err(io::Error::other)?;
    let child = answer.recv().map_err(io::Error::other)??;
    let pid = child.id() as i32;
    registry().lock().unwrap().pids.push(pid);
    let mut pids = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join("pids"))?;
    writeln!(pids, "{pid}")?;
    Ok(child)
}

/// Stops a child: SIGTERM, then SIGKILL after `grace`; always reaps it.
pub fn stop(child: &mut Child, grace: Duration) {
    let pid = child.id() as i32;
    if grace.is_zero() {
        let _ = child.kill();
    } else {
        // SAFETY: a plain syscall on our own, not yet reaped, child.
        unsafe { kill(pid, SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
    }
    let _ = child.wait();
    registry().lock().unwrap().pids.retain(|&p| p != pid);
}

/// Whether the child has exited (and reaps it if so), without blocking.
pub fn has_exited(child: &mut Child) -> bool {
    !matches!(child.try_wait(), Ok(None))
}
