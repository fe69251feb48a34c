"""The management API: parse the request, call a service or selector, render the result."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from django.contrib.auth import get_user_model
from django.http import Http404
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers as fields
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from evaluation.documents import flag_state
from flags import selectors, services
from flags.api import serializers
from flags.api.pagination import Pagination
from flags.models import Membership, Project
from flags.roles import Action, authorize, visible_projects
from flags.validation import KEY_PATTERN, check_fields, check_text

API = "api"


def paginated(serializer_class) -> fields.Serializer:
    """The schema of a limit/offset page of `serializer_class` items."""
    name = serializer_class.__name__.removesuffix("Serializer")
    return inline_serializer(
        name=f"Paginated{name}List",
        fields={
            "count": fields.IntegerField(),
            "next": fields.URLField(allow_null=True),
            "previous": fields.URLField(allow_null=True),
            "results": serializer_class(many=True),
        },
    )


def _parse(serializer_class, request: Request, **kwargs) -> dict:
    if not isinstance(request.data, dict):
        raise ValidationError({"body": ["must be a JSON object"]})
    serializer = serializer_class(data=request.data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return _plain(serializer.validated_data)


def _plain(value):
    """OrderedDicts and ReturnDicts -> plain JSON-able values for the services."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _bool_param(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise ValidationError({name: ["expected true or false"]})


def _time_param(request: Request, name: str):
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        value = parse_datetime(raw)
    except ValueError:
        value = None
    if value is None:
        raise ValidationError({name: ["expected an ISO 8601 date-time"]})
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return serializers.check_datetime_range(value)
    except ValidationError as error:
        raise ValidationError({name: error.detail}) from error


class ManagementViewSet(viewsets.ViewSet):
    """The base of every management endpoint.

    Once the caller is authenticated, the text of the path's parameters and of the query
    string is checked like a body's (flags.api.parsers), so a NUL in `?search=` or in a
    flag key is a 400 naming the parameter, not a database error.
    """

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        for name, value in kwargs.items():
            check_text(value, name)
        check_fields(request.query_params)

    @property
    def paginator(self) -> Pagination:
        if not hasattr(self, "_paginator"):
            self._paginator = Pagination()
        return self._paginator

    def _paginate(self, queryset, serializer_class) -> Response:
        paginator = self.paginator
        page: list[Any] | None = paginator.paginate_queryset(queryset, self.request, view=self)
        return paginator.get_paginated_response(serializer_class(page, many=True).data)


class ProjectScoped(ManagementViewSet):
    """Resolves `project_key` (and `environment_key`) from the URL for the caller."""

    lookup_value_regex = KEY_PATTERN

    @property
    def project(self) -> Project:
        if not hasattr(self, "_project"):
            self._project = selectors.project_for(self.request.user, self.kwargs["project_key"])
        return self._project


class ProjectViewSet(ManagementViewSet):
    lookup_field = "key"
    lookup_value_regex = KEY_PATTERN

    @extend_schema(responses=serializers.ProjectSerializer(many=True))
    def list(self, request: Request) -> Response:
        projects = visible_projects(request.user).prefetch_related("environments")
        return Response(serializers.ProjectSerializer(projects, many=True).data)

    @extend_schema(
        request=serializers.ProjectInputSerializer, responses={201: serializers.ProjectSerializer}
    )
    def create(self, request: Request) -> Response:
        data = _parse(serializers.ProjectInputSerializer, request)
        project = services.project_create(actor=request.user, source=API, **data)
        return Response(serializers.ProjectSerializer(project).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=serializers.ProjectSerializer)
    def retrieve(self, request: Request, key: str) -> Response:
        project = selectors.project_for(request.user, key)
        return Response(serializers.ProjectSerializer(project).data)


class EnvironmentViewSet(ProjectScoped):
    lookup_field = "key"

    @extend_schema(responses=serializers.EnvironmentSerializer(many=True))
    def list(self, request: Request, project_key: str) -> Response:
        environments = self.project.environments.all()
        return Response(serializers.EnvironmentSerializer(environments, many=True).data)

    @extend_schema(
        request=serializers.EnvironmentInputSerializer,
        responses={201: serializers.EnvironmentSerializer},
    )
    def create(self, request: Request, project_key: str) -> Response:
        data = _parse(serializers.EnvironmentInputSerializer, request)
        environment = services.environment_create(
            project=self.project, actor=request.user, source=API, **data
        )
        return Response(
            serializers.EnvironmentSerializer(environment).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        request=serializers.EnvironmentUpdateSerializer,
        responses=serializers.EnvironmentSerializer,
    )
    def partial_update(self, request: Request, project_key: str, key: str) -> Response:
        environment = selectors.environment_for(self.project, key)
        data = _parse(serializers.EnvironmentUpdateSerializer, request)
        environment = services.environment_update(
            environment=environment, data=data, actor=request.user, source=API
        )
        return Response(serializers.EnvironmentSerializer(environment).data)

    @extend_schema(request=None, responses={201: serializers.SecureModeSecretSerializer})
    def secure_mode_secret(self, request: Request, project_key: str, key: str) -> Response:
        """Make the environment's secure mode secret, or a new one in its place (shown once)."""
        environment = selectors.environment_for(self.project, key)
        environment, secret = services.environment_secure_mode_secret_rotate(
            environment=environment, actor=request.user, source=API
        )
        body = {
            "environment": environment.key,
            "prefix": services.secure_mode_secret_prefix(environment),
            "secret": secret,
        }
        return Response(body, status=status.HTTP_201_CREATED)


FLAG_FILTERS = [
    OpenApiParameter("tag", str, description="Only flags with this tag."),
    OpenApiParameter("archived", bool, description="Archived (true) or live (false) flags."),
    OpenApiParameter("search", str, description="Substring of the key, name or a tag."),
    OpenApiParameter("environment", str, description="With `enabled`: state in this environment."),
    OpenApiParameter("enabled", bool, description="On (true) or off (false) in `environment`."),
]


class FlagViewSet(ProjectScoped):
    lookup_field = "key"

    @extend_schema(parameters=FLAG_FILTERS, responses=paginated(serializers.FlagSerializer))
    def list(self, request: Request, project_key: str) -> Response:
        environment_key = request.query_params.get("environment")
        environment = (
            selectors.environment_for(self.project, environment_key) if environment_key else None
        )
        flags = selectors.flag_list(
            project=self.project,
            tag=request.query_params.get("tag"),
            archived=_bool_param(request, "archived"),
            search=request.query_params.get("search"),
            environment=environment,
            enabled=_bool_param(request, "enabled"),
        )
        return self._paginate(flags, serializers.FlagSerializer)

    @extend_schema(
        request=serializers.FlagInputSerializer, responses={201: serializers.FlagSerializer}
    )
    def create(self, request: Request, project_key: str) -> Response:
        data = _parse(serializers.FlagInputSerializer, request)
        if "clientSide" in data:
            data["client_side"] = data.pop("clientSide")
        flag = services.flag_create(project=self.project, actor=request.user, source=API, **data)
        flag = selectors.flag_for(self.project, flag.key)
        return Response(serializers.FlagSerializer(flag).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=serializers.FlagSerializer)
    def retrieve(self, request: Request, project_key: str, flag_key: str) -> Response:
        flag = selectors.flag_for(self.project, flag_key)
        return Response(serializers.FlagSerializer(flag).data)

    @extend_schema(request=serializers.FlagUpdateSerializer, responses=serializers.FlagSerializer)
    def partial_update(self, request: Request, project_key: str, flag_key: str) -> Response:
        flag = selectors.flag_for(self.project, flag_key)
        data = _parse(serializers.FlagUpdateSerializer, request)
        if "clientSide" in data:
            data["client_side"] = data.pop("clientSide")
        if "owner" in data and data["owner"] is not None:
            owner = get_user_model().objects.filter(username=data["owner"]).first()
            if owner is None:  # the same answer as for a non-member: no way to list users
                raise ValidationError(
                    {"owner": [f"{data['owner']!r} is not a member of project {project_key!r}"]}
                )
            data["owner"] = owner
        services.flag_update(flag=flag, data=data, actor=request.user, source=API)
        flag = selectors.flag_for(self.project, flag_key)
        return Response(serializers.FlagSerializer(flag).data)


class FlagConfigViewSet(ProjectScoped):
    """A flag's configuration in one environment: read it, change it, toggle it."""

    def _config(self):
        flag = selectors.flag_for(self.project, self.kwargs["flag_key"])
        environment = selectors.environment_for(self.project, self.kwargs["environment_key"])
        return selectors.config_for(flag, environment)

    def _render(self, config) -> Response:
        state = flag_state(config.flag, config.environment)
        body = serializers.FlagConfigSerializer.render(config, state)
        return Response(body, headers={"ETag": f'"{config.version}"'})

    def _expected_version(self, data: dict) -> int | None:
        if "version" in data:
            return data.pop("version")
        if_match = self.request.headers.get("If-Match", "").strip().strip('"').removeprefix("W/")
        if not if_match:
            return None
        try:
            return int(if_match.strip('"'))
        except ValueError as error:
            raise ValidationError({"If-Match": ["expected the configuration's version"]}) from error

    @extend_schema(responses=serializers.FlagConfigSerializer)
    def retrieve(self, request: Request, **kwargs) -> Response:
        return self._render(self._config())

    @extend_schema(
        request=serializers.FlagConfigInputSerializer,
        responses=serializers.FlagConfigSerializer,
        parameters=[OpenApiParameter("If-Match", str, OpenApiParameter.HEADER, required=False)],
        description="Lists given (rules, targets, prerequisites) replace the current ones. "
        "Send the `version` you read (or `If-Match`) to get 409 instead of overwriting "
        "someone else's change.",
    )
    def partial_update(self, request: Request, **kwargs) -> Response:
        config = self._config()
        data = _parse(serializers.FlagConfigInputSerializer, request)
        expected = self._expected_version(data)
        config = services.flag_config_update(
            config=config, data=data, actor=request.user, source=API, expected_version=expected
        )
        return self._render(config)

    @extend_schema(request=serializers.ToggleSerializer, responses=serializers.FlagConfigSerializer)
    @action(detail=False, methods=["post"])
    def toggle(self, request: Request, **kwargs) -> Response:
        config = self._config()
        data = _parse(serializers.ToggleSerializer, request)
        expected = self._expected_version(data)
        config = services.flag_config_update(
            config=config, data=data, actor=request.user, source=API, expected_version=expected
        )
        return self._render(config)


class SegmentViewSet(ProjectScoped):
    lookup_field = "key"

    @extend_schema(responses=paginated(serializers.SegmentSerializer))
    def list(self, request: Request, project_key: str) -> Response:
        return self._paginate(self.project.segments.all(), serializers.SegmentSerializer)

    @extend_schema(
        request=serializers.SegmentInputSerializer, responses={201: serializers.SegmentSerializer}
    )
    def create(self, request: Request, project_key: str) -> Response:
        data = _parse(serializers.SegmentInputSerializer, request)
        key = data.pop("key")
        segment = services.segment_create(
            project=self.project, key=key, data=data, actor=request.user, source=API
        )
        return Response(serializers.SegmentSerializer(segment).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=serializers.SegmentSerializer)
    def retrieve(self, request: Request, project_key: str, key: str) -> Response:
        segment = selectors.segment_for(self.project, key)
        return Response(serializers.SegmentSerializer(segment).data)

    @extend_schema(
        request=serializers.SegmentUpdateSerializer, responses=serializers.SegmentSerializer
    )
    def partial_update(self, request: Request, project_key: str, key: str) -> Response:
        segment = selectors.segment_for(self.project, key)
        data = _parse(serializers.SegmentUpdateSerializer, request)
        segment = services.segment_update(
            segment=segment, data=data, actor=request.user, source=API
        )
        return Response(serializers.SegmentSerializer(segment).data)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, project_key: str, key: str) -> Response:
        segment = selectors.segment_for(self.project, key)
        services.segment_delete(segment=segment, actor=request.user, source=API)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TagViewSet(ProjectScoped):
    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def list(self, request: Request, project_key: str) -> Response:
        names = list(self.project.tags.values_list("name", flat=True))
        return Response({"tags": names})


class ApiKeyViewSet(ProjectScoped):
    def _check_admin(self) -> None:
        authorize(self.request.user, self.project, Action.ADMINISTER)

    @extend_schema(responses=paginated(serializers.ApiKeySerializer))
    def list(self, request: Request, project_key: str) -> Response:
        self._check_admin()
        return self._paginate(selectors.api_keys_of(self.project), serializers.ApiKeySerializer)

    @extend_schema(
        request=serializers.ApiKeyInputSerializer,
        responses={201: serializers.ApiKeyCreatedSerializer},
    )
    def create(self, request: Request, project_key: str) -> Response:
        data = _parse(serializers.ApiKeyInputSerializer, request)
        environment = selectors.environment_for(self.project, data.pop("environment"))
        key, secret = services.api_key_create(
            environment=environment, actor=request.user, source=API, **data
        )
        body = {**serializers.ApiKeySerializer(key).data, "secret": secret}
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=serializers.ApiKeySerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, project_key: str, pk: str) -> Response:
        key = selectors.api_keys_of(self.project).filter(pk=pk).first() if pk.isdigit() else None
        if key is None:
            raise Http404(f"no API key {pk}")
        key = services.api_key_revoke(key=key, actor=request.user, source=API)
        return Response(serializers.ApiKeySerializer(key).data)


class MembershipViewSet(ProjectScoped):
    @extend_schema(responses=serializers.MembershipSerializer(many=True))
    def list(self, request: Request, project_key: str) -> Response:
        members = Membership.objects.filter(project=self.project).select_related("user")
        return Response(serializers.MembershipSerializer(members, many=True).data)

    @extend_schema(
        request=serializers.MembershipInputSerializer,
        responses={200: serializers.MembershipSerializer},
        description="Give a person a role in the project, or change the role they have.",
    )
    def create(self, request: Request, project_key: str) -> Response:
        data = _parse(serializers.MembershipInputSerializer, request)
        user = get_user_model().objects.filter(username=data["user"]).first()
        if user is None:
            raise ValidationError({"user": [f"unknown user {data['user']!r}"]})
        membership = services.membership_set(
            project=self.project, user=user, role=data["role"], actor=request.user, source=API
        )
        return Response(serializers.MembershipSerializer(membership).data)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, project_key: str, username: str) -> Response:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise Http404(f"no user {username!r}")
        services.membership_set(
            project=self.project, user=user, role=None, actor=request.user, source=API
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


AUDIT_FILTERS = [
    OpenApiParameter("project", str),
    OpenApiParameter("flag", str),
    OpenApiParameter("user", str, description="The actor's username."),
    OpenApiParameter("since", OpenApiTypes.DATETIME),
    OpenApiParameter("until", OpenApiTypes.DATETIME),
]


class AuditViewSet(ManagementViewSet):
    @extend_schema(parameters=AUDIT_FILTERS, responses=paginated(serializers.AuditEntrySerializer))
    def list(self, request: Request) -> Response:
        project_key = request.query_params.get("project")
        project = selectors.project_for(request.user, project_key) if project_key else None
        entries = selectors.audit_list(
            user=request.user,
            project=project,
            flag_key=request.query_params.get("flag"),
            actor=request.query_params.get("user"),
            since=_time_param(request, "since"),
            until=_time_param(request, "until"),
        )
        return self._paginate(entries, serializers.AuditEntrySerializer)
