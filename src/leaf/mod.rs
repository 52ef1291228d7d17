//! The Leaf seam: a client for Leaf's user-management API (provider credentials of Leaf users).
//!
//! Layers: [`client::LeafClient`] does HTTP (rate limit, auth, error classification, metrics);
//! [`provider::Provider`] holds what differs per provider (path segment, create body); [`types`]
//! parses Leaf's answers into types that have no field for any secret Leaf echoes back.

mod account;
pub mod alerts;
mod auth;
mod client;
mod config;
mod error;
pub mod magic_link;
mod provider;
mod ratelimit;
pub mod sanitize;
mod types;

pub use account::{AccountKey, LeafAccount};
pub use client::{Deleted, LeafClient, SendGuard};
pub use config::LeafClientConfig;
pub use error::{LeafError, MAX_RETRY_AFTER, NotSent, parse_retry_after, retry_after_value};
pub use magic_link::{AppKey, MagicLink, MagicLinkSettings, NewMagicLink};
pub use provider::{Provider, Trimble, TrimbleCreateRequest};
pub use types::{Credential, CredentialEvent, CredentialStatus};
