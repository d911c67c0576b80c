//! Prometheus metrics on `prometheus-client`, rendered in the text exposition format at `/metrics`:
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `tessera_http_requests_total` | method, route, status | requests |
//! | `tessera_http_request_duration_seconds` | method, route | request latency |
//! | `tessera_activations_total` | outcome | client activations: created, reused, replaced, or the refusal code |
//! | `tessera_heartbeats_total` | outcome | heartbeats: renewed, reused (cached token), inactive, or the refusal code |
//! | `tessera_decisions_total` | endpoint, reason | decisions answered to clients, by reason code |
//! | `tessera_client_refusals_total` | code | refused calls counted rather than audited one by one (unknown keys) |
//! | `tessera_cache_lookups_total` | result (hit, miss) | read-cache lookups; the hit ratio is hit / (hit + miss) |
//! | `tessera_store_op_duration_seconds` | kind | store calls (queue + work) |
//! | `tessera_store_commit_duration_seconds` | | group-commit transactions |
//! | `tessera_store_batched_writes_total` | | write requests committed in batches |
//! | `tessera_store_write_queue_depth` | | writes waiting for the writer |
//! | `tessera_store_reads_waiting` | | reads waiting for a read connection |
//! | `tessera_deferred_audit_entries` | | audit entries and last-seen times waiting to be written |
//!
//! Each family holds its own lock per label set; nothing takes one lock for every request.

use std::collections::HashSet;
use std::sync::{LazyLock, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: &'static str,
}

/// The standard methods as themselves, anything else as `OTHER` (a client can send any token as a method).
fn method_label(m: &str) -> &'static str {
    match m {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

/// A route template as a `&'static str`, kept once per template: the router has a fixed set of them (and
/// `unmatched`), so this holds a few dozen strings, and a request's labels cost no allocation.
fn route_label(route: &str) -> &'static str {
    static SEEN: LazyLock<RwLock<HashSet<&'static str>>> = LazyLock::new(RwLock::default);
    if let Some(r) = SEEN.read().unwrap_or_else(|e| e.into_inner()).get(route) {
        return r;
    }
    let mut seen = SEEN.write().unwrap_or_else(|e| e.into_inner());
    match seen.get(route) {
        Some(r) => r,
        None => {
            let r: &'static str = Box::leak(route.to_owned().into_boxed_str());
            seen.insert(r);
            r
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    endpoint: &'static str,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histograms<RouteLabels>,
    activations: Family<OutcomeLabels, Counter>,
    heartbeats: Family<OutcomeLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    refusals: Family<CodeLabels, Counter>,
    cache_hits: Counter,
    cache_misses: Counter,
    store_ops: Histograms<KindLabels>,
    commits: Histogram,
    batched_writes: Counter,
    /// Writes waiting for the writer.
    pub write_queue: Gauge,
    /// Reads waiting for a read connection.
    pub reads_waiting: Gauge,
    /// Audit entries and last-seen times waiting to be written.
    pub deferred: Gauge,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("tessera_http_requests", "HTTP requests by route and status", requests.clone());
        let latency = Histograms::<RouteLabels>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register("tessera_http_request_duration_seconds", "HTTP request latency", latency.clone());
        let activations = Family::<OutcomeLabels, Counter>::default();
        registry.register("tessera_activations", "Client activations by outcome", activations.clone());
        let heartbeats = Family::<OutcomeLabels, Counter>::default();
        registry.register("tessera_heartbeats", "Heartbeats by outcome", heartbeats.clone());
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "tessera_decisions",
            "Decisions answered to clients, by endpoint and reason",
            decisions.clone(),
        );
        let refusals = Family::<CodeLabels, Counter>::default();
        registry.register(
            "tessera_client_refusals",
            "Client calls refused for an unknown license key",
            refusals.clone(),
        );
        let cache = Family::<ResultLabels, Counter>::default();
        let (cache_hits, cache_misses) = (
            cache.get_or_create_owned(&ResultLabels { result: "hit" }),
            cache.get_or_create_owned(&ResultLabels { result: "miss" }),
        );
        registry.register("tessera_cache_lookups", "Read-cache lookups by result", cache);
        let store_ops = Histograms::<KindLabels>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register("tessera_store_op_duration_seconds", "Store call latency (queue + work)", store_ops.clone());
        let commits = histogram();
        registry.register("tessera_store_commit_duration_seconds", "Group-commit transaction time", commits.clone());
        let batched_writes = Counter::default();
        registry.register(
            "tessera_store_batched_writes",
            "Write requests committed in batches",
            batched_writes.clone(),
        );
        let write_queue = Gauge::default();
        registry.register("tessera_store_write_queue_depth", "Writes waiting for the writer", write_queue.clone());
        let reads_waiting = Gauge::default();
        registry.register("tessera_store_reads_waiting", "Reads waiting for a read connection", reads_waiting.clone());
        let deferred = Gauge::default();
        registry.register(
            "tessera_deferred_audit_entries",
            "Audit entries and last-seen times waiting to be written",
            deferred.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            activations,
            heartbeats,
            decisions,
            refusals,
            cache_hits,
            cache_misses,
            store_ops,
            commits,
            batched_writes,
            write_queue,
            reads_waiting,
            deferred,
        }
    }
}

impl Metrics {
    /// A request answered; `route` is the router's template for it (a fixed set), not the path asked for.
    pub fn request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let (method, route) = (method_label(method), route_label(route));
        self.latency.get_or_create(&RouteLabels { method, route }).observe(elapsed.as_secs_f64());
        self.requests.get_or_create(&RequestLabels { method, route, status }).inc();
    }

    pub fn activation(&self, outcome: &str) {
        self.activations.get_or_create(&OutcomeLabels { outcome: outcome.to_string() }).inc();
    }

    pub fn heartbeat(&self, outcome: &str) {
        self.heartbeats.get_or_create(&OutcomeLabels { outcome: outcome.to_string() }).inc();
    }

    /// A decision answered on `endpoint`, by its reason code.
    pub fn decision(&self, endpoint: &'static str, reason: &str) {
        self.decisions.get_or_create(&DecisionLabels { endpoint, reason: reason.to_string() }).inc();
    }

    /// A refused client call that is counted rather than audited one by one (unknown license keys).
    pub fn refusal(&self, code: &str) {
        self.refusals.get_or_create(&CodeLabels { code: code.to_string() }).inc();
    }

    pub fn cache_lookup(&self, hit: bool) {
        if hit {
            self.cache_hits.inc();
        } else {
            self.cache_misses.inc();
        }
    }

    pub fn store_op(&self, kind: &'static str, elapsed: Duration) {
        self.store_ops.get_or_create(&KindLabels { kind }).observe(elapsed.as_secs_f64());
    }

    pub fn store_batch(&self, items: usize, elapsed: Duration) {
        self.commits.observe(elapsed.as_secs_f64());
        self.batched_writes.inc_by(items as u64);
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Counts one waiter in a gauge until dropped, or until handed over to whoever counts it down later (the writer,
/// for a queued write); a waiter given up halfway (its request dropped) is counted down all the same.
pub struct Waiting<'a>(Option<&'a Gauge>);

impl<'a> Waiting<'a> {
    pub fn new(gauge: &'a Gauge) -> Waiting<'a> {
        gauge.inc();
        Waiting(Some(gauge))
    }

    pub fn hand_over(mut self) {
        self.0 = None;
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.0 {
            g.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn every_family_renders_with_its_labels_and_counts() {
        let m = Metrics::default();
        m.request("POST", "/v1/client/heartbeat", 200, Duration::from_millis(2));
        m.request("POST", "/v1/client/heartbeat", 200, Duration::from_millis(3));
        m.request("POST", "/v1/client/heartbeat", 403, Duration::from_millis(1));
        m.activation("SEAT_LIMIT_REACHED");
        m.heartbeat("renewed");
        m.decision("validate", "FEATURE_NOT_ENTITLED");
        m.refusal("LICENSE_NOT_FOUND");
        m.request("BREW", "/v1/client/heartbeat", 400, Duration::from_millis(1));
        m.cache_lookup(true);
        m.cache_lookup(true);
        m.cache_lookup(false);
        m.store_op("read", Duration::from_micros(300));
        m.store_batch(7, Duration::from_millis(1));
        m.write_queue.set(3);
        let text = m.render();
        let at = |s: &str| value(&text, s).unwrap_or_else(|| panic!("{s} missing from\n{text}"));
        assert_eq!(at(r#"tessera_http_requests_total{method="POST",route="/v1/client/heartbeat",status="200"}"#), 2.0);
        assert_eq!(at(r#"tessera_http_requests_total{method="POST",route="/v1/client/heartbeat",status="403"}"#), 1.0);
        assert_eq!(
            at(r#"tessera_http_request_duration_seconds_count{method="POST",route="/v1/client/heartbeat"}"#),
            3.0
        );
        assert_eq!(at(r#"tessera_http_requests_total{method="OTHER",route="/v1/client/heartbeat",status="400"}"#), 1.0);
        assert_eq!(at(r#"tessera_activations_total{outcome="SEAT_LIMIT_REACHED"}"#), 1.0);
        assert_eq!(at(r#"tessera_heartbeats_total{outcome="renewed"}"#), 1.0);
        assert_eq!(at(r#"tessera_decisions_total{endpoint="validate",reason="FEATURE_NOT_ENTITLED"}"#), 1.0);
        assert_eq!(at(r#"tessera_client_refusals_total{code="LICENSE_NOT_FOUND"}"#), 1.0);
        assert_eq!(at(r#"tessera_cache_lookups_total{result="hit"}"#), 2.0);
        assert_eq!(at(r#"tessera_cache_lookups_total{result="miss"}"#), 1.0);
        assert_eq!(at(r#"tessera_store_op_duration_seconds_count{kind="read"}"#), 1.0);
        assert_eq!(at("tessera_store_batched_writes_total"), 7.0);
        assert_eq!(at("tessera_store_write_queue_depth"), 3.0);
        assert!(text.contains("# TYPE tessera_http_requests counter"), "{text}");
    }

    #[test]
    fn a_waiter_is_counted_until_it_is_done_or_handed_over() {
        let g = Gauge::default();
        let a = Waiting::new(&g);
        let b = Waiting::new(&g);
        assert_eq!(g.get(), 2);
        drop(a);
        assert_eq!(g.get(), 1, "given up: counted down");
        b.hand_over();
        assert_eq!(g.get(), 1, "handed over: the taker counts it down");
    }
}
