"""Reads of the flag store that respect who is asking (the doors' common queries).

A thing asked for by key that is not there raises flags.errors.NotFound; each door
translates it (404 JSON, a 404 page, a message and exit code 2).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.db import connection
from django.db.models import Q, QuerySet

from flags.errors import NotFound
from flags.models import (
    ApiKey,
    AuditEntry,
    Environment,
    Flag,
    FlagConfig,
    Project,
    Rule,
    Segment,
)
from flags.roles import Action, allows, visible_projects

if TYPE_CHECKING:
    from flags.roles import Identity


def project_named(key: str) -> Project:
    """The project, whoever asks (the operator at the shell; role checks follow)."""
    project = Project.objects.filter(key=key).first()
    if project is None:
        raise NotFound("project", key)
    return project


def project_for(user: Identity, key: str) -> Project:
    """The project, if the user has any role in it; NotFound otherwise (existence is not
    leaked)."""
    project = Project.objects.filter(key=key).first()
    if project is None or not allows(user, project, Action.READ):
        raise NotFound("project", key)
    return project


def environment_for(project: Project, key: str) -> Environment:
    environment = project.environments.filter(key=key).first()
    if environment is None:
        known = project.environments.values_list("key", flat=True)
        raise NotFound("environment", key, within=f"project {project.key!r}", known=list(known))
    return environment


def flag_for(project: Project, key: str) -> Flag:
    flag = (
        Flag.objects.filter(project=project, key=key)
        .select_related("owner", "project")
        .prefetch_related("variants", "tags")
        .first()
    )
    if flag is None:
        raise NotFound("flag", key, within=f"project {project.key!r}")
    return flag


def config_for(flag: Flag, environment: Environment) -> FlagConfig:
    return FlagConfig.objects.select_related("flag__project", "environment").get(
        flag=flag, environment=environment
    )


def segment_for(project: Project, key: str) -> Segment:
    segment = project.segments.filter(key=key).first()
    if segment is None:
        raise NotFound("segment", key, within=f"project {project.key!r}")
    return segment


def flag_list(
    *,
    project: Project,
    tag: str | None = None,
    archived: bool | None = None,
    search: str | None = None,
    environment: Environment | None = None,
    enabled: bool | None = None,
) -> QuerySet[Flag]:
    flags = (
        Flag.objects.filter(project=project)
        .select_related("owner", "project")
        .prefetch_related("variants", "tags", "configs__environment")
    )
    if tag:
        flags = flags.filter(tags__name=tag)
    if archived is not None:
        flags = flags.filter(archived=archived)
    if search:
        flags = flags.filter(
            Q(key__icontains=search) | Q(name__icontains=search) | Q(tags__name__icontains=search)
        )
    if environment is not None and enabled is not None:
        flags = flags.filter(configs__environment=environment, configs__enabled=enabled)
    return flags.distinct().order_by("key")


def audit_list(
    *,
    user: Identity,
    project: Project | None = None,
    flag_key: str | None = None,
    actor: str | None = None,
    since=None,
    until=None,
) -> QuerySet[AuditEntry]:
    entries = AuditEntry.objects.filter(project__in=visible_projects(user))
    if project is not None:
        entries = entries.filter(project=project)
    if flag_key:
        entries = entries.filter(flag_key=flag_key)
    if actor:
        entries = entries.filter(actor_name=actor)
    if since is not None:
        entries = entries.filter(created_at__gte=since)
    if until is not None:
        entries = entries.filter(created_at__lt=until)
    return entries.select_related("project", "environment").order_by("-created_at", "-id")


def api_keys_of(project: Project) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(environment__project=project).select_related("environment")


def segment_users(segments: Iterable[Segment]) -> dict[int, list[str]]:
    """Keys of the flags whose rules (in any environment) ask for each segment, by segment.

    One query for any number of segments: PostgreSQL unpacks the rules' conditions itself and
    returns only the pairs asked for; elsewhere the rules that mention `in_segment` are read.
    """
    segments = list(segments)
    wanted = {(segment.project_id, segment.key): segment.pk for segment in segments}
    users: dict[int, set[str]] = {segment.pk: set() for segment in segments}
    if not wanted:
        return {}
    projects = sorted({project for project, _ in wanted})
    keys = sorted({key for _, key in wanted})
    pairs = (
        _segment_uses_sql(projects, keys)
        if connection.vendor == "postgresql"
        else _segment_uses_python(projects)
    )
    for project, key, flag_key in pairs:
        pk = wanted.get((project, key))
        if pk is not None:
            users[pk].add(flag_key)
    return {pk: sorted(flags) for pk, flags in users.items()}


def _segment_uses_sql(projects: list[int], keys: list[str]) -> list[tuple[int, str, str]]:
    rule, flag = Rule._meta.db_table, Flag._meta.db_table
    arrays = "CASE WHEN jsonb_typeof({0}) = 'array' THEN {0} ELSE '[]'::jsonb END"
    query = f"""
        SELECT DISTINCT f.project_id, used.key, f.key
        FROM {rule} r
        JOIN {flag} f ON f.id = r.flag_id
        CROSS JOIN LATERAL jsonb_array_elements({arrays.format("r.conditions")}) c(condition)
        CROSS JOIN LATERAL jsonb_array_elements_text(
            {arrays.format("c.condition -> 'values'")}
        ) used(key)
        WHERE f.project_id = ANY(%s)
          AND jsonb_typeof(c.condition) = 'object'
          AND c.condition ->> 'operator' = 'in_segment'
          AND used.key = ANY(%s)
    """
    with connection.cursor() as cursor:
        cursor.execute(query, [projects, keys])
        return cursor.fetchall()


def _segment_uses_python(projects: list[int]) -> list[tuple[int, str, str]]:
    rules = Rule.objects.filter(flag__project_id__in=projects, conditions__icontains="in_segment")
    pairs = []
    for project, flag_key, conditions in rules.values_list(
        "flag__project_id", "flag__key", "conditions"
    ):
        for condition in conditions if isinstance(conditions, list) else []:
            if isinstance(condition, dict) and condition.get("operator") == "in_segment":
                values = condition.get("values")
                for key in values if isinstance(values, list) else []:
                    if isinstance(key, str):
                        pairs.append((project, key, flag_key))
    return pairs
