//! `tessera-server`: serve the API, manage keys, verify the audit log, answer offline codes from a shell.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use tessera_server::services::offline::{IssueEmergency, ReceiptRequest, RespondRequest};
use tessera_server::services::Ctx;
use tessera_server::{keys::KeyDir, Config};
use uuid::Uuid;

#[derive(Parser)]
#[command(name = "tessera-server", version, about = "Tessera licensing server")]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory (database, keys, admin token). Default ./tessera-data.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Listen address, e.g. 127.0.0.1:8080.
    #[arg(long, global = true)]
    listen: Option<String>,
    /// gRPC listen address (tessera.v1.Licensing for backends), e.g. 127.0.0.1:50051; off unless set.
    #[arg(long, global = true)]
    grpc_listen: Option<String>,
    /// GeoIP country database (MaxMind format) for GEOGRAPHIC restrictions.
    #[arg(long, global = true)]
    geoip_db: Option<PathBuf>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Signing keys.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Audit log.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Offline activation codes.
    Offline {
        #[command(subcommand)]
        cmd: OfflineCmd,
    },
    /// Emergency codes.
    Emergency {
        #[command(subcommand)]
        cmd: EmergencyCmd,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Generate a new key (not active until `rotate` or `activate`).
    Generate,
    /// List keys.
    List,
    /// Generate a new key and make it the signing key (old keys keep verifying).
    Rotate,
    /// Make an existing key the signing key.
    Activate { kid: String },
    /// Mark a key revoked: nothing it signed verifies any more, in the server or in agents given the re-exported
    /// keyset. Not the signing key: rotate or activate another key first.
    Revoke { kid: String },
    /// Print the public keyset JSON that agents embed.
    Export,
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Verify the hash chain; names the first broken row.
    Verify,
}

#[derive(Subcommand)]
enum OfflineCmd {
    /// Answer a request code (REQ1-…) with a response code.
    Respond { code: String },
    /// Apply a deactivation receipt (RCT2-…) and free the seat.
    Receipt { code: String },
}

#[derive(Subcommand)]
enum EmergencyCmd {
    /// Issue an emergency code for a license.
    Issue {
        #[arg(long)]
        license: Uuid,
        #[arg(long)]
        reason: String,
        /// Validity in hours (default from the license's policy; at most 168).
        #[arg(long)]
        hours: Option<u32>,
        /// Bind the code to the device of this request code.
        #[arg(long)]
        request_code: Option<String>,
    },
    /// List the emergency codes of a license.
    List {
        #[arg(long)]
        license: Uuid,
    },
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut c = Config::load(cli.config.as_deref(), std::env::vars())?;
    if let Some(d) = &cli.data_dir {
        c.data_dir = d.clone();
    }
    if let Some(l) = &cli.listen {
        c.listen = l.clone();
    }
    if let Some(g) = &cli.grpc_listen {
        c.grpc_listen = Some(g.clone());
    }
    if let Some(g) = &cli.geoip_db {
        c.geoip_db = Some(g.clone());
    }
    Ok(c)
}

fn print(json: bool, v: &serde_json::Value, human: impl FnOnce() -> String) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
    } else {
        println!("{}", human());
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = load_config(&cli)?;
    let needs_db = matches!(cli.command, Command::Audit { .. } | Command::Offline { .. } | Command::Emergency { .. });
    if needs_db && !tessera_server::db_path(&config.data_dir).exists() {
        bail!(
            "no database in {}: start the server once (`tessera-server serve`) or pass --data-dir",
            config.data_dir.display()
        );
    }
    let json = cli.json;
    match cli.command {
        Command::Serve => {
            let data_dir = config.data_dir.clone();
            let server = tessera_server::start(config).await.context("tessera-server could not start")?;
            if let Some(tok) = &server.admin_token {
                println!("First start: created a vendor-admin API token. It is shown only this once");
                println!("(also saved, readable only by you, in {}):", data_dir.join("admin-token").display());
                println!();
                println!("    {tok}");
                println!();
            }
            println!("tessera-server listening on http://{}", server.addr);
            if let Some(g) = server.grpc_addr {
                println!("tessera-server gRPC (tessera.v1.Licensing) listening on {g}");
            }
            let handle = server.shutdown_handle();
            tokio::spawn(async move {
                tessera_core::shutdown::signal().await;
                tracing::info!("shutting down: draining in-flight requests");
                let _ = handle.send(true);
            });
            server.wait().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys { cmd } => {
            let kd = KeyDir::new(&config.data_dir);
            match cmd {
                KeysCmd::Generate => {
                    let k = kd.generate()?;
                    print(json, &serde_json::to_value(&k)?, || {
                        format!(
                            "generated key {} ({}), not active; `keys activate {}` to sign with it",
                            k.kid, k.alg, k.kid
                        )
                    });
                }
                KeysCmd::Rotate => {
                    let k = kd.rotate()?;
                    print(json, &serde_json::to_value(&k)?, || {
                        format!("key {} now signs; older keys still verify. Restart the server and re-export the keyset for agents.", k.kid)
                    });
                }
                KeysCmd::Activate { kid } => {
                    kd.activate(&kid)?;
                    println!("key {kid} now signs; restart the server");
                }
                KeysCmd::Revoke { kid } => {
                    let k = kd.revoke(&kid)?;
                    print(json, &serde_json::to_value(&k)?, || {
                        format!(
                            "key {kid} is revoked: nothing it signed verifies any more. Restart the server, then \
                             `tessera-server keys export` and ship the new keyset (it lists {kid} as revoked) in your \
                             next application release; license files and tokens are re-signed by the current key at \
                             download and heartbeat, offline grants and emergency codes it signed must be issued again"
                        )
                    });
                }
                KeysCmd::List => {
                    let ks = kd.list()?;
                    print(json, &serde_json::to_value(&ks)?, || {
                        if ks.is_empty() {
                            return "no keys yet: `tessera-server serve` or `keys rotate` creates one".into();
                        }
                        ks.iter()
                            .map(|k| {
                                let role = match (k.active, k.revoked_at) {
                                    (true, _) => "active".to_string(),
                                    (false, Some(t)) => format!("revoked {}", tessera_server::time::ts(t)),
                                    (false, None) => "verify-only".to_string(),
                                };
                                format!("{} {} created {} {role}", k.kid, k.alg, tessera_server::time::ts(k.created_at))
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    });
                }
                KeysCmd::Export => {
                    let (ks, _) = kd.load_or_init()?;
                    println!("{}", ks.public().to_json());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { cmd: AuditCmd::Verify } => {
            let opened = tessera_server::open(config, tessera_server::time::system_clock()).await?;
            let v = tessera_server::services::audit::verify_chain(opened.services.store.as_ref()).await?;
            print(json, &serde_json::to_value(&v)?, || match &v.first_broken {
                None => format!("audit log intact: {} entries verified", v.checked),
                Some(b) => format!(
                    "audit log BROKEN at entry {}: {} ({} entries before it verified)",
                    b.seq, b.reason, v.checked
                ),
            });
            Ok(if v.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Offline { cmd } => {
            let opened = tessera_server::open(config, tessera_server::time::system_clock()).await?;
            let ctx = Ctx::cli(&whoami());
            match cmd {
                OfflineCmd::Respond { code } => {
                    let r = opened
                        .services
                        .offline_respond(&ctx, RespondRequest { request_code: code, license_key: None })
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    let v = serde_json::to_value(&r)?;
                    print(json, &v, || {
                        format!(
                            "license {} (key …{}), seats used {}/{}\nfeatures: {}\n\n{}",
                            r.summary.license_id,
                            r.summary.license_key_hint,
                            r.summary.seats_used,
                            r.summary.max_activations,
                            r.summary.features.join(", "),
                            r.response_code
                        )
                    });
                }
                OfflineCmd::Receipt { code } => {
                    let v = opened
                        .services
                        .offline_receipt(&ctx, ReceiptRequest { receipt_code: code })
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    let human = format!("{} (activation {})", v.message, v.activation_id);
                    let v = serde_json::to_value(&v)?;
                    print(json, &v, || human);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Emergency { cmd } => {
            let opened = tessera_server::open(config, tessera_server::time::system_clock()).await?;
            let ctx = Ctx::cli(&whoami());
            match cmd {
                EmergencyCmd::Issue { license, reason, hours, request_code } => {
                    if reason.trim().is_empty() {
                        bail!("--reason must say why the emergency code is needed");
                    }
                    let r = opened
                        .services
                        .issue_emergency(&ctx, license, IssueEmergency { reason, validity_hours: hours, request_code })
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    let v = serde_json::to_value(&r)?;
                    print(json, &v, || {
                        format!(
                            "emergency code #{} valid until {}{}:\n\n{}",
                            r.serial,
                            r.expires_at,
                            if r.bound_device.is_some() { " (bound to one device)" } else { "" },
                            r.code
                        )
                    });
                }
                EmergencyCmd::List { license } => {
                    let list =
                        opened.services.list_emergency(&ctx, license).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                    print(json, &serde_json::to_value(&list)?, || {
                        list.iter()
                            .map(|r| {
                                format!(
                                    "#{} issued {} by {} until {}: {}",
                                    r.serial, r.issued_at, r.issued_by, r.expires_at, r.reason
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    });
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| "operator".into())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
