"""A Quix backend, written from seed 003 (Quix WSI) and the wire behaviour
of Quix's test client (beanfacts/quix test/client).

Usage: quix_backend.py URL (--password USER PASS | --token TOKEN |
                            --token-authentication TOKEN) [--vpn]
It authenticates (--token-authentication as Quix's test client does:
{"auth": null, "req": "token_authentication", "msg": {"token_id": TOKEN}}),
prints every frame it receives as a JSON line, and serves execute,
view_running, proc_signal and telemetry. With --vpn it asks for its
WireGuard config once authenticated.
"""

import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys

import websockets

started = {}


def serve(req, msg):
    if req == "execute":
        proc = subprocess.Popen(msg["cmd"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started[proc.pid] = proc
        return {"result": "success", "proc_id": proc.pid}
    if req == "view_running":
        out = []
        for pid, proc in list(started.items()):
            if proc.poll() is not None:
                continue
            out.append({"title": os.path.basename(proc.args[0]), "pid": pid, "cpu_util": 0,
                        "mem_util": 1, "reqc": shlex.join(proc.args), "port_util": []})
        return out
    if req == "proc_signal":
        pid = msg["pid"]
        if pid not in started:
            return {"result": "error", "reason": "not_started"}
        os.kill(pid, getattr(signal, msg["mode"]))
        return {"result": "success"}
    if req == "telemetry":
        return {"tele_data": {"ttl_cpu_usage": [0.1] * (os.cpu_count() or 1)}}
    return {"result": "error", "reason": "unknown"}


async def main():
    url = sys.argv[1]
    if sys.argv[2] == "--password":
        first = {"auth": None, "req": "authenticate", "rid": 1,
                 "msg": {"username": sys.argv[3], "password": sys.argv[4]}}
    elif sys.argv[2] == "--token-authentication":
        first = {"auth": None, "req": "token_authentication", "rid": 1,
                 "msg": {"token_id": sys.argv[3]}}
    else:
        first = {"auth": sys.argv[3], "req": "authenticate", "rid": 1, "msg": {}}
    vpn = "--vpn" in sys.argv
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps(first))
        async for raw in ws:
            frame = json.loads(raw)
            print(json.dumps(frame), flush=True)
            if frame.get("rid") == 1 and vpn and frame["msg"].get("success"):
                await ws.send(json.dumps({"req": "get_vpn_conf", "rid": 2,
                                          "msg": {"conf_type": "wireguard", "tun_mode": "udp"}}))
            if "req" in frame:
                answer = serve(frame["req"], frame.get("msg") or {})
                await ws.send(json.dumps({"rid": frame["rid"], "msg": answer}))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except websockets.ConnectionClosed as e:
        print(json.dumps({"closed": e.rcvd.code if e.rcvd else None}), flush=True)
