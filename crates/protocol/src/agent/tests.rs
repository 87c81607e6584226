//! The vocabulary against the JSON PROTOCOL §13 and §14 show.

use serde_json::{json, Value};
use strum::IntoEnumIterator;

use super::args::*;
use super::*;

fn parse(data: Value) -> Result<Request, Failure> {
    Request::parse(&Envelope::decode(&data).expect("an envelope"))
}

/// Every request as §13.3 spells it, and its value.
fn documented() -> Vec<(Value, Request)> {
    let pid = |n| PidArg { pid: Pid(n) };
    let unit = |s: &str| Unit {
        service_name: s.into(),
    };
    vec![
        (
            json!({"req": "execute", "msg": {"cmd": ["python3", "server.py"]}}),
            Request::Execute(Execute {
                cmd: Some(vec!["python3".into(), "server.py".into()]),
                ..Execute::default()
            }),
        ),
        (
            json!({"req": "execute", "msg": {"command": "ls -l", "cwd": "w", "env": {"TZ": "UTC"}, "follow": true}}),
            Request::Execute(Execute {
                command: Some("ls -l".into()),
                cwd: Some("w".into()),
                env: Some([("TZ".to_owned(), "UTC".to_owned())].into()),
                follow: true,
                ..Execute::default()
            }),
        ),
        (
            json!({"req": "view_running", "msg": {"verb": 1}}),
            Request::ViewRunning(ViewRunning {
                verb: Some(json!(1)),
            }),
        ),
        (
            json!({"req": "list_started", "msg": {"offset": 20}}),
            Request::ListStarted(Page { offset: Some(20) }),
        ),
        (
            json!({"req": "proc_signal", "msg": {"pid": 12345, "mode": "SIGTERM"}}),
            Request::ProcSignal(ProcSignal {
                pid: Pid(12345),
                mode: "SIGTERM".into(),
            }),
        ),
        (
            json!({"req": "proc_output", "msg": {"proc_id": 7, "offset": 3, "follow": true}}),
            Request::ProcOutput(ProcOutput {
                proc_id: Pid(7),
                offset: Some(3),
                follow: true,
            }),
        ),
        (
            json!({"req": "telemetry", "msg": {"stat_types": ["disk_util"]}}),
            Request::Telemetry(Telemetry {
                stat_types: Some(vec!["disk_util".into()]),
            }),
        ),
        (
            json!({"req": "obtain_user_usages", "msg": {}}),
            Request::ObtainUserUsages(NoArgs {}),
        ),
        (
            json!({"req": "obtain_all_process_info", "msg": {}}),
            Request::ObtainAllProcessInfo(Page::default()),
        ),
        (
            json!({"req": "obtain_process_info", "msg": {"pid": 1}}),
            Request::ObtainProcessInfo(pid(1)),
        ),
        (
            json!({"req": "kill_process", "msg": {"pid": 4, "method": "SIGKILL"}}),
            Request::KillProcess(KillProcess {
                pid: Pid(4),
                method: Some("SIGKILL".into()),
            }),
        ),
        (
            json!({"req": "pause_process", "msg": {"pid": 4}}),
            Request::PauseProcess(pid(4)),
        ),
        (
            json!({"req": "resume_process", "msg": {"pid": 4}}),
            Request::ResumeProcess(pid(4)),
        ),
        (
            json!({"req": "list_services", "msg": {"offset": 0}}),
            Request::ListServices(Page { offset: Some(0) }),
        ),
        (
            json!({"req": "obtain_service_info", "msg": {"service_name": "ssh"}}),
            Request::ObtainServiceInfo(unit("ssh")),
        ),
        (
            json!({"req": "start_service", "msg": {"service_name": "a.service"}}),
            Request::StartService(unit("a.service")),
        ),
        (
            json!({"req": "stop_service", "msg": {"service_name": "a"}}),
            Request::StopService(unit("a")),
        ),
        (
            json!({"req": "restart_service", "msg": {"service_name": "a"}}),
            Request::RestartService(unit("a")),
        ),
        (
            json!({"req": "reload_service", "msg": {"service_name": "a"}}),
            Request::ReloadService(unit("a")),
        ),
        (
            json!({"req": "exec_command", "msg": {"command": "echo 'a b'"}}),
            Request::ExecCommand(ExecCommand {
                command: "echo 'a b'".into(),
                cwd: None,
                env: None,
            }),
        ),
        (
            json!({"req": "get_port", "msg": {}}),
            Request::GetPort(NoArgs {}),
        ),
        (
            json!({"req": "audit", "msg": {"limit": 50}}),
            Request::Audit(super::args::Audit { limit: Some(50) }),
        ),
        (
            json!({"req": "get_vpn_conf", "msg": {"conf_type": "wireguard", "tun_mode": "udp", "public_key": "k"}}),
            Request::GetVpnConf(GetVpnConf {
                conf_type: Some("wireguard".into()),
                tun_mode: Some("udp".into()),
                public_key: Some("k".into()),
                name: None,
            }),
        ),
        (json!({"req": "ping", "msg": {}}), Request::Ping(NoArgs {})),
        (
            json!({"req": "run_job", "msg": {"job": "0123456789ab", "request": {"req": "execute", "msg": {"cmd": ["uptime"]}}, "timeout_secs": 30}}),
            Request::RunJob(crate::jobs::RunJob {
                job: "0123456789ab".parse().expect("an id"),
                request: Box::new(Request::Execute(Execute {
                    cmd: Some(vec!["uptime".into()]),
                    ..Execute::default()
                })),
                timeout_secs: Some(30),
                stream: false,
            }),
        ),
        (
            json!({"req": "cancel_job", "msg": {"job": "0123456789ab"}}),
            Request::CancelJob(crate::jobs::CancelJob {
                job: "0123456789ab".parse().expect("an id"),
            }),
        ),
    ]
}

#[test]
fn every_request_round_trips_as_documented() {
    let cases = documented();
    let mut names: Vec<RequestName> = cases.iter().map(|(_, r)| r.name()).collect();
    names.dedup();
    assert_eq!(
        names,
        RequestName::iter().collect::<Vec<_>>(),
        "every request is documented, in order"
    );
    for (i, (wire, request)) in cases.into_iter().enumerate() {
        let mut data = wire.clone();
        data["rid"] = json!(i);
        assert_eq!(parse(data.clone()), Ok(request.clone()), "{wire}");
        assert_eq!(envelope(&request, i as u64), data, "{wire}");
    }
}

#[test]
fn access_is_as_documented() {
    let table = RequestName::table();
    assert_eq!(table.as_object().map(|t| t.len()), Some(25));
    for (name, access) in [
        ("execute", "command"),
        ("view_running", "read"),
        ("audit", "command"),
        ("get_vpn_conf", "read"),
        ("get_port", "read"),
        ("ping", "read"),
        ("reload_service", "command"),
        ("run_job", "command"),
        ("cancel_job", "command"),
    ] {
        assert_eq!(table[name], access, "{name}");
    }
    assert_eq!(Access::Read.role(), Role::Viewer);
    assert_eq!(Access::Command.role(), Role::Operator);
}

#[test]
fn absent_arguments_and_nulls_are_defaults() {
    assert_eq!(
        parse(json!({"req": "ping", "rid": 1})),
        Ok(Request::Ping(NoArgs {}))
    );
    assert_eq!(
        parse(
            json!({"req": "proc_output", "rid": 1, "msg": {"proc_id": 3, "offset": null, "follow": null, "other": 1}})
        ),
        Ok(Request::ProcOutput(ProcOutput {
            proc_id: Pid(3),
            offset: None,
            follow: false
        }))
    );
}

#[test]
fn wrong_arguments_are_bad_arguments_that_name_them() {
    for (data, field) in [
        (
            json!({"req": "proc_signal", "rid": 4, "msg": {"pid": "x", "mode": "SIGTERM"}}),
            "`pid`",
        ),
        (
            json!({"req": "obtain_process_info", "rid": 9, "msg": {"pid": 0}}),
            "`pid`: must be a process id",
        ),
        (
            json!({"req": "obtain_process_info", "rid": 9, "msg": {"pid": -4}}),
            "`pid`",
        ),
        (
            json!({"req": "obtain_process_info", "rid": 9, "msg": {"pid": 4294967296u64}}),
            "`pid`: must be a process id",
        ),
        (
            json!({"req": "execute", "rid": 7, "msg": {"cmd": "ls -l"}}),
            "`cmd`",
        ),
        (
            json!({"req": "execute", "rid": 7, "msg": {"env": {"A": 1}}}),
            "`env",
        ),
        (
            json!({"req": "proc_output", "rid": 7, "msg": {"proc_id": 1, "follow": "yes"}}),
            "`follow`",
        ),
        (
            json!({"req": "audit", "rid": 7, "msg": {"limit": -1}}),
            "`limit`",
        ),
        (
            json!({"req": "obtain_service_info", "rid": 7, "msg": {}}),
            "missing field `service_name`",
        ),
        (
            json!({"req": "telemetry", "rid": 7, "msg": {"stat_types": "disk_util"}}),
            "`stat_types`",
        ),
    ] {
        let failure = parse(data.clone()).expect_err("refused");
        assert_eq!(failure.reason, Reason::BadArgument, "{data}");
        assert!(failure.desc.contains(field), "{data}: {}", failure.desc);
    }
}

#[test]
fn an_unknown_request_is_named() {
    let failure = parse(json!({"req": "nope", "rid": 3})).expect_err("unknown");
    assert_eq!(failure.reason, Reason::UnknownRequest);
    assert!(failure.desc.contains("\"nope\""), "{}", failure.desc);
}

#[test]
fn the_gateway_requests_round_trip() {
    for (wire, request) in [
        (
            json!({"req": "get_vpn_conf", "rid": 1, "msg": {"name": "host1"}}),
            GatewayRequest::GetVpnConf(GetVpnConf {
                name: Some("host1".into()),
                ..GetVpnConf::default()
            }),
        ),
        (
            json!({"req": "vpn_peers", "rid": 1, "msg": {}}),
            GatewayRequest::VpnPeers(NoArgs {}),
        ),
        (
            json!({"req": "vpn_revoke", "rid": 1, "msg": {"name": "host1"}}),
            GatewayRequest::VpnRevoke(VpnRevoke {
                name: "host1".into(),
            }),
        ),
    ] {
        let parsed = GatewayRequest::parse(&Envelope::decode(&wire).expect("envelope"));
        assert_eq!(parsed, Ok(request.clone()));
        assert_eq!(envelope(&request, 1), wire);
    }
    let unknown = Envelope::decode(&json!({"req": "execute", "rid": 1})).expect("envelope");
    assert_eq!(
        GatewayRequest::parse(&unknown).map_err(|f| f.reason),
        Err(Reason::UnknownRequest)
    );
    let bad = Envelope::decode(&json!({"req": "vpn_revoke", "rid": 1, "msg": {"name": 3}}))
        .expect("envelope");
    assert_eq!(
        GatewayRequest::parse(&bad).map_err(|f| f.reason),
        Err(Reason::BadArgument)
    );
}

#[test]
fn authorize_names_who_and_what() {
    assert_eq!(
        authorize(Some("op"), Role::Operator.implied(), Role::Viewer),
        Ok(())
    );
    let refused = authorize(Some("vic"), Role::Viewer.implied(), Role::Operator)
        .expect_err("a viewer commands nothing");
    assert_eq!(refused.reason, Reason::Forbidden);
    assert_eq!(
        refused.desc,
        "vic (roles: viewer) may not do this: it needs the operator role"
    );
    assert_eq!(
        authorize(None, &[], Role::Viewer).map_err(|f| f.desc),
        Err("a client without a token may not do this: it needs the viewer role".into())
    );
    // A named sender holding no role says so.
    assert_eq!(
        authorize(Some("anon"), &[], Role::Viewer).map_err(|f| f.desc),
        Err("anon (roles: none) may not do this: it needs the viewer role".into())
    );
}
