#!/usr/bin/env python3
"""Simulated hosts for benches/fleet-page.sh: N WebSocket clients on the
loopback that identify as hosts (`bench_NNNNN`, tag `agent`, without
presence as the agent does: no news of each other), file their
facts and one health summary with the gateway (`facts`, `summary`), and
stay connected (the library answers the gateway's pings) until SIGTERM
or SIGINT. The gateway must not require tokens yet (no account): the
script adds none.

Prints one JSON line when every host has joined: how many, how long it
took, and the replies that were not a success (by reason).

  fleet_hosts.py ws://127.0.0.1:8193/ws 10000
"""

import asyncio
import collections
import json
import signal
import sys
import time

import websockets

URL = sys.argv[1]
N = int(sys.argv[2])
AT_ONCE = 100
ROLES = ["web", "db", "cache", "queue"]
DCS = ["fra", "ams", "par"]


def summary(i):
    return {"cpu": (i * 7919) % 1000 / 10, "load": (i % 16) / 4, "mem": 20 + i % 70,
            "disk": 30 + (i * 31) % 70, "vpn_age": i % 300}


def facts(i):
    return {"hostname": f"bench-{i}.test", "os": ["debian", "ubuntu"][i % 2], "os_version": "12",
            "arch": "x86_64", "cpus": 4 + i % 4, "memory_bytes": 8_000_000_000, "agent_version": "bench",
            "labels": {"role": ROLES[i % len(ROLES)], "dc": DCS[i % len(DCS)]}}


class Progress:
    """How many hosts joined, how many failed to, and the replies that were not a success."""

    def __init__(self):
        self.joined = 0
        self.errors = []
        self.failures = collections.Counter()
        self.settled = asyncio.Event()

    def count(self, error=None):
        if error is None:
            self.joined += 1
        else:
            self.errors.append(repr(error))
        if self.joined + len(self.errors) == N:
            self.settled.set()


async def host(i, gate, progress, stop):
    name = f"bench_{i:05d}"
    try:
        async with gate:
            ws = await websockets.connect(URL, ping_interval=None, max_size=None, open_timeout=60)
            await ws.send(json.dumps({"type": "IDENTIFY", "name": name, "version": "0.2.0", "tags": ["agent"], "presence": False}))
            hello = json.loads(await ws.recv())
            assert hello.get("type") == "HELLO", hello
            for rid, req, msg in ((1, "facts", facts(i)), (2, "summary", summary(i))):
                await ws.send(json.dumps({"type": "MESSAGE", "target": {"type": "NAME", "name": "concierge"},
                                          "data": {"req": req, "rid": rid, "msg": msg}}))
            answered = 0
            while answered < 2:
                frame = json.loads(await ws.recv())
                data = frame.get("data") if frame.get("type") == "MESSAGE" else None
                if isinstance(data, dict) and data.get("rid") in (1, 2):
                    answered += 1
                    reply = data.get("msg", {})
                    if reply.get("result") != "success":
                        progress.failures[f'{["facts", "summary"][data["rid"] - 1]}: {reply.get("reason")}'] += 1
    except Exception as e:  # counted and reported: the run goes on
        progress.count(e)
        return
    progress.count()
    try:
        reader = asyncio.ensure_future(drain(ws))
        await asyncio.wait([reader, stop], return_when=asyncio.FIRST_COMPLETED)
        reader.cancel()
    finally:
        await ws.close()


async def drain(ws):
    async for _ in ws:
        pass


async def main():
    gate = asyncio.Semaphore(AT_ONCE)
    progress = Progress()
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    start = time.monotonic()
    tasks = [asyncio.ensure_future(host(i, gate, progress, stop)) for i in range(N)]
    await progress.settled.wait()
    print(json.dumps({"hosts": N, "joined": progress.joined, "joined_s": round(time.monotonic() - start, 1),
                      "errors": progress.errors[:5], "error_count": len(progress.errors),
                      "failures": dict(progress.failures)}), flush=True)
    await asyncio.gather(*tasks, return_exceptions=True)


asyncio.run(main())
