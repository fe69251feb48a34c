"""Small functions that make test data through the same services as every door."""

from collections.abc import Sequence
from datetime import UTC, datetime

from django.contrib.auth import get_user_model

from flags import services
from flags.ingested import ingested_bump
from flags.models import (
    Environment,
    Experiment,
    Flag,
    FlagConfig,
    IngestedData,
    Membership,
    Metric,
    Project,
    UnitEventDay,
    UnitExposure,
)

SYSTEM = {"actor": None, "source": "system"}
_counter = iter(range(1, 1_000_000))


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_counter)}"


def user(username: str | None = None, *, superuser: bool = False, staff: bool = True, **extra):
    model = get_user_model()
    return model.objects.create_user(
        username=username or unique("user"),
        password="correct-horse-battery-staple",
        is_staff=staff,
        is_superuser=superuser,
        **extra,
    )


def project(key: str | None = None, **kwargs) -> Project:
    return services.project_create(
        key=key or unique("project"), name=kwargs.pop("name", ""), **SYSTEM, **kwargs
    )


def member(project: Project, role: str, **kwargs):
    person = user(**kwargs)
    Membership.objects.create(project=project, user=person, role=role)
    return person


def environment(project: Project, key: str = "production") -> Environment:
    return project.environments.get(key=key)


def flag(project: Project, key: str | None = None, **kwargs) -> Flag:
    return services.flag_create(project=project, key=key or unique("flag"), **SYSTEM, **kwargs)


def config(flag: Flag, environment_key: str = "development") -> FlagConfig:
    return FlagConfig.objects.get(flag=flag, environment__key=environment_key)


def configure(flag: Flag, environment_key: str = "development", **data) -> FlagConfig:
    return services.flag_config_update(config=config(flag, environment_key), data=data, **SYSTEM)


def split(flag: Flag, environment_key: str = "production", **weights: int) -> FlagConfig:
    """Switch the flag on in the environment, serving a rollout: split(flag, on=50, off=50)."""
    variants = [{"variant": variant, "weight": weight} for variant, weight in weights.items()]
    rollout = {"defaultServe": {"rollout": {"variants": variants}}}
    return configure(flag, environment_key, enabled=True, **rollout)


def metric(project: Project, key: str | None = None, **data) -> Metric:
    return services.metric_create(project=project, key=key or unique("metric"), data=data, **SYSTEM)


def experiment(
    flag: Flag, environment_key: str = "production", key: str | None = None, **data
) -> Experiment:
    """A draft experiment on the flag's rollout in the environment; control "off" unless given."""
    data = {"control_variant": "off", "metrics": [], **data}
    data.setdefault("environment", environment(flag.project, environment_key))
    return services.experiment_create(
        project=flag.project, key=key or unique("experiment"), data={"flag": flag, **data}, **SYSTEM
    )


def started(experiment: Experiment, start: datetime, stop: datetime | None = None) -> Experiment:
    """Start the experiment, as if at `start` (and stopped at `stop`): for data of the past."""
    services.experiment_start(experiment=experiment, **SYSTEM)
    Experiment.objects.filter(pk=experiment.pk).update(starts_at=start, ends_at=stop)
    experiment.refresh_from_db()
    return experiment


def _ingested(environment: Environment, kind: str, name: str, at: datetime) -> None:
    """What ingestion records with the rows it writes (flags.ingested)."""
    ingested_bump([(environment.pk, kind, name, at.astimezone(UTC).date(), at)])


def exposures(
    environment: Environment, flag_key: str, units: dict[str, int], first_seen: datetime
) -> None:
    """`units[variant]` units first exposed to each variant at `first_seen`, named variant-i."""
    UnitExposure.objects.bulk_create(
        UnitExposure(
            environment=environment,
            flag_key=flag_key,
            variant=variant,
            unit=f"{variant}-{index}",
            first_seen=first_seen,
        )
        for variant, count in units.items()
        for index in range(count)
    )
    _ingested(environment, IngestedData.Kind.EXPOSURES, flag_key, first_seen)


def exposure(
    environment: Environment, flag_key: str, variant: str, unit: str, first_seen: datetime
) -> UnitExposure:
    """A unit's first exposure, as the events flush writes it."""
    _ingested(environment, IngestedData.Kind.EXPOSURES, flag_key, first_seen)
    return UnitExposure.objects.create(
        environment=environment,
        flag_key=flag_key,
        variant=variant,
        unit=unit,
        first_seen=first_seen,
    )


def event_day(
    environment: Environment,
    event: str,
    unit: str,
    at: datetime,
    values: Sequence[float] = (),
    count: int | None = None,
) -> UnitEventDay:
    """A unit's events of one name on the day of `at` (all at `at`), as the flush sums them."""
    _ingested(environment, IngestedData.Kind.EVENTS, event, at)
    return UnitEventDay.objects.create(
        environment=environment,
        event=event,
        unit=unit,
        day=at.astimezone(UTC).date(),
        count=count if count is not None else max(1, len(values)),
        valued=len(values),
        value_sum=sum(values),
        value_squares=sum(value * value for value in values),
        first_at=at,
        last_at=at,
    )
