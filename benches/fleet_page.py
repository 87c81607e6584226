#!/usr/bin/env python3
"""benches/fleet-page.sh's browser half: the console's Fleet page in
Debian's headless Chromium (Selenium, through Debian's chromedriver), on a
gateway whose inventory holds TOTAL hosts. Measures, by the page's own
clock (performance.now()):

- first paint: from the navigation (a reload of the Fleet page, logged in)
  to the first rows drawn, and to every host read and counted;
- a filter: a target expression typed (the `hosts` request with `target`)
  until its rows are drawn and painted; a quick filter (in the page);
- a sort: a click on a column's header until the rows are painted.

Each is measured RUNS times; prints one JSON line with every figure.

  fleet_page.py URL USER PASSWORD TOTAL [RUNS]
"""

import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "clients"))
import console_common  # noqa: E402
from console_common import browser, log_in, one, timed, wait  # noqa: E402

URL, USER, PASSWORD, TOTAL = sys.argv[1:5]
RUNS = int(sys.argv[5]) if len(sys.argv) > 5 else 3
EXPRESSION = "role=db,dc=fra"
console_common.configure(os.environ.get("SHOTS", "/tmp"), "/tmp")

# When the first rows and the whole count appear, on the page's clock.
WATCH = """
window.__fleet = {};
new MutationObserver(() => {
  const list = document.getElementById('fleet-hosts');
  if (!list) return;
  if (!window.__fleet.first && list.querySelector('[data-host]')) window.__fleet.first = performance.now();
  const c = document.getElementById('hosts-counts');
  if (!window.__fleet.all && c && c.dataset.total === '%s' && c.dataset.shown === '%s') window.__fleet.all = performance.now();
}).observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
""" % (TOTAL, TOTAL)


def figures(values):
    return {"median": round(statistics.median(values), 1), "max": round(max(values), 1), "runs": [round(v, 1) for v in values]}


def main():
    driver = browser()
    out = {"hosts": int(TOTAL)}
    try:
        driver.get(f"{URL}/console/")
        log_in(driver, USER, PASSWORD)
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": WATCH})
        first, whole, filters, quick, sorts = [], [], [], [], []
        for _ in range(RUNS):
            driver.get(f"{URL}/console/#/fleet")
            driver.refresh()
            wait(driver, "every host counted", lambda d: d.execute_script("return window.__fleet && window.__fleet.all"), timeout=120)
            marks = driver.execute_script("return window.__fleet;")
            first.append(marks["first"])
            whole.append(marks["all"])
            ms = timed(driver, f"""
                const t = document.getElementById('hosts-target');
                t.value = {json.dumps(EXPRESSION)};
                t.dispatchEvent(new KeyboardEvent('keydown', {{key: 'Enter'}}));""",
                       f"document.getElementById('hosts-counts').dataset.target === {json.dumps(EXPRESSION)}")
            assert ms >= 0, "the filter was not drawn"
            filters.append(ms)
            out["filtered"] = one(driver, "#hosts-counts").text
            ms = timed(driver, """
                const t = document.getElementById('hosts-target');
                t.value = '';
                t.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'}));""",
                       f"document.getElementById('hosts-counts').dataset.shown === '{TOTAL}'")
            assert ms >= 0, "the filter was not cleared"
            ms = timed(driver, "document.getElementById('quick-online').click()",
                       "document.getElementById('quick-online').getAttribute('aria-pressed') === 'true'")
            quick.append(ms)
            driver.execute_script("document.getElementById('quick-all').click()")
            for column in ("cpu", "name", "presence"):
                ms = timed(driver, f"document.querySelector('#fleet-hosts button[data-sort=\"{column}\"]').click()",
                           f"!!document.querySelector('#fleet-hosts .vth:not([aria-sort=\"none\"]) button[data-sort=\"{column}\"]')")
                assert ms >= 0, f"the sort by {column} was not drawn"
                sorts.append(ms)
        out.update(first_rows_ms=figures(first), all_counted_ms=figures(whole), filter_ms=figures(filters),
                   quick_filter_ms=figures(quick), sort_ms=figures(sorts),
                   rows_in_dom=driver.execute_script("return document.querySelectorAll('#fleet-hosts [data-host]').length;"))
        console_common.shot(driver, "fleet-page-bench")
    finally:
        driver.quit()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
