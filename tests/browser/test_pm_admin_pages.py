"""Product managers' tasks in a real headless Chromium, counting their clicks from the start
page (docs/admin.md, "Tasks and their clicks").

Each test logs in, starts on the admin's start page, does one task with clicks counted by a
small wrapper (typing a comment is not a click), and saves a screenshot to
tests/browser/screenshots/ for people to look at.
"""

from datetime import UTC, datetime, timedelta

import pytest

from flags import services
from flags.models import AuditEntry, ChangeRequest, Flag
from tests import factories
from tests.browser.chromium import Clicks, log_in, page_text, screenshot, wait

pytestmark = pytest.mark.browser


def _production_button(browser, flag_key: str):
    from selenium.webdriver.common.by import By

    row = browser.find_element(By.XPATH, f"//tr[.//a[normalize-space()='{flag_key}']]")
    return row.find_element(By.CSS_SELECTOR, "td.field-state_production button")


@pytest.mark.parametrize("role", ["publisher", "editor"])
def test_a_publisher_or_editor_asks_for_production_where_approval_is_required(
    browser, live_server, transactional_db, role
):
    """An editor's production button is not greyed where approval is required: it asks."""
    from selenium.webdriver.common.by import By

    project = factories.project("shop", name="Shop")
    project.require_approval = True
    project.save()
    factories.flag(project, "new-checkout")
    author = factories.member(project, role, username="pm")
    log_in(browser, live_server, "pm")
    clicks = Clicks(browser)

    clicks.on(By.LINK_TEXT, "Flags")
    _production_button(browser, "new-checkout").click()
    clicks.count += 1
    wait(browser, lambda b: "requires approval" in page_text(b))
    assert "enabled: off → on" in page_text(browser)
    browser.find_element(By.ID, "id_comment").send_keys("Marketing launches today")
    screenshot(browser, f"production-with-approval-{role}")
    clicks.on(By.CSS_SELECTOR, "input[name=propose]")

    wait(browser, lambda b: "Change request #" in b.title)
    change = ChangeRequest.objects.get()
    assert change.data == {"enabled": True} and change.status == "open"
    assert change.author_id == author.pk
    assert factories.config(change.config.flag, "production").enabled is False
    assert "Why: Marketing launches today" in page_text(browser)
    screenshot(browser, f"production-with-approval-request-{role}")
    assert clicks.count == 3


def test_a_publisher_restores_a_production_version(browser, live_server, transactional_db):
    from selenium.webdriver.common.by import By

    project = factories.project("shop", name="Shop")
    flag = factories.flag(project, "new-checkout")
    factories.configure(flag, "production", enabled=True)  # version 2
    factories.configure(flag, "production", offVariant="on")  # version 3: the mistake
    factories.member(project, "publisher", username="pm")
    log_in(browser, live_server, "pm")
    clicks = Clicks(browser)

    # The start page lists the mistake with its undo.
    assert "offVariant: off → on" in page_text(browser)
    screenshot(browser, "restore-from-start-page")
    clicks.on(By.CSS_SELECTOR, "#dashboard-recent a.flags-undo")
    wait(browser, lambda b: "Restore version 2" in b.title)
    assert "offVariant: on → off" in page_text(browser)
    browser.find_element(By.ID, "id_comment").send_keys("Off variant was wrong")
    screenshot(browser, "restore-version")
    clicks.on(By.CSS_SELECTOR, "input[name=confirm]")

    wait(browser, lambda b: "restored as version 4" in page_text(b))
    config = factories.config(flag, "production")
    assert (config.version, config.off_variant) == (4, "off")
    assert AuditEntry.objects.get(action="restore v2").comment == "Off variant was wrong"
    assert clicks.count == 2


def test_a_publisher_uses_the_kill_switch(browser, live_server, transactional_db):
    from selenium.webdriver.common.by import By

    project = factories.project("shop", name="Shop")
    flag = factories.flag(project, "new-checkout")
    factories.configure(flag, "production", enabled=True)
    factories.member(project, "publisher", username="pm")
    log_in(browser, live_server, "pm")
    clicks = Clicks(browser)

    clicks.on(By.LINK_TEXT, "Flags")
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "a.flags-kill-list"))
    screenshot(browser, "kill-switch-in-list")
    clicks.on(By.CSS_SELECTOR, "td.field-state_production a.flags-kill-list")
    wait(browser, lambda b: "Kill switch" in b.title)
    assert "enabled: on → off" in page_text(browser)
    browser.find_element(By.ID, "id_comment").send_keys("Checkout errors at 5%")
    screenshot(browser, "kill-switch")
    clicks.on(By.CSS_SELECTOR, "input[name=confirm]")

    wait(browser, lambda b: "is off in Production" in page_text(b))
    assert factories.config(flag, "production").enabled is False
    assert AuditEntry.objects.filter(action="kill", comment="Checkout errors at 5%").exists()
    assert clicks.count == 3


def test_a_product_manager_finds_a_stale_flag_from_the_start_page(
    browser, live_server, transactional_db
):
    from selenium.webdriver.common.by import By

    project = factories.project("shop", name="Shop")
    old = factories.flag(project, "summer-sale-2024")
    Flag.objects.filter(pk=old.pk).update(created_at=datetime.now(UTC) - timedelta(days=400))
    factories.flag(project, "made-today")
    services.project_update(project=project, data={"description": "Our shop"}, **factories.SYSTEM)
    factories.member(project, "viewer", username="pm")
    log_in(browser, live_server, "pm")
    screenshot(browser, "start-page")
    stale = browser.find_element(By.ID, "dashboard-stale").text
    assert "summer-sale-2024" in stale and "made-today" not in stale
    clicks = Clicks(browser)

    clicks.on(By.LINK_TEXT, "See all stale flags")
    wait(browser, lambda b: "Stale flags" in b.title)
    assert "made-today" not in page_text(browser)
    clicks.on(By.LINK_TEXT, "summer-sale-2024")

    wait(browser, lambda b: "summer-sale-2024" in b.title)
    screenshot(browser, "stale-flag")
    assert clicks.count == 2


def test_the_flag_list_draws_its_padlock_and_no_red_cross(browser, live_server, transactional_db):
    from selenium.webdriver.common.by import By

    project = factories.project("shop", name="Shop")
    factories.flag(project, "new-checkout")
    factories.member(project, "editor", username="pm")
    log_in(browser, live_server, "pm")
    browser.get(f"{live_server.url}/admin/flags/flag/")
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#result_list"))
    screenshot(browser, "flag-list")

    locked = browser.find_element(By.CSS_SELECTOR, "td.field-state_production .flag-state-locked")
    mask = browser.execute_script(
        "return getComputedStyle(arguments[0], '::after').maskImage", locked
    )
    assert mask.startswith('url("data:image/svg+xml'), mask  # drawn, not a missing glyph
    cross = browser.find_element(By.CSS_SELECTOR, "td.field-archived img")
    assert not cross.is_displayed()
    assert browser.find_element(By.CSS_SELECTOR, "td.field-archived").text == ""


def test_the_audit_log_reads_as_changes(browser, live_server, transactional_db):
    from selenium.webdriver.common.by import By

    project = factories.project("shop", name="Shop")
    flag = factories.flag(project, "new-checkout")
    factories.configure(flag, "staging", enabled=True)
    services.flag_toggle(
        config=factories.config(flag, "production"),
        enabled=True,
        actor=None,
        source="system",
        comment="Launch",
    )
    factories.member(project, "viewer", username="pm")
    log_in(browser, live_server, "pm")
    browser.get(f"{live_server.url}/admin/flags/auditentry/")
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#result_list"))
    screenshot(browser, "audit-log")

    rows = browser.find_element(By.ID, "result_list").text
    assert "enabled: off → on" in rows and "Launch" in rows
    assert "defaultServe" not in rows  # no JSON dump
    choices = browser.find_element(By.ID, "changelist-filter").text
    assert "Switched on or off" in choices


def test_a_project_admin_renames_and_protects_an_environment(
    browser, live_server, transactional_db
):
    from selenium.webdriver.common.by import By

    project = factories.project("shop", name="Shop")
    factories.member(project, "admin", username="lead")
    log_in(browser, live_server, "lead")
    clicks = Clicks(browser)

    clicks.on(By.CSS_SELECTOR, "#content-main a[href$='/flags/project/']")
    clicks.on(By.LINK_TEXT, "shop")
    name = wait(browser, lambda b: b.find_element(By.NAME, "environments-1-name"))
    name.clear()
    name.send_keys("Pre-production")
    clicks.on(By.NAME, "environments-1-protected")
    screenshot(browser, "project-environments")
    clicks.on(By.NAME, "_save")

    wait(browser, lambda b: "was changed successfully" in page_text(b))
    staging = factories.environment(project, "staging")
    assert (staging.name, staging.protected) == ("Pre-production", True)
    assert AuditEntry.objects.filter(object_type="environment", action="update").exists()
    assert clicks.count == 4
