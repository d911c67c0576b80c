//! A complete axum application gated by the agent: `/reports` needs the `reports` feature, `/api/search` uses one
//! unit of the `api_calls` quota per request, `/` is open. Denied requests get 402 (not in the plan, with the
//! upgrade offer), 429 (quota for the period used up, with `Retry-After`) or 403 (license unusable).
//!
//! `cargo run -p tessera-agent --example gated_app -- <state.db> <keyset.json> <product-id> [server-url]`, after
//! activating that state file (`tessera-agent activate`); then `curl -i localhost:8080/reports`.

use axum::routing::get;
use axum::Router;
use tessera_agent::gate::RequireFeature;
use tessera_agent::{Agent, AgentConfig};

fn app(agent: Agent) -> Router {
    let reports = Router::new()
        .route("/reports", get(|| async { "the quarterly report\n" }))
        .route_layer(RequireFeature(agent.clone(), "reports"));
    let api = Router::new()
        .route("/api/search", get(|| async { "{\"hits\": []}\n" }))
        .route_layer(RequireFeature::consuming(agent, "api_calls", 1));
    Router::new().route("/", get(|| async { "open to everyone\n" })).merge(reports).merge(api)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [state, keyset, product, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: gated_app <state.db> <keyset.json> <product-id> [server-url]");
    };
    let keyset = tessera_core::PublicKeyset::from_json(&std::fs::read_to_string(keyset)?)?;
    let mut config = AgentConfig::new(state, keyset, product.parse()?);
    if let Some(url) = rest.first() {
        config = config.with_server(url);
    }
    let agent = Agent::open(config)?;
    let _beats = agent.spawn_heartbeats();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    println!("listening on http://127.0.0.1:8080 (/, /reports, /api/search)");
    axum::serve(listener, app(agent)).await?;
    Ok(())
}
