"""A Nest bot host that behaves on the wire as the Nest client does
(API-Troubles/my-website, nest_management_bot/client.py, 1.0.0), written
from its documents (seeds 000/001 and its DOCS.md) and the behaviour of its
handler, without its code.

Usage: nest_host.py URL TOKEN [VERSION [EXTRA_PROCESSES]]
Prints every frame it receives from the server as a JSON line.

As the Nest client does, it sends let_me_in_pls, takes any first answer but
an error for its welcome, and then exits on a frame whose status is neither
`command` nor `error`, on an `error`, and on a command its handler does not
implement ("illegal command"): it prints {"exit": WHY} and exits 1.

Its commands: obtain_all_process_info (a list of {"pid", "name"}, with
EXTRA_PROCESSES made-up entries after the real ones, to make the answer as
large as a busy host's), obtain_process_info, kill_process, pause_process,
resume_process, obtain_user_usages, list_services, obtain_service_info,
start/stop/restart/reload_service and get_port. For tests, the service
"hang" is never answered, and the service "drop" makes it close its socket
without answering.
"""

import asyncio
import json
import os
import signal
import sys

import websockets

COMMANDS = {
    "obtain_user_usages", "obtain_all_process_info", "obtain_process_info",
    "kill_process", "pause_process", "resume_process", "list_services",
    "obtain_service_info", "start_service", "stop_service", "restart_service",
    "reload_service", "get_port",
}


def processes(extra):
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        out.append({"pid": int(entry), "name": name})
    out.extend({"pid": 4_000_000 + i, "name": f"made-up-worker-{i:06}"} for i in range(extra))
    return out


def comm(pid):
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def answer(name, payload, extra):
    """The handler: (status, message, payload) of the answer."""
    if name == "obtain_all_process_info":
        return "command_response", None, processes(extra)
    if name == "obtain_process_info":
        try:
            return "command_response", None, {"pid": payload["pid"], "name": comm(payload["pid"])}
        except OSError:
            return "command_response_error", "it no longer exists", {"pid": payload["pid"]}
    if name in ("kill_process", "pause_process", "resume_process"):
        sig = {
            "kill_process": {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM}.get(
                payload.get("method")),
            "pause_process": signal.SIGSTOP,
            "resume_process": signal.SIGCONT,
        }[name]
        try:
            if sig is not None:
                os.kill(payload["pid"], sig)
        except OSError as e:
            return "command_response_error", f"Process was not signalled. Error: {e}", None
        return "command_response", "done :D", None
    if name == "obtain_user_usages":
        return "command_response", None, {"resources": "", "storage": []}
    if name == "list_services":
        return "command_response", None, ["demo_app.service"]
    if name == "obtain_service_info":
        return "command_response", None, {"name": payload["service_name"], "pid": 0}
    if name.endswith("_service"):
        return "command_response", "done :D", None
    if name == "get_port":
        return "command_response", "Here's a port for you :D", "41234\n"
    raise AssertionError(name)


def leave(why):
    print(json.dumps({"exit": why}), flush=True)
    sys.exit(1)


async def main(url, token, version, extra):
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({
            "status": "let_me_in_pls",
            "payload": {"version": version, "client_token": token},
        }))
        welcome = json.loads(await ws.recv())
        print(json.dumps(welcome), flush=True)
        if welcome.get("status") == "error":
            leave(f"Server sent error: {welcome.get('message')}")
        async for raw in ws:
            frame = json.loads(raw)
            print(json.dumps(frame), flush=True)
            status = frame.get("status")
            if status == "error":
                leave(f"Received error from server: {frame.get('message')}")
            if status != "command":
                leave(f"Server sent illegal message of {status!r} type")
            name = frame.get("message")
            payload = frame.get("payload") or {}
            if name not in COMMANDS:
                leave(f"Server sent illegal command of type {name!r}")
            service = payload.get("service_name") if isinstance(payload, dict) else None
            if service == "hang":
                continue
            if service == "drop":
                await ws.close()
                leave("dropped")
            status, message, payload = answer(name, payload, extra)
            reply = {"status": status}
            if message is not None:
                reply["message"] = message
            if payload is not None:
                reply["payload"] = payload
            await ws.send(json.dumps(reply))


if __name__ == "__main__":
    version = sys.argv[3] if len(sys.argv) > 3 else "1.0.0"
    extra = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    try:
        asyncio.run(main(sys.argv[1], sys.argv[2], version, extra))
    except websockets.ConnectionClosed as e:
        print(json.dumps({"closed": e.rcvd.code if e.rcvd else None}), flush=True)
