"""Metrics and experiments through their services: validation, roles, audit, start and stop."""

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from flags import services
from flags.models import AuditEntry, Experiment, Metric
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def checkout(project):
    flag = factories.flag(project, "checkout")
    factories.split(flag, on=50, off=50)
    return flag


def _errors(call) -> dict:
    with pytest.raises(ValidationError) as refused:
        call()
    return refused.value.message_dict


def _create_metric(project, actor=None, key="purchases", **data):
    return services.metric_create(
        project=project,
        key=key,
        data={"event": "purchase", **data},
        actor=actor,
        source="api",
    )


def test_a_metric_is_created_and_audited(project):
    editor = factories.member(project, "editor", username="ed")

    metric = _create_metric(project, editor, kind="numeric", aggregation="sum", better="higher")

    assert (metric.kind, metric.aggregation, metric.window_days) == ("numeric", "sum", 7)
    entry = AuditEntry.objects.get(object_type="metric")
    assert (entry.action, entry.actor_name, entry.after["event"]) == ("create", "ed", "purchase")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"kind": "numeric"}, "aggregation"),
        ({"kind": "numeric", "aggregation": "median"}, "aggregation"),
        ({"kind": "conversion", "aggregation": "sum"}, "aggregation"),
        ({"kind": "ratio"}, "kind"),
        ({"better": "sideways"}, "better"),
        ({"window_days": 0}, "window_days"),
        ({"window_days": 91}, "window_days"),
        ({"event": ""}, "event"),
        ({"event": "a" * 101}, "event"),
        ({"event": "pur\tchase"}, "event"),
        ({"event": "pur\x00chase"}, "event"),
        ({"event": "pur\ud800chase"}, "event"),
        ({"name": "x\x00y"}, "name"),
        ({"description": "\udfff"}, "description"),
        ({"name": "n" * 10_000}, "name"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_a_metric_that_cannot_be_measured_is_refused_naming_the_field(project, data, field):
    assert field in _errors(lambda: _create_metric(project, **data))
    assert not Metric.objects.exists()


def test_a_metric_key_is_checked_and_unique(project):
    _create_metric(project)
    assert "key" in _errors(lambda: _create_metric(project))
    assert "key" in _errors(lambda: _create_metric(project, key="Not A Key"))
    assert "key" in _errors(lambda: _create_metric(project, key="k\x00"))


def test_an_event_no_one_sent_yet_is_a_metric_all_the_same(project):
    # Services start sending an event after the metric is defined, often.
    metric = _create_metric(project, event="checkout-v2-completed")
    assert metric.event == "checkout-v2-completed"


def test_a_metric_update_keeps_its_key_and_is_audited(project):
    metric = _create_metric(project)

    services.metric_update(
        metric=metric, data={"kind": "numeric", "aggregation": "mean"}, actor=None, source="cli"
    )

    metric.refresh_from_db()
    assert (metric.kind, metric.aggregation) == ("numeric", "mean")
    update = AuditEntry.objects.get(object_type="metric", action="update")
    assert (update.before["kind"], update.after["kind"]) == ("conversion", "numeric")
    assert "key" in _errors(
        lambda: services.metric_update(metric=metric, data={"key": "x"}, actor=None, source="cli")
    )


def test_viewers_cannot_define_metrics_or_experiments(project, checkout):
    viewer = factories.member(project, "viewer")
    with pytest.raises(PermissionDenied, match="needs the editor role"):
        _create_metric(project, viewer)
    with pytest.raises(PermissionDenied):
        services.experiment_create(
            project=project,
            key="e",
            data={
                "flag": checkout,
                "environment": factories.environment(project),
                "control_variant": "off",
            },
            actor=viewer,
            source="admin",
        )
    experiment = factories.experiment(checkout)
    with pytest.raises(PermissionDenied):
        services.experiment_start(experiment=experiment, actor=viewer, source="admin")
    assert Experiment.objects.get().status == "draft"


def test_an_experiment_starts_recording_the_weights_and_stops(project, checkout):
    editor = factories.member(project, "editor", username="ed")
    metric = _create_metric(project)
    experiment = factories.experiment(checkout, metrics=[metric], hypothesis="More buy")
    config = factories.config(checkout, "production")

    started = services.experiment_start(experiment=experiment, actor=editor, source="admin")

    assert started.status == "running" and started.starts_at is not None
    assert started.start_weights == [
        {"variant": "on", "weight": 50},
        {"variant": "off", "weight": 50},
    ]
    assert started.start_version == config.version
    stopped = services.experiment_stop(experiment=started, actor=editor, source="admin")
    assert stopped.status == "stopped" and stopped.ends_at >= stopped.starts_at
    actions = list(
        AuditEntry.objects.filter(object_type="experiment")
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == ["create", "start", "stop"]
    with pytest.raises(ValidationError):
        services.experiment_stop(experiment=stopped, actor=editor, source="admin")
    with pytest.raises(ValidationError):
        services.experiment_start(experiment=stopped, actor=editor, source="admin")


def test_an_experiment_needs_a_rollout_that_serves_its_control(project):
    flag = factories.flag(project, "banner")
    experiment = factories.experiment(flag)
    assert "flag" in _errors(
        lambda: services.experiment_start(experiment=experiment, actor=None, source="cli")
    )
    factories.configure(
        flag,
        "production",
        defaultServe={
            "rollout": {
                "variants": [{"variant": "on", "weight": 100}, {"variant": "off", "weight": 0}]
            }
        },
    )
    assert "control_variant" in _errors(
        lambda: services.experiment_start(experiment=experiment, actor=None, source="cli")
    )


def test_an_experiment_refuses_what_is_not_of_its_project(project, checkout):
    other = factories.project("other")
    foreign_flag = factories.flag(other, "checkout")
    foreign_metric = _create_metric(other)
    production = factories.environment(project)

    def create(**data):
        fields = {"flag": checkout, "environment": production, "control_variant": "off", **data}
        return lambda: services.experiment_create(
            project=project, key="e", data=fields, actor=None, source="cli"
        )

    assert "flag" in _errors(create(flag=foreign_flag))
    assert "environment" in _errors(create(environment=factories.environment(other)))
    assert "metrics" in _errors(create(metrics=[foreign_metric]))
    assert "metrics" in _errors(create(metrics="purchases"))
    assert "control_variant" in _errors(create(control_variant="blue"))
    assert "control_variant" in _errors(create(control_variant=""))
    assert "hypothesis" in _errors(create(hypothesis="\x00"))
    assert "flag" in _errors(create(flag="checkout"))
    assert not Experiment.objects.exists()


def test_a_started_experiment_keeps_its_flag_and_control(project, checkout):
    experiment = services.experiment_start(
        experiment=factories.experiment(checkout), actor=None, source="cli"
    )
    assert "control_variant" in _errors(
        lambda: services.experiment_update(
            experiment=experiment, data={"control_variant": "on"}, actor=None, source="cli"
        )
    )
    metric = _create_metric(project)
    services.experiment_update(
        experiment=experiment,
        data={"metrics": [metric], "name": "Checkout v2"},
        actor=None,
        source="cli",
    )
    assert list(experiment.metrics.all()) == [metric]
