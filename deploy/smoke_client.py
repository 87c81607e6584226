#!/usr/bin/env python3
"""Client half of deploy/smoke-test.sh: exercises a running Concierge cluster.

It talks to the load balancer (--lb HOST:PORT) and to every replica directly
(--replica NAME=IP=CONTAINER, by container address), so it knows which
replica each client is on without any help from the gateway. The steps run in
order; each prints PASS, FAIL or SKIP with the reason, and the script exits 1
if any failed. Steps marked "cluster" need the Redis clustering (redis_url);
against gateways without it they fail, which says exactly what is missing.

The main phase ends by `docker kill`ing the second replica and `docker stop`ping
the third; the rejoin phase checks them once they are started again. Run it
against a throw-away cluster only (deploy/smoke-test.sh makes one).
"""

import argparse
import asyncio
import hashlib
import http.client
import json
import os
import re
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request


def import_websockets():
    try:
        import websockets  # noqa: F401
    except ImportError:
        print("installing the websockets package (pip install --quiet websockets)", flush=True)
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "websockets"]
        if subprocess.call(cmd) != 0 and subprocess.call(cmd + ["--user"]) != 0:
            sys.exit("smoke_client: cannot install websockets; pip install websockets, then retry")
        import importlib
        import site

        importlib.invalidate_caches()
        if site.ENABLE_USER_SITE and site.getusersitepackages() not in sys.path:
            sys.path.append(site.getusersitepackages())
    try:  # websockets >= 13: the new asyncio implementation
        from websockets.asyncio.client import connect
    except ImportError:  # older releases
        from websockets import connect
    from websockets.exceptions import ConnectionClosed

    return connect, ConnectionClosed


connect, ConnectionClosed = import_websockets()

VERSION = "0.2.0"
TIMEOUT = 5.0


class StepFailed(Exception):
    pass


def note(text):
    """Something worth knowing that is not a failure."""
    print(f"[NOTE] {text}", flush=True)


def check(cond, message):
    if not cond:
        raise StepFailed(message)


def close_code(exc):
    """The close code the gateway sent (None: no close frame), from either websockets API."""
    if hasattr(exc, "rcvd"):  # websockets >= 10
        return exc.rcvd.code if exc.rcvd is not None else None
    return getattr(exc, "code", None)


class Client:
    """One identified WebSocket client. Frames it is not waiting for are kept."""

    def __init__(self, name, where, ws, hello):
        self.name, self.where, self.ws, self.hello = name, where, ws, hello
        self.uuid = hello["uuid"]
        # The private key to its folder on the file server (the uuid is public).
        self.fs_key = hello["fs_key"]
        self.seq = 0
        self.backlog = []  # (parsed, raw) not consumed yet

    @classmethod
    async def open(cls, name, host, where, tags=()):
        ws = await connect(f"ws://{host}/ws", subprotocols=["ert-concierge"],
                           open_timeout=TIMEOUT, close_timeout=2, max_size=2**24)
        await ws.send(json.dumps({"type": "IDENTIFY", "name": name, "version": VERSION,
                                  "tags": list(tags)}))
        try:
            raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
        except ConnectionClosed as exc:
            raise StepFailed(f"{name} at {where}: closed with {close_code(exc)} instead of HELLO")
        hello = json.loads(raw)
        check(hello.get("type") == "HELLO", f"{name} at {where}: expected HELLO, got {raw}")
        return cls(name, where, ws, hello)

    async def send_raw(self, text):
        await self.ws.send(text)
        self.seq += 1
        return self.seq - 1

    async def request(self, payload, timeout=TIMEOUT):
        seq = await self.send_raw(json.dumps(payload))
        msg, _ = await self.expect(lambda m: m.get("seq") == seq, timeout,
                                   f"the reply to {payload['type']} (seq {seq})")
        return msg

    async def expect(self, pred, timeout=TIMEOUT, what="a frame"):
        for i, (msg, raw) in enumerate(self.backlog):
            if pred(msg):
                del self.backlog[i]
                return msg, raw
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StepFailed(f"{self.name} at {self.where}: no {what} within {timeout:g} s")
            try:
                raw = await asyncio.wait_for(self.ws.recv(), left)
            except asyncio.TimeoutError:
                continue
            except ConnectionClosed as exc:
                raise StepFailed(f"{self.name} at {self.where}: connection closed "
                                 f"({close_code(exc)}) while waiting for {what}")
            msg = json.loads(raw)
            if pred(msg):
                return msg, raw
            self.backlog.append((msg, raw))

    async def wait_closed(self, timeout):
        """The close code once the gateway closes the connection."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StepFailed(f"{self.name} at {self.where}: not closed within {timeout:g} s")
            try:
                raw = await asyncio.wait_for(self.ws.recv(), left)
            except asyncio.TimeoutError:
                continue
            except ConnectionClosed as exc:
                return close_code(exc)
            self.backlog.append((json.loads(raw), raw))

    async def close(self):
        try:
            await asyncio.wait_for(self.ws.close(), 3)
        except Exception:
            self.abort()

    def abort(self):
        transport = getattr(self.ws, "transport", None)
        if transport is not None:
            transport.abort()


def http_request(method, url, key=None, data=None, timeout=10):
    """(status, body bytes); HTTP errors are answers too."""
    req = urllib.request.Request(url, data=data, method=method)
    if key:
        req.add_header("Authorization", key)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def identified_on(ip):
    """concierge_clients_identified of one replica, from its /metrics."""
    status, body = http_request("GET", f"http://{ip}:8080/metrics", timeout=5)
    check(status == 200, f"GET /metrics on {ip}: {status}")
    m = re.search(rb"^concierge_clients_identified(?:\{[^}]*\})? (\d+)", body, re.M)
    check(m is not None, f"no concierge_clients_identified in /metrics of {ip}")
    return int(m.group(1))


class Smoke:
    def __init__(self, args):
        self.lb = args.lb
        self.replicas = []  # (name, ip, container)
        for spec in args.replica:
            name, ip, container = spec.split("=", 2)
            self.replicas.append((name, ip, container))
        check(len(self.replicas) >= 3, "need three --replica NAME=IP=CONTAINER")
        self.cluster = not args.no_cluster
        self.run = f"s{os.getpid()}"
        self.n = 0
        self.results = []
        self.open_clients = []
        self.killed = None
        self.stopped = None
        self.victim_name = None

    def name(self, role):
        self.n += 1
        return f"{self.run}_{role}{self.n}"

    def at(self, i):
        name, ip, _ = self.replicas[i]
        return f"{ip}:8080", name

    async def client(self, role, replica=None, tags=()):
        """A client on replica `replica` (index), or through the LB if None."""
        if replica is None:
            host, where = self.lb, "lb"
        else:
            host, where = self.at(replica)
        c = await Client.open(self.name(role), host, where, tags)
        self.open_clients.append(c)
        return c

    async def close_all(self):
        clients, self.open_clients = self.open_clients, []
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

    async def step(self, name, fn, cluster=False):
        label = f"{name} (cluster)" if cluster else name
        if cluster and not self.cluster:
            print(f"[SKIP] {label}: --no-cluster", flush=True)
            self.results.append((label, "SKIP"))
            return
        started = time.monotonic()
        try:
            detail = await fn()
            print(f"[PASS] {label}{': ' + detail if detail else ''} "
                  f"({time.monotonic() - started:.1f} s)", flush=True)
            self.results.append((label, "PASS"))
        except StepFailed as exc:
            print(f"[FAIL] {label}: {exc}", flush=True)
            self.results.append((label, "FAIL"))
        except Exception as exc:  # an unexpected error is a failure of the step, with its trace
            print(f"[FAIL] {label}: {type(exc).__name__}: {exc}", flush=True)
            traceback.print_exc()
            self.results.append((label, "FAIL"))
        finally:
            await self.close_all()

    # ---- steps that hold without clustering ----------------------------------

    async def lb_http(self):
        status, body = http_request("GET", f"http://{self.lb}/lb-health")
        check(status == 200, f"GET /lb-health through the LB: {status}")
        for i in range(6):
            status, body = http_request("GET", f"http://{self.lb}/readyz")
            check(status == 200, f"GET /readyz through the LB (try {i}): {status} {body[:200]!r}")
        status, body = http_request("GET", f"http://{self.lb}/version")
        check(status == 200, f"GET /version through the LB: {status}")
        version = json.loads(body)
        check(version.get("protocol") == VERSION, f"/version says {version}")
        return f"/readyz x6 and /version ({version.get('name')} {version.get('version')}) via nginx"

    async def replicas_ready(self):
        for name, ip, _ in self.replicas:
            status, body = http_request("GET", f"http://{ip}:8080/readyz")
            check(status == 200, f"{name} ({ip}) /readyz: {status} {body[:200]!r}")
        return ", ".join(f"{n}={ip}" for n, ip, _ in self.replicas)

    async def lb_websocket(self):
        c = await self.client("lb")
        reply = await c.request({"type": "SELF_FETCH"})
        check(reply.get("type") == "SELF_FETCH_RESULT" and reply["client"]["name"] == c.name,
              f"SELF_FETCH through the LB: {reply}")
        seq = await c.send_raw(json.dumps({"type": "MESSAGE",
                                           "target": {"type": "NAME", "name": c.name},
                                           "data": {"ping": 1}}))
        msg, _ = await c.expect(lambda m: m.get("type") == "MESSAGE", what="its own MESSAGE")
        check(msg["data"] == {"ping": 1} and msg["origin"]["uuid"] == c.uuid, f"got {msg}")
        ok, _ = await c.expect(lambda m: m.get("seq") == seq, what="OK")
        check(ok["type"] == "OK", f"MESSAGE to itself answered {ok}")
        return "IDENTIFY/HELLO, SELF_FETCH and a MESSAGE to itself over the proxied WebSocket"

    async def spread(self, count, live):
        """Opens `count` clients through the LB; which replicas did they land on?"""
        ips = [self.replicas[i][1] for i in live]
        before = [identified_on(ip) for ip in ips]
        for _ in range(count):
            await self.client("spread")
        deadline = time.monotonic() + 5
        while True:
            delta = [identified_on(ip) - b for ip, b in zip(ips, before)]
            if sum(delta) >= count or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        check(sum(delta) == count,
              f"{count} clients through the LB, but the live replicas gained {delta}")
        return dict(zip((self.replicas[i][0] for i in live), delta))

    async def lb_spread(self):
        per = await self.spread(6, range(3))
        check(sum(1 for d in per.values() if d > 0) >= 2, f"all on one replica: {per}")
        return f"6 clients through the LB landed {per}"

    async def local_basics(self):
        a = await self.client("alice", 0)
        b = await self.client("bob", 0)
        seq = await a.send_raw(json.dumps({"type": "MESSAGE", "target": {"type": "NAME", "name": b.name},
                                           "data": [1, "two"]}))
        msg, _ = await b.expect(lambda m: m.get("type") == "MESSAGE", what="alice's MESSAGE")
        check(msg["data"] == [1, "two"] and msg["origin"]["name"] == a.name, f"bob got {msg}")
        ok, _ = await a.expect(lambda m: m.get("seq") == seq, what="OK")
        check(ok["type"] == "OK", f"alice's MESSAGE answered {ok}")
        svc = self.name("svc")
        r = await a.request({"type": "SERVICE_CREATE", "service": svc})
        check(r.get("type") == "SERVICE_CREATE_RESULT" and r.get("successful"), f"SERVICE_CREATE: {r}")
        r = await b.request({"type": "SELF_SUBSCRIBE", "service": svc})
        check(r.get("type") == "SELF_SUBSCRIBE_RESULT" and r.get("successful"), f"SELF_SUBSCRIBE: {r}")
        r = await a.request({"type": "MESSAGE", "target": {"type": "SERVICE", "service": svc}, "data": "news"})
        check(r.get("type") == "OK", f"MESSAGE to the service: {r}")
        msg, _ = await b.expect(lambda m: m.get("type") == "MESSAGE" and m.get("data") == "news",
                                what="the service broadcast")
        check(msg["origin"].get("service", {}).get("name") == svc, f"origin without the service: {msg}")
        # The shared volume is writable by the gateway's uid.
        _, ip, _ = self.replicas[0]
        body = os.urandom(64 * 1024)
        url = f"http://{ip}:8080/fs/{a.name}/local/blob.bin"
        status, resp = http_request("PUT", url, a.fs_key, body)
        check(status == 201, f"PUT on {self.replicas[0][0]}: {status} {resp[:200]!r}")
        status, got = http_request("GET", url, b.uuid)
        check(status == 200 and got == body, f"GET on {self.replicas[0][0]}: {status}, {len(got)} bytes")
        return "MESSAGE by name, service broadcast, 64 KiB file PUT/GET on /data, all on gateway1"

    async def lb_upload_limit(self):
        # Announce a body one byte over 100 MiB and send none: refused from the header.
        host, port = self.lb.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.putrequest("PUT", "/fs/nobody/big.bin")
            conn.putheader("Content-Length", str(104_857_600 + 1))
            conn.putheader("Authorization", "00000000-0000-0000-0000-000000000000")
            conn.endheaders()
            status = conn.getresponse().status
        finally:
            conn.close()
        check(status == 413, f"a 100 MiB + 1 byte PUT through the LB got {status}, not 413")
        return "100 MiB + 1 byte refused with 413 before the body"

    # ---- steps that need the cluster -------------------------------------------

    async def cross_message(self):
        a = await self.client("from", 0)
        b = await self.client("to", 1)
        data = '{"n": 1.50, "s": "caf\\u00e9 \u2615", "list": [1, 2 ,3], "e": 1E3}'
        text = ('{"type":"MESSAGE","target":{"type":"NAME","name":"%s"},"data":%s}' % (b.name, data))
        seq = await a.send_raw(text)
        reply, _ = await a.expect(lambda m: m.get("seq") == seq, what="the reply to MESSAGE")
        # Sent right after b's HELLO, before gateway1 may have heard of b: it
        # looks b up in Redis rather than answer INVALID_NAME.
        check(reply["type"] == "OK", f"MESSAGE from {a.where} to a client on {b.where} answered {reply}")
        msg, raw = await b.expect(lambda m: m.get("type") == "MESSAGE", what="the MESSAGE")
        check(data in raw, f"data not relayed byte for byte: {raw}")
        origin = msg.get("origin", {})
        check(origin.get("name") == a.name and origin.get("uuid") == a.uuid, f"origin is {origin}")
        return f"{a.where} -> {b.where}: data byte for byte, origin {a.name}"

    async def cross_service(self):
        owner = await self.client("owner", 0)
        subs = [await self.client("sub", 1), await self.client("sub", 2)]
        svc = self.name("news")
        r = await owner.request({"type": "SERVICE_CREATE", "service": svc})
        check(r.get("type") == "SERVICE_CREATE_RESULT" and r.get("successful"), f"SERVICE_CREATE: {r}")
        for s in subs:
            r = await s.request({"type": "SELF_SUBSCRIBE", "service": svc})
            if r.get("type") == "INVALID_SERVICE":
                # Right after the creator's reply: this replica may not know it yet.
                await s.expect(lambda m: m.get("type") == "SERVICE_CREATE_RESULT"
                               and m["service"]["name"] == svc, what=f"the creation of {svc}")
                note(f"SELF_SUBSCRIBE on {s.where} right after SERVICE_CREATE on {owner.where} got "
                     "INVALID_SERVICE; it worked once the creation broadcast had arrived")
                r = await s.request({"type": "SELF_SUBSCRIBE", "service": svc})
            check(r.get("type") == "SELF_SUBSCRIBE_RESULT" and r.get("successful"),
                  f"SELF_SUBSCRIBE on {s.where} to a service owned on {owner.where}: {r}")

        async def broadcast(data, timeout):
            r = await owner.request({"type": "MESSAGE", "target": {"type": "SERVICE", "service": svc},
                                     "data": data})
            check(r.get("type") == "OK", f"owner's MESSAGE to the service: {r}")
            missed = []
            for s in subs:
                try:
                    msg, _ = await s.expect(lambda m: m.get("type") == "MESSAGE" and m.get("data") == data,
                                            timeout, "the owner's broadcast")
                except StepFailed:
                    missed.append(s.where)
                    continue
                check(msg["origin"]["uuid"] == owner.uuid
                      and msg["origin"].get("service", {}).get("name") == svc, f"{s.where} got {msg}")
            return missed

        # Sent right after the subscribers' SELF_SUBSCRIBE_RESULT: a
        # subscription holds from its result, on every replica.
        missed = await broadcast({"headline": "hello, fleet"}, 5)
        check(not missed, f"the owner's broadcast sent right after SELF_SUBSCRIBE_RESULT did not "
                          f"reach the subscriber(s) on {', '.join(missed)}")
        return f"owner on {owner.where}, subscribers on {subs[0].where} and {subs[1].where}"

    async def sees_all(self, c, names):
        """CLIENT_FETCH_ALL on c's replica lists every name."""
        r = await c.request({"type": "CLIENT_FETCH_ALL"})
        missing = names - {x["name"] for x in r.get("clients", [])}
        if not missing:
            return
        # Just identified on another replica: wait for their CLIENT_JOINED, ask again.
        for name in sorted(missing):
            await c.expect(lambda m, n=name: m.get("type") == "CLIENT_JOINED"
                           and m["client"]["name"] == n, what=f"CLIENT_JOINED for {name}")
        note(f"CLIENT_FETCH_ALL on {c.where} right after {sorted(missing)} identified elsewhere "
             "did not list them; it did once their CLIENT_JOINED had arrived")
        r = await c.request({"type": "CLIENT_FETCH_ALL"})
        missing = names - {x["name"] for x in r.get("clients", [])}
        check(not missing, f"CLIENT_FETCH_ALL on {c.where} lacks {sorted(missing)}")

    async def cross_fetch_all(self):
        clients = [await self.client("fetch", i) for i in range(3)]
        clients.append(await self.client("fetch"))
        names = {c.name for c in clients}
        for c in clients:
            await self.sees_all(c, names)
        return "every replica lists the clients of all three (and the LB's)"

    async def cross_duplicate(self):
        a = await self.client("dup", 0)
        host, where = self.at(1)
        ws = await connect(f"ws://{host}/ws", subprotocols=["ert-concierge"], open_timeout=TIMEOUT,
                           close_timeout=2)
        try:
            await ws.send(json.dumps({"type": "IDENTIFY", "name": a.name, "version": VERSION}))
            try:
                raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
                raise StepFailed(f"the name of a client on {a.where} was accepted on {where}: {raw}")
            except ConnectionClosed as exc:
                code = close_code(exc)
                check(code == 4005, f"closed with {code}, not 4005")
        finally:
            await ws.close()
        return f"{a.name} (on {a.where}) refused on {where} with 4005"

    async def cross_files(self):
        a = await self.client("files", 0)
        reader = await self.client("reader", 2)
        body = os.urandom(256 * 1024)
        path = f"/fs/{a.name}/reports/r%C3%A9sum%C3%A9.bin"
        (_, ip1, _), (_, ip3, _) = self.replicas[0], self.replicas[2]
        status, resp = http_request("PUT", f"http://{ip1}:8080{path}", a.fs_key, body)
        check(status == 201, f"PUT through gateway1: {status} {resp[:200]!r}")
        status, got = http_request("GET", f"http://{ip3}:8080{path}", a.uuid)
        check(status == 200 and got == body,
              f"GET through gateway3 with the owner's key: {status} {got[:200]!r}")
        status, got = http_request("GET", f"http://{ip3}:8080{path}", reader.uuid)
        check(status == 200 and got == body, f"GET through gateway3 with a gateway3 client's key: {status}")
        # 20 MiB, chunked, streamed through nginx to whichever replica, read back from another.
        chunk = os.urandom(1 << 20)
        digest = hashlib.sha256(chunk * 20).hexdigest()
        big = f"/fs/{a.name}/big.bin"
        status, resp = http_request("PUT", f"http://{self.lb}{big}", a.fs_key, iter([chunk] * 20), timeout=60)
        check(status == 201, f"chunked 20 MiB PUT through the LB: {status} {resp[:200]!r}")
        status, got = http_request("GET", f"http://{self.lb}{big}", reader.uuid, timeout=60)
        check(status == 200 and hashlib.sha256(got).hexdigest() == digest,
              f"GET of the 20 MiB file through the LB: {status}, {len(got)} bytes")
        return "256 KiB PUT on gateway1, GET on gateway3; 20 MiB chunked PUT/GET through the LB"

    async def kill_replica(self):
        victim = await self.client("victim", 1)
        observers = [await self.client("observer", 0), await self.client("observer", 2)]
        for o in observers:
            r = await o.request({"type": "CLIENT_FETCH_ALL"})
            check(victim.name in {x["name"] for x in r.get("clients", [])},
                  f"{o.where} does not list {victim.name} of {victim.where}; not killing from here")
        name, _, container = self.replicas[1]
        subprocess.run(["docker", "kill", container], check=True, stdout=subprocess.DEVNULL)
        self.killed = 1
        killed_at = time.monotonic()
        victim.abort()  # its TCP peer is gone without a FIN: do not wait for it
        self.open_clients.remove(victim)
        self.victim_name = victim.name
        for o in observers:
            left = killed_at + 15 - time.monotonic()
            await o.expect(lambda m: m.get("type") == "CLIENT_LEFT"
                           and m.get("client", {}).get("name") == victim.name,
                           max(left, 0.1), f"CLIENT_LEFT for {victim.name} (killed with {name})")
        return (f"docker kill {name}: CLIENT_LEFT for {victim.name} reached "
                f"{' and '.join(o.where for o in observers)} after {time.monotonic() - killed_at:.1f} s")

    async def reclaim_name(self):
        check(self.killed is not None, "no replica was killed")
        deadline = time.monotonic() + 15
        last = None
        while time.monotonic() < deadline:
            try:
                c = await Client.open(self.victim_name, self.lb, "lb")
                self.open_clients.append(c)
                return f"{self.victim_name} identified again through the LB"
            except (StepFailed, OSError, asyncio.TimeoutError) as exc:
                last = exc
                await asyncio.sleep(1)
        raise StepFailed(f"{self.victim_name} could not be claimed again within 15 s: {last}")

    async def lb_after_kill(self):
        check(self.killed is not None, "no replica was killed")
        started = time.monotonic()
        for i in range(10):
            status, body = http_request("GET", f"http://{self.lb}/readyz")
            check(status == 200, f"GET /readyz through the LB after the kill (try {i}): {status}")
        live = [i for i in range(3) if i != self.killed]
        per = await self.spread(6, live)
        return (f"/readyz x10 and 6 WebSockets through the LB, landed {per}, "
                f"in {time.monotonic() - started:.1f} s")

    async def graceful_stop(self):
        name, _, container = self.replicas[2]
        leaving = await self.client("leaving", 2)
        watcher = await self.client("watcher", 0)
        r = await watcher.request({"type": "CLIENT_FETCH_ALL"})
        check(leaving.name in {x["name"] for x in r.get("clients", [])},
              f"{watcher.where} does not list {leaving.name} of {leaving.where}")
        started = time.monotonic()
        stop = await asyncio.create_subprocess_exec("docker", "stop", "--time", "15", container,
                                                    stdout=subprocess.DEVNULL)
        self.stopped = 2
        try:
            code = await leaving.wait_closed(10)
            closed_after = time.monotonic() - started
            check(code == 1012, f"{leaving.name} was closed with {code}, not 1012")
            await watcher.expect(lambda m: m.get("type") == "CLIENT_LEFT"
                                 and m.get("client", {}).get("name") == leaving.name,
                                 max(started + 5 - time.monotonic(), 0.1),
                                 f"CLIENT_LEFT for {leaving.name} within 5 s of SIGTERM")
            left_after = time.monotonic() - started
        finally:
            await stop.wait()
        stopped_after = time.monotonic() - started
        exit_code = subprocess.run(["docker", "inspect", "-f", "{{.State.ExitCode}}", container],
                                   capture_output=True, text=True).stdout.strip()
        check(exit_code == "0", f"{name} exited with {exit_code} after SIGTERM (137: killed after the grace period)")
        return (f"docker stop {name}: 1012 after {closed_after:.1f} s, CLIENT_LEFT on "
                f"{watcher.where} after {left_after:.1f} s, exit 0 after {stopped_after:.1f} s")

    async def kill_only(self):
        name, _, container = self.replicas[1]
        subprocess.run(["docker", "kill", container], check=True, stdout=subprocess.DEVNULL)
        self.killed = 1
        self.victim_name = self.name("victim")
        return f"docker kill {name}"

    # ---- after deploy/smoke-test.sh restarted the stopped replicas -----------

    async def rejoin_namespace(self):
        clients = [await self.client("back", i) for i in range(3)]
        names = {c.name for c in clients}
        for c in clients:
            await self.sees_all(c, names)
        return "each replica, restarted or not, lists the clients of all three"

    async def lb_rejoin(self):
        ips = [ip for _, ip, _ in self.replicas]
        before = [identified_on(ip) for ip in ips]
        deadline = time.monotonic() + 30
        while True:
            await self.client("rejoin")
            delta = dict(zip((n for n, _, _ in self.replicas),
                             (identified_on(ip) - b for ip, b in zip(ips, before))))
            if all(d > 0 for d in delta.values()):
                return f"{sum(delta.values())} clients through the LB landed {delta}"
            if time.monotonic() > deadline:
                raise StepFailed(f"after 30 s the LB still avoids a replica: {delta}")
            await asyncio.sleep(1)

    async def main(self, phase):
        print(f"smoke client ({phase}): LB {self.lb}, replicas "
              + ", ".join(f"{n}={ip}" for n, ip, _ in self.replicas), flush=True)
        if phase == "main":
            await self.step("replicas answer /readyz directly", self.replicas_ready)
            await self.step("LB proxies HTTP", self.lb_http)
            await self.step("LB proxies the WebSocket", self.lb_websocket)
            await self.step("LB spreads WebSockets over replicas", self.lb_spread)
            await self.step("single replica: messages, services, files on /data", self.local_basics)
            await self.step("LB refuses uploads over 100 MiB", self.lb_upload_limit)
            await self.step("MESSAGE by NAME across replicas", self.cross_message, cluster=True)
            await self.step("SERVICE broadcast across replicas", self.cross_service, cluster=True)
            await self.step("CLIENT_FETCH_ALL lists every replica's clients", self.cross_fetch_all,
                            cluster=True)
            await self.step("duplicate name across replicas is 4005", self.cross_duplicate, cluster=True)
            await self.step("files across replicas and through the LB", self.cross_files, cluster=True)
            await self.step("CLIENT_LEFT within 15 s of docker kill", self.kill_replica, cluster=True)
            if self.killed is None:
                # Skipped, or failed before the kill: the LB's failover still needs testing.
                await self.step("docker kill gateway2", self.kill_only)
            await self.step("the killed client's name is free again via the LB", self.reclaim_name)
            await self.step("LB skips the dead replica", self.lb_after_kill)
            await self.step("SIGTERM closes with 1012 and deregisters at once", self.graceful_stop,
                            cluster=True)
        else:
            await self.step("replicas answer /readyz directly", self.replicas_ready)
            await self.step("restarted replicas see the whole namespace", self.rejoin_namespace,
                            cluster=True)
            await self.step("LB sends clients to every replica again", self.lb_rejoin)

        failed = [name for name, result in self.results if result == "FAIL"]
        passed = sum(1 for _, result in self.results if result == "PASS")
        skipped = sum(1 for _, result in self.results if result == "SKIP")
        print(f"\nsmoke client ({phase}): {passed} passed, {len(failed)} failed, {skipped} skipped",
              flush=True)
        for name in failed:
            print(f"  failed: {name}", flush=True)
        return 1 if failed else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lb", required=True, help="HOST:PORT of the load balancer")
    parser.add_argument("--replica", action="append", default=[], metavar="NAME=IP=CONTAINER",
                        help="a gateway replica (give three; the second one is killed)")
    parser.add_argument("--no-cluster", action="store_true",
                        help="skip the steps that need Redis clustering")
    parser.add_argument("--phase", choices=["main", "rejoin"], default="main",
                        help="main: everything up to killing gateway2 and stopping gateway3; "
                             "rejoin: after they were started again")
    args = parser.parse_args()
    try:
        smoke = Smoke(args)
    except StepFailed as exc:
        parser.error(str(exc))
    sys.exit(asyncio.run(smoke.main(args.phase)))


if __name__ == "__main__":
    main()
