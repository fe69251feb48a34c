"""Debian's Chromium driven by Selenium for the admin's browser tests: start it, log in,
click (counted), read the page and save screenshots.

Without chromium the tests are skipped locally, but fail in CI (CI=true), where they must run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
)
NO_SCRIPTS = "--blink-settings=scriptEnabled=false"
PASSWORD = "correct-horse-battery-staple"  # what tests.factories.user sets
WAIT_SECONDS = 15
# Kept as a CI artefact for people to look at (README, "Layout").
SCREENSHOTS = Path(__file__).parent / "screenshots"


def require_chromium() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if not missing:
        return
    reason = (
        f"Debian's chromium is not installed ({', '.join(missing)} missing); "
        "install it with: apt-get install -y chromium chromium-driver"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the browser test: {reason}")
    pytest.skip(reason)


def chromium(profile: Path, *arguments: str) -> Iterator[Any]:
    """A headless Chromium with its own profile folder; its console is kept for the test."""
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (*CHROMIUM_ARGS, *arguments):
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
        # Every page the test went through ran under the admin's Content-Security-Policy.
        violations = [
            entry["message"]
            for entry in driver.get_log("browser")
            if "Content Security Policy" in entry["message"]
        ]
        assert violations == []
    finally:
        driver.quit()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    yield from chromium(tmp_path / "chromium-profile")


@pytest.fixture
def browser_without_scripts(tmp_path: Path) -> Iterator[Any]:
    yield from chromium(tmp_path / "chromium-profile", NO_SCRIPTS)


def wait(browser: Any, condition: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT_SECONDS).until(condition)


def log_in(browser: Any, live_server: Any, username: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown

    browser.get(f"{live_server.url}/admin/")
    wait(browser, shown.presence_of_element_located((By.ID, "id_username")))
    browser.find_element(By.ID, "id_username").send_keys(username)
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait(browser, shown.presence_of_element_located((By.ID, "user-tools")))


def page_text(browser: Any) -> str:
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By

    try:
        return browser.find_element(By.TAG_NAME, "body").text
    except StaleElementReferenceException:  # the next page is replacing this one
        return ""
    except WebDriverException as error:
        # The same, as newer Chromium builds (156.0.8078.114) report it.
        if "does not belong to the document" in str(error):
            return ""
        raise


def screenshot(
    browser: Any, name: str, element: Any = None, window: tuple[int, int] | None = None
) -> Path:
    """Save what the window shows (resized first if asked), scrolled to `element` if given."""
    if window is not None:
        browser.set_window_size(*window)
    if element is not None:
        browser.execute_script("arguments[0].scrollIntoView()", element)
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / (name if name.endswith(".png") else f"{name}.png")
    browser.save_screenshot(str(path))
    return path


class Clicks:
    """The clicks (and menu picks) a person makes, counted (docs/admin.md, "Tasks and their
    clicks"): `clicks(element)` clicks it, `clicks.on(by, value)` waits for it first."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.count = 0

    def __call__(self, element: Any) -> Any:
        element.click()
        self.count += 1
        return element

    def on(self, by: str, value: str) -> Any:
        from selenium.webdriver.support import expected_conditions as shown

        return self(wait(self.browser, shown.element_to_be_clickable((by, value))))

    def choose(self, select_element: Any, text: str) -> None:
        """Pick an option of a list: one click (a person opens the list and picks)."""
        from selenium.webdriver.support.ui import Select

        Select(select_element).select_by_visible_text(text)
        self.count += 1
