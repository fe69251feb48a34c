"""Metrics and experiments: define what is measured, start and stop a comparison."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from flags.models import Environment, Experiment, Flag, FlagConfig, Metric, Project, Rule
from flags.roles import Action, authorize
from flags.services.steps import _save, audit
from flags.validation import check_text

if TYPE_CHECKING:
    from flags.roles import Actor


METRIC_FIELDS = ("name", "description", "event", "kind", "aggregation", "window_days", "better")
EXPERIMENT_FIELDS = ("name", "hypothesis", "flag", "environment", "control_variant", "metrics")
# What a running or stopped experiment keeps: its results are of this flag, environment and
# control; only its words and the metrics it is read on may change.
FIXED_ONCE_STARTED = ("flag", "environment", "control_variant")


def _checked(data: dict, fields: tuple[str, ...]) -> dict:
    """The known fields of `data`, their text checked (NUL, lone surrogates) by name."""
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValidationError({unknown[0]: "unknown field"})
    for field, value in data.items():
        if isinstance(value, str):
            check_text(value, field)
    return data


# --- Metrics ----------------------------------------------------------------------------


def metric_entry(metric: Metric) -> dict:
    """A metric as the audit log records it."""
    return {
        "key": metric.key,
        "name": metric.name,
        "description": metric.description,
        "event": metric.event,
        "kind": metric.kind,
        "aggregation": metric.aggregation,
        "windowDays": metric.window_days,
        "better": metric.better,
    }


def _write_metric(metric: Metric, data: dict) -> None:
    for field in METRIC_FIELDS:
        if field in data:
            setattr(metric, field, data[field])
    if metric.kind == Metric.Kind.CONVERSION and "aggregation" not in data:
        metric.aggregation = ""
    _save(metric)


@transaction.atomic
def metric_create(*, project: Project, key: str, data: dict, actor: Actor, source: str) -> Metric:
    authorize(actor, project, Action.EDIT_FLAGS)
    check_text(key, "key")
    data = _checked(data, METRIC_FIELDS)
    metric = Metric(project=project, key=key, name=data.get("name") or key)
    _write_metric(metric, {**data, "name": metric.name})
    audit(
        actor=actor,
        source=source,
        action="create",
        obj_type="metric",
        obj_key=key,
        project=project,
        after=metric_entry(metric),
    )
    return metric


@transaction.atomic
def metric_update(*, metric: Metric, data: dict, actor: Actor, source: str) -> Metric:
    """Change a metric's definition; every experiment read on it is read the new way."""
    authorize(actor, metric.project, Action.EDIT_FLAGS)
    if "key" in data and data["key"] != metric.key:
        raise ValidationError({"key": "a metric's key cannot change once created"})
    data = _checked({k: v for k, v in data.items() if k != "key"}, METRIC_FIELDS)
    metric = Metric.objects.select_for_update().get(pk=metric.pk)
    before = metric_entry(metric)
    _write_metric(metric, data)
    after = metric_entry(metric)
    if after != before:
        audit(
            actor=actor,
            source=source,
            action="update",
            obj_type="metric",
            obj_key=metric.key,
            project=metric.project,
            before=before,
            after=after,
        )
    return metric


# --- Experiments ------------------------------------------------------------------------


def experiment_entry(experiment: Experiment) -> dict:
    """An experiment as the audit log records it."""
    metrics = sorted(experiment.metrics.values_list("key", flat=True)) if experiment.pk else []
    return {
        "key": experiment.key,
        "name": experiment.name,
        "hypothesis": experiment.hypothesis,
        "flag": experiment.flag.key,
        "environment": experiment.environment.key,
        "controlVariant": experiment.control_variant,
        "metrics": metrics,
        "status": experiment.status,
        "startsAt": experiment.starts_at.isoformat() if experiment.starts_at else None,
        "endsAt": experiment.ends_at.isoformat() if experiment.ends_at else None,
        "startWeights": experiment.start_weights,
        "startVersion": experiment.start_version,
    }


def _check_metrics(project: Project, metrics: Any) -> list[Metric]:
    if isinstance(metrics, str | bytes) or not isinstance(metrics, Iterable):
        raise ValidationError({"metrics": "a list of the project's metrics"})
    chosen = list(metrics)
    if not all(isinstance(metric, Metric) for metric in chosen):
        raise ValidationError({"metrics": "a list of the project's metrics"})
    others = [metric.key for metric in chosen if metric.project_id != project.pk]
    if others:
        raise ValidationError({"metrics": f"not metrics of project {project.key!r}: {others}"})
    return chosen


def _write_experiment(experiment: Experiment, data: dict) -> None:
    for field in ("name", "hypothesis", "control_variant"):
        if field in data:
            setattr(experiment, field, data[field])
    for field, model in (("flag", Flag), ("environment", Environment)):
        if field in data:
            if not isinstance(data[field], model):
                raise ValidationError({field: f"a {field} of project {experiment.project.key!r}"})
            setattr(experiment, field, data[field])
    metrics = _check_metrics(experiment.project, data["metrics"]) if "metrics" in data else None
    _save(experiment)
    if metrics is not None:
        experiment.metrics.set(metrics)


@transaction.atomic
def experiment_create(
    *, project: Project, key: str, data: dict, actor: Actor, source: str
) -> Experiment:
    """A draft experiment: nothing is measured until it is started."""
    authorize(actor, project, Action.EDIT_FLAGS)
    check_text(key, "key")
    data = _checked(data, EXPERIMENT_FIELDS)
    for field in ("flag", "environment", "control_variant"):
        if not data.get(field):
            raise ValidationError({field: "required"})
    experiment = Experiment(project=project, key=key, name=data.get("name") or key)
    _write_experiment(experiment, {**data, "name": experiment.name})
    audit(
        actor=actor,
        source=source,
        action="create",
        obj_type="experiment",
        obj_key=key,
        project=project,
        environment=experiment.environment,
        flag_key=experiment.flag.key,
        after=experiment_entry(experiment),
    )
    return experiment


@transaction.atomic
def experiment_update(
    *, experiment: Experiment, data: dict, actor: Actor, source: str
) -> Experiment:
    authorize(actor, experiment.project, Action.EDIT_FLAGS)
    if "key" in data and data["key"] != experiment.key:
        raise ValidationError({"key": "an experiment's key cannot change once created"})
    data = _checked({k: v for k, v in data.items() if k != "key"}, EXPERIMENT_FIELDS)
    experiment = _locked(experiment)
    if experiment.status != Experiment.Status.DRAFT:
        for field in FIXED_ONCE_STARTED:
            current = getattr(experiment, field)
            if field in data and data[field] != current:
                raise ValidationError(
                    {field: f"cannot change once the experiment is {experiment.status}"}
                )
    before = experiment_entry(experiment)
    _write_experiment(experiment, data)
    after = experiment_entry(experiment)
    if after != before:
        _audit(experiment, actor, source, "update", before, after)
    return experiment


def _locked(experiment: Experiment) -> Experiment:
    return (
        Experiment.objects.select_for_update(of=("self",))
        .select_related("project", "flag", "environment")
        .get(pk=experiment.pk)
    )


def _audit(
    experiment: Experiment, actor: Actor, source: str, action: str, before: dict, after: dict
) -> None:
    audit(
        actor=actor,
        source=source,
        action=action,
        obj_type="experiment",
        obj_key=experiment.key,
        project=experiment.project,
        environment=experiment.environment,
        flag_key=experiment.flag.key,
        before=before,
        after=after,
    )


def split_of(config: FlagConfig) -> list[dict]:
    """The rollout an experiment on this configuration compares: the default serving's,
    else the first rule's that splits (units' exposures do not say which rollout served)."""
    if config.rollout:
        return list(config.rollout)
    rules = Rule.objects.filter(flag_id=config.flag_id, environment_id=config.environment_id)
    for rule in rules.order_by("position", "id"):
        if rule.rollout:
            return list(rule.rollout)
    return []


@transaction.atomic
def experiment_start(*, experiment: Experiment, actor: Actor, source: str) -> Experiment:
    """Start measuring now, recording the rollout's weights and the configuration's version."""
    authorize(actor, experiment.project, Action.EDIT_FLAGS)
    experiment = _locked(experiment)
    if experiment.status != Experiment.Status.DRAFT:
        raise ValidationError({"status": f"the experiment is {experiment.status} already"})
    config = FlagConfig.objects.get(flag=experiment.flag, environment=experiment.environment)
    weights = split_of(config)
    where = f"{experiment.flag.key} in {experiment.environment.key}"
    if not weights:
        raise ValidationError(
            {"flag": f"{where} serves no rollout: give it one that splits its variants first"}
        )
    served = {item["variant"] for item in weights if item.get("weight", 0) > 0}
    if experiment.control_variant not in served:
        raise ValidationError(
            {"control_variant": f"the rollout of {where} serves no {experiment.control_variant}"}
        )
    if len(served) < 2:
        raise ValidationError({"flag": f"the rollout of {where} serves one variant only"})
    before = experiment_entry(experiment)
    experiment.status = Experiment.Status.RUNNING
    experiment.starts_at = timezone.now()
    experiment.start_weights = weights
    experiment.start_version = config.version
    experiment.save()
    _audit(experiment, actor, source, "start", before, experiment_entry(experiment))
    return experiment


@transaction.atomic
def experiment_stop(*, experiment: Experiment, actor: Actor, source: str) -> Experiment:
    """Stop counting new units; those exposed before keep their whole window."""
    authorize(actor, experiment.project, Action.EDIT_FLAGS)
    experiment = _locked(experiment)
    if experiment.status != Experiment.Status.RUNNING:
        raise ValidationError(
            {"status": f"only a running experiment stops; it is {experiment.status}"}
        )
    before = experiment_entry(experiment)
    experiment.status = Experiment.Status.STOPPED
    experiment.ends_at = timezone.now()
    experiment.save()
    _audit(experiment, actor, source, "stop", before, experiment_entry(experiment))
    return experiment
