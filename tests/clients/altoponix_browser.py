#!/usr/bin/env python3
"""The Altoponix pages in a real browser: Debian's Chromium, headless,
driven by Selenium (PyPI) through Debian's chromedriver, against a real
gateway (started by tests/altoponix_pages.rs).

The pages (tests/clients/altoponix_pages/, which behave on the wire as
seed 002's testing/ws_client.html and ws_device.html do) are served from
another origin than the gateway's, by a small HTTP server here, with a
socket.io.js 4.x from PyPI (scripts/test takes it out of a wheel), so the
browser goes through CORS, and socket.io.js connects as it does by
default: long-polling first, then the upgrade to a WebSocket.

It does what their users do: a device connects as monitor `m1`; a client
queries `m1` and sends `ls` (command ok, then command finish, and the
device saw `command do ls`) and `fail now` (command failed with the
device's reason); a client of an absent monitor gets command failed.

With `real DIR`, it drives seed 002's own pages from DIR (where only the
<script> source was pointed at /socket.io.min.js) instead, choosing their
`http://127.0.0.1:5000/` URL: the gateway must listen there.

Every check that fails raises; the last line printed is a JSON summary
for the Rust test. Usage:
  altoponix_browser.py ours GATEWAY_URL PAGES_PORT SOCKET_IO_JS
  altoponix_browser.py real GATEWAY_URL PAGES_PORT SOCKET_IO_JS DIR
"""

import functools
import http.server
import json
import os
import sys
import threading
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

MODE, GATEWAY, PAGES_PORT, SOCKET_IO_JS = sys.argv[1:5]
PAGES = sys.argv[5] if MODE == "real" else os.path.join(os.path.dirname(__file__), "altoponix_pages")
PATIENCE = 20


def step(name, **fields):
    print(json.dumps({"step": name, **fields}), flush=True)


class Pages(http.server.SimpleHTTPRequestHandler):
    """The pages' directory, and the socket.io.js client at /socket.io.min.js."""

    def do_GET(self):
        if self.path == "/socket.io.min.js":
            with open(SOCKET_IO_JS, "rb") as f:
                body = f.read()
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, *args):
        pass


def serve_pages():
    handler = functools.partial(Pages, directory=PAGES)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(PAGES_PORT)), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{PAGES_PORT}"


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(service=service, options=options)


def output(driver):
    return [line for line in driver.find_element(By.ID, "output").text.split("\n") if line]


def wait_for(driver, what, condition):
    deadline = time.time() + PATIENCE
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    logs = driver.get_log("browser")
    raise AssertionError(f"{what}: not within {PATIENCE} s; page log {output(driver)}; console {logs}")


def wait_line(driver, line, after=0):
    """Waits for `line` in the page's log, past its first `after` lines;
    returns where it is."""
    def found():
        lines = output(driver)
        for i in range(after, len(lines)):
            if lines[i] == line:
                return i + 1
        return None
    return wait_for(driver, f"{line!r} in the log", found)


def open_page(driver, base, page, monitor_id):
    if MODE == "real":
        driver.get(f"{base}/{page}")
        Select(driver.find_element(By.ID, "url")).select_by_value("localhost")
    else:
        driver.get(f"{base}/{page}?gateway={GATEWAY}")
    driver.find_element(By.ID, "monitor_id").send_keys(monitor_id)
    driver.find_element(By.CSS_SELECTOR, "button[onclick='conn()']").click()


def send(driver, command):
    field = driver.find_element(By.ID, "command")
    field.clear()
    field.send_keys(command)
    driver.find_element(By.CSS_SELECTOR, "button[onclick='send()']").click()


def transports(driver):
    return driver.execute_script("return window.transports || null")


def main():
    base = serve_pages()
    device_page = "device.html" if MODE == "ours" else "ws_device.html"
    client_page = "client.html" if MODE == "ours" else "ws_client.html"
    driver = browser()
    try:
        open_page(driver, base, device_page, "m1")
        wait_line(driver, "con ok")
        device = driver.current_window_handle
        if MODE == "ours":
            wait_for(driver, "the upgrade", lambda: len(transports(driver) or []) >= 2)
        step("device connected", transports=transports(driver))

        driver.switch_to.new_window("tab")
        client = driver.current_window_handle
        open_page(driver, base, client_page, "m1")
        wait_line(driver, "query ok")
        step("client connected", transports=transports(driver))
        send(driver, "ls")
        at = wait_line(driver, "command ok")
        wait_line(driver, "command finish", at)
        step("command finished")
        if MODE == "ours":
            send(driver, "fail now")
            at = wait_line(driver, "command failed", at)
            assert output(driver)[at] == "cannot fail now", output(driver)
            step("command failed", reason=output(driver)[at])

        driver.switch_to.window(device)
        at = wait_line(driver, "command do")
        assert output(driver)[at] == "ls", output(driver)
        step("device did", log=output(driver))
        device_transports = transports(driver)

        driver.switch_to.window(client)
        client_transports = transports(driver)
        if MODE == "ours":
            open_page(driver, base, client_page, "absent")
            wait_line(driver, "query ok")
            send(driver, "ls")
            at = wait_line(driver, "command failed")
            step("absent monitor", reason=output(driver)[at])
            assert "not connected" in output(driver)[at], output(driver)
        print(json.dumps({
            "ok": True,
            "device_transports": device_transports,
            "client_transports": client_transports,
        }), flush=True)
    finally:
        driver.quit()


main()
