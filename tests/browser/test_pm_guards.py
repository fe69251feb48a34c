"""A product manager guards a stepped rollout in a real headless Chromium: adds a guard
metric from the flag's Scheduled changes tab, edits its tolerance (which restarts its test,
as the page says), and removes it. Screenshots go to tests/browser/screenshots/."""

from datetime import timedelta

import pytest
from django.utils import timezone

from flags import schedules
from flags.models import AuditEntry, RolloutGuard, ScheduledChange
from tests import factories
from tests.browser.accessibility import assert_inputs_labelled
from tests.browser.chromium import Clicks, log_in, page_text, screenshot, wait

pytestmark = pytest.mark.browser


def _shop_with_a_flag():
    """Project shop with a metric purchase and the flag new-checkout."""
    project = factories.project("shop", name="Shop")
    factories.metric(project, "purchase", name="Purchases", event="purchase", window_days=1)
    return factories.flag(project, "new-checkout")


def test_a_pm_adds_edits_and_removes_a_guard_of_a_rollout(browser, live_server, transactional_db):
    from selenium.webdriver.common.by import By

    flag = _shop_with_a_flag()
    factories.metric(flag.project, "refund", name="Refunds", event="refund", better="lower")
    now = timezone.now()
    steps = [{"at": now + timedelta(days=d), "percentage": p} for d, p in ((1, 10), (3, 50))]
    rollout = schedules.rollout_create(
        config=factories.config(flag, "production"),
        variant="on",
        steps=steps,
        actor=None,
        source="api",
    )[0].rollout
    factories.member(flag.project, "publisher", username="pm")
    log_in(browser, live_server, "pm")
    clicks = Clicks(browser)

    clicks.on(By.LINK_TEXT, "Flags")
    clicks.on(By.LINK_TEXT, "new-checkout")
    clicks.on(By.ID, "tab-schedule")
    clicks.on(By.CSS_SELECTOR, "a[title='Guards of the rollouts in Production']")
    wait(browser, lambda b: "Add a guard" in page_text(b))
    form = browser.find_element(By.CSS_SELECTOR, "form.flag-guard-add")
    rollouts = form.find_element(By.NAME, "rollout")
    assert f"{rollout}: on against off, 2 steps pending" in rollouts.text
    clicks.choose(form.find_element(By.NAME, "metric"), "purchase (Purchases)")
    tolerance = form.find_element(By.NAME, "tolerance")
    tolerance.clear()
    tolerance.send_keys("2")
    clicks(form.find_element(By.NAME, "guard_add"))

    wait(browser, lambda b: f"Guard purchase added to rollout {rollout}." in page_text(b))
    guard = RolloutGuard.objects.get()
    assert (guard.metric.key, guard.tolerance, guard.status) == ("purchase", 2.0, "active")
    row = browser.find_element(By.ID, f"guard-{guard.pk}")
    assert "active: Checking: not checked yet." in row.text
    assert "restarts its test from that moment" in page_text(browser)
    assert_inputs_labelled(browser, "the versions page with a guard")
    screenshot(browser, "guard-added", element=row, window=(1400, 1000))
    assert clicks.count == 6

    tolerance = row.find_element(By.NAME, "tolerance")
    tolerance.clear()
    tolerance.send_keys("5")
    clicks(row.find_element(By.NAME, "guard_edit"))
    wait(browser, lambda b: "The test of guard purchase restarted now" in page_text(b))
    row = browser.find_element(By.ID, f"guard-{guard.pk}")
    assert "5%" in row.text and "Test restarted" in row.text
    assert RolloutGuard.objects.get().restarted_at is not None
    screenshot(browser, "guard-edited", element=row, window=(1400, 1000))

    clicks(row.find_element(By.NAME, "guard_remove"))
    wait(browser, lambda b: "Guard purchase removed" in page_text(b))
    assert not browser.find_elements(By.ID, f"guard-{guard.pk}")
    assert not RolloutGuard.objects.exists()
    entries = AuditEntry.objects.filter(action__startswith="guard ", source="admin")
    assert sorted(entries.values_list("action", flat=True)) == [
        "guard add",
        "guard edit",
        "guard remove",
    ]
    screenshot(browser, "guard-removed", window=(1400, 1000))
    assert clicks.count == 8


def test_a_pm_starts_a_guarded_stepped_rollout_from_the_flag_page(
    browser, live_server, transactional_db
):
    from selenium.webdriver.common.by import By

    factories.member(_shop_with_a_flag().project, "publisher", username="pm")
    log_in(browser, live_server, "pm")
    clicks = Clicks(browser)

    clicks.on(By.LINK_TEXT, "Flags")
    clicks.on(By.LINK_TEXT, "new-checkout")
    clicks.on(By.ID, "tab-schedule")
    clicks.on(By.CSS_SELECTOR, "a[title='Start a stepped rollout in Production']")
    wait(browser, lambda b: "Start a stepped rollout" in page_text(b))
    form = browser.find_element(By.ID, "stepped-rollout")
    assert_inputs_labelled(browser, "the versions page's stepped rollout form")
    percentages = form.find_element(By.NAME, "percentages")
    percentages.clear()
    percentages.send_keys("10, 50, 100")
    hours = form.find_element(By.NAME, "every_hours")
    hours.clear()
    hours.send_keys("6")
    clicks.choose(form.find_element(By.NAME, "metric"), "purchase (Purchases)")
    tolerance = form.find_element(By.NAME, "tolerance")
    tolerance.clear()
    tolerance.send_keys("1.5")
    screenshot(browser, "stepped-rollout-form", element=form, window=(1400, 1000))
    clicks(form.find_element(By.NAME, "rollout_start"))

    wait(browser, lambda b: "Stepped rollout of on started with guard purchase" in page_text(b))
    steps = list(ScheduledChange.objects.order_by("run_at"))
    assert [step.data["defaultServe"].get("variant") for step in steps] == [None, None, "on"]
    assert steps[1].run_at - steps[0].run_at == timedelta(hours=6)
    guard = RolloutGuard.objects.get()
    assert (guard.metric.key, guard.tolerance, guard.rollout) == ("purchase", 1.5, steps[0].rollout)
    row = browser.find_element(By.ID, f"guard-{guard.pk}")
    assert "on against off" in row.text and "active" in row.text
    # Proposals are made on the flag page; the JSON box stays folded away.
    assert not browser.find_element(By.NAME, "changes").is_displayed()
    assert "Propose a change as JSON" in page_text(browser)
    screenshot(browser, "stepped-rollout-started", window=(1400, 1000))
    assert clicks.count == 6
