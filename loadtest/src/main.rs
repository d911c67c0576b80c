//! `tessera-load`: a fixed-duration, keep-alive load harness for tessera-server.
//!
//! It starts the real server in-process (its embedded SQLite on a temporary data directory, `synchronous=FULL`)
//! and, on the same runtime, a bare **baseline** endpoint that does what every client endpoint must at least
//! do — verify a client Ed25519 signature over the body and sign a JSON answer — with no database. Each scenario
//! then runs for a fixed time from N keep-alive connections, and the report gives req/s, p50 and p99 and the
//! ratio of each scenario's throughput to the baseline measured in the same run.
//!
//! `cargo run --release -p tessera-load -- --duration 10 --connections 32`
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark binary: failing loudly is the point

mod baseline;
mod scenarios;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(about = "Load harness for tessera-server with a same-run baseline")]
pub struct Args {
    /// Seconds per scenario (and as many again for its paired baseline).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Each scenario alternates with the baseline in this many slices, so both see the same machine noise.
    #[arg(long, default_value_t = 8)]
    pub rounds: u32,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Scenarios to run (baseline always runs first): validate, activate, heartbeat, and licenses-api /
    /// licenses-console (a page of 100 of 1,000 licenses, as JSON and as the console's page).
    #[arg(long, value_delimiter = ',', default_value = "validate,activate,heartbeat")]
    pub scenarios: Vec<String>,
    /// Server worker threads (the machine has 2 cores; client and server share them).
    #[arg(long, default_value_t = 2)]
    pub server_threads: usize,
    /// Append the Markdown report to this file as well as printing it.
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
}

/// Latencies and counts of one scenario.
pub struct Stats {
    pub name: String,
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latencies_us: Vec<u32>,
    pub first_error: Option<String>,
    /// Throughput of the baseline slices interleaved with this scenario's.
    pub paired_baseline_rps: Option<f64>,
}

impl Stats {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// Both slices' requests and time together.
    pub fn merge(mut self, other: Stats) -> Stats {
        self.ok += other.ok;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.latencies_us.extend(other.latencies_us);
        self.latencies_us.sort_unstable();
        self.first_error = self.first_error.or(other.first_error);
        self
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }
}

/// Runs `request(worker, i)` from `connections` workers for `duration`; each call is one request.
pub async fn drive<F, Fut>(name: &str, connections: usize, duration: Duration, request: F) -> Stats
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let request = Arc::new(request);
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(connections);
    for w in 0..connections {
        let request = request.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let (mut errors, mut first_error) = (0u64, None);
            while Instant::now() < deadline {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                match request(w, i).await {
                    Ok(()) => lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (lat, errors, first_error)
        }));
    }
    let mut stats = Stats {
        name: name.to_string(),
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_us: vec![],
        first_error: None,
        paired_baseline_rps: None,
    };
    for t in tasks {
        let (lat, errors, first_error) = t.await.expect("worker");
        stats.latencies_us.extend(lat);
        stats.errors += errors;
        if stats.first_error.is_none() {
            stats.first_error = first_error;
        }
    }
    stats.elapsed = start.elapsed();
    stats.ok = stats.latencies_us.len() as u64;
    stats.latencies_us.sort_unstable();
    stats
}

fn report(args: &Args, results: &[Stats]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Run of {} — {} s per scenario in {} slices alternating with as many baseline slices, {} keep-alive \
         connections, {} server worker threads, client in the same process.\n\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        args.duration,
        args.rounds.max(1),
        args.connections,
        args.server_threads
    ));
    out.push_str(
        "| scenario | requests | errors | req/s | p50 | p99 | paired baseline req/s | ratio to baseline |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for s in results {
        let (paired, ratio) = match s.paired_baseline_rps {
            Some(b) => (format!("{b:.0}"), format!("{:.2}", s.rps() / b)),
            None => ("—".into(), "1.00".into()),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.2} ms | {:.2} ms | {paired} | {ratio} |\n",
            s.name,
            s.ok,
            s.errors,
            s.rps(),
            s.percentile_ms(0.50),
            s.percentile_ms(0.99),
        ));
    }
    for s in results {
        if let Some(e) = &s.first_error {
            out.push_str(&format!("\n{}: first error: {e}\n", s.name));
        }
    }
    out
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The server gets its own runtime with a fixed number of workers; the client drives from another.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads)
        .thread_name("server")
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let dir = tempfile::tempdir()?;
    let servers = server_rt.block_on(scenarios::start_servers(dir.path())).context("starting servers")?;
    let results = client_rt.block_on(scenarios::run_all(&args, &servers))?;
    let text = report(&args, &results);
    println!("{text}");
    if let Some(path) = &args.report {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        writeln!(f, "{text}")?;
    }
    server_rt.block_on(servers.shutdown());
    Ok(())
}
