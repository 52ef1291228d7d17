//! Leaf operator: keeps Leaf's Trimble credentials in step with `TrimbleConnection` resources.

pub mod crd;
pub mod reason;
pub mod metrics;
