//! `tessera-agent`: the command-line face of the agent library.
//!
//! The binary's `main` is [`main`] with what build.rs compiled in ([`Trust::from_build`]). A vendor can also
//! write a `main` of their own that passes a [`VendorBuild`] (see agent/README.md, "Vendor builds"):
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     let keyset = r#"{"keys":[]}"#; // include_str!("keyset.json") in a real build
//!     let vendor = tessera_agent::vendor::VendorBuild::from_parts(keyset, "0192b6a4-0000-7000-8000-000000000001", None, Some("Acme"));
//!     tessera_agent::cli::main(vendor.map(Into::into))
//! }
//! ```

use std::io::{IsTerminal, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde_json::{json, Value};
use tessera_core::PublicKeyset;
use uuid::Uuid;

use crate::vendor::{Trust, VendorBuild};
use crate::{identity, Agent, AgentConfig, AgentError, Applied, IdentityMode};

/// Exit status of `check` (and `consume`) when the feature is denied.
const EXIT_DENIED: u8 = 1;
/// Exit status for errors (bad arguments, unreadable state, server refusals).
const EXIT_ERROR: u8 = 2;

#[derive(Parser, Debug)]
#[command(name = "tessera-agent", version, about = "Tessera license agent: activation, offline checks, heartbeats")]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct Global {
    /// The agent's SQLite state file.
    #[arg(long, global = true, env = "TESSERA_AGENT_STATE")]
    state: Option<PathBuf>,
    /// License server base URL; leave unset for a fully offline machine.
    #[arg(long, global = true, env = "TESSERA_SERVER_URL")]
    server: Option<String>,
    /// Development builds only: the vendor's public keyset (JSON from `tessera-server keys export`). A vendor
    /// build trusts its compiled-in keyset and refuses this.
    #[arg(long, global = true, env = "TESSERA_AGENT_KEYSET")]
    keyset: Option<PathBuf>,
    /// The product id (UUID) this agent licenses. A vendor build has it compiled in.
    #[arg(long, global = true, env = "TESSERA_PRODUCT_ID")]
    product: Option<Uuid>,
    /// Pinned identity from a file (containers): a mounted machine id or identity secret.
    #[arg(long, global = true, env = "TESSERA_AGENT_IDENTITY_FILE")]
    identity_file: Option<PathBuf>,
    /// How far (seconds) the clock may be behind trusted time, in all (default: one hour, or a vendor build's
    /// limit; a vendor build refuses more than its limit).
    #[arg(long, global = true, env = "TESSERA_AGENT_CLOCK_TOLERANCE")]
    clock_tolerance: Option<i64>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Activate this machine online with a license key.
    Activate {
        #[arg(long, env = "TESSERA_LICENSE_KEY")]
        key: String,
        /// The user this seat is for (named-user licenses).
        #[arg(long, env = "TESSERA_AGENT_USER")]
        user: Option<String>,
    },
    /// Show the activation, license, lease, clock and usage state, and what to do if something is wrong.
    Status,
    /// Check a feature: exit 0 when allowed, 1 when denied (the reason is printed).
    Check { feature: String },
    /// Use quota of a feature (recorded and sent to the server exactly once): exit 0 when allowed, 1 when denied.
    Consume {
        feature: String,
        #[arg(default_value_t = 1)]
        amount: u64,
    },
    /// Show this machine's fingerprint (hashed; --show-raw shows the raw values, locally only).
    Fingerprint {
        #[arg(long)]
        show_raw: bool,
    },
    /// Send a heartbeat now (queued usage, lease and license refresh).
    Heartbeat,
    /// Deactivate this machine (frees the seat). --offline prints a receipt code to hand to the vendor.
    Deactivate {
        #[arg(long)]
        offline: bool,
    },
    /// Serve the local HTTP API and run heartbeats.
    Daemon {
        /// Address of the local HTTP API (keep it on loopback).
        #[arg(long, env = "TESSERA_AGENT_LISTEN", default_value = "127.0.0.1:7767")]
        listen: SocketAddr,
        /// Serve on a Unix socket instead of TCP.
        #[arg(long, env = "TESSERA_AGENT_SOCKET")]
        socket: Option<PathBuf>,
    },
    /// Make an offline activation request code (for a machine without network).
    RequestCode {
        #[arg(long, env = "TESSERA_LICENSE_KEY")]
        key: String,
        /// Also draw the code as a QR code in the terminal.
        #[arg(long)]
        qr: bool,
        /// Also write the code to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Apply an offline response code or an emergency code (argument, --file, or stdin).
    ApplyCode {
        code: Option<String>,
        #[arg(long)]
        file: Option<PathBuf>,
        /// License key, for an emergency code on a machine with no activation or request for that license.
        #[arg(long, env = "TESSERA_LICENSE_KEY")]
        key: Option<String>,
    },
}

fn default_state_path() -> PathBuf {
    let file = "state.db";
    #[cfg(windows)]
    {
        let base = std::env::var_os("PROGRAMDATA").unwrap_or_else(|| "C:\\ProgramData".into());
        return PathBuf::from(base).join("Tessera").join("agent").join(file);
    }
    #[cfg(target_os = "macos")]
    {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join("Library/Application Support/tessera-agent").join(file);
        }
        return PathBuf::from("/Library/Application Support/tessera-agent").join(file);
    }
    #[allow(unreachable_code)]
    {
        if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
            return PathBuf::from(x).join("tessera-agent").join(file);
        }
        match std::env::var_os("HOME").filter(|h| !h.is_empty() && h != "/" && h != "/root") {
            Some(home) => PathBuf::from(home).join(".local/state/tessera-agent").join(file),
            None => PathBuf::from("/var/lib/tessera-agent").join(file),
        }
    }
}

fn identity_mode(g: &Global) -> IdentityMode {
    match &g.identity_file {
        Some(p) => IdentityMode::PinnedFile(p.clone()),
        None => IdentityMode::from_env(),
    }
}

/// What the agent trusts for this run: a vendor build's compiled-in anchors (no runtime override), or a
/// development build's flags.
struct Anchors {
    keyset: PublicKeyset,
    product: Uuid,
    clock_tolerance: chrono::Duration,
}

fn vendor_anchors(v: &VendorBuild, g: &Global) -> Result<Anchors> {
    if let Some(path) = &g.keyset {
        bail!(
            "this is a {}: it trusts only its compiled-in keyset and takes no --keyset / TESSERA_AGENT_KEYSET (given: {}). Remove it",
            v.describe(),
            path.display()
        );
    }
    if let Some(p) = g.product.filter(|p| *p != v.product_id) {
        bail!(
            "this is a {}: it licenses only that product, not {p}. Remove --product / TESSERA_PRODUCT_ID",
            v.describe()
        );
    }
    let max = v.max_clock_tolerance.num_seconds();
    let tolerance = match g.clock_tolerance {
        None => max,
        Some(t) if (0..=max).contains(&t) => t,
        Some(t) => bail!(
            "--clock-tolerance / TESSERA_AGENT_CLOCK_TOLERANCE {t} s is outside what this vendor build allows (0 to {max} s)"
        ),
    };
    Ok(Anchors {
        keyset: v.keyset.clone(),
        product: v.product_id,
        clock_tolerance: chrono::Duration::seconds(tolerance),
    })
}

fn development_anchors(g: &Global) -> Result<Anchors> {
    let tolerance = g.clock_tolerance.unwrap_or(crate::DEFAULT_CLOCK_TOLERANCE_SECS);
    if tolerance < 0 {
        bail!("--clock-tolerance must be a number of seconds, 0 or more");
    }
    Ok(Anchors {
        keyset: load_keyset(g.keyset.as_deref())?,
        product: product(g)?,
        clock_tolerance: chrono::Duration::seconds(tolerance),
    })
}

fn anchors(trust: &Trust, g: &Global) -> Result<Anchors> {
    match trust {
        Trust::Vendor(v) => vendor_anchors(v, g),
        Trust::Development => development_anchors(g),
    }
}

/// The product whose fingerprint salt `fingerprint` uses.
fn product_of(trust: &Trust, g: &Global) -> Result<Uuid> {
    match trust {
        Trust::Vendor(v) => vendor_anchors(v, g).map(|_| v.product_id),
        Trust::Development => product(g),
    }
}

fn product(g: &Global) -> Result<Uuid> {
    g.product.ok_or_else(|| {
        anyhow!("no product id: pass --product UUID or set TESSERA_PRODUCT_ID (the vendor's product id)")
    })
}

fn load_keyset(path: Option<&Path>) -> Result<PublicKeyset> {
    let path = path.ok_or_else(|| {
        anyhow!("no public keyset: pass --keyset FILE or set TESSERA_AGENT_KEYSET (the JSON from `tessera-server keys export`)")
    })?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the keyset file {}", path.display()))?;
    PublicKeyset::from_json(&text)
        .with_context(|| format!("the keyset file {} is not a valid public keyset", path.display()))
}

fn open(trust: &Trust, g: &Global) -> Result<Agent> {
    open_as(trust, g, None)
}

fn open_as(trust: &Trust, g: &Global, user: Option<String>) -> Result<Agent> {
    let a = anchors(trust, g)?;
    let mut cfg = AgentConfig::new(g.state.clone().unwrap_or_else(default_state_path), a.keyset, a.product);
    cfg.server_url = g.server.clone().filter(|s| !s.trim().is_empty());
    cfg.identity = identity_mode(g);
    cfg.clock_tolerance = a.clock_tolerance;
    cfg.app_version = std::env::var("TESSERA_APP_VERSION").ok();
    cfg.user_id = user;
    Ok(Agent::open(cfg)?)
}

/// What every JSON answer says about the build (`"build": {"kind": "vendor", …}` or `{"kind": "development"}`).
fn build_json(trust: &Trust) -> Value {
    match trust {
        Trust::Vendor(v) => json!({
            "kind": "vendor", "vendor": v.name, "product_id": v.product_id, "key_ids": v.key_ids(),
            "max_clock_tolerance_secs": v.max_clock_tolerance.num_seconds(),
        }),
        Trust::Development => json!({"kind": "development", "notice": crate::vendor::DEVELOPMENT_NOTICE}),
    }
}

fn print_json(trust: &Trust, v: &impl serde::Serialize) -> Result<()> {
    let mut v = serde_json::to_value(v)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("build".into(), build_json(trust));
    }
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

fn fmt_time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_else(|| "never".into())
}

fn print_decision(feature: &str, d: &tessera_core::Decision) {
    let verdict = if d.allowed { "allowed" } else { "denied" };
    println!("{feature}: {verdict} ({}) - {}", d.reason.as_str(), d.reason.explain());
    if let Some(r) = d.facts.remaining {
        let unit =
            d.facts.limit_type.map(|t| t.unit()).filter(|u| !u.is_empty()).map(|u| format!(" {u}")).unwrap_or_default();
        println!("  quota: {} used of {}{unit}, {r} remaining", d.facts.used.unwrap_or(0), d.facts.limit.unwrap_or(0));
    }
    if let Some(e) = d.facts.emergency_expires_at {
        println!("  emergency access until {}", fmt_time(Some(e)));
    }
}

fn read_code(code: Option<String>, file: Option<&Path>) -> Result<String> {
    if let Some(c) = code {
        return Ok(c);
    }
    if let Some(f) = file {
        return std::fs::read_to_string(f).with_context(|| format!("cannot read the code file {}", f.display()));
    }
    if std::io::stdin().is_terminal() {
        eprintln!("Paste the code, then press Ctrl-D:");
    }
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).context("cannot read the code from stdin")?;
    if s.trim().is_empty() {
        bail!("no code given: pass it as an argument, with --file FILE, or on stdin");
    }
    Ok(s)
}

fn describe_applied(a: &Applied) {
    match a {
        Applied::Activation { license_id, license_type, features, expires_at, lease_expires_at } => {
            println!("Activated offline: license {license_id} ({})", license_type.as_str());
            println!("  valid until: {}", fmt_time(*expires_at));
            println!("  works offline until: {}", fmt_time(*lease_expires_at));
            let ids: Vec<&str> = features.iter().filter(|f| f.enabled).map(|f| f.id.as_str()).collect();
            println!("  features: {}", if ids.is_empty() { "none".to_string() } else { ids.join(", ") });
        }
        Applied::Emergency { serial, scope, bound, expires_at } => {
            let scope = match scope {
                tessera_core::model::EmergencyScope::AllFeatures => "all features",
                tessera_core::model::EmergencyScope::LicensedFeatures => "the licensed features",
            };
            println!(
                "Emergency access granted (code #{serial}{}): {scope} until {}",
                if *bound { ", bound to this device" } else { "" },
                fmt_time(Some(*expires_at))
            );
            println!("  when it expires, the agent returns to its normal state.");
        }
    }
}

async fn run(trust: &Trust, cli: Cli) -> Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Activate { key, user } => {
            let agent = open_as(trust, g, user)?;
            let a = agent.activate(&key).await?;
            if g.json {
                print_json(trust, &a)?;
            } else {
                println!(
                    "Activated{}: activation {} of license {}",
                    if a.reused { " (existing activation reused)" } else { "" },
                    a.activation_id,
                    a.license_id
                );
                println!("  valid until: {}", fmt_time(a.expires_at));
                println!(
                    "  lease until: {} (heartbeat every {} s)",
                    fmt_time(Some(a.lease_expires_at)),
                    a.heartbeat_interval_secs
                );
                let ids: Vec<&str> = a.features.iter().map(|f| f.id.as_str()).collect();
                println!("  features: {}", ids.join(", "));
            }
        }
        Command::Status => {
            let agent = open(trust, g)?;
            let s = agent.status();
            if g.json {
                print_json(trust, &s)?;
            } else {
                println!("build:        {}", trust.describe());
                println!("state:        {}", s.state_path.display());
                println!("server:       {}", s.server_url.as_deref().unwrap_or("none (offline)"));
                match (&s.mode, &s.license) {
                    (Some(mode), Some(l)) => {
                        println!(
                            "activation:   {} ({})",
                            s.activation_id.map(|i| i.to_string()).unwrap_or_else(|| "offline".into()),
                            serde_json::to_value(mode)?.as_str().unwrap_or("")
                        );
                        println!("license:      {} {} {}", l.id, l.license_type.as_str(), l.status.as_str());
                        println!("valid until:  {}", fmt_time(l.expires_at));
                        println!("lease until:  {}", fmt_time(s.lease_expires_at));
                        let ids: Vec<&str> = l.features.iter().map(|f| f.id.as_str()).collect();
                        println!("features:     {}", ids.join(", "));
                    }
                    (Some(_), None) => println!("activation:   present but not trusted"),
                    _ => println!("activation:   none"),
                }
                if let Some(e) = &s.emergency {
                    println!("emergency:    until {}", fmt_time(Some(e.expires_at)));
                }
                println!(
                    "decision:     {} ({})",
                    if s.decision.allowed { "usable" } else { "NOT usable" },
                    s.decision.reason.as_str()
                );
                if let Some(f) = &s.fingerprint {
                    println!("fingerprint:  {} of {} components match (need {})", f.matched, f.bound, f.required);
                }
                println!("trusted time: {}", fmt_time(Some(s.trusted_time)));
                println!("usage queue:  {} event(s) waiting to be sent", s.pending_usage);
                if s.pending_requests > 0 {
                    println!("offline:      {} request(s) waiting for a response code", s.pending_requests);
                }
                if let Some(p) = &s.problem {
                    println!("problem:      {p}");
                }
                if let Some(r) = &s.recovery {
                    println!("what to do:   {r}");
                }
            }
        }
        Command::Check { feature } => {
            let agent = open(trust, g)?;
            let d = agent.check(&feature);
            if g.json {
                print_json(
                    trust,
                    &json!({"feature": feature, "allowed": d.allowed, "reason": d.reason, "explanation": d.reason.explain(), "facts": d.facts}),
                )?;
            } else {
                print_decision(&feature, &d);
            }
            if !d.allowed {
                return Ok(ExitCode::from(EXIT_DENIED));
            }
        }
        Command::Consume { feature, amount } => {
            let agent = open(trust, g)?;
            let d = agent.try_consume(&feature, amount)?;
            if g.json {
                print_json(
                    trust,
                    &json!({"feature": feature, "amount": amount, "allowed": d.allowed, "reason": d.reason, "explanation": d.reason.explain(), "facts": d.facts}),
                )?;
            } else {
                print_decision(&feature, &d);
            }
            if !d.allowed {
                return Ok(ExitCode::from(EXIT_DENIED));
            }
        }
        Command::Fingerprint { show_raw } => {
            let collected = identity::collect(&identity_mode(g), product_of(trust, g)?)?;
            if g.json {
                let mut v = json!({"fingerprint": collected.fingerprint});
                if show_raw {
                    v["raw"] = serde_json::to_value(&collected.raw)?;
                }
                print_json(trust, &v)?;
            } else {
                for c in collected.fingerprint.components() {
                    let raw = collected.raw.iter().find(|r| r.kind == c.kind).filter(|_| show_raw);
                    match raw {
                        Some(r) => println!("{:<10} {}  {}", c.kind.as_str(), hex::encode(c.hash), r.raw),
                        None => println!("{:<10} {}", c.kind.as_str(), hex::encode(c.hash)),
                    }
                }
                if show_raw {
                    eprintln!("(raw values are shown locally only; only the salted hashes are ever sent)");
                }
            }
        }
        Command::Heartbeat => {
            let agent = open(trust, g)?;
            let o = agent.heartbeat().await?;
            if g.json {
                print_json(trust, &o)?;
            } else {
                println!(
                    "Heartbeat: activation {}, license {}",
                    o.activation_status.as_str(),
                    o.license_status.as_str()
                );
                println!(
                    "  lease until: {}; next heartbeat in {} s",
                    fmt_time(o.lease_expires_at),
                    o.next_heartbeat_secs
                );
                println!("  usage events sent: {}, acknowledged: {}", o.usage_sent, o.usage_acknowledged);
            }
        }
        Command::Deactivate { offline } => {
            let agent = open(trust, g)?;
            if offline {
                let receipt = agent.deactivate_offline()?;
                if g.json {
                    print_json(trust, &json!({"deactivated": true, "receipt_code": receipt}))?;
                } else {
                    println!(
                        "Deactivated locally. Hand this receipt code to the vendor; it ends this machine's grant \
                         (the vendor's answer says when the seat is free again):"
                    );
                    println!("{receipt}");
                }
            } else {
                agent.deactivate().await?;
                if g.json {
                    print_json(trust, &json!({"deactivated": true}))?;
                } else {
                    println!("Deactivated: the seat is free.");
                }
            }
        }
        Command::Daemon { listen, socket } => {
            let agent = open(trust, g)?;
            match socket {
                #[cfg(unix)]
                Some(path) => crate::daemon::serve_unix(agent, &path).await?,
                #[cfg(not(unix))]
                Some(_) => bail!("--socket needs a Unix system; use --listen"),
                None => {
                    if !listen.ip().is_loopback() {
                        tracing::warn!(%listen, "the local API has no authentication; listening beyond loopback exposes it");
                    }
                    crate::daemon::serve(agent, listen).await?
                }
            }
        }
        Command::RequestCode { key, qr, out } => {
            let agent = open(trust, g)?;
            let code = agent.request_code(&key)?;
            if let Some(path) = &out {
                std::fs::write(path, format!("{code}\n"))
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            if g.json {
                print_json(trust, &json!({"request_code": code, "out": out}))?;
            } else {
                println!("{code}");
                if qr {
                    let q = qrcode::QrCode::new(code.as_bytes()).context("the code does not fit in a QR code")?;
                    let image = q.render::<qrcode::render::unicode::Dense1x2>().quiet_zone(true).build();
                    println!("{image}");
                }
                eprintln!("Give this request code to the vendor (or open the self-service page on any online machine), then run `tessera-agent apply-code` with the response code.");
            }
        }
        Command::ApplyCode { code, file, key } => {
            let text = read_code(code, file.as_deref())?;
            let agent = open(trust, g)?;
            let applied = agent.apply_code_with_key(&text, key.as_deref())?;
            if g.json {
                print_json(trust, &applied)?;
            } else {
                describe_applied(&applied);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the command line with `trust` (what the build trusts) and returns the exit status: 0 success (and
/// "allowed" for `check` / `consume`), 1 denied, 2 error.
pub fn main(trust: Result<Trust, AgentError>) -> ExitCode {
    let trust = match trust {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let version: &'static str =
        Box::leak(format!("{} ({})", env!("CARGO_PKG_VERSION"), trust.describe()).into_boxed_str());
    let matches = Cli::command().version(version).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let daemon = matches!(cli.command, Command::Daemon { .. });
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(if daemon { "info" } else { "warn" }));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    if !trust.is_vendor() {
        eprintln!("note: {}", crate::vendor::DEVELOPMENT_NOTICE);
    }
    let json_out = cli.global.json;
    let mut builder = if daemon {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    } else {
        // One-shot commands: no worker threads to start.
        tokio::runtime::Builder::new_current_thread()
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match rt.block_on(run(&trust, cli)) {
        Ok(code) => code,
        Err(e) => {
            let server_code =
                e.downcast_ref::<AgentError>().and_then(|a| a.server_code().map(|c| c.as_str().to_string()));
            if json_out {
                println!(
                    "{}",
                    json!({"error": {"code": server_code.unwrap_or_else(|| "AGENT_ERROR".into()), "message": format!("{e:#}")}, "build": build_json(&trust)})
                );
            }
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
