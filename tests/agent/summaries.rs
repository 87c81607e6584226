//! The agent's health summaries (PROTOCOL §20): a real agent sends them to
//! a real gateway on its own, whether or not anyone watches, and the
//! inventory and the history show them.

use std::time::Duration;

use crate::Fleet;

#[tokio::test]
async fn the_agent_sends_its_health_summary() {
    let fleet = Fleet::start().await;
    // Its first summary follows its facts: no one asked for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let health = loop {
        let (code, listed) = fleet.ctl_json(&fleet.vic, &["hosts", "host1"]).await;
        assert_eq!(code, 0, "{listed}");
        let health = &listed["hosts"][0]["health"];
        if health.is_object() {
            break health.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no health listed: {listed}\n{}",
            fleet.agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // This host's figures, in range; no VPN on it.
    for figure in ["cpu", "mem", "disk"] {
        let value = health[figure].as_f64().expect(figure);
        assert!((0.0..=100.0).contains(&value), "{figure}: {health}");
    }
    assert!(health["mem"].as_f64() > Some(0.0), "{health}");
    assert!(health["disk"].as_f64() > Some(0.0), "{health}");
    assert!(health["load"].as_f64() >= Some(0.0), "{health}");
    assert!(health.get("vpn_age").is_none(), "{health}");
    assert_eq!(
        health["trend"].as_array().map(Vec::len),
        Some(1),
        "{health}"
    );
    // Written within a second: the history has it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (code, history) = fleet.ctl_json(&fleet.vic, &["history", "host1"]).await;
        assert_eq!(code, 0, "{history}");
        if let Some(point) = history["points"].as_array().and_then(|p| p.first()) {
            // Stored in hundredths.
            let (stored, latest) = (point["mem"].as_f64(), health["mem"].as_f64());
            assert!(
                (stored.expect("mem") - latest.expect("mem")).abs() < 0.01,
                "{history}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no points: {history}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The gateway took it: the agent logged no refusal.
    assert!(
        !fleet.agent.log().contains("refused this host's summary"),
        "{}",
        fleet.agent.log()
    );
}
