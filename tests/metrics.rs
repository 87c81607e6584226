//! `GET /metrics` reflects what happened on the gateway. One test in its own
//! binary: the metrics are process-wide.

mod common;

use common::TestServer;
use serde_json::json;

/// The value of the sample `name` (with its labels, as written in the output).
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

async fn scrape(server: &TestServer) -> String {
    let resp = reqwest::get(server.http_url("/metrics")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    resp.text().await.unwrap()
}

#[tokio::test]
async fn metrics_count_connections_payloads_frames_services_and_closes() {
    let server = TestServer::start();
    let mut a = server.client("alice").await;
    let mut b = server.client("bob").await;
    a.expect("CLIENT_JOINED").await;
    a.request(json!({"type": "SERVICE_CREATE", "service": "chat"}), 0)
        .await;
    b.expect("SERVICE_CREATE_RESULT").await;
    b.request(json!({"type": "SELF_SUBSCRIBE", "service": "chat"}), 0)
        .await;
    for i in 0..10 {
        a.send(
            json!({"type": "MESSAGE", "target": {"type": "SERVICE", "service": "chat"}, "data": i}),
        )
        .await;
        a.expect("OK").await;
        b.expect("MESSAGE").await;
    }
    a.send_text("garbage".into()).await;
    a.expect("ERROR_PROTOCOL").await;

    let text = scrape(&server).await;
    assert_eq!(sample(&text, "concierge_connections_open"), 2.0);
    assert_eq!(sample(&text, "concierge_clients_identified"), 2.0);
    assert_eq!(sample(&text, "concierge_services"), 1.0);
    assert_eq!(sample(&text, "concierge_subscriptions"), 1.0);
    assert_eq!(
        sample(&text, r#"concierge_payloads_in_total{type="IDENTIFY"}"#),
        2.0
    );
    assert_eq!(
        sample(&text, r#"concierge_payloads_in_total{type="MESSAGE"}"#),
        10.0
    );
    assert_eq!(
        sample(&text, r#"concierge_payloads_in_total{type="INVALID"}"#),
        1.0
    );
    // 2 HELLO, 1 CLIENT_JOINED, 2 SERVICE_CREATE_RESULT, 1 SELF_SUBSCRIBE_RESULT,
    // 10 OK + 10 MESSAGE, 1 ERROR_PROTOCOL.
    assert_eq!(sample(&text, "concierge_frames_out_total"), 27.0);
    assert!(sample(&text, "concierge_bytes_in_total") > 0.0);
    assert!(sample(&text, "concierge_bytes_out_total") > 0.0);
    assert!(sample(&text, "concierge_outgoing_queue_depth_max") >= 1.0);
    assert!(sample(&text, "concierge_broker_publish_seconds_count") >= 11.0);

    b.close().await;
    a.expect("CLIENT_LEFT").await;
    let text = scrape(&server).await;
    assert_eq!(sample(&text, "concierge_connections_open"), 1.0);
    assert_eq!(sample(&text, "concierge_clients_identified"), 1.0);
    assert_eq!(sample(&text, "concierge_subscriptions"), 0.0);
    assert_eq!(
        sample(&text, r#"concierge_sessions_closed_total{code="1005"}"#),
        1.0
    );
    // The high-water mark resets at each scrape.
    assert!(sample(&text, "concierge_outgoing_queue_depth_max") <= 1.0);
}
