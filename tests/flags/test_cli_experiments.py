"""`manage.py experiments`: results, start and stop from the shell, and refused input."""

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command

from flags.models import AuditEntry, Experiment
from tests import factories

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 2, tzinfo=UTC)


def run(*args: str) -> tuple[str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command("experiments", *args, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


def fails(*args: str) -> str:
    with pytest.raises(CommandError) as error:
        run(*args)
    assert error.value.returncode == 2
    return str(error.value)


@pytest.fixture
def experiment(project):
    flag = factories.flag(project, "checkout")
    factories.split(flag, on=50, off=50)
    purchases = factories.metric(project, "purchases", name="Purchases", event="purchase")
    return factories.experiment(flag, key="checkout-v2", metrics=[purchases])


def test_start_and_stop_go_through_the_services(experiment):
    assert run("start", "shop/checkout-v2")[0] == "shop/checkout-v2 is running.\n"
    assert run("stop", "shop/checkout-v2")[0] == "shop/checkout-v2 is stopped.\n"
    entries = AuditEntry.objects.filter(object_type="experiment", source="cli")
    assert sorted(entries.values_list("action", flat=True)) == ["start", "stop"]
    assert fails("stop", "shop/checkout-v2") == (
        "invalid input: status: only a running experiment stops; it is stopped"
    )


def test_results_print_each_variant_and_warn_of_a_broken_split(project, experiment):
    factories.started(experiment, T0)
    production = factories.environment(project)
    factories.exposures(production, "checkout", {"off": 300, "on": 200}, T0)
    for index in range(30):
        factories.event_day(production, "purchase", f"off-{index}", T0 + timedelta(hours=1))
        factories.event_day(production, "purchase", f"on-{index}", T0 + timedelta(hours=1))

    stdout, stderr = run("results", "shop/checkout-v2")

    assert stderr.startswith("SAMPLE RATIO MISMATCH: do not trust these results.")
    assert "off (control)  300    10.0%" in stdout
    assert "on             200    15.0%  +50.0% (" in stdout


def test_results_as_json(project, experiment):
    factories.started(experiment, T0)
    factories.exposures(factories.environment(project), "checkout", {"off": 2, "on": 2}, T0)

    data = json.loads(run("results", "shop/checkout-v2", "--json")[0])

    assert data["units"] == {"off": 2, "on": 2}
    [control, on] = data["metrics"]["purchases"]
    assert (control["variant"], control["value"], on["value"]) == ("off", 0.0, 0.0)
    assert on["reasons"][0] == "not enough data: no unit has converted in either variant yet"


def test_a_draft_has_no_results(experiment):
    assert fails("results", "shop/checkout-v2") == "shop/checkout-v2 has not started: no results"


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("shop/nope", "unknown experiment 'nope' in project 'shop'"),
        ("nope/checkout-v2", "unknown project 'nope'"),
        ("checkout-v2", "name an experiment as PROJECT/EXPERIMENT, not 'checkout-v2'"),
        ("shop/a\x00b", "experiment: contains a NUL character"),
        ("shop/\udcff", "experiment: contains a lone surrogate"),
    ],
)
def test_bad_references_are_one_line_and_exit_2(experiment, reference, message):
    assert fails("results", reference).startswith(message)


def test_people_need_their_role(project, experiment):
    factories.member(project, "viewer", username="vera")
    assert fails("start", "shop/checkout-v2", "--as", "vera").startswith(
        "permission denied: vera is viewer in project 'shop'"
    )
    assert Experiment.objects.get().status == "draft"
    factories.user("olga")  # no role in the project
    assert fails("results", "shop/checkout-v2", "--as", "olga").startswith("permission denied")
