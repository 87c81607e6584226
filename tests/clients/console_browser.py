#!/usr/bin/env python3
"""The web console in a real browser: Debian's Chromium, headless, driven
by Selenium (PyPI) through Debian's chromedriver, against a real gateway
with a real agent (started by tests/console.rs).

It does what an operator does: logs in (after a wrong password), sees the
agent in the fleet, opens its page and watches the CPU chart move, starts
a process and reads its output as it streams, pauses and resumes it (with
the confirmation), terminates it, makes and downloads a VPN config with
its QR code, reads the audit, runs a job on the host (a mistaken target
shown with its caret, the hosts previewed, their count confirmed) and
follows it live to its output, cancels another and reruns it on the host
that did not succeed; then, on a phone-sized screen, checks that
the pages do not scroll sideways; then logs in as a viewer with the
keyboard alone and finds no command offered, the agent refusing the
viewer's signal sent anyway, and the jobs shown with no form. It saves a screenshot of every page.

With `reconnect` it waits on a host page while the test restarts the
gateway: the page must say it lost the link, come back by itself with
the same login, and its CPU chart must move again (re-subscribed).

With `refresh`, against a gateway whose tokens last seconds, it stays on
a host page while its token expires again and again: the page must renew
it before each expiry and carry on, never showing the login.

With `resume` it watches the audit while the test cuts its connection
(the gateway lives on) and runs commands meanwhile: the page must come
back, subscribe again from the last position it saw, and show each missed
entry once; cut again while the agent restarts (its history lost), it must
fetch the audit again and show what ran meanwhile.

With `units` it drives a host's systemd units instead (tests/systemd.rs,
an agent on a real systemd in a container): stop, start and restart a
unit from its row, each confirmed, and its details.

Every check that fails raises; the last line printed is a JSON summary
for the Rust test. Usage:
  console_browser.py tour URL OPERATOR PASSWORD VIEWER PASSWORD HOST SHOTS DOWNLOADS
  console_browser.py units URL OPERATOR PASSWORD HOST UNIT SHOTS
  console_browser.py reconnect|refresh|resume URL OPERATOR PASSWORD HOST SHOTS
"""

import json
import os
import pwd
import re
import sys
import time

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

import console_common
from console_common import PATIENCE, browser, click, confirm, css, log, log_in, no_sideways_scroll, one, shot, wait

MODE = sys.argv[1]
if MODE == "tour":
    URL, OPERATOR, OPERATOR_PW, VIEWER, VIEWER_PW, HOST, SHOTS, DOWNLOADS = sys.argv[2:10]
elif MODE == "units":
    URL, OPERATOR, OPERATOR_PW, HOST, UNIT, SHOTS = sys.argv[2:8]
    DOWNLOADS = SHOTS
else:
    URL, OPERATOR, OPERATOR_PW, HOST, SHOTS = sys.argv[2:7]
    DOWNLOADS = SHOTS
console_common.configure(SHOTS, DOWNLOADS)


def open_host(driver):
    driver.get(f"{URL}/console/#/fleet")
    click(driver, "the agent in the fleet", f'#fleet-hosts [data-host="{HOST}"] a.host-link')
    wait(driver, "the host page", lambda d: one(d, "#host-online").text == "online")


def chart_points(driver):
    return driver.execute_script("const c = Chart.getChart('cpu-chart'); return c ? c.data.labels.length : -1;")


def output(driver):
    return one(driver, "#output").text


def started_row(driver, pid):
    rows = css(driver, f'#panel-started tr[data-proc-id="{pid}"]')
    return rows[0] if rows else None


def unit_row(driver):
    rows = css(driver, f'#panel-units tr[data-unit="{UNIT}"]')
    return rows[0] if rows else None


def unit_action(driver, action, expect):
    """Clicks the unit's `action` button (confirmed unless it is a start)
    and waits for the list to show `expect` as its active state."""
    click(driver, f"the {action} button", f'#panel-units button[data-unit-action="{action}"][data-unit="{UNIT}"]')
    if action != "start_service":
        confirm(driver, UNIT)
    wait(driver, f"{UNIT} to be {expect}", lambda d: unit_row(d) and unit_row(d).find_elements(By.CSS_SELECTOR, ".badge")[0].text == expect, timeout=75)


def units(driver, summary):
    driver.get(f"{URL}/console/")
    log_in(driver, OPERATOR, OPERATOR_PW)
    open_host(driver)
    one(driver, "#tab-units").click()
    wait(driver, f"{UNIT} among the units", lambda d: unit_row(d))
    assert unit_row(driver).find_elements(By.CSS_SELECTOR, ".badge")[0].text == "active"
    click(driver, "the unit's details", f'#panel-units button[data-unit-details="{UNIT}"]')
    wait(driver, "the unit's details", lambda d: one(d, "#detail-title").text == f"Unit {UNIT}")
    summary["file"] = one(driver, '#detail td[data-field="file"]').text
    summary["pid_before"] = one(driver, '#detail td[data-field="main pid"]').text
    shot(driver, "units")
    unit_action(driver, "stop_service", "inactive")
    log("stopped", unit=UNIT)
    unit_action(driver, "start_service", "active")
    log("started", unit=UNIT)
    unit_action(driver, "restart_service", "active")
    click(driver, "the unit's details", f'#panel-units button[data-unit-details="{UNIT}"]')
    wait(driver, "the restarted unit's details", lambda d: one(d, '#detail td[data-field="main pid"]').text not in ("", "–", summary["pid_before"]))
    summary["pid_after"] = one(driver, '#detail td[data-field="main pid"]').text
    log("restarted", unit=UNIT, pid=summary["pid_after"])


def reconnect(driver, summary):
    driver.get(f"{URL}/console/")
    log_in(driver, OPERATOR, OPERATOR_PW)
    open_host(driver)
    wait(driver, "CPU samples", lambda d: chart_points(d) >= 2)
    log("ready")  # the test now restarts the gateway
    wait(driver, "the page to see the link go", lambda d: "down" in one(d, "#link-state").get_attribute("class"), timeout=30)
    summary["while_down"] = one(driver, "#link-state").text
    shot(driver, "reconnecting")
    log("down", said=summary["while_down"])
    wait(driver, "the page to come back", lambda d: "up" in one(d, "#link-state").get_attribute("class"), timeout=60)
    assert one(driver, "#login").get_attribute("hidden") is not None, "the restart logged the page out"
    wait(driver, "the host to be back", lambda d: one(d, "#host-online").text == "online", timeout=30)
    back = chart_points(driver)
    wait(driver, "the CPU chart to move again", lambda d: chart_points(d) > back + 1, timeout=30)
    summary["points"] = [back, chart_points(driver)]
    log("back", points=summary["points"])
    # This gateway has no VPN: its page offers no config, and says why.
    driver.get(f"{URL}/console/#/vpn")
    said = wait(driver, "the VPN page to say there is none", lambda d: one(d, "#vpn-off").is_displayed() and one(d, "#vpn-off").text)
    assert not one(driver, "#conf-form").is_displayed(), "a config is offered without a VPN"
    summary["vpn_off"] = said


# Records the frames the page sends and the SELF_SUBSCRIBE_RESULTs it
# receives, in window.__frames, before any script of the page runs.
RECORD_FRAMES = """
window.__frames = [];
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  window.__frames.push({ sent: JSON.parse(data) });
  if (!this.__recorded) {
    this.__recorded = true;
    this.addEventListener("message", (e) => {
      const payload = JSON.parse(e.data);
      if (payload.type === "SELF_SUBSCRIBE_RESULT") window.__frames.push({ received: payload });
    });
  }
  return send.call(this, data);
};
"""


# Records the job events (MESSAGEs of a `job_` service) the page receives,
# in window.__jobEvents, before any script of the page runs.
RECORD_JOB_EVENTS = """
window.__jobEvents = [];
const jobSend = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  if (!this.__jobsRecorded) {
    this.__jobsRecorded = true;
    this.addEventListener("message", (e) => {
      const payload = JSON.parse(e.data);
      const service = payload.origin?.service?.name ?? "";
      if (payload.type === "MESSAGE" && service.startsWith("job_")) window.__jobEvents.push(payload.data);
    });
  }
  return jobSend.call(this, data);
};
"""


def job_row(driver, host=None):
    rows = css(driver, f'#job-hosts tr[data-host="{host or HOST}"]')
    return rows[0] if rows else None


def job_id(driver):
    match = re.search(r"#/job/([0-9a-f]{12})$", driver.current_url)
    return match and match.group(1)


def new_job(driver, target, command):
    """Fills the job form, previews it and returns the run button once armed."""
    driver.get(f"{URL}/console/#/jobs")
    wait(driver, "the job form", lambda d: css(d, "#job-form"))
    one(driver, "#job-target").clear()
    one(driver, "#job-target").send_keys(target)
    one(driver, "#job-command").clear()
    one(driver, "#job-command").send_keys(command)
    one(driver, "#job-preview").click()
    return wait(driver, "the run button", lambda d: one(d, "#job-run").is_enabled() and one(d, "#job-run"))


def jobs(driver, summary):
    # A mistake in the target: the gateway's caret under it, nothing to run.
    driver.get(f"{URL}/console/#/jobs")
    wait(driver, "the job form", lambda d: css(d, "#job-form"))
    one(driver, "#job-target").send_keys("role=web,dc in (fra")
    one(driver, "#job-command").send_keys("echo hello")
    one(driver, "#job-preview").click()
    error = wait(driver, "the target's error", lambda d: one(d, "#job-error").is_displayed() and one(d, "#job-error").text)
    assert "^" in error, error
    assert not one(driver, "#job-run").is_enabled(), "a bad target can be run"
    summary["job_target_error"] = error
    # The host previewed, online; the count confirmed; the run followed live.
    # (A second's sleep first, so that the page sees it run, then exit.)
    run = new_job(driver, HOST, "sh -c 'sleep 1; echo hello'")
    wait(driver, "the previewed host", lambda d: css(d, f'#job-preview-result li[data-host="{HOST}"][data-online="true"]'))
    assert run.text == "Run on 1 host", run.text
    run.click()
    confirm(driver, "1 host")
    job = wait(driver, "the job's page", lambda d: job_id(d))
    wait(driver, "the host running", lambda d: job_row(d) and job_row(d).get_attribute("data-state") in ("sent", "running"), timeout=10)
    wait(driver, "the host to exit 0", lambda d: job_row(d) and job_row(d).find_element(By.CSS_SELECTOR, ".badge").text == "exited 0")
    assert job_row(driver).get_attribute("data-outcome") == "ok"
    wait(driver, "the job to finish", lambda d: one(d, "#job-state").text == "finished")
    events = driver.execute_script("return window.__jobEvents;")
    live = [h for e in events if e.get("event") == "hosts" and e.get("job") == job for h in e["hosts"] if h["state"] == "exited"]
    assert live and live[-1]["exit_code"] == 0, f"no live exit event: {events}"
    assert one(driver, '#job-record td[data-field="by"]').text.startswith(f"{OPERATOR} (client {OPERATOR}_console_"), \
        one(driver, '#job-record td[data-field="by"]').text
    click(driver, "the host's output", f'#job-hosts button[data-output="{HOST}"]')
    text = wait(driver, "the output", lambda d: "hello" in one(d, "#job-output").text and one(d, "#job-output").text)
    summary.update(job=job, job_output=text, job_events=len(events))
    shot(driver, "job")
    log("job", job=job, events=len(events))

    # Another, cancelled while it runs (confirmed): the host is cancelled,
    # and rerun (confirmed, counted again) as a new job on that host.
    new_job(driver, HOST, "sleep 300").click()
    confirm(driver, "1 host")
    doomed = wait(driver, "the second job's page", lambda d: job_id(d) != job and job_id(d))
    wait(driver, "the sleep running", lambda d: job_row(d) and job_row(d).get_attribute("data-state") == "running")
    click(driver, "the cancel button", "#job-cancel")
    confirm(driver, doomed)
    wait(driver, "the job cancelled", lambda d: one(d, "#job-state").text == "cancelled")
    wait(driver, "the host cancelled", lambda d: job_row(d).get_attribute("data-outcome") == "none")
    click(driver, "the rerun button", "#job-rerun")
    confirm(driver, "1 host")
    rerun = wait(driver, "the rerun's page", lambda d: job_id(d) not in (None, job, doomed) and job_id(d))
    wait(driver, "the rerun's record", lambda d: one(d, '#job-record td[data-field="target"]').text == HOST)
    wait(driver, "the rerun to run", lambda d: job_row(d) and job_row(d).get_attribute("data-state") == "running")
    click(driver, "the rerun's cancel button", "#job-cancel")
    confirm(driver, rerun)
    wait(driver, "the rerun cancelled", lambda d: one(d, "#job-state").text == "cancelled")
    summary.update(cancelled=doomed, rerun=rerun)
    log("cancelled and rerun", job=doomed, rerun=rerun)

    # The list: newest first, with a preview ready for the picture.
    new_job(driver, "kind=agent", "uptime")
    wait(driver, "the jobs listed", lambda d: [r.get_attribute("data-job") for r in css(d, "#jobs-list tr[data-job]")][:3] == [rerun, doomed, job])
    shot(driver, "jobs")


def audit_marks(driver):
    """The marks (`echo mark-N`) of the audit rows shown, in row order."""
    return [m for r in css(driver, "tr[data-req]") for m in re.findall(r"mark-\d+", r.text)]


def resume(driver, summary):
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_FRAMES})
    driver.get(f"{URL}/console/")
    log_in(driver, OPERATOR, OPERATOR_PW)
    driver.get(f"{URL}/console/#/audit")
    wait(driver, "the first mark", lambda d: "mark-1" in audit_marks(d))
    log("ready")  # the test runs mark-2 while the page watches
    wait(driver, "the live mark", lambda d: "mark-2" in audit_marks(d), timeout=30)
    log("live")  # the test cuts the page's connection, runs mark-3 and mark-4, restores it
    wait(driver, "the page to see the link go", lambda d: "down" in one(d, "#link-state").get_attribute("class"), timeout=30)
    log("down")
    wait(driver, "the page to come back", lambda d: "up" in one(d, "#link-state").get_attribute("class"), timeout=60)
    wait(driver, "the missed marks", lambda d: {"mark-3", "mark-4"} <= set(audit_marks(d)), timeout=30)
    log("back")  # the test cuts it again and restarts the agent (a new history), runs mark-5
    wait(driver, "the page to see the link go again", lambda d: "down" in one(d, "#link-state").get_attribute("class"), timeout=30)
    log("down again")
    wait(driver, "the page to come back again", lambda d: "up" in one(d, "#link-state").get_attribute("class"), timeout=60)
    wait(driver, "the mark run while the history was lost", lambda d: "mark-5" in audit_marks(d), timeout=30)
    marks = audit_marks(driver)
    frames = driver.execute_script("return window.__frames;")
    subscribes = [f["sent"] for f in frames if f.get("sent", {}).get("type") == "SELF_SUBSCRIBE"
                  and f["sent"].get("service") == f"audit_{HOST}"]
    results = [f["received"] for f in frames if "received" in f and f["received"]["service"]["name"] == f"audit_{HOST}"]
    summary.update(marks=marks, subscribes=subscribes, results=results)


def refresh(driver, summary, seconds=20):
    driver.get(f"{URL}/console/")
    log_in(driver, OPERATOR, OPERATOR_PW)
    open_host(driver)
    tokens = set()
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        assert one(driver, "#login").get_attribute("hidden") is not None, \
            f"logged out after {time.monotonic() - start:.1f} s: {one(driver, '#login-error').text}"
        tokens.add(driver.execute_script("return sessionStorage.getItem('concierge.token');"))
        time.sleep(0.25)
    wait(driver, "the link after the last renewal", lambda d: "up" in one(d, "#link-state").get_attribute("class"))
    points = chart_points(driver)
    wait(driver, "the CPU chart to move", lambda d: chart_points(d) > points, timeout=10)
    summary["tokens"] = len(tokens)
    log("renewed", tokens=len(tokens))


def main():
    driver = browser()
    summary = {}
    try:
        {"tour": operator_and_viewer, "units": units, "reconnect": reconnect, "refresh": refresh, "resume": resume}[MODE](driver, summary)
        # No console errors (the wrong password's 401 is the one expected).
        def expected(message):
            # The wrong password's 401; while the gateway restarts, the
            # browser's own report of each refused WebSocket connect, and
            # on the VPN page of that gateway without a VPN, the 404
            # (vpn_disabled) of /vpn/peers that tells the page so.
            # While the page's connection is cut: the same, and whatever it
            # fetched meanwhile.
            return ("/auth/token" in message and "401" in message) or (
                MODE == "reconnect" and "WebSocket connection to" in message) or (
                MODE == "reconnect" and "/vpn/peers" in message and "404" in message) or (
                MODE == "resume" and ("WebSocket connection to" in message or "net::ERR" in message))
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and not expected(e["message"])]
        assert not errors, f"console errors: {errors}"
        summary["ok"] = True
    finally:
        driver.quit()
    print(json.dumps(summary), flush=True)


def operator_and_viewer(driver, summary):
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_JOB_EVENTS})
    # ---- Log in: a wrong password first, then the right one
    driver.get(f"{URL}/console/")
    wait(driver, "the login form", lambda d: one(d, "#login").is_displayed())
    shot(driver, "login")
    one(driver, "#login-user").send_keys(OPERATOR)
    one(driver, "#login-password").send_keys("not the password")
    one(driver, "#login-submit").click()
    error = wait(driver, "the login error", lambda d: one(d, "#login-error").is_displayed() and one(d, "#login-error").text)
    assert "Wrong user or password" in error, error
    summary["wrong_password"] = error
    log_in(driver, OPERATOR, OPERATOR_PW)
    log("logged in", user=OPERATOR)

    # ---- The inventory: the host, online; a target selects it, a mistake
    # in the expression is shown with the caret under it
    host_row = f'#fleet-hosts [data-host="{HOST}"]'
    wait(driver, "the host in the inventory, online", lambda d: css(d, f'{host_row}[data-online="true"]'))
    target = one(driver, "#hosts-target")
    target.send_keys("kind=agent,nothing*")
    wait(driver, "the target to select no host", lambda d: not css(d, "#fleet-hosts [data-host]"))
    target.clear()
    target.send_keys("role=web,dc in (fra")
    error = wait(driver, "the target's error", lambda d: one(d, "#hosts-target-error").is_displayed() and one(d, "#hosts-target-error").text)
    assert "expected" in error and "^" in error, error
    summary["target_error"] = error
    target.clear()
    target.send_keys(f"{HOST},kind=agent")
    wait(driver, "the target to select the host", lambda d: [r.get_attribute("data-host") for r in css(d, "#fleet-hosts [data-host]")] == [HOST])
    assert not one(driver, "#hosts-target-error").is_displayed(), "the error stayed"
    assert "1 online" in one(driver, "#hosts-counts").text, one(driver, "#hosts-counts").text
    shot(driver, "fleet-hosts")
    log("inventory", error=error.splitlines()[0])

    # ---- The clients that are not hosts: the console itself, and a
    # viewer's client tagged `agent` (connected by the Rust test), listed
    # but not as a host: only a verified host token makes one.
    one(driver, "#fleet-tab-clients").click()
    impostor = f'#fleet-clients tr[data-name="{VIEWER}_agent"]'
    wait(driver, "the viewer tagged agent among the clients", lambda d: css(d, impostor))
    assert not css(driver, f'#fleet-clients tr[data-name="{HOST}"]'), "a host is listed among the clients"
    wait(driver, "the counts", lambda d: "1 host," in one(d, "#fleet-counts").text)
    summary["impostor_kind"] = one(driver, f"{impostor} .badge").text
    one(driver, "#fleet-search").send_keys("no-such-client")
    wait(driver, "the filter to hide everyone", lambda d: not css(d, "#fleet-clients tr[data-name]"))
    one(driver, "#fleet-search").clear()
    one(driver, "#fleet-search").send_keys(f"{VIEWER}_agent")
    wait(driver, "the filter to show the impostor", lambda d: [r.get_attribute("data-name") for r in css(d, "#fleet-clients tr[data-name]")] == [f"{VIEWER}_agent"])
    one(driver, "#fleet-search").clear()
    wait(driver, "the services", lambda d: css(d, f'#fleet-services tr[data-service="telemetry_{HOST}"]'))
    wait(driver, "the console itself among the clients", lambda d: len(css(d, "#fleet-clients tr[data-name]")) >= 2)
    assert driver.current_url.endswith("#/fleet/clients"), driver.current_url
    shot(driver, "fleet")
    log("fleet", rows=len(css(driver, "#fleet-clients tr[data-name]")))

    # ---- The host: the CPU chart moves
    open_host(driver)
    first = wait(driver, "CPU samples", lambda d: chart_points(d) >= 2 and chart_points(d))
    later = wait(driver, "the CPU chart to update", lambda d: chart_points(d) > first and chart_points(d))
    # A few more points, for a picture worth looking at.
    wait(driver, "more CPU samples", lambda d: chart_points(d) >= 8)
    cores = driver.execute_script("return Chart.getChart('cpu-chart').data.datasets.length;")
    assert cores >= 1, "no core in the CPU chart"
    summary["cpu_points"] = [first, later]
    summary["cores"] = cores
    shot(driver, "host")
    log("telemetry", points=[first, later], cores=cores)

    # ---- Start a process and watch its output stream
    one(driver, "#tab-started").click()
    run = one(driver, "#run-command")
    run.send_keys("sh -c 'i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done'")
    one(driver, "#run-submit").click()
    wait(driver, "streamed output", lambda d: "tick 3" in output(d))
    pid = int(wait(driver, "the proc id", lambda d: (one(d, "#output").get_attribute("data-proc-id") or "").isdigit() and one(d, "#output").get_attribute("data-proc-id")))
    wait(driver, "the process in the started list", lambda d: started_row(d, pid))
    summary["pid"] = pid
    log("started", pid=pid)

    # ---- Pause it (confirmed): it shows stopped and its output stops
    click(driver, "the pause button", f'#panel-started button[data-signal="pause_process"][data-pid="{pid}"]')
    confirm(driver, f"process {pid}")
    wait(driver, "the process to show stopped", lambda d: started_row(d, pid).get_attribute("data-status") == "stopped", timeout=PATIENCE)
    time.sleep(0.5)
    paused_at = output(driver)
    time.sleep(1.2)
    assert output(driver) == paused_at, "the output grew while the process was paused"
    shot(driver, "started-paused")
    # ---- Resume it (confirmed): the output grows again
    click(driver, "the resume button", f'#panel-started button[data-signal="resume_process"][data-pid="{pid}"]')
    confirm(driver, f"process {pid}")
    wait(driver, "the output to grow again", lambda d: len(output(d)) > len(paused_at))
    wait(driver, "the process to show running", lambda d: started_row(d, pid).get_attribute("data-status") != "stopped")
    log("paused and resumed", pid=pid)

    # ---- A second process, that exits with 3, and its exit code
    run = one(driver, "#run-command")
    run.clear()
    run.send_keys("sh -c 'echo to stdout; echo to stderr >&2; exit 3'")
    one(driver, "#run-submit").click()
    wait(driver, "the exit code", lambda d: "exited with 3" in one(d, "#output-state").text)
    assert "to stdout" in output(driver) and "to stderr" in output(driver), output(driver)
    assert css(driver, "#output .stderr"), "stderr is not told apart"
    summary["exit_text"] = one(driver, "#output-state").text
    # Its exit coloured as the Jobs page colours one: non-zero is bad.
    assert css(driver, '#output-state .badge.bad[data-exit="bad"]'), "exit 3 is not a red badge"
    failed = int(one(driver, "#output").get_attribute("data-proc-id"))
    wait(driver, "exit 3 as a red badge in the list", lambda d: started_row(d, failed)
         and started_row(d, failed).find_elements(By.CSS_SELECTOR, '.badge.bad[data-exit="bad"]'))

    # ---- Terminate the first (confirmed): killed by SIGTERM
    click(driver, "the terminate button", f'#panel-started button[data-signal="kill_process"][data-pid="{pid}"]')
    confirm(driver, f"process {pid}")
    wait(driver, "the SIGTERM exit in the list", lambda d: "SIGTERM" in started_row(d, pid).text)
    assert started_row(driver, pid).find_elements(By.CSS_SELECTOR, '.badge.bad[data-exit="bad"]'), "a signal's exit is not a red badge"
    # A third that keeps running, for the viewer to try to signal.
    run = one(driver, "#run-command")
    run.clear()
    run.send_keys("sleep 300")
    one(driver, "#run-submit").click()
    victim = int(wait(driver, "the sleep's proc id", lambda d: (one(d, "#output").get_attribute("data-proc-id") or "").isdigit()
                      and one(d, "#output-title").text.endswith("sleep 300") and one(d, "#output").get_attribute("data-proc-id")))
    wait(driver, "the sleep in the list", lambda d: started_row(d, victim))
    summary["victim"] = victim
    # Still running: a neutral badge; started at a local time, "ago", not an epoch.
    row = started_row(driver, victim)
    assert row.find_elements(By.CSS_SELECTOR, '.badge.none[data-exit="none"]'), "a running process's exit is not neutral"
    assert "ago)" in row.text and not re.search(r"\b1[0-9]{9}\b", row.text), row.text
    shot(driver, "started")
    log("exit codes", exit=summary["exit_text"])

    # ---- Every process, sortable
    one(driver, "#tab-processes").click()
    wait(driver, "the process table", lambda d: len(css(d, "#panel-processes tr[data-pid]")) > 3)
    def pid_order(d):
        return [int(r.get_attribute("data-pid")) for r in css(d, "#panel-processes tr[data-pid]")]

    def pid_header(d):
        return [b for b in css(d, "#panel-processes th button.sort") if b.text.startswith("PID")][0]
    # A number column sorts largest first, and the other way on a second click.
    pid_header(driver).click()
    assert pid_order(driver) == sorted(pid_order(driver), reverse=True), "the PID column does not sort"
    pid_header(driver).click()
    assert pid_order(driver) == sorted(pid_order(driver)), "the PID column does not sort back"
    wait(driver, "the sleep among all processes", lambda d: css(d, f'#panel-processes tr[data-pid="{victim}"] button[data-signal]'))
    # Its user by name, its command line, its state with ps's letter.
    row = one(driver, f'#panel-processes tr[data-pid="{victim}"]')
    me = pwd.getpwuid(os.getuid()).pw_name
    cells = [c.text for c in row.find_elements(By.CSS_SELECTOR, "td")]
    assert me in cells, f"no user name {me} in {cells}"
    assert "sleep 300" in cells, f"no command line in {cells}"
    assert row.find_element(By.CSS_SELECTOR, '.badge[data-state="sleeping"]').text == "sleeping (S)", cells
    shot(driver, "processes")
    # One process in detail, and any signal from there (SIGKILL here)
    run_in_started = f"{URL}/console/#/host/{HOST}"
    one(driver, "#tab-started").click()
    run = one(driver, "#run-command")
    run.clear()
    run.send_keys("sleep 301")
    one(driver, "#run-submit").click()
    # The output panel shows "…" for the id until the agent's reply names it.
    doomed = int(wait(driver, "the second sleep's proc id", lambda d: one(d, "#output-title").text.endswith("sleep 301")
                      and (one(d, "#output").get_attribute("data-proc-id") or "").isdigit()
                      and one(d, "#output").get_attribute("data-proc-id")))
    one(driver, "#tab-processes").click()
    one(driver, "#proc-refresh").click()
    click(driver, "the process's details", f'#panel-processes button[data-details="{doomed}"]')
    wait(driver, "the details", lambda d: one(d, "#detail-title").text.startswith(f"Process {doomed}"))
    assert "sleep 301" in one(driver, '#detail td[data-field="command"]').text
    driver.execute_script("document.getElementById('detail-signal').value = 'SIGKILL';")
    one(driver, "#detail-send").click()
    confirm(driver, "SIGKILL")
    one(driver, "#detail-close").click()
    one(driver, "#tab-started").click()
    wait(driver, "the SIGKILL exit", lambda d: started_row(d, doomed) and "SIGKILL" in started_row(d, doomed).text)
    # The work folder, and a request sent as ctl request sends it
    one(driver, "#tab-usage").click()
    usage = wait(driver, "the work folder's usage", lambda d: one(d, "#usage-summary").text)
    assert "running processes" in usage, usage
    one(driver, "#tab-request").click()
    driver.execute_script("document.getElementById('request-name').value = 'ping';")
    one(driver, "#request-send").click()
    reply = wait(driver, "the ping reply", lambda d: '"success"' in one(d, "#request-reply").text and one(d, "#request-reply").text)
    assert f'"{HOST}"' in reply, reply
    summary["ctl_parity"] = {"sigkill": doomed, "usage": usage}
    assert driver.current_url.startswith(run_in_started)
    one(driver, "#tab-units").click()
    wait(driver, "the units answer", lambda d: css(d, "#panel-units tr[data-unit]") or one(d, "#units-note").is_displayed())
    summary["units_note"] = one(driver, "#units-note").text

    # ---- Keyboard: the tabs, the run form and the signal buttons are reached with Tab
    one(driver, "#tab-started").click()
    wait(driver, "the started list", lambda d: started_row(d, victim))
    driver.execute_script("document.activeElement.blur(); window.scrollTo(0, 0);")
    reached = set()
    for _ in range(120):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        reached.add(driver.execute_script(
            "const e = document.activeElement; return e.id || e.dataset.signal || e.tagName;"))
    for wanted in ("tab-telemetry", "tab-units", "run-command", "run-submit", "pause_process", "kill_process"):
        assert wanted in reached, f"{wanted} is not reachable with Tab (reached {sorted(reached)})"
    log("keyboard", reached=len(reached))

    # ---- VPN: the peers, a config for the host, downloaded, and its QR code
    driver.get(f"{URL}/console/#/vpn/{HOST}")
    wait(driver, "the VPN page", lambda d: one(d, "#conf-name").get_attribute("value") == HOST)
    one(driver, "#conf-make").click()
    confirm(driver, HOST)
    conf = wait(driver, "the config", lambda d: css(d, "#conf-text") and one(d, "#conf-text").text)
    assert "[Interface]" in conf and "[Peer]" in conf, conf
    wait(driver, "the QR code", lambda d: d.execute_script("const i = document.getElementById('conf-qr'); return i && i.complete && i.naturalWidth > 0;"))
    one(driver, "#conf-download").click()
    path = os.path.join(DOWNLOADS, f"{HOST}.conf")
    wait(driver, "the downloaded file", lambda d: os.path.exists(path) and os.path.getsize(path) > 0)
    with open(path, encoding="utf-8") as f:
        downloaded = f.read()
    assert downloaded.strip() == conf.strip(), "the file is not the config shown"
    row = wait(driver, "the host among the peers", lambda d: css(d, f'tr[data-peer="{HOST}"]'))[0]
    summary["conf_file"] = path
    summary["peer_ipv4"] = row.find_elements(By.TAG_NAME, "td")[1].text
    shot(driver, "vpn")
    # An admin revokes it (confirmed): the peer is gone.
    click(driver, "the revoke button", f'button[data-revoke="{HOST}"]')
    confirm(driver, summary["peer_ipv4"])
    wait(driver, "the peer to go", lambda d: not css(d, f'tr[data-peer="{HOST}"]'))
    log("vpn", bytes=len(downloaded))

    # ---- Audit: newest first, with what was just done
    driver.get(f"{URL}/console/#/audit")
    wait(driver, "the audit entries", lambda d: {"execute", "pause_process", "resume_process", "kill_process"} <= {r.get_attribute("data-req") for r in css(d, "tr[data-req]")})
    reqs = [r.get_attribute("data-req") for r in css(driver, "tr[data-req]")]
    assert reqs.index("kill_process") < reqs.index("pause_process"), f"not newest first: {reqs}"
    shot(driver, "audit")
    log("audit", entries=len(reqs))

    # ---- Jobs: run one on the host and follow it; cancel one, rerun it
    jobs(driver, summary)

    # ---- A phone-sized screen
    driver.set_window_size(390, 844)
    driver.get(f"{URL}/console/#/fleet")
    wait(driver, "the fleet on a phone", lambda d: css(d, f'#fleet-hosts [data-host="{HOST}"]'))
    no_sideways_scroll(driver, "the fleet")
    shot(driver, "phone-fleet")
    open_host(driver)
    wait(driver, "CPU samples on a phone", lambda d: chart_points(d) >= 1)
    no_sideways_scroll(driver, "the host page")
    shot(driver, "phone-host")
    one(driver, "#tab-started").click()
    wait(driver, "the started list on a phone", lambda d: started_row(d, victim))
    no_sideways_scroll(driver, "the started processes")
    shot(driver, "phone-started")
    driver.get(f"{URL}/console/#/vpn")
    wait(driver, "the VPN page on a phone", lambda d: css(d, "#conf-form"))
    no_sideways_scroll(driver, "the VPN page")
    driver.get(f"{URL}/console/#/jobs")
    wait(driver, "the jobs on a phone", lambda d: css(d, f'#jobs-list tr[data-job="{summary["job"]}"]'))
    no_sideways_scroll(driver, "the jobs")
    driver.get(f"{URL}/console/#/job/{summary['job']}")
    wait(driver, "a job on a phone", lambda d: job_row(d))
    no_sideways_scroll(driver, "a job")
    driver.set_window_size(1366, 900)

    # ---- A viewer, logged in with the keyboard: nothing to command, and a refusal
    one(driver, "#logout").click()
    log_in(driver, VIEWER, VIEWER_PW, keyboard=True)
    open_host(driver)
    assert css(driver, "#viewer-note"), "a viewer is not told why there are no commands"
    one(driver, "#tab-started").click()
    wait(driver, "the viewer's started list", lambda d: started_row(d, victim))
    assert not css(driver, "#run-form"), "a viewer is offered to run commands"
    assert not css(driver, "button[data-signal]"), "a viewer is offered signals"
    one(driver, "#tab-processes").click()
    wait(driver, "the viewer's process table", lambda d: css(d, f'#panel-processes tr[data-pid="{victim}"]'))
    assert not css(driver, "button[data-signal]"), "a viewer is offered signals among all processes"
    click(driver, "a process's details", f'#panel-processes button[data-details="{victim}"]')
    wait(driver, "the viewer's details", lambda d: one(d, "#detail-title").text.startswith(f"Process {victim}"))
    assert not css(driver, "#detail-send"), "a viewer is offered a signal in the details"
    offered = [o.get_attribute("value") for o in css(driver, "#request-name option")]
    assert "ping" in offered and "pause_process" not in offered and "execute" not in offered, offered
    shot(driver, "host-viewer")
    refusal = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        window.concierge.gw.ask(arguments[0], "pause_process", {pid: arguments[1]})
          .then((r) => done({reason: "accepted", desc: JSON.stringify(r.msg)}))
          .catch((e) => done({reason: e.reason, desc: e.message}));
    """, HOST, victim)
    assert refusal["reason"] == "forbidden", refusal
    summary["viewer_refusal"] = refusal
    log("viewer refused", **refusal)

    # ---- The viewer sees the jobs, and their output, but no form and no button
    driver.get(f"{URL}/console/#/jobs")
    wait(driver, "the viewer's jobs", lambda d: css(d, f'#jobs-list tr[data-job="{summary["job"]}"]'))
    assert css(driver, "#jobs-viewer-note") and not css(driver, "#job-form"), "a viewer is offered the job form"
    click(driver, "the job", f'#jobs-list tr[data-job="{summary["job"]}"] a.job-link')
    wait(driver, "the viewer's job", lambda d: job_row(d) and job_row(d).find_element(By.CSS_SELECTOR, ".badge").text == "exited 0")
    click(driver, "the host's output", f'#job-hosts button[data-output="{HOST}"]')
    wait(driver, "the viewer's output", lambda d: "hello" in one(d, "#job-output").text)
    assert not css(driver, "#job-cancel, #job-rerun"), "a viewer is offered to cancel or rerun"
    summary["viewer_jobs_form"] = bool(css(driver, "#job-form"))
    log("viewer follows jobs", job=summary["job"])


if __name__ == "__main__":
    main()
