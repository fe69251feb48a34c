"""The experiment page in a real headless Chromium: results with a loud sample-ratio warning."""

from datetime import UTC, datetime, timedelta

import pytest

from tests import factories
from tests.browser.accessibility import assert_inputs_labelled
from tests.browser.chromium import Clicks, log_in, page_text, screenshot, wait

pytestmark = pytest.mark.browser

T0 = datetime(2026, 11, 2, tzinfo=UTC)


def test_a_pm_opens_an_experiment_whose_split_is_broken(browser, live_server, transactional_db):
    from selenium.webdriver.common.by import By

    project = factories.project("shop", name="Shop")
    flag = factories.flag(project, "new-checkout")
    factories.split(flag, on=50, off=50)
    purchases = factories.metric(project, "purchases", name="Purchases", event="purchase")
    experiment = factories.experiment(
        flag, key="checkout-v2", name="Checkout v2", metrics=[purchases]
    )
    factories.started(experiment, T0)
    production = factories.environment(project)
    # 1,000 units in off, 800 in on: a 50/50 rollout does not split that way by chance.
    factories.exposures(production, "new-checkout", {"off": 1000, "on": 800}, T0)
    for variant, converted in (("off", 100), ("on", 100)):
        for index in range(converted):
            factories.event_day(
                production, "purchase", f"{variant}-{index}", T0 + timedelta(hours=3)
            )
    factories.member(project, "editor", username="pm")
    log_in(browser, live_server, "pm")
    clicks = Clicks(browser)

    clicks.on(By.LINK_TEXT, "Experiments")
    clicks.on(By.LINK_TEXT, "checkout-v2")

    wait(browser, lambda b: "Sample ratio mismatch" in page_text(b))
    warning = browser.find_element(By.CSS_SELECTOR, ".flags-srm[role=alert]")
    assert "do not trust these results" in warning.text
    assert "off 1,000 / on 800" in warning.text
    table = browser.find_element(By.CSS_SELECTOR, "table.flags-results")
    assert "10.0%" in table.text and "12.5%" in table.text  # 100 of 1,000; 100 of 800
    assert "+25.0% (" in table.text
    assert browser.find_element(By.CSS_SELECTOR, "input[value='Stop the experiment now']")
    assert_inputs_labelled(browser, "the experiment page")
    screenshot(browser, "experiment-sample-ratio-mismatch", window=(1400, 1100))
    assert clicks.count == 2
