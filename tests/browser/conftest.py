"""The browser tests' Chromium fixtures (tests/browser/chromium.py)."""

from tests.browser.chromium import browser, browser_without_scripts  # noqa: F401
