//! Configuration of the Leaf client: origin, timeouts and the process-wide request rate.

use std::time::Duration;

/// Leaf's production origin.
pub const DEFAULT_ORIGIN: &str = "https://api.withleaf.io";

/// How the client reaches Leaf and how hard it may push.
#[derive(Clone, Debug, PartialEq)]
pub struct LeafClientConfig {
    /// Scheme, host and optional port, e.g. `https://api.withleaf.io`; a trailing `/` is ignored.
    pub origin: String,
    /// Limit on establishing a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Limit on one whole request, from sending to the last byte of the answer.
    pub request_timeout: Duration,
    /// Sustained rate of requests to Leaf, logins included; `0` or less disables the limit.
    pub requests_per_second: f64,
    /// Requests that may go out at once after a quiet period (at least 1).
    pub burst: u32,
}

impl Default for LeafClientConfig {
    fn default() -> Self {
        Self {
            origin: DEFAULT_ORIGIN.to_string(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            requests_per_second: 10.0,
            burst: 20,
        }
    }
}
