//! `leaf-standin`: the Leaf stand-in as a process (quickstart, benchmark), controlled over HTTP
//! under `/_standin/`. Prints `listening on http://ADDR` once it accepts connections.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use leaf_standin::{
    BadRefresh, BadRefreshMode, FailAfterApplyNext, Faults, LateNext, OnExisting, StandIn,
    StandInConfig,
};

#[derive(Parser, Debug)]
#[command(
    name = "leaf-standin",
    about = "A strict local stand-in for Leaf's user-management API"
)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A username/password account, `user:pass` (repeatable).
    #[arg(long = "account", value_parser = parse_account)]
    accounts: Vec<(String, String)>,
    /// A static token accepted as bearer (repeatable).
    #[arg(long = "token")]
    tokens: Vec<String>,
    /// A registered Leaf user id (repeatable).
    #[arg(long = "user")]
    users: Vec<String>,
    /// A registered Trimble application, `appName:clientId` (repeatable): the prerequisite of a
    /// Magic Link.
    #[arg(long = "app-key", value_parser = parse_account)]
    app_keys: Vec<(String, String)>,
    /// `maxUsage` of new Magic Links.
    #[arg(long, default_value_t = leaf_standin::DEFAULT_MAX_USAGE)]
    magic_link_max_usage: u64,
    /// Create unknown Leaf users on first use instead of answering 404.
    #[arg(long)]
    auto_create_users: bool,
    /// Latency added to every Leaf API answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Close connections idle for this many seconds (0: keep them open).
    #[arg(long, default_value_t = 0)]
    idle_timeout_secs: u64,
    /// Lifetime of issued tokens, in seconds.
    #[arg(long, default_value_t = 24 * 3600)]
    token_lifetime_secs: u64,
    /// Issue tokens without an `exp` claim.
    #[arg(long)]
    no_exp_claim: bool,
    /// What POST answers when the user already has a credential.
    #[arg(long, value_enum, default_value = "409")]
    on_existing: OnExistingArg,
    /// Refuse bad refresh tokens at POST (reject) or accept and flip to UNAUTHENTICATED (flip).
    #[arg(long, value_enum, default_value = "reject")]
    bad_refresh_mode: BadRefreshArg,
    /// Refresh tokens starting with this prefix are bad (empty: none).
    #[arg(long, default_value = "bad-")]
    bad_refresh_prefix: String,
    /// With --bad-refresh-mode flip: GETs answered OK before the status flips.
    #[arg(long, default_value_t = 1)]
    bad_refresh_after_gets: u32,
    /// Multiplies Leaf's alert retry offsets (1, 30, 60, 240 minutes); 0.001 makes a minute 60 ms.
    #[arg(long, default_value_t = 1.0)]
    alert_time_scale: f64,
    /// Sign the webhook registration confirmation (Leaf does not document whether it does).
    #[arg(long)]
    confirmation_signed: bool,
    /// GETs of a credential and its events show the state as of this many milliseconds ago
    /// (Leaf's read lag after a POST or DELETE); 0: no lag.
    #[arg(long, default_value_t = 0)]
    read_lag_ms: u64,
    /// `METHOD:COUNT:DELAY_MS`: the first COUNT credential requests with METHOD are processed and
    /// answered only DELAY_MS after they arrive, even if their client gave up (repeatable, one
    /// per method).
    #[arg(long = "late-next", value_parser = parse_late)]
    late_next: Vec<LateNext>,
    /// `METHOD:COUNT[:STATUS]`: the first COUNT credential requests with METHOD are processed,
    /// then answered STATUS (default 503) (repeatable, one per method).
    #[arg(long = "fail-after-apply-next", value_parser = parse_fail_after_apply)]
    fail_after_apply_next: Vec<FailAfterApplyNext>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OnExistingArg {
    #[value(name = "409")]
    Conflict,
    #[value(name = "400")]
    BadRequest,
    Replace,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BadRefreshArg {
    Reject,
    Flip,
}

fn parse_account(value: &str) -> Result<(String, String), String> {
    value
        .split_once(':')
        .map(|(u, p)| (u.to_string(), p.to_string()))
        .filter(|(u, _)| !u.is_empty())
        .ok_or_else(|| "expected user:pass".to_string())
}

/// `METHOD:COUNT:DELAY_MS`.
fn parse_late(value: &str) -> Result<LateNext, String> {
    let usage = || "expected METHOD:COUNT:DELAY_MS, e.g. DELETE:1:25000".to_string();
    let mut parts = value.split(':');
    let (Some(method), Some(count), Some(delay), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(usage());
    };
    Ok(LateNext {
        method: parse_method(method)?,
        count: count.trim().parse().map_err(|_| usage())?,
        delay: Duration::from_millis(delay.trim().parse().map_err(|_| usage())?),
    })
}

/// `METHOD:COUNT[:STATUS]`.
fn parse_fail_after_apply(value: &str) -> Result<FailAfterApplyNext, String> {
    let usage = || "expected METHOD:COUNT[:STATUS], e.g. POST:1:503".to_string();
    let mut parts = value.split(':');
    let (Some(method), Some(count), status, None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(usage());
    };
    let status = match status {
        None => 503,
        Some(status) => status
            .trim()
            .parse()
            .ok()
            .filter(|s| (100..=999).contains(s))
            .ok_or_else(usage)?,
    };
    Ok(FailAfterApplyNext {
        method: parse_method(method)?,
        count: count.trim().parse().map_err(|_| usage())?,
        status,
    })
}

fn parse_method(method: &str) -> Result<String, String> {
    let method = method.trim().to_ascii_uppercase();
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!("{method:?} is not an HTTP method"));
    }
    Ok(method)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let config = StandInConfig {
        listen: args.listen,
        accounts: args.accounts,
        tokens: args.tokens,
        users: args.users,
        auto_create_users: args.auto_create_users,
        token_lifetime: Duration::from_secs(args.token_lifetime_secs),
        exp_claim: !args.no_exp_claim,
        on_existing: match args.on_existing {
            OnExistingArg::Conflict => OnExisting::Conflict,
            OnExistingArg::BadRequest => OnExisting::BadRequest,
            OnExistingArg::Replace => OnExisting::Replace,
        },
        bad_refresh: BadRefresh {
            mode: match args.bad_refresh_mode {
                BadRefreshArg::Reject => BadRefreshMode::Reject,
                BadRefreshArg::Flip => BadRefreshMode::Flip,
            },
            tokens: Vec::new(),
            prefix: (!args.bad_refresh_prefix.is_empty()).then_some(args.bad_refresh_prefix),
            after_gets: args.bad_refresh_after_gets,
        },
        faults: Faults {
            latency: Duration::from_millis(args.latency_ms),
            ..Faults::default()
        },
        idle_timeout: (args.idle_timeout_secs > 0)
            .then(|| Duration::from_secs(args.idle_timeout_secs)),
    };
    let standin = match StandIn::try_start(config).await {
        Ok(standin) => standin,
        Err(error) => {
            eprintln!("leaf-standin: cannot listen on {}: {error}", args.listen);
            std::process::exit(1);
        }
    };
    standin.set_alert_time_scale(args.alert_time_scale);
    standin.set_confirmation_signed(args.confirmation_signed);
    standin.set_read_lag(Duration::from_millis(args.read_lag_ms));
    for (app_name, client_id) in &args.app_keys {
        standin.register_app_key(app_name, client_id);
    }
    standin.set_magic_link_max_usage(args.magic_link_max_usage);
    // Set before the address is printed, so before any client can call. One entry per method:
    // a later flag for the same method wins.
    for late in &args.late_next {
        standin.late_next(&late.method, late.count, late.delay);
    }
    for fail in &args.fail_after_apply_next {
        standin.fail_after_apply_next(&fail.method, fail.count, fail.status);
    }
    println!("listening on {}", standin.origin());
    let _ = std::io::stdout().flush();
    tokio::select! {
        _ = standin.wait() => {}
        _ = shutdown_signal() => {}
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
