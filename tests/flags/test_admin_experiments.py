"""The admin's metric and experiment pages: forms through the services, results, warnings."""

from datetime import UTC, datetime, timedelta

import pytest

from flags.models import AuditEntry, Experiment, Metric
from tests import factories

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 2, tzinfo=UTC)


@pytest.fixture
def checkout(project):
    flag = factories.flag(project, "checkout")
    factories.split(flag, on=50, off=50)
    return flag


@pytest.fixture
def editor(client, project):
    user = factories.member(project, "editor", username="ed")
    client.force_login(user)
    client.raise_request_exception = False
    return user


def _page(client, experiment) -> str:
    response = client.get(f"/admin/flags/experiment/{experiment.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


def _running(flag, *metrics, start=T0, stop=None) -> Experiment:
    return factories.started(factories.experiment(flag, metrics=list(metrics)), start, stop)


def _units(project, split: dict[str, int]) -> None:
    factories.exposures(factories.environment(project), "checkout", split, T0 + timedelta(hours=1))


def test_a_metric_is_added_in_the_admin_through_the_service(client, project, editor):
    response = client.post(
        "/admin/flags/metric/add/",
        {
            "project": project.pk,
            "key": "revenue",
            "name": "Revenue",
            "event": "purchase",
            "kind": "numeric",
            "aggregation": "sum",
            "window_days": "14",
            "better": "higher",
        },
    )

    assert response.status_code == 302
    metric = Metric.objects.get()
    assert (metric.kind, metric.aggregation, metric.window_days) == ("numeric", "sum", 14)
    assert AuditEntry.objects.get(object_type="metric").source == "admin"


@pytest.mark.parametrize(
    ("field", "value"),
    [("event", "pur\x00chase"), ("event", "a\tb"), ("name", "n" * 300), ("window_days", "0")],
)
def test_a_metric_form_refuses_hostile_input_on_its_field(client, project, editor, field, value):
    data = {"project": project.pk, "key": "m", "name": "M", "event": "purchase"}
    data |= {"kind": "conversion", "window_days": "7", "better": "higher", field: value}

    response = client.post("/admin/flags/metric/add/", data)

    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert not Metric.objects.exists()


def test_a_numeric_metric_without_aggregation_is_a_form_error(client, project, editor):
    response = client.post(
        "/admin/flags/metric/add/",
        {"project": project.pk, "key": "m", "name": "M", "event": "purchase"}
        | {"kind": "numeric", "aggregation": "", "window_days": "7", "better": "higher"},
    )
    assert response.status_code == 200
    assert "a numeric metric is a sum or a mean" in response.content.decode()


def test_an_experiment_is_added_started_and_stopped_in_the_admin(client, project, checkout, editor):
    metric = factories.metric(project, "purchases", event="purchase")
    response = client.post(
        "/admin/flags/experiment/add/",
        {
            "project": project.pk,
            "key": "new-checkout",
            "name": "New checkout",
            "flag": checkout.pk,
            "environment": factories.environment(project).pk,
            "control_variant": "off",
            "metrics": [metric.pk],
            "hypothesis": "More people buy",
        },
    )
    assert response.status_code == 302
    experiment = Experiment.objects.get()
    assert list(experiment.metrics.all()) == [metric]
    assert "Not started" in _page(client, experiment)

    assert client.post(f"/admin/flags/experiment/{experiment.pk}/start/").status_code == 302
    experiment.refresh_from_db()
    assert experiment.status == "running"
    page = _page(client, experiment)
    assert "Running since" in page and "Stop the experiment now" in page

    client.post(f"/admin/flags/experiment/{experiment.pk}/stop/")
    experiment.refresh_from_db()
    assert experiment.status == "stopped"
    page = _page(client, experiment)
    assert "Stopped: ran from" in page and "Stop the experiment now" not in page
    actions = AuditEntry.objects.filter(object_type="experiment").values_list("action", flat=True)
    assert sorted(actions) == ["create", "start", "stop"]


def test_starting_a_flag_without_a_rollout_says_why(client, project, editor):
    flag = factories.flag(project, "banner")
    experiment = factories.experiment(flag)

    response = client.post(f"/admin/flags/experiment/{experiment.pk}/start/", follow=True)

    assert "serves no rollout" in response.content.decode()
    experiment.refresh_from_db()
    assert experiment.status == "draft"


def test_the_results_table_shows_each_variant_against_the_control(
    client, project, checkout, editor
):
    metric = factories.metric(project, "purchases", name="Purchases", event="purchase")
    _units(project, {"off": 200, "on": 200})
    production = factories.environment(project)
    for index in range(40):
        factories.event_day(production, "purchase", f"off-{index}", T0 + timedelta(hours=2))
    for index in range(60):
        factories.event_day(production, "purchase", f"on-{index}", T0 + timedelta(hours=2))
    experiment = _running(checkout, metric, stop=T0 + timedelta(days=10))

    page = _page(client, experiment)

    assert "Conversion rate" in page and "Chance to beat control" in page
    assert "20.0%" in page and "30.0%" in page  # 40 and 60 of 200
    assert "+50.0% (" in page  # the relative lift with its interval
    assert "Sample ratio mismatch" not in page
    assert "window is still open" not in page  # the windows closed long ago
    assert "as the weights at the start (off 50% / on 50%) expect" in page


def test_a_broken_split_is_a_loud_sample_ratio_warning(client, project, checkout, editor):
    _units(project, {"off": 300, "on": 200})
    experiment = _running(checkout)

    page = _page(client, experiment)

    assert 'class="errornote flags-srm" role="alert"' in page
    assert "Sample ratio mismatch: do not trust these results." in page
    assert (
        "The units split off 300 / on 200 where the weights at the start (off 50% / on 50%) "
        "expect off 250 / on 250" in page
    )


def test_without_units_the_page_says_not_enough_data(client, project, checkout, editor):
    experiment = _running(checkout, factories.metric(project, "purchases", event="purchase"))

    page = _page(client, experiment)

    assert "Not enough data: a variant has no units yet." in page
    assert "Sample ratio: not enough data: no units yet." in page


def test_a_change_of_weights_while_running_is_noted_with_its_time(
    client, project, checkout, editor
):
    experiment = _running(checkout, start=datetime.now(UTC) - timedelta(days=1))
    factories.split(checkout, on=90, off=10)

    page = _page(client, experiment)

    assert "changed after the start" in page
    assert "rollout on 90% / off 10%" in page
    assert datetime.now(UTC).strftime("%Y-%m-%d") in page


def test_viewers_read_results_but_cannot_start(client, project, checkout):
    experiment = factories.experiment(checkout)
    client.force_login(factories.member(project, "viewer"))

    page = _page(client, experiment)
    assert "Start the experiment now" not in page
    response = client.post(f"/admin/flags/experiment/{experiment.pk}/start/", follow=True)
    assert "needs the editor role" in response.content.decode()
    experiment.refresh_from_db()
    assert experiment.status == "draft"


@pytest.mark.parametrize("path", ["999999/change/", "abc/change/", "999999/start/", "0/stop/"])
def test_bad_ids_are_4xx(client, project, editor, path):
    method = client.post if path.endswith(("start/", "stop/")) else client.get
    response = method(f"/admin/flags/experiment/{path}")
    assert 400 <= response.status_code < 500


def test_another_projects_experiment_is_not_found(client, checkout, editor):
    other = factories.flag(factories.project("other"), "checkout")
    experiment = factories.experiment(other)
    assert client.get(f"/admin/flags/experiment/{experiment.pk}/change/").status_code == 404
    assert client.post(f"/admin/flags/experiment/{experiment.pk}/start/").status_code == 404


def test_start_is_post_only(client, checkout, editor):
    experiment = factories.experiment(checkout)
    assert client.get(f"/admin/flags/experiment/{experiment.pk}/start/").status_code == 405


def test_the_flag_page_links_to_its_experiments(client, checkout, editor):
    experiment = factories.experiment(checkout, key="checkout-v2")
    factories.experiment(factories.flag(checkout.project, "banner"), key="banner-test")
    production = factories.environment(checkout.project)
    page = client.get(f"/admin/flags/flag/{checkout.pk}/change/").content.decode()
    link = (
        f"/admin/flags/experiment/?flag__id__exact={checkout.pk}"
        f"&environment__id__exact={production.pk}"
    )
    assert link.replace("&", "&amp;") in page

    listing = client.get(link)

    assert listing.status_code == 200
    assert list(listing.context["cl"].result_list) == [experiment]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("hypothesis", "more\x00sales", "Null characters are not allowed"),
        ("name", "n" * 300, "at most 200 characters"),
        ("control_variant", "blue", "unknown variant 'blue'"),
        ("flag", "999999", "Select a valid choice"),
        ("flag", "not-a-number", "Select a valid choice"),
    ],
)
def test_the_experiment_form_refuses_bad_input_on_its_field(
    client, project, checkout, editor, field, value, message
):
    data = {
        "project": project.pk,
        "key": "e",
        "name": "E",
        "flag": checkout.pk,
        "environment": factories.environment(project).pk,
        "control_variant": "off",
        field: value,
    }

    response = client.post("/admin/flags/experiment/add/", data)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors and message in " ".join(errors[field])
    assert not Experiment.objects.exists()


def test_another_projects_flag_cannot_be_chosen(client, project, editor):
    foreign = factories.flag(factories.project("other"), "checkout")
    response = client.post(
        "/admin/flags/experiment/add/",
        {
            "project": project.pk,
            "key": "e",
            "name": "E",
            "flag": foreign.pk,
            "environment": factories.environment(project).pk,
            "control_variant": "off",
        },
    )
    assert "flag" in response.context["adminform"].form.errors
    assert not Experiment.objects.exists()


def test_a_running_experiment_says_how_many_windows_are_still_open(
    client, project, checkout, editor
):
    metric = factories.metric(project, "purchases", name="Purchases", event="purchase")
    now = datetime.now(UTC)
    factories.exposures(factories.environment(project), "checkout", {"off": 3, "on": 2}, now)
    experiment = _running(checkout, metric, start=now - timedelta(hours=1))

    page = _page(client, experiment)

    assert "5 of these units were first exposed less than 7 days ago" in page
