//! The agent's health summaries (PROTOCOL §20): a real agent sends them to
//! a real gateway on its own, every interval, whether or not anyone
//! watches.

use std::time::Duration;

use crate::Fleet;

#[tokio::test]
async fn the_agent_sends_its_health_summary() {
    let mut fleet = Fleet::start().await;
    // This gateway does not take summaries yet: the agent says so, once.
    fleet
        .agent
        .wait_for_line(
            &["refused this host's summary", "unknown_request"],
            Duration::from_secs(15),
        )
        .await;
}
