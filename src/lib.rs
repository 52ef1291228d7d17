//! Leaf operator: keeps Leaf's Trimble credentials in step with `TrimbleConnection` resources.

pub mod alerts;
pub mod config;
pub mod controller;
pub mod crd;
pub mod default_account;
pub mod http;
pub mod leader;
pub mod leaf;
pub mod metrics;
pub mod reason;
pub mod secret;
pub mod telemetry;
