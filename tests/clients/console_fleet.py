#!/usr/bin/env python3
"""The console's Fleet, Host and Alerts pages in a real browser (Debian's
headless Chromium through Selenium), against a real gateway with thousands
of hosts that reported facts and health (started by tests/console_fleet.rs).

`fleet`: every host is listed (the count), a target expression narrows the
list and a bad one shows the gateway's caret, a sort by CPU puts the hottest
host first, an offline host reads "offline … ago" and a host that never
connected "never connected", a quick filter keeps the offline ones, the
Clients tab lists the test's operator client and no host; the Host page of
an offline host shows its banner (since when, its last facts) and its stored
history drawn, one that never connected says so, and an unknown name is "no
such host". Each filter and sort is timed (performance.now until the rows
are drawn).

`alerts`: an admin adds a rule with the page's form (a bad one shows the
gateway's reason), sees it listed and its alert fire on the hot host, and
deletes it (confirmed); a viewer sees the rules and no control.

The last line printed is a JSON summary for the Rust test. Usage:
  console_fleet.py fleet|alerts URL ADMIN PASSWORD VIEWER PASSWORD SHOTS CONFIG_JSON
"""

import json
import sys

from selenium.webdriver.common.keys import Keys

import console_common
from console_common import browser, click, confirm, css, log, log_in, one, shot, timed, wait

MODE, URL, ADMIN, ADMIN_PW, VIEWER, VIEWER_PW, SHOTS = sys.argv[1:8]
CONFIG = json.loads(sys.argv[8])
console_common.configure(SHOTS, SHOTS)


def counts(driver):
    """The Hosts tab's (shown, total) as its count says."""
    c = one(driver, "#hosts-counts")
    shown, total = c.get_attribute("data-shown"), c.get_attribute("data-total")
    return (int(shown), int(total)) if shown and total else (None, None)


def rows(driver):
    return [r.get_attribute("data-host") for r in css(driver, "#fleet-hosts [data-host]")]


def row(driver, host):
    found = css(driver, f'#fleet-hosts [data-host="{host}"]')
    return found[0] if found else None


def target(driver, expression):
    """Types `expression` as the target (none: clears it), then Enter."""
    field = one(driver, "#hosts-target")
    field.clear()
    field.send_keys(expression + Keys.ENTER)


def fleet(driver, summary):
    total = CONFIG["total"]
    driver.get(f"{URL}/console/")
    log_in(driver, ADMIN, ADMIN_PW)
    # ---- Every host, counted; the first rows drawn
    wait(driver, "every host listed", lambda d: counts(d) == (total, total), timeout=60)
    summary["count"] = one(driver, "#hosts-counts").text
    summary["drawn_rows"] = len(css(driver, "#fleet-hosts [data-host]"))
    assert 0 < summary["drawn_rows"] < 200, f"{summary['drawn_rows']} rows drawn: not a virtual list"
    shot(driver, "fleet-hosts-many")
    log("listed", count=summary["count"])

    # ---- A target narrows the list; a bad one shows the caret
    narrowed = CONFIG["narrowed"]
    target(driver, CONFIG["expression"])
    wait(driver, "the target to narrow the list", lambda d: counts(d) == (narrowed, total))
    summary["narrowed"] = one(driver, "#hosts-counts").text
    target(driver, "role=web,dc in (fra")
    error = wait(driver, "the target's error", lambda d: one(d, "#hosts-target-error").is_displayed() and one(d, "#hosts-target-error").text)
    assert "^" in error, error
    summary["target_error"] = error
    target(driver, "")
    wait(driver, "every host again", lambda d: counts(d) == (total, total) and not one(d, "#hosts-target-error").is_displayed())

    # ---- Sort by CPU: the hottest first (a number column sorts largest first)
    ms = timed(driver, "document.querySelector('#fleet-hosts button[data-sort=\"cpu\"]').click()",
               f"document.querySelector('#fleet-hosts [data-host]')?.dataset.host === {json.dumps(CONFIG['hottest'])}")
    assert ms >= 0, "the sort did not put the hottest host first"
    summary["sort_ms"] = ms
    summary["first_by_cpu"] = rows(driver)[0]
    head = one(driver, '#fleet-hosts .vth[aria-sort="descending"] button.sort').text
    assert head.startswith("CPU"), head
    # A quick filter: the offline hosts only
    offline = CONFIG["offline"]
    ms = timed(driver, "document.getElementById('quick-offline').click()",
               f"document.getElementById('hosts-counts').dataset.shown === '{len(offline)}'")
    assert ms >= 0, one(driver, "#hosts-counts").text
    summary["quick_ms"] = ms
    assert sorted(rows(driver)) == sorted(offline), rows(driver)
    text = row(driver, offline[0]).find_element("css selector", ".presence").text
    assert text.startswith("offline") and text.endswith("ago"), text
    summary["offline_text"] = text
    one(driver, "#quick-all").click()
    # The timed filter: a target typed, until the rows are drawn.
    ms = timed(driver, f"""
        const t = document.getElementById('hosts-target');
        t.value = {json.dumps(CONFIG['expression'])};
        t.dispatchEvent(new KeyboardEvent('keydown', {{key: 'Enter'}}));""",
               f"document.getElementById('hosts-counts').dataset.shown === '{narrowed}'")
    assert ms >= 0, one(driver, "#hosts-counts").text
    summary["filter_ms"] = ms
    target(driver, "")
    # ---- The host that never connected
    never = CONFIG["never"]
    target(driver, never)
    wait(driver, "the never-connected host", lambda d: rows(d) == [never])
    summary["never_text"] = row(driver, never).find_element("css selector", ".presence").text
    assert row(driver, never).get_attribute("data-presence") == "never"
    target(driver, "")
    log("filters", sort_ms=summary["sort_ms"], filter_ms=summary["filter_ms"])

    # ---- The Clients tab: the operator's client, no host
    one(driver, "#fleet-tab-clients").click()
    wait(driver, "the operator's client", lambda d: css(d, f'#fleet-clients tr[data-name="{CONFIG["operator"]}"]'))
    assert not css(driver, f'#fleet-clients tr[data-name="{CONFIG["hottest"]}"]'), "a host among the clients"
    summary["clients"] = [r.get_attribute("data-name") for r in css(driver, "#fleet-clients tr[data-name]")]
    one(driver, "#fleet-tab-hosts").click()

    # ---- The Host page of an offline host: the banner and its history
    host = offline[0]
    target(driver, host)
    wait(driver, "the offline host alone", lambda d: rows(d) == [host])
    click(driver, "the offline host's link", f'#fleet-hosts [data-host="{host}"] a.host-link')
    banner = wait(driver, "the offline banner", lambda d: one(d, "#host-banner").get_attribute("data-presence") == "offline" and one(d, "#host-banner"))
    summary["banner"] = banner.text
    points = wait(driver, "the history drawn", lambda d: d.execute_script(
        "const c = Chart.getChart('history-chart'); return c && c.data.datasets[0].data.filter((v) => v !== null).length;"))
    summary["history_points"] = points
    summary["history_note"] = one(driver, "#history-note").text
    shot(driver, "host-offline")
    # The range picker asks again, and still draws.
    click(driver, "the 24 h range", '#history-range button[data-range="86400"]')
    wait(driver, "the 24 h history", lambda d: one(d, "#history-chart").get_attribute("data-range") == "86400")
    # ---- Never connected, and no such host
    driver.get(f"{URL}/console/#/host/{never}")
    wait(driver, "the never banner", lambda d: one(d, "#host-banner").get_attribute("data-presence") == "never")
    summary["never_banner"] = one(driver, "#host-banner").text
    driver.get(f"{URL}/console/#/host/no-such-host")
    wait(driver, "the no-such-host banner", lambda d: one(d, "#host-banner").get_attribute("data-presence") == "missing")
    summary["missing_banner"] = one(driver, "#host-banner").text
    log("host pages", banner=summary["banner"].splitlines()[0])


def alert_rows(driver, table):
    return css(driver, f"#alerts-{table} tr[data-rule]")


def alerts(driver, summary):
    driver.get(f"{URL}/console/")
    log_in(driver, ADMIN, ADMIN_PW)
    driver.get(f"{URL}/console/#/alerts")
    wait(driver, "the rule form", lambda d: css(d, "#rule-form"))
    # Before the alerts' backend, the gateway's refusal is shown, not hidden.
    error = one(driver, "#alerts-error")
    if error.is_displayed():
        summary["error"] = error.text
    rule = CONFIG["rule"]
    # A bad condition: the gateway's reason under the form.
    one(driver, "#rule-name").send_keys(rule["name"])
    one(driver, "#rule-when").send_keys("cpu >> 90")
    one(driver, "#rule-add").click()
    bad = wait(driver, "the bad rule's reason", lambda d: one(d, "#rule-error").is_displayed() and one(d, "#rule-error").text)
    summary["bad_rule"] = bad
    one(driver, "#rule-when").clear()
    one(driver, "#rule-when").send_keys(rule["when"])
    one(driver, "#rule-target").send_keys(rule["target"])
    one(driver, "#rule-add").click()
    wait(driver, "the rule listed", lambda d: css(d, f'#alerts-rules tr[data-rule="{rule["name"]}"][data-source="api"]'))
    hot = CONFIG["hot"]
    wait(driver, "the alert firing", lambda d: css(d, f'#alerts-active tr[data-rule="{rule["name"]}"][data-host="{hot}"]'), timeout=90)
    summary["active"] = [r.get_attribute("data-host") for r in alert_rows(driver, "active")]
    wait(driver, "the firing event among the recent", lambda d: css(d, f'#alerts-recent tr[data-state="firing"][data-host="{hot}"]'))
    shot(driver, "alerts")
    log("firing", hosts=summary["active"])
    click(driver, "the rule's delete button", f'#alerts-rules button[data-delete-rule="{rule["name"]}"]')
    confirm(driver, rule["name"])
    wait(driver, "the rule gone", lambda d: not css(d, f'#alerts-rules tr[data-rule="{rule["name"]}"]'))
    # A viewer: the rules and events, no form, no delete button.
    one(driver, "#logout").click()
    log_in(driver, VIEWER, VIEWER_PW)
    driver.get(f"{URL}/console/#/alerts")
    wait(driver, "the viewer's note", lambda d: css(d, "#alerts-viewer-note"))
    wait(driver, "the viewer's events", lambda d: css(d, f'#alerts-recent tr[data-host="{hot}"]'))
    summary["viewer_controls"] = len(css(driver, "#rule-form, button[data-delete-rule]"))


def main():
    driver = browser()
    summary = {}
    try:
        {"fleet": fleet, "alerts": alerts}[MODE](driver, summary)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, f"console errors: {errors}"
        summary["ok"] = True
    finally:
        driver.quit()
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
