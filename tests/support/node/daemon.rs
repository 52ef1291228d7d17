//! One long-running process of the node (containerd, kubelet, the controllers, kube-proxy): its
//! log file, whether it is still running, and the end of its log for failure messages. Spawned
//! through `process.rs` (it dies with the test binary) and recorded for the node's exit handler.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use super::cleanup;
use crate::support::process;

pub struct Daemon {
    pub name: &'static str,
    pub log: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Daemon {
    /// Starts `program` with `args`, its output appended to `<log_dir>/<name>.log`.
    pub fn start(
        name: &'static str,
        program: &Path,
        args: &[String],
        log_dir: &Path,
    ) -> Result<Daemon, String> {
        let mut command = Command::new(program);
        command.args(args);
        Self::start_command(name, command, log_dir)
    }

    /// Starts `command` (with its arguments and environment), output to `<log_dir>/<name>.log`.
    pub fn start_command(
        name: &'static str,
        mut command: Command,
        log_dir: &Path,
    ) -> Result<Daemon, String> {
        let log = log_dir.join(format!("{name}.log"));
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("failed to open {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let program = command.get_program().to_owned();
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = process::spawn_tied(command, log_dir)
            .map_err(|e| format!("failed to start {}: {e}", Path::new(&program).display()))?;
        cleanup::record_pid(child.id());
        Ok(Daemon {
            name,
            log,
            child: Mutex::new(Some(child)),
        })
    }

    pub fn exited(&self) -> bool {
        self.child
            .lock()
            .unwrap()
            .as_mut()
            .is_none_or(process::has_exited)
    }

    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            process::stop(&mut child, Duration::from_secs(5));
        }
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!(
            "--- last {} lines of {} ({}) ---\n{}",
            all.len() - start,
            self.name,
            self.log.display(),
            all[start..].join("\n")
        )
    }
}
