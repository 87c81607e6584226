"""A Nest bot host, written from seeds 000/001 only: it connects, sends
let_me_in_pls with its client token, and answers the commands it is sent.

Usage: nest_host.py URL TOKEN [VERSION]
Prints every frame it receives from the server as a JSON line.
Answers obtain_all_process_info, obtain_process_info, kill_process,
pause_process and resume_process; exec_command with the command "hang" is
never answered (for timeouts); anything else gets command_response_error.
"""

import asyncio
import json
import os
import signal
import sys

import websockets


def processes():
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
    return out


def answer(name, payload):
    if name == "obtain_all_process_info":
        return "command_response", {"processes": processes()}
    if name == "obtain_process_info":
        pid = payload["pid"]
        try:
            with open(f"/proc/{pid}/comm") as f:
                return "command_response", {"pid": pid, "name": f.read().strip()}
        except OSError:
            return "command_response_error", {"error": f"no process {pid}"}
    if name in ("kill_process", "pause_process", "resume_process"):
        sig = {
            "kill_process": getattr(signal, payload.get("method", "SIGTERM")),
            "pause_process": signal.SIGSTOP,
            "resume_process": signal.SIGCONT,
        }[name]
        try:
            os.kill(payload["pid"], sig)
        except OSError as e:
            return "command_response_error", {"error": str(e)}
        return "command_response", {"pid": payload["pid"]}
    return "command_response_error", {"error": f"unknown command {name}"}


async def main(url, token, version):
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({
            "status": "let_me_in_pls",
            "message": "let me in! :D",
            "payload": {"version": version, "client_token": token},
        }))
        async for raw in ws:
            frame = json.loads(raw)
            print(json.dumps(frame), flush=True)
            if frame.get("status") != "command":
                continue
            name = frame.get("message")
            payload = frame.get("payload") or {}
            if name == "exec_command" and payload.get("command") == "hang":
                continue
            status, payload = answer(name, payload)
            await ws.send(json.dumps({"status": status, "message": name, "payload": payload}))


if __name__ == "__main__":
    version = sys.argv[3] if len(sys.argv) > 3 else "0.1.0a"
    try:
        asyncio.run(main(sys.argv[1], sys.argv[2], version))
    except websockets.ConnectionClosed as e:
        print(json.dumps({"closed": e.rcvd.code if e.rcvd else None}), flush=True)
