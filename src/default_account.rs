//! The operator's default Leaf account: the one used by every TrimbleConnection without
//! `spec.leafAuthSecretRef`, read again when it changes so that rotating it needs no restart.
//!
//! Two sources, chosen at start:
//! - a directory (`--leaf-account-dir`), normally a Secret volume: files `token`, or `username`
//!   and `password`, parsed with the same rules as a `leafAuthSecretRef` Secret. The kubelet
//!   updates a mounted Secret in place (an atomic swap of its `..data` symlink) within about a
//!   minute of the Secret changing. [`DefaultAccount::current`] looks at the files' metadata on
//!   every call (three `stat`s, microseconds) and reads them again when any changed, so the very
//!   next Leaf call after the kubelet's swap uses the new account; no timer, no race with it.
//! - fixed values from flags or environment variables (`LEAF_TOKEN`, or `LEAF_USERNAME` and
//!   `LEAF_PASSWORD`), kept as a fallback: these can only change with a restart.
//!
//! Secret values stay in `SecretString`; logs name only the directory, the kind of account and
//! the username.

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use crate::leaf::LeafAccount;
use crate::secret;

/// The files read from the directory, as the keys of a `leafAuthSecretRef` Secret.
const FILES: [&str; 3] = ["token", "username", "password"];

/// The default Leaf account; cheap to clone (all clones share one cache).
#[derive(Clone)]
pub struct DefaultAccount(Arc<Source>);

enum Source {
    None,
    Fixed(LeafAccount),
    Directory { dir: PathBuf, cache: Mutex<Cache> },
}

/// What identifies one version of a file: (device, inode, size, modification time in ns). The
/// kubelet's swap gives every file a new inode; an in-place write changes size or time.
type Stamp = Option<(u64, u64, u64, i64, i64)>;

#[derive(Default)]
struct Cache {
    /// The files' stamps when `account` was read; `None` before the first read.
    stamps: Option<[Stamp; 3]>,
    account: Option<LeafAccount>,
    /// What the last read found: the account's cache key (a digest, never logged) or the problem
    /// in words. A log line is written only when it changes, not on every read.
    seen: String,
}

impl DefaultAccount {
    /// No default account: every TrimbleConnection must name its own.
    pub fn none() -> Self {
        Self(Arc::new(Source::None))
    }

    /// A fixed account (flags or environment variables); changes need a restart.
    pub fn fixed(account: LeafAccount) -> Self {
        Self(Arc::new(Source::Fixed(account)))
    }

    /// The account in `dir` (`token`, or `username` + `password`), re-read as it changes.
    pub fn directory(dir: impl Into<PathBuf>) -> Self {
        Self(Arc::new(Source::Directory {
            dir: dir.into(),
            cache: Mutex::new(Cache::default()),
        }))
    }

    /// The directory if one is configured, else the fixed account if any, else none.
    pub fn from_sources(dir: Option<&Path>, fixed: Option<LeafAccount>) -> Self {
        match (dir, fixed) {
            (Some(dir), _) => Self::directory(dir),
            (None, Some(account)) => Self::fixed(account),
            (None, None) => Self::none(),
        }
    }

    /// The account to use now, or `None` when there is none (or the directory holds no usable one).
    pub fn current(&self) -> Option<LeafAccount> {
        match self.0.as_ref() {
            Source::None => None,
            Source::Fixed(account) => Some(account.clone()),
            Source::Directory { dir, cache } => {
                let mut cache = cache
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let stamps = FILES.map(|file| stamp(&dir.join(file)));
                if cache.stamps != Some(stamps) {
                    let (account, problem) = read_directory(dir);
                    let seen = match &account {
                        Some(account) => account.account_key().to_string(),
                        None => problem.clone(),
                    };
                    if seen != cache.seen {
                        match &account {
                            Some(account) => tracing::info!(
                                dir = %dir.display(),
                                account = %kind(account),
                                "default Leaf account read; used from the next Leaf call on"
                            ),
                            None => tracing::warn!(
                                dir = %dir.display(),
                                %problem,
                                "no usable default Leaf account"
                            ),
                        }
                        cache.seen = seen;
                    }
                    cache.account = account;
                    cache.stamps = Some(stamps);
                }
                cache.account.clone()
            }
        }
    }

    /// Where the account comes from, for the start-up log (no secrets).
    pub fn describe(&self) -> String {
        match self.0.as_ref() {
            Source::None => "none".to_string(),
            Source::Fixed(_) => "fixed, from flags or environment variables".to_string(),
            Source::Directory { dir, .. } => {
                format!("files in {}, re-read on change", dir.display())
            }
        }
    }
}

impl fmt::Debug for DefaultAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DefaultAccount")
            .field(&self.describe())
            .finish()
    }
}

/// The stamp of `path` (following symlinks, as a read does); `None` when it does not exist.
fn stamp(path: &Path) -> Stamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((
        metadata.dev(),
        metadata.ino(),
        metadata.len(),
        metadata.mtime(),
        metadata.mtime_nsec(),
    ))
}

/// The kind of account, for logs: never a secret, nor a digest of one (a short digest of a weak
/// password could be brute-forced).
fn kind(account: &LeafAccount) -> String {
    match account {
        LeafAccount::Token(_) => "a token".to_string(),
        LeafAccount::Password { username, .. } => format!("username {username} with a password"),
    }
}

/// Reads the directory into an account, or says why there is none (no secrets).
fn read_directory(dir: &Path) -> (Option<LeafAccount>, String) {
    let mut data = BTreeMap::new();
    for file in FILES {
        match std::fs::read(dir.join(file)) {
            Ok(bytes) => {
                data.insert(file.to_string(), ByteString(bytes));
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return (None, format!("failed to read {file}: {}", error.kind())),
        }
    }
    let as_secret = Secret {
        data: Some(data),
        ..Secret::default()
    };
    // The same rules as a Secret named by spec.leafAuthSecretRef: `token` wins, values are trimmed.
    match secret::parse_leaf_account(&as_secret, &dir.display().to_string()) {
        Ok(account) => (Some(account), String::new()),
        Err(error) => (None, error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn token_of(account: Option<LeafAccount>) -> Option<String> {
        match account? {
            LeafAccount::Token(token) => Some(token.expose_secret().to_string()),
            LeafAccount::Password { .. } => None,
        }
    }

    #[test]
    fn a_directory_is_read_again_after_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let account = DefaultAccount::directory(dir.path());
        assert!(
            account.current().is_none(),
            "an empty directory is no account"
        );

        std::fs::write(dir.path().join("token"), "first-token\n").unwrap();
        let clone = account.clone();
        assert_eq!(token_of(clone.current()).as_deref(), Some("first-token"));

        std::fs::write(dir.path().join("token"), "second-token").unwrap();
        assert_eq!(token_of(account.current()).as_deref(), Some("second-token"));

        // The kubelet's way: a new file swapped in by rename (a new inode, same size and second).
        let staged = dir.path().join("staged");
        std::fs::write(&staged, "third--token").unwrap();
        std::fs::rename(&staged, dir.path().join("token")).unwrap();
        assert_eq!(token_of(account.current()).as_deref(), Some("third--token"));
    }

    #[test]
    fn username_and_password_files_make_a_password_account() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("username"), "ops@example.com").unwrap();
        std::fs::write(dir.path().join("password"), "pw-in-file").unwrap();
        match DefaultAccount::directory(dir.path()).current() {
            Some(LeafAccount::Password { username, password }) => {
                assert_eq!(username, "ops@example.com");
                assert_eq!(password.expose_secret(), "pw-in-file");
            }
            other => panic!("expected a password account, got {other:?}"),
        }
    }

    #[test]
    fn a_username_without_password_is_no_account() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("username"), "ops@example.com").unwrap();
        assert!(DefaultAccount::directory(dir.path()).current().is_none());
    }

    #[test]
    fn the_directory_wins_over_fixed_values_and_fixed_values_over_none() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "from-file").unwrap();
        let fixed = || Some(LeafAccount::token("from-env"));
        let both = DefaultAccount::from_sources(Some(dir.path()), fixed());
        assert_eq!(token_of(both.current()).as_deref(), Some("from-file"));
        let env_only = DefaultAccount::from_sources(None, fixed());
        assert_eq!(token_of(env_only.current()).as_deref(), Some("from-env"));
        assert!(DefaultAccount::from_sources(None, None).current().is_none());
    }

    #[test]
    fn debug_and_describe_never_show_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "very-secret-token").unwrap();
        let account = DefaultAccount::directory(dir.path());
        let _ = account.current();
        assert!(!format!("{account:?}").contains("very-secret-token"));
        let fixed = DefaultAccount::fixed(LeafAccount::token("very-secret-token"));
        assert!(!format!("{fixed:?}").contains("very-secret-token"));
    }
}
