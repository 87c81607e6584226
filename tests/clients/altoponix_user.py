"""An Altoponix user (seed 002), written against python-socketio's
documented client API only: it emits ``query`` on connect and, once it has
``query ok``, ``command send`` with each line of its standard input (the
event's JSON data). Every event it gets is printed as a JSON line.

usage: altoponix_user.py URL MONITOR_ID [TOKEN]
"""

import json
import os
import sys
import threading

import socketio

url, monitor_id = sys.argv[1], sys.argv[2]
token = sys.argv[3] if len(sys.argv) > 3 else None
sio = socketio.Client(reconnection=False)
# ALTOPONIX_TRANSPORTS=polling,websocket: python-socketio's default, long
# polling first and then the upgrade (as socket.io.js connects); a
# WebSocket from the start otherwise.
transports = os.environ.get("ALTOPONIX_TRANSPORTS", "websocket").split(",")


# Handlers run on threads of their own: one lock and one write per line, or
# two events printed at once interleave into lines that are not JSON.
printing = threading.Lock()


def show(event, data=None):
    line = json.dumps({"event": event, "data": data}) + "\n"
    with printing:
        sys.stdout.write(line)
        sys.stdout.flush()


def commands():
    for line in sys.stdin:
        if line.strip():
            sio.emit("command send", json.loads(line))


@sio.event
def connect():
    show("connect")
    sio.emit("query", {"monitor_id": monitor_id})


@sio.event
def connect_error(data):
    show("connect_error", data)


@sio.event
def disconnect(*args):
    show("disconnect")


@sio.on("query ok")
def query_ok(*args):
    show("query ok")
    threading.Thread(target=commands, daemon=True, name="stdin").start()


@sio.on("query failed")
def query_failed(data=None):
    show("query failed", data)


for name in ["command ok", "command finish", "command failed"]:
    sio.on(name, (lambda name: lambda data=None: show(name, data))(name))

try:
    # wait_timeout: the seconds python-socketio waits for the CONNECT answer
    # (1 by default), generous for a loaded test machine.
    sio.connect(url, transports=transports, auth={"token": token} if token else None,
                wait_timeout=10)
except socketio.exceptions.ConnectionError as e:
    show("connection refused", str(e))
    sys.exit(1)
sio.wait()
# A server that closes right after an event (``con failed``, ``query
# failed``) ends wait() while that event's handler may still be running on
# its own thread: let the handlers print before the process exits.
for thread in threading.enumerate():
    if thread is not threading.current_thread() and thread.name != "stdin":
        thread.join(timeout=1)
