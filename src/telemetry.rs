//! Logging: `tracing` to stdout as text (default) or JSON lines, filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG` chooses levels (default `info`).
pub fn init(format: LogFormat) {
    // The HTTP stack's own debug output can describe connections and frames; it never helps an
    // operator user, and keeping it at info makes `RUST_LOG=debug` about this operator's decisions.
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for directive in [
        "hyper=info",
        "hyper_util=info",
        "h2=info",
        "rustls=info",
        "tower=info",
    ] {
        if let Ok(directive) = directive.parse() {
            filter = filter.add_directive(directive);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    match format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}
