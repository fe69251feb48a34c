"""Small functions that make test data through the same services as every door."""

from django.contrib.auth import get_user_model

from flags import services
from flags.models import Environment, Flag, FlagConfig, Membership, Project

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
