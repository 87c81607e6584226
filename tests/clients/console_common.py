"""What the console's browser scripts share (console_browser.py, console_fleet.py):
Debian's headless Chromium driven by Selenium through Debian's chromedriver,
waiting on conditions with screenshots of failures, and logging in.
`configure(shots, downloads)` says where screenshots and downloads go."""

import json
import os

from selenium import webdriver
from selenium.common.exceptions import JavascriptException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

PATIENCE = 20
SHOTS = "."
DOWNLOADS = "."


def configure(shots, downloads):
    global SHOTS, DOWNLOADS
    SHOTS, DOWNLOADS = shots, downloads
    os.makedirs(SHOTS, exist_ok=True)
    os.makedirs(DOWNLOADS, exist_ok=True)


def log(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1366,900", "--force-device-scale-factor=1", "--lang=en-US"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option("prefs", {
        "download.default_directory": DOWNLOADS,
        "download.prompt_for_download": False,
    })
    # The driver is Debian's: Selenium never fetches one.
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": DOWNLOADS})
    return driver


def wait(driver, what, check, timeout=PATIENCE):
    """Waits until check(driver) is truthy and returns its value."""
    def attempt(d):
        try:
            return check(d)
        except (StaleElementReferenceException, JavascriptException):
            return False
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(attempt)
    except Exception as e:
        shot(driver, f"failed-{what.replace(' ', '-')[:40]}")
        raise AssertionError(f"timed out waiting for {what}: {e!r}") from None


def shot(driver, name):
    path = os.path.join(SHOTS, f"{name}.png")
    driver.save_screenshot(path)
    return path


def css(driver, selector):
    return driver.find_elements(By.CSS_SELECTOR, selector)


def one(driver, selector):
    return driver.find_element(By.CSS_SELECTOR, selector)


def click(driver, what, selector):
    """Clicks the first match, again if a re-render replaced it meanwhile.

    The buttons it is used for sit in polled tables that redraw (every 5 s,
    or at once after a refresh). A pointer click goes to the element's
    position, so a redraw landing between finding the button and clicking
    it sends the click to whatever row is there then: another process's
    details. Clicking the element itself runs that button's own handler; a
    button a redraw already replaced raises, and is found again."""
    def attempt(d):
        found = css(d, selector)
        if not found:
            return False
        d.execute_script("arguments[0].scrollIntoView({block: 'nearest'}); arguments[0].click();", found[0])
        return True
    wait(driver, what, attempt)


def confirm(driver, expect_in_text):
    dialog = wait(driver, "the confirmation", lambda d: one(d, "#confirm").get_attribute("open") is not None and one(d, "#confirm"))
    text = one(driver, "#confirm-text").text
    assert expect_in_text in text, f"the confirmation says {text!r}"
    one(driver, "#confirm-ok").click()
    wait(driver, "the confirmation to close", lambda d: dialog.get_attribute("open") is None)


def log_in(driver, user, password, keyboard=False):
    wait(driver, "the login form", lambda d: one(d, "#login").is_displayed())
    if keyboard:
        # Only keys: the user field has the focus when the form shows.
        focused = driver.switch_to.active_element
        assert focused.get_attribute("id") == "login-user", f"focus is on {focused.get_attribute('id')!r}"
        focused.send_keys(user)
        focused.send_keys(Keys.TAB)
        driver.switch_to.active_element.send_keys(password + Keys.ENTER)
    else:
        one(driver, "#login-user").clear()
        one(driver, "#login-user").send_keys(user)
        one(driver, "#login-password").clear()
        one(driver, "#login-password").send_keys(password)
        one(driver, "#login-submit").click()
    wait(driver, "the connection", lambda d: "up" in one(d, "#link-state").get_attribute("class"))


def no_sideways_scroll(driver, page):
    width = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth];")
    assert width[0] <= width[1], f"{page} scrolls sideways on a phone: {width[0]} px of {width[1]}"



def timed(driver, action_js, done_js, limit_ms=30000):
    """Runs `action_js` in the page and returns the milliseconds, by the
    page's performance.now(), until `done_js` holds and the frame that
    shows it has been painted (checked on every animation frame; the
    paint is the next frame's start). -1 when it did not hold in time."""
    return driver.execute_async_script(f"""
        const finish = arguments[arguments.length - 1];
        const start = performance.now();
        {action_js};
        const check = () => {{
          if ({done_js}) requestAnimationFrame(() => finish(performance.now() - start));
          else if (performance.now() - start > {limit_ms}) finish(-1);
          else requestAnimationFrame(check);
        }};
        requestAnimationFrame(check);
    """)
