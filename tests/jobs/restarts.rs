//! Jobs through failures: an agent killed in the middle of its execution
//! and a gateway killed in the middle of a job. Each host still ends in a
//! final state, and ran the command once.

use std::time::Duration;

use serde_json::json;

use crate::common::fleet::Fleet;
use crate::common::process::serve;
use crate::counted;

/// The agent is SIGKILLed while its process runs and started again: the
/// coordinator asks again, the agent answers from its record with the
/// process's real exit, and the process ran once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_execution_does_not_run_it_twice() {
    let mut fleet = Fleet::start(2, &[]).await;
    let mut op = fleet.operator().await;
    let job = op.run("host_*", counted("sleep 3; echo finished")).await;
    op.until_state(&job, "host_1", "running").await;
    fleet.kill(1).await;
    fleet.restart(1).await;
    let end = op.until_over(&job).await;
    assert_eq!(end["counts"], json!({"exited": 2}), "{end}");
    let out = op
        .ask("job_output", json!({"job": job, "host": "host_1"}))
        .await;
    assert_eq!(out["host"]["stdout"]["head"], "finished\n", "{out}");
    assert_eq!(out["host"]["exit_code"], 0);
    assert!(
        out["host"]["attempts"].as_u64().unwrap() >= 2,
        "asked again: {out}"
    );
    assert_eq!(fleet.runs()["host_1"], 1, "ran once");
}

/// The gateway is SIGKILLed in the middle of a job, one host at a time,
/// and started again on its data folder: it takes the job over from its
/// ledger, and every host ran the command once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_job_resumes_it_from_its_ledger() {
    let mut fleet = Fleet::start(5, &[]).await;
    let mut op = fleet.operator().await;
    let job = op
        .run_with("host_*", counted("sleep 1"), json!({"batch": 1}))
        .await;
    op.until_state(&job, "host_1", "exited").await;
    fleet.gateway.signal("KILL");
    fleet.gateway.exit(Duration::from_secs(10)).await;
    fleet.gateway = serve(&fleet.addr.to_string(), fleet.data.path().to_str().unwrap());
    fleet.gateway.listening().await;
    fleet.until_online(5).await;
    let mut op = fleet.operator().await;
    let end = op.until_over(&job).await;
    assert_eq!(end["state"], "finished", "{end}");
    assert_eq!(end["counts"], json!({"exited": 5}), "{end}");
    let runs = fleet.runs();
    assert!(
        runs.values().all(|n| *n == 1),
        "each host ran it once: {runs:?}"
    );
    assert!(fleet.gateway.log().contains("taking the job over"));
}
