"""The versions page starts a stepped rollout, with or without a guard; bad input is shown
and nothing is scheduled."""

import html
from datetime import UTC, datetime, timedelta

import pytest

from flags.models import AuditEntry, RolloutGuard, ScheduledChange
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("guard_metrics")]


def _post(client, versions_page: str, **data) -> str:
    return html.unescape(client.post(versions_page, data, follow=True).content.decode())


def test_a_publisher_starts_a_guarded_stepped_rollout(client, project, versions_page):
    client.force_login(factories.member(project, "publisher", username="pat"))
    shown = client.get(versions_page).content.decode()
    assert "Start a stepped rollout" in shown

    started = _post(
        client,
        versions_page,
        rollout_start="1",
        variant="on",
        towards="off",
        percentages="5, 25,100",
        every_hours="12",
        start="2031-03-01T09:30",
        bucket_by="accountId",
        metric="purchase",
        tolerance="2",
        action="pause",
    )

    assert "Stepped rollout of on started with guard purchase: 3 steps, the first at" in started
    steps = list(ScheduledChange.objects.order_by("run_at"))
    first = datetime(2031, 3, 1, 9, 30, tzinfo=UTC)
    assert [step.run_at for step in steps] == [first + timedelta(hours=12 * i) for i in range(3)]
    assert len({step.rollout for step in steps}) == 1
    serving = [step.data["defaultServe"] for step in steps]
    assert serving[0] == {
        "rollout": {
            "bucketBy": "accountId",
            "variants": [{"variant": "on", "weight": 5}, {"variant": "off", "weight": 95}],
        }
    }
    assert serving[2] == {"variant": "on"}
    guard = RolloutGuard.objects.get()
    assert (guard.metric.key, guard.tolerance, guard.action, guard.rollout) == (
        "purchase",
        2.0,
        "pause",
        steps[0].rollout,
    )
    assert (guard.treatment_variant, guard.control_variant) == ("on", "off")
    # The page now lists the rollout under its guards and the steps under scheduled changes.
    assert f'<tr id="guard-{guard.pk}"><td>{steps[0].rollout} <small>(on against off)' in started
    assert started.count("pending") >= 3
    assert "enabled: on; defaultServe: rollout on 5% / off 95% by accountId" in started
    assert "enabled: on; defaultServe: variant on" in started
    assert AuditEntry.objects.filter(source="admin", actor_name="pat").exists()


def test_without_a_start_the_first_step_is_now_and_without_a_metric_no_guard(
    client, project, versions_page
):
    client.force_login(factories.member(project, "publisher"))
    before = datetime.now(UTC)
    _post(client, versions_page, rollout_start="1", variant="on", percentages="50", metric="")
    step = ScheduledChange.objects.get()
    assert before - timedelta(seconds=1) <= step.run_at <= datetime.now(UTC)
    assert not RolloutGuard.objects.exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"percentages": ""}, "percentages: 1 to 20 percentages"),
        ({"percentages": "5, lots"}, "percentages: whole numbers from 0 to 100, not 'lots'"),
        ({"percentages": "5, 250"}, "steps[1].percentage: a whole number from 0 to 100"),
        ({"percentages": ",".join(["5"] * 21)}, "percentages: 1 to 20"),
        ({"percentages": "5\x00"}, "contains a NUL"),
        ({"percentages": "٥"}, "percentages: whole numbers"),  # an Arabic-Indic digit
        ({"every_hours": "0"}, "every_hours: from 1 to 2160 hours"),
        ({"every_hours": "9" * 40}, "every_hours: expected a whole number"),
        ({"start": "tomorrow"}, "start: a date and time (UTC)"),
        ({"start": "2001-01-01T00:00"}, "start: the first step cannot be in the past"),
        ({"variant": "nope"}, "variant: unknown variant 'nope'"),
        ({"variant": "on", "towards": "on"}, "give another variant"),
        ({"metric": "nope"}, "no metric"),
        ({"metric": "purchase", "tolerance": "lots"}, "tolerance: a percentage, not"),
        ({"metric": "purchase", "action": "explode"}, "action: one of rollback, pause"),
        ({"bucket_by": "x" * 100_000}, "bucket"),
    ],
)
def test_bad_input_is_shown_and_nothing_is_scheduled(client, project, versions_page, data, message):
    client.force_login(factories.member(project, "publisher"))
    form = {"rollout_start": "1", "variant": "on", "percentages": "5, 100", **data}

    response = client.post(versions_page, form, follow=True)

    assert response.status_code == 200
    assert message.lower() in html.unescape(response.content.decode()).lower()
    assert not ScheduledChange.objects.exists() and not RolloutGuard.objects.exists()


def test_where_approval_is_required_a_publisher_cannot_start_one(client, project, versions_page):
    project.require_approval = True
    project.save()
    client.force_login(factories.member(project, "publisher"))
    assert "Start a stepped rollout" not in client.get(versions_page).content.decode()
    refused = _post(client, versions_page, rollout_start="1", variant="on", percentages="5, 100")
    assert "requires approval" in refused
    assert not ScheduledChange.objects.exists()


def test_a_viewer_sees_no_form_and_is_refused(client, project, versions_page):
    client.force_login(factories.member(project, "viewer"))
    assert "Start a stepped rollout" not in client.get(versions_page).content.decode()
    refused = _post(client, versions_page, rollout_start="1", variant="on", percentages="5, 100")
    assert not ScheduledChange.objects.exists()
    assert "is viewer in project 'shop'" in refused and "needs the publisher role" in refused
