//! Shared support for the integration tests: a real control plane per test binary and helpers.
//!
//! Each `tests/*.rs` binary declares `mod support;` and calls
//! `support::control_plane().await` (started once per binary, shared by its tests; isolate tests
//! by creating a namespace each with `create_namespace`).

// Each test binary compiles this module but uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod alerts;
pub mod bench;
pub mod certs;
pub mod control_plane;
pub mod go_tools;
pub mod image;
pub mod install;
pub mod leaf;
pub mod node;
pub mod objects;
pub mod operator;
pub mod peer;
pub mod pod;
pub mod process;
pub mod registry;
pub mod release;
pub mod wait;

pub use control_plane::{ControlPlane, control_plane, repo_root, tool_bin_dir};
pub use registry::{Registry, shared_registry};
pub use wait::{wait_for, wait_for_named, wait_until};
