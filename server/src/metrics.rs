//! Prometheus metrics, kept by hand: request counts and latency histograms per route, activation outcomes,
//! store timings. Rendered in the text exposition format at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}", self.counts[i]);
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// Requests of one route and method.
#[derive(Default)]
struct RouteStats {
    by_status: BTreeMap<u16, u64>,
    latency: Histogram,
}

#[derive(Default)]
struct Inner {
    /// Route → method → counts and latency; looked up by `&str`, so a known route allocates nothing.
    routes: BTreeMap<String, BTreeMap<String, RouteStats>>,
    activations: BTreeMap<String, u64>,
    refusals: BTreeMap<String, u64>,
    store_ops: BTreeMap<String, Histogram>,
    batches: Histogram,
    batch_items: u64,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    pub fn request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.with(|m| {
            if let Some(stats) = entry(&mut m.routes, route).and_then(|by| entry(by, method)) {
                *stats.by_status.entry(status).or_default() += 1;
                stats.latency.observe(elapsed.as_secs_f64());
            }
        });
    }

    pub fn activation(&self, outcome: &str) {
        self.with(|m| entry(&mut m.activations, outcome).map(|n| *n += 1));
    }

    /// A refused client call that is counted rather than audited one by one (unknown license keys).
    pub fn refusal(&self, code: &str) {
        self.with(|m| entry(&mut m.refusals, code).map(|n| *n += 1));
    }

    pub fn store_op(&self, kind: &str, elapsed: Duration) {
        self.with(|m| entry(&mut m.store_ops, kind).map(|h| h.observe(elapsed.as_secs_f64())));
    }

    pub fn store_batch(&self, items: usize, elapsed: Duration) {
        self.with(|m| {
            m.batches.observe(elapsed.as_secs_f64());
            m.batch_items += items as u64;
        });
    }

    pub fn render(&self) -> String {
        self.with(|m| {
            let mut out = String::with_capacity(4096);
            out.push_str("# HELP tessera_http_requests_total HTTP requests by route and status.\n");
            out.push_str("# TYPE tessera_http_requests_total counter\n");
            let routes = || m.routes.iter().flat_map(|(r, by)| by.iter().map(move |(method, s)| (r, method, s)));
            for (route, method, s) in routes() {
                for (status, n) in &s.by_status {
                    let _ = writeln!(
                        out,
                        "tessera_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
                    );
                }
            }
            out.push_str("# HELP tessera_http_request_duration_seconds HTTP request latency.\n");
            out.push_str("# TYPE tessera_http_request_duration_seconds histogram\n");
            for (route, method, s) in routes() {
                s.latency.render(
                    &mut out,
                    "tessera_http_request_duration_seconds",
                    &format!("method=\"{method}\",route=\"{route}\""),
                );
            }
            out.push_str("# HELP tessera_activations_total Client activations by outcome.\n");
            out.push_str("# TYPE tessera_activations_total counter\n");
            for (outcome, n) in &m.activations {
                let _ = writeln!(out, "tessera_activations_total{{outcome=\"{outcome}\"}} {n}");
            }
            out.push_str("# HELP tessera_client_refusals_total Client calls refused for an unknown license key.\n");
            out.push_str("# TYPE tessera_client_refusals_total counter\n");
            for (code, n) in &m.refusals {
                let _ = writeln!(out, "tessera_client_refusals_total{{code=\"{code}\"}} {n}");
            }
            out.push_str("# HELP tessera_store_op_duration_seconds Store call latency (queue + work).\n");
            out.push_str("# TYPE tessera_store_op_duration_seconds histogram\n");
            for (kind, h) in &m.store_ops {
                h.render(&mut out, "tessera_store_op_duration_seconds", &format!("kind=\"{kind}\""));
            }
            out.push_str("# HELP tessera_store_commit_duration_seconds Group-commit transaction time.\n");
            out.push_str("# TYPE tessera_store_commit_duration_seconds histogram\n");
            m.batches.render(&mut out, "tessera_store_commit_duration_seconds", "");
            out.push_str("# HELP tessera_store_batched_writes_total Write requests committed in batches.\n");
            out.push_str("# TYPE tessera_store_batched_writes_total counter\n");
            let _ = writeln!(out, "tessera_store_batched_writes_total {}", m.batch_items);
            out
        })
    }
}

/// The value under `key`, created when missing; allocates only then. (Always `Some`: an `Option` because the
/// borrow checker cannot yet return the first lookup's borrow and fall back to an insert.)
fn entry<'a, V: Default>(map: &'a mut BTreeMap<String, V>, key: &str) -> Option<&'a mut V> {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key)
}
