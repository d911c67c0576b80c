//! tessera-server: the Tessera licensing API on embedded SQLite.
//!
//! Layers: [`http`] (routes, extractors, the one error shape) → [`services`] (the rules) → [`store`] (role
//! traits, backend-neutral; the SQLite backend is the one place that names SQLite). [`start`] opens the data directory and serves; [`app`] gives the router alone.
#![forbid(unsafe_code)]

pub mod config;
pub mod console;
pub mod error;
pub mod grpc;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod ratelimit;
pub mod services;
pub mod store;
pub mod time;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

pub use config::Config;
pub use error::AppError;
pub use http::{app as router, AppState};
pub use services::Services;

use store::sqlite::SqliteStore;
use store::Store;

/// The router for a state (testable without a port).
pub fn app(state: AppState) -> axum::Router {
    http::app(state)
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {path}: {reason}")]
    DataDir { path: String, reason: String },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: String, reason: String },
    #[error("{0}")]
    Other(String),
}

/// The database file inside a data directory.
pub fn db_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("tessera.db")
}

/// What [`open`] gives: services over the data directory, without a listener.
pub struct Opened {
    pub services: Services,
    /// Set only when this call created the first vendor-admin token.
    pub admin_token: Option<String>,
}

/// Opens (creating on first use) the data directory: database, migrations, signing key, first admin token.
pub async fn open(config: Config, clock: time::Clock) -> Result<Opened, StartError> {
    config.validate().map_err(StartError::Other)?;
    let dir = config.data_dir.clone();
    std::fs::create_dir_all(&dir)
        .map_err(|e| StartError::DataDir { path: dir.display().to_string(), reason: e.to_string() })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    let db = db_path(&dir);
    let (sync, readers) = (config.synchronous, config.read_connections);
    let sqlite = tokio::task::spawn_blocking(move || SqliteStore::open(&db, sync, readers))
        .await
        .map_err(|e| StartError::Other(e.to_string()))??;
    let store: Arc<dyn Store> = Arc::new(sqlite);
    let keydir = keys::KeyDir::new(&dir);
    let (keyset, _) = tokio::task::spawn_blocking(move || keydir.load_or_init())
        .await
        .map_err(|e| StartError::Other(e.to_string()))??;
    let preset = config.admin_token.clone().map(|s| s.0);
    let geoip = match &config.geoip_db {
        Some(p) => Some(Arc::new(services::geoip::GeoIp::open(p).map_err(StartError::Other)?)),
        None => None,
    };
    let mut services = Services::new(store, keyset, clock, config);
    services.geoip = geoip;
    let path = dir.join("admin-token");
    let persist = |tok: &str| {
        tessera_core::crypto::write_private_file(&path, format!("{tok}\n").as_bytes())
            .map_err(|e| AppError::new(error::ErrorCode::Internal, format!("cannot write {}: {e}", path.display())))
    };
    let admin_token = services.bootstrap_admin(preset, persist).await.map_err(|e| StartError::Other(e.to_string()))?;
    Ok(Opened { services, admin_token })
}

/// A server started by [`start`].
pub struct RunningServer {
    pub addr: SocketAddr,
    /// Where the gRPC API listens (`grpc_listen`); `None` when it is not served.
    pub grpc_addr: Option<SocketAddr>,
    /// The first vendor-admin token; `Some` only on the first start of a data directory.
    pub admin_token: Option<String>,
    pub services: Services,
    console: Arc<console::Sessions>,
    shutdown: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    grpc: Option<tokio::task::JoinHandle<()>>,
    jobs: Option<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    /// The browser console's sessions (tests age them to check idle expiry).
    pub fn console_sessions(&self) -> &console::Sessions {
        &self.console
    }

    /// The public keyset agents embed.
    pub fn public_keyset(&self) -> tessera_core::PublicKeyset {
        (*self.services.public).clone()
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections, drains in-flight requests, stops the jobs.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Some(j) = self.jobs {
            j.abort();
            let _ = j.await;
        }
        let _ = self.server.await;
        if let Some(g) = self.grpc {
            let _ = g.await;
        }
        self.services.flush_audit().await;
    }

    /// Waits until the server stops (after a signal passed to [`RunningServer::shutdown_on`]).
    pub async fn wait(self) {
        let _ = self.server.await;
        if let Some(g) = self.grpc {
            let _ = g.await;
        }
        if let Some(j) = self.jobs {
            j.abort();
        }
        self.services.flush_audit().await;
    }

    /// A handle that triggers graceful shutdown.
    pub fn shutdown_handle(&self) -> tokio::sync::watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Opens the data directory and serves on `config.listen`.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    start_with_clock(config, time::system_clock()).await
}

pub async fn start_with_clock(config: Config, clock: time::Clock) -> Result<RunningServer, StartError> {
    let listen = config.listen.clone();
    let config_grpc = config.grpc_listen.clone();
    let job_interval = config.jobs.interval_secs;
    let opened = open(config, clock).await?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| StartError::Bind { addr: listen.clone(), reason: e.to_string() })?;
    let addr = listener.local_addr().map_err(|e| StartError::Bind { addr: listen, reason: e.to_string() })?;
    let grpc_listener = match &config_grpc {
        Some(g) => Some(
            tokio::net::TcpListener::bind(g)
                .await
                .map_err(|e| StartError::Bind { addr: g.clone(), reason: e.to_string() })?,
        ),
        None => None,
    };
    let grpc_addr = match (&grpc_listener, &config_grpc) {
        (Some(l), Some(g)) => {
            Some(l.local_addr().map_err(|e| StartError::Bind { addr: g.clone(), reason: e.to_string() })?)
        }
        _ => None,
    };
    let services = opened.services.clone();
    let state = AppState::new(services.clone());
    let (admin_limiter, shared, console) = (state.admin_limiter.clone(), state.services.clone(), state.console.clone());
    let router = http::app(state);
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let grpc = grpc_listener.map(|listener| {
        let mut rx = rx.clone();
        let service = grpc::Grpc::new(shared, admin_limiter);
        tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|v| *v).await;
            };
            if let Err(e) = grpc::serve(listener, service, stop).await {
                tracing::error!(error = %e, "gRPC server error");
            }
        })
    });
    let server = tokio::spawn(async move {
        let r = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|v| *v).await;
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "server error");
        }
    });
    let jobs = (job_interval > 0).then(|| {
        let s = services.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(job_interval));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match s.run_jobs().await {
                    Ok(r) => tracing::debug!(?r, "lifecycle jobs ran"),
                    Err(e) => tracing::warn!(error = %e, "lifecycle jobs failed"),
                }
            }
        })
    });
    tracing::info!(%addr, "tessera-server listening");
    if let Some(g) = grpc_addr {
        tracing::info!(addr = %g, "tessera-server gRPC listening");
    }
    Ok(RunningServer {
        addr,
        grpc_addr,
        admin_token: opened.admin_token,
        services,
        console,
        shutdown: tx,
        server,
        grpc,
        jobs,
    })
}
