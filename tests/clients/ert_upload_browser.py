#!/usr/bin/env python3
"""An upload to the file server from a page of another origin, as seed
004's browser client makes it, in a real browser: Debian's Chromium,
headless, driven by Selenium (PyPI) through Debian's chromedriver
(tests/files/browser.rs runs it).

It serves tests/clients/ert_upload.html itself, on 127.0.0.1 and a port of
its own: another origin than the gateway's. It prints that port and reads
the gateway's URL on its standard input (the test starts the gateway with
that origin allowed), then, in the page:
  - identifies over /ws and keeps the HELLO uuid (ERT's file key);
  - picks a file in the form and submits it: the page posts the FormData
    with fetch and x-fs-key, and must get 201;
  - reads the file back across origins with the same key;
  - posts to another client's folder and must read the 403 (CORS headers
    on the refusal too);
  - prints "uploaded" and waits for the test to check the disk;
  - opens the same page in another tab (the first one stays connected)
    from http://localhost:PORT, an origin the gateway does not allow, and
    submits another file there with the same key: the browser's preflight
    must fail, so fetch rejects and nothing is sent; prints "refused" and
    waits for the test to check the disk again.
Every check that fails raises; each step prints a JSON line, the last one
the summary. Usage: ert_upload_browser.py SHOTS
"""

import functools
import http.server
import json
import os
import sys
import tempfile
import threading

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

SHOTS = sys.argv[1]
PATIENCE = 20
SYSTEM = '{"name": "Binary", "G": 6.674e-11, "bodies": [{"name": "a", "mass": 1}, {"name": "b", "mass": 2}]}'


def log(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)


def serve_pages():
    """The folder of this script over HTTP on 127.0.0.1, quietly."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    handler = functools.partial(Quiet, directory=os.path.dirname(os.path.abspath(__file__)))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=800,600"):
        options.add_argument(arg)
    # The driver is Debian's: Selenium never fetches one.
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(service=service, options=options)


def wait(driver, what, check):
    try:
        return WebDriverWait(driver, PATIENCE, poll_frequency=0.1).until(lambda d: check(d))
    except Exception as e:
        driver.save_screenshot(os.path.join(SHOTS, "failed.png"))
        raise AssertionError(f"timed out waiting for {what}: {e!r}") from None


def result(driver, step):
    found = [r for r in driver.execute_script("return window.results;") if r["step"] == step]
    return found[-1] if found else None


def call(driver, function, *args):
    """Runs one of the page's async functions and returns what it resolves to."""
    return driver.execute_async_script(
        f"const done = arguments[arguments.length - 1]; window.{function}(arguments[0], arguments[1]).then(done);",
        *args)


def submit(driver, path):
    driver.find_element(By.ID, "file").send_keys(path)
    driver.find_element(By.ID, "submit").click()
    return wait(driver, "the upload's answer", lambda d: result(d, "upload"))


def main():
    os.makedirs(SHOTS, exist_ok=True)
    pages = serve_pages()
    port = pages.server_address[1]
    log("serving", port=port)
    gateway = sys.stdin.readline().strip()
    with tempfile.TemporaryDirectory() as work:
        system = os.path.join(work, "my-system.json")
        with open(system, "w") as f:
            f.write(SYSTEM)
        foreign = os.path.join(work, "foreign.json")
        with open(foreign, "w") as f:
            f.write('{"name": "not from this origin"}')
        driver = browser()
        driver.set_script_timeout(PATIENCE)
        summary = {}
        try:
            driver.get(f"http://127.0.0.1:{port}/ert_upload.html?gateway={gateway}/&name=alice")
            hello = wait(driver, "HELLO", lambda d: result(d, "hello"))
            summary["uuid"] = hello["uuid"]
            upload = submit(driver, system)
            assert upload.get("status") == 201, f"the upload got {upload}"
            assert json.loads(upload["body"]) == {"size": len(SYSTEM)}, upload
            summary["upload"] = upload
            back = call(driver, "download", "alice", "system.json")
            assert back == {"status": 200, "body": SYSTEM}, f"reading it back got {back}"
            other = call(driver, "uploadTo", "bob", "system.json")
            assert other.get("status") == 403, f"another client's folder got {other}"
            summary["other_folder"] = json.loads(other["body"])["error"]
            driver.save_screenshot(os.path.join(SHOTS, "allowed.png"))
            log("uploaded", uuid=hello["uuid"])
            assert sys.stdin.readline().strip() == "checked", "the test did not check the disk"

            # The same page from an origin the gateway does not allow.
            key = hello["uuid"]
            driver.switch_to.new_window("tab")
            driver.get(f"http://localhost:{port}/ert_upload.html?gateway={gateway}/&name=alice&key={key}")
            refused = submit(driver, foreign)
            assert "error" in refused and "status" not in refused, f"another origin's upload got {refused}"
            summary["other_origin"] = refused["error"]
            driver.save_screenshot(os.path.join(SHOTS, "refused.png"))
            log("refused", error=refused["error"])
            assert sys.stdin.readline().strip() == "checked", "the test did not check the disk"
            summary["ok"] = True
        finally:
            driver.quit()
            pages.shutdown()
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
