//! Key revocation through the real server and the real agent library: a key the vendor revoked verifies nothing in
//! the agent (stored license file and token, signed server answers), not even when a server that still holds the
//! leaked key answers the agent.

use serde_json::json;
use tessera_agent::Agent;
use tessera_core::{PublicKeyset, Reason};
use tessera_server::keys::KeyDir;
use tessera_test_support::{agent_config, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_signing_key_verifies_nothing_in_the_agent() {
    let mut server = TestServer::start().await;
    let fx = server.fixture("key-revocation", json!({})).await;
    let leaked = server.running().services.keys.signer().key_id();
    let leaked_pem = server.dir.path().join("keys").join(format!("{leaked}.pem"));

    // An agent activated while the (soon leaked) key signed.
    let state = tempfile::tempdir().unwrap();
    let old_config = agent_config(state.path(), "machine-1", server.keyset(), fx.product, Some(&server.url()));
    let agent = Agent::open(old_config.clone()).unwrap();
    agent.activate(&fx.key).await.unwrap();
    assert_eq!(agent.check("export_pdf").reason, Reason::Valid);
    drop(agent);

    // The vendor rotates, revokes the leaked key, restarts and ships the re-exported keyset.
    server.stop().await;
    let kd = KeyDir::new(server.dir.path());
    let current = kd.rotate().unwrap();
    kd.revoke(&leaked.to_string()).unwrap();
    server.restart().await;
    let shipped = PublicKeyset::from_json(&server.keyset().to_json()).unwrap();
    assert!(shipped.is_revoked(&leaked));
    assert_eq!(shipped.keys().iter().map(|k| k.key_id().to_string()).collect::<Vec<_>>(), vec![current.kid.clone()]);

    // The agent of the new release refuses what the revoked key signed, though the signatures are intact.
    let mut new_config = old_config.clone();
    new_config.keyset = shipped.clone();
    let agent = Agent::open(new_config.clone()).unwrap();
    assert_eq!(agent.check("export_pdf").reason, Reason::SignatureInvalid);
    // The next heartbeat brings artefacts signed by the current key, and the feature works again.
    agent.heartbeat().await.unwrap();
    assert_eq!(agent.check("export_pdf").reason, Reason::Valid);
    drop(agent);

    // Whoever holds the leaked key runs a server signing with it: its answers are refused.
    let mut rogue = TestServer::start().await;
    rogue.stop().await;
    let rogue_keys = rogue.dir.path().join("keys");
    for entry in std::fs::read_dir(&rogue_keys).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    std::fs::copy(&leaked_pem, rogue_keys.join(format!("{leaked}.pem"))).unwrap();
    rogue.restart().await;
    assert_eq!(rogue.running().services.keys.signer().key_id(), leaked);
    let rfx = rogue.fixture("rogue", json!({})).await;
    let rogue_state = tempfile::tempdir().unwrap();
    let mut config = agent_config(rogue_state.path(), "machine-2", shipped.clone(), rfx.product, Some(&rogue.url()));
    config.keyset = shipped;
    let agent = Agent::open(config).unwrap();
    let err = agent.activate(&rfx.key).await.unwrap_err().to_string();
    assert!(err.contains("revoked"), "{err}");
    assert_eq!(agent.check("export_pdf").reason, Reason::NotActivated);
    rogue.stop().await;
    server.stop().await;
}
