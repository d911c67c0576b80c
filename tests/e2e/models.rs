//! License models with the real server and agent: a PER_CORE activation takes a seat per core and stops working
//! on a machine that grew; a NAMED_USER license counts users, whatever devices they use.

use serde_json::json;
use tessera_agent::Agent;
use tessera_core::model::CpuCount;
use tessera_core::Reason;
use tessera_test_support::{agent_config, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_core_seat_follows_the_machine_s_cores() {
    let server = TestServer::start().await;
    let fx = server.fixture("cores", json!({"license_model": "PER_CORE", "max_activations": 6})).await;
    let dir = tempfile::tempdir().unwrap();
    let four = CpuCount { sockets: 1, cores: 4 };
    let config = agent_config(dir.path(), "cores-a", server.keyset(), fx.product, Some(&server.url()));
    let a = Agent::open(config.clone().with_cpu_count(four)).unwrap();
    a.activate(&fx.key).await.unwrap();
    assert_eq!(a.check("export_pdf").reason, Reason::Valid);
    assert_eq!(server.license_json(&fx).await["seats_used"], 4);
    // A second 4-core machine does not fit into the 2 seats left.
    let b = Agent::open(
        agent_config(dir.path(), "cores-b", server.keyset(), fx.product, Some(&server.url())).with_cpu_count(four),
    )
    .unwrap();
    let err = b.activate(&fx.key).await.unwrap_err().to_string();
    assert!(err.contains("SEAT_LIMIT_REACHED") && err.contains("needs 4"), "{err}");
    drop(a);

    // The same state on a machine with more cores (a resized VM): denied offline, with what to do.
    let grown = Agent::open(config.clone().with_cpu_count(CpuCount { sockets: 2, cores: 16 })).unwrap();
    let d = grown.check("export_pdf");
    assert_eq!(d.reason, Reason::HardwareExceedsLicense, "{d:?}");
    assert!(!d.allowed);
    // Re-activating takes the extra seats only if they are free: 16 cores do not fit into 6 seats.
    assert!(grown.activate(&fx.key).await.is_err());
    drop(grown);
    let same = Agent::open(config.with_cpu_count(four)).unwrap();
    assert_eq!(same.check("export_pdf").reason, Reason::Valid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_user_takes_one_seat_on_any_number_of_devices() {
    let server = TestServer::start().await;
    let fx = server.fixture("named", json!({"license_type": "NAMED_USER", "max_activations": 1})).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = |name: &str, user: Option<&str>| {
        let mut c = agent_config(dir.path(), name, server.keyset(), fx.product, Some(&server.url()));
        if let Some(u) = user {
            c = c.with_user(u);
        }
        Agent::open(c).unwrap()
    };
    let err = agent("nobody", None).activate(&fx.key).await.unwrap_err().to_string();
    assert!(err.contains("USER_ID_REQUIRED"), "{err}");
    for device in ["alice-laptop", "alice-desktop"] {
        let a = agent(device, Some("alice"));
        a.activate(&fx.key).await.unwrap();
        assert_eq!(a.check("export_pdf").reason, Reason::Valid);
    }
    assert_eq!(server.license_json(&fx).await["seats_used"], 1);
    let err = agent("bob-laptop", Some("bob")).activate(&fx.key).await.unwrap_err().to_string();
    assert!(err.contains("SEAT_LIMIT_REACHED"), "{err}");
}
