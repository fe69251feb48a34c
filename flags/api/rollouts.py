"""Safe-rollout endpoints of a flag's configuration: versions, change requests, schedules, kill.

Parse, call a service in flags.history / flags.approvals / flags.schedules, render.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers as fields
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from flags import approvals, guards, history, schedules, selectors, services
from flags.api.serializers import (
    FlagConfigInputSerializer,
    InstantField,
    NumberField,
    SegmentUpdateSerializer,
    StrictSerializer,
    TextField,
    VariantSerializer,
)
from flags.api.views import API, FlagConfigViewSet, _bool_param, _parse, paginated
from flags.models import ChangeRequest, RolloutGuard, ScheduledChange

# --- Shapes -------------------------------------------------------------------------------


class VersionSerializer(fields.Serializer):
    version = fields.IntegerField()
    action = fields.CharField()
    actor = fields.CharField()
    # DRF's serializer metaclass takes declared fields off the class, so this field does not
    # replace `Field.source`; the stubs type the class attribute.
    source = fields.CharField()  # type: ignore[assignment]
    created_at = fields.DateTimeField()
    current = fields.BooleanField()
    changes = fields.ListField(child=fields.CharField(), help_text="What changed, for people.")
    state = fields.JSONField(help_text="The configuration as of this version.")


class RestoreSerializer(StrictSerializer):
    version = fields.IntegerField(
        required=False, help_text="The current version you read; another one gives 409."
    )


class ChangeRequestInputSerializer(FlagConfigInputSerializer):
    """The configuration PATCH's payload, plus a title and an optional time to apply it."""

    title = fields.CharField(required=False, allow_blank=True, max_length=200)
    scheduleAt = InstantField(required=False, help_text="Apply at this time once approved.")  # noqa: N815


class FlagChangeRequestInputSerializer(StrictSerializer):
    """A change to a flag's own fields that alters what protected environments serve."""

    title = fields.CharField(required=False, allow_blank=True, max_length=200)
    # The stubs' BaseSerializer lacks the ListSerializer arguments many=True passes on.
    variants = VariantSerializer(many=True, required=False, max_length=100)  # type: ignore[call-arg]
    archived = fields.BooleanField(required=False)
    salt = fields.CharField(required=False, allow_blank=True, max_length=100)
    clientSide = fields.BooleanField(required=False)  # noqa: N815


class SegmentChangeRequestInputSerializer(SegmentUpdateSerializer):
    """A change to a segment that rules of protected environments use."""

    title = fields.CharField(required=False, allow_blank=True, max_length=200)


class ImpactSerializer(fields.Serializer):
    environment = fields.CharField()
    subject = fields.CharField(help_text="flag KEY or segment KEY")
    changes = fields.ListField(child=fields.CharField())


class ReviewSerializer(StrictSerializer):
    comment = fields.CharField(required=False, allow_blank=True, max_length=2000)


class RebaseSerializer(StrictSerializer):
    confirm = fields.BooleanField(
        help_text="true: you compared your change with the current configuration."
    )


class ChangeRequestSerializer(fields.Serializer):
    id = fields.IntegerField()
    kind = fields.ChoiceField(choices=ChangeRequest.Kind.choices)
    flag = fields.CharField(allow_null=True)
    environment = fields.CharField(allow_null=True, help_text="Set for kind config.")
    segment = fields.CharField(allow_null=True, help_text="Set for kind segment.")
    impact = ImpactSerializer(many=True, help_text="What it changes in protected environments.")
    title = fields.CharField()
    author = fields.CharField()
    status = fields.ChoiceField(choices=ChangeRequest.Status.choices)
    conflict = fields.BooleanField(help_text="Its base is no longer current: rebase it.")
    baseVersion = fields.IntegerField()  # noqa: N815
    currentVersion = fields.IntegerField()  # noqa: N815
    changes = fields.JSONField()
    diff = fields.ListField(child=fields.CharField())
    approvals = fields.ListField(child=fields.CharField())
    approvalsRequired = fields.IntegerField()  # noqa: N815
    rejections = fields.ListField(child=fields.CharField())
    scheduleAt = fields.DateTimeField(allow_null=True)  # noqa: N815
    appliedVersion = fields.IntegerField(allow_null=True)  # noqa: N815
    createdAt = fields.DateTimeField()  # noqa: N815

    @staticmethod
    def render(request: ChangeRequest) -> dict:
        config = request.config
        current = [r for r in request.reviews.all() if r.base_version == request.base_version]
        flag = config.flag if config else request.flag
        if config is not None:
            diff = history.state_diff(request.base_state, request.proposed_state)
        else:
            diff = [
                f"{i['environment']}: {i['subject']}: {line}"
                for i in request.impact
                for line in i["changes"]
            ]
        return {
            "id": request.pk,
            "kind": request.kind,
            "flag": flag.key if flag else None,
            "environment": config.environment.key if config else None,
            "segment": request.segment.key if request.segment else None,
            "impact": request.impact,
            "title": request.title,
            "author": request.author_name,
            "status": request.status,
            "conflict": approvals.is_conflict(request),
            "baseVersion": request.base_version,
            "currentVersion": approvals.current_version(request),
            "changes": request.data,
            "diff": diff,
            "approvals": [r.reviewer_name for r in current if r.decision == "approve"],
            "approvalsRequired": approvals.approvals_required(),
            "rejections": [r.reviewer_name for r in current if r.decision == "reject"],
            "scheduleAt": request.scheduled_at,
            "appliedVersion": request.applied_version,
            "createdAt": request.created_at,
        }


class ScheduleInputSerializer(FlagConfigInputSerializer):
    at = InstantField(help_text="When to apply the change.")


class RolloutStepSerializer(StrictSerializer):
    at = InstantField()
    percentage = fields.IntegerField(min_value=0, max_value=100)


class RolloutGuardSerializer(StrictSerializer):
    metric = fields.CharField(max_length=100, help_text="The key of a metric of the project.")
    tolerance = NumberField(
        required=False, min_value=0, help_text="How much worse is tolerated, in percent."
    )
    action = fields.ChoiceField(choices=RolloutGuard.Action.choices, required=False)


class GuardInputSerializer(StrictSerializer):
    """A guard added to a running rollout (`rollout` is the id its steps share)."""

    rollout = TextField(max_length=32, help_text="The id of a rollout with steps pending.")
    metric = TextField(max_length=100, help_text="The key of a metric of the project.")
    tolerance = NumberField(
        required=False, help_text="How much worse is tolerated, in percent (0 to below 100)."
    )
    action = fields.ChoiceField(choices=RolloutGuard.Action.choices, required=False)


class GuardUpdateSerializer(StrictSerializer):
    """What may change in a running guard; a new metric or tolerance restarts its test."""

    metric = TextField(max_length=100, required=False)
    tolerance = NumberField(required=False)
    action = fields.ChoiceField(choices=RolloutGuard.Action.choices, required=False)


class GuardSerializer(fields.Serializer):
    id = fields.IntegerField()
    rollout = fields.CharField()
    metric = fields.CharField(source="metric.key")
    tolerance = fields.FloatField()
    action = fields.CharField()
    status = fields.ChoiceField(choices=RolloutGuard.Status.choices)
    control = fields.CharField(source="control_variant")
    treatment = fields.CharField(source="treatment_variant")
    checkedAt = fields.DateTimeField(source="checked_at", allow_null=True)  # noqa: N815
    decision = fields.CharField()
    pValue = fields.FloatField(source="p_value", allow_null=True)  # noqa: N815
    trippedAt = fields.DateTimeField(source="tripped_at", allow_null=True)  # noqa: N815
    restartedAt = fields.DateTimeField(  # noqa: N815
        source="restarted_at", allow_null=True, help_text="When an edit restarted its test."
    )
    state = fields.SerializerMethodField(help_text="Its state and statistic, in words.")

    def get_state(self, guard: RolloutGuard) -> str:
        return guards.guard_state(guard)


class RolloutInputSerializer(StrictSerializer):
    variant = fields.CharField(max_length=64, help_text="The variant being rolled out.")
    towards = fields.CharField(
        max_length=64, required=False, help_text="What everyone else gets; the off variant."
    )
    bucketBy = fields.CharField(max_length=100, required=False, default="targetingKey")  # noqa: N815
    # The stubs' BaseSerializer lacks the ListSerializer arguments many=True passes on.
    steps = RolloutStepSerializer(many=True, min_length=1, max_length=100)  # type: ignore[call-arg]
    guards = RolloutGuardSerializer(many=True, required=False, max_length=10)  # type: ignore[call-arg]


class ScheduledChangeSerializer(fields.ModelSerializer):
    createdBy = fields.CharField(source="created_by_name")  # noqa: N815
    runAt = fields.DateTimeField(source="run_at")  # noqa: N815
    appliedAt = fields.DateTimeField(source="applied_at", allow_null=True)  # noqa: N815
    appliedVersion = fields.IntegerField(source="applied_version", allow_null=True)  # noqa: N815
    changes = fields.JSONField(source="data")
    request = fields.IntegerField(source="request_id", allow_null=True)

    class Meta:
        model = ScheduledChange
        fields = [
            "id",
            "runAt",
            "status",
            "changes",
            "rollout",
            "request",
            "createdBy",
            "appliedAt",
            "appliedVersion",
            "error",
        ]


# --- Views --------------------------------------------------------------------------------


class HistoryViewSet(FlagConfigViewSet):
    """Versions of a flag's configuration in an environment, and restoring one."""

    @extend_schema(responses=paginated(VersionSerializer))
    def list(self, request: Request, **kwargs) -> Response:
        return self._paginate(history.versions_of(self._config()), VersionSerializer)

    @extend_schema(request=RestoreSerializer, responses=OpenApiTypes.OBJECT)
    def restore(self, request: Request, number: int, **kwargs) -> Response:
        data = _parse(RestoreSerializer, request) if request.data else {}
        config = services.version_restore(
            config=self._config(),
            version=number,
            actor=request.user,
            source=API,
            expected_version=data.get("version"),
        )
        return self._render(config)

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def kill(self, request: Request, **kwargs) -> Response:
        config = schedules.flag_kill(config=self._config(), actor=request.user, source=API)
        return self._render(config)


class ChangeRequestViewSet(FlagConfigViewSet):
    """Change requests: on one configuration (nested URLs) or a whole project (`requests`)."""

    def _request(self) -> ChangeRequest:
        return approvals.change_request_for(self.project, self.kwargs["pk"])

    def _show(self, change_request: ChangeRequest, code: int = 200) -> Response:
        change_request = self._request_fresh(change_request.pk)
        return Response(ChangeRequestSerializer.render(change_request), status=code)

    def _request_fresh(self, pk: int) -> ChangeRequest:
        return approvals.change_request_for(self.project, pk)

    @extend_schema(
        parameters=[OpenApiParameter("status", str, enum=ChangeRequest.Status.values)],
        responses=paginated(ChangeRequestSerializer),
    )
    def list(self, request: Request, **kwargs) -> Response:
        config = self._config() if "environment_key" in kwargs else None
        flag = (
            selectors.flag_for(self.project, kwargs["flag_key"])
            if not config and ("flag_key" in kwargs)
            else None
        )
        segment = (
            selectors.segment_for(self.project, kwargs["segment_key"])
            if "segment_key" in kwargs
            else None
        )
        wanted = request.query_params.get("status") or None
        if wanted is not None and wanted not in ChangeRequest.Status.values:
            choices = ", ".join(ChangeRequest.Status.values)
            raise ValidationError({"status": [f"expected one of {choices}"]})
        requests = approvals.change_requests_of(
            project=self.project, config=config, flag=flag, segment=segment, status=wanted
        )
        page: list[Any] = self.paginator.paginate_queryset(requests, request, view=self) or []
        body = [ChangeRequestSerializer.render(item) for item in page]
        return self.paginator.get_paginated_response(body)

    @extend_schema(request=ChangeRequestInputSerializer, responses={201: ChangeRequestSerializer})
    def create(self, request: Request, **kwargs) -> Response:
        data = _parse(ChangeRequestInputSerializer, request)
        title = data.pop("title", "")
        scheduled_at = data.pop("scheduleAt", None)
        expected = self._expected_version(data)
        change_request = approvals.change_request_create(
            config=self._config(),
            data=data,
            title=title,
            scheduled_at=scheduled_at,
            expected_version=expected,
            actor=request.user,
            source=API,
        )
        return self._show(change_request, status.HTTP_201_CREATED)

    @extend_schema(
        request=FlagChangeRequestInputSerializer, responses={201: ChangeRequestSerializer}
    )
    def create_for_flag(self, request: Request, **kwargs) -> Response:
        data = _parse(FlagChangeRequestInputSerializer, request)
        title = data.pop("title", "")
        if "clientSide" in data:
            data["client_side"] = data.pop("clientSide")
        change_request = approvals.flag_change_request_create(
            flag=selectors.flag_for(self.project, kwargs["flag_key"]),
            data=data,
            title=title,
            actor=request.user,
            source=API,
        )
        return self._show(change_request, status.HTTP_201_CREATED)

    @extend_schema(
        request=SegmentChangeRequestInputSerializer, responses={201: ChangeRequestSerializer}
    )
    def create_for_segment(self, request: Request, **kwargs) -> Response:
        data = _parse(SegmentChangeRequestInputSerializer, request)
        title = data.pop("title", "")
        change_request = approvals.segment_change_request_create(
            segment=selectors.segment_for(self.project, kwargs["segment_key"]),
            data=data,
            title=title,
            actor=request.user,
            source=API,
        )
        return self._show(change_request, status.HTTP_201_CREATED)

    @extend_schema(responses=ChangeRequestSerializer)
    def retrieve(self, request: Request, **kwargs) -> Response:
        return self._show(self._request())

    @extend_schema(request=ReviewSerializer, responses=ChangeRequestSerializer)
    def approve(self, request: Request, **kwargs) -> Response:
        return self._review(request, approve=True)

    @extend_schema(request=ReviewSerializer, responses=ChangeRequestSerializer)
    def reject(self, request: Request, **kwargs) -> Response:
        return self._review(request, approve=False)

    def _review(self, request: Request, approve: bool) -> Response:
        data = _parse(ReviewSerializer, request) if request.data else {}
        change_request = approvals.change_request_review(
            request=self._request(),
            approve=approve,
            comment=data.get("comment", ""),
            actor=request.user,
            source=API,
        )
        return self._show(change_request)

    @extend_schema(request=RebaseSerializer, responses=ChangeRequestSerializer)
    def rebase(self, request: Request, **kwargs) -> Response:
        data = _parse(RebaseSerializer, request)
        change_request = approvals.change_request_rebase(
            request=self._request(), confirm=data["confirm"], actor=request.user, source=API
        )
        return self._show(change_request)

    @extend_schema(request=None, responses=ChangeRequestSerializer)
    def cancel(self, request: Request, **kwargs) -> Response:
        change_request = approvals.change_request_cancel(
            request=self._request(), actor=request.user, source=API
        )
        return self._show(change_request)


class ScheduleViewSet(FlagConfigViewSet):
    """Scheduled changes and rollouts of one flag's configuration in one environment."""

    @extend_schema(
        parameters=[OpenApiParameter("pending", bool)],
        responses=paginated(ScheduledChangeSerializer),
    )
    def list(self, request: Request, **kwargs) -> Response:
        pending = _bool_param(request, "pending") or False
        changes = schedules.schedule_of(self._config(), pending_only=pending)
        return self._paginate(changes, ScheduledChangeSerializer)

    @extend_schema(request=ScheduleInputSerializer, responses={201: ScheduledChangeSerializer})
    def create(self, request: Request, **kwargs) -> Response:
        data = _parse(ScheduleInputSerializer, request)
        run_at = data.pop("at")
        data.pop("version", None)
        change = schedules.schedule_create(
            config=self._config(), data=data, run_at=run_at, actor=request.user, source=API
        )
        return Response(ScheduledChangeSerializer(change).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=ScheduledChangeSerializer)
    def cancel(self, request: Request, pk: str, **kwargs) -> Response:
        change = schedules.scheduled_change_for(self._config(), pk)
        change = schedules.schedule_cancel(change=change, actor=request.user, source=API)
        return Response(ScheduledChangeSerializer(change).data)

    @extend_schema(
        request=RolloutInputSerializer, responses={201: ScheduledChangeSerializer(many=True)}
    )
    def rollout(self, request: Request, **kwargs) -> Response:
        data = _parse(RolloutInputSerializer, request)
        changes = schedules.rollout_create(
            config=self._config(),
            variant=data["variant"],
            towards=data.get("towards"),
            bucket_by=data["bucketBy"],
            steps=data["steps"],
            guards=[dict(guard) for guard in data.get("guards", [])],
            actor=request.user,
            source=API,
        )
        body = ScheduledChangeSerializer(changes, many=True).data
        return Response(body, status=status.HTTP_201_CREATED)


class GuardViewSet(FlagConfigViewSet):
    """Guards of the rollouts of one configuration: list, add, edit, remove."""

    def _guard(self) -> RolloutGuard:
        return guards.guard_for(self._config(), self.kwargs["pk"])

    @extend_schema(responses=paginated(GuardSerializer))
    def list(self, request: Request, **kwargs) -> Response:
        return self._paginate(guards.guards_of(self._config()), GuardSerializer)

    @extend_schema(request=GuardInputSerializer, responses={201: GuardSerializer})
    def create(self, request: Request, **kwargs) -> Response:
        data = _parse(GuardInputSerializer, request)
        rollout = data.pop("rollout")
        guard = guards.guard_create(
            config=self._config(), rollout=rollout, data=data, actor=request.user, source=API
        )
        return Response(GuardSerializer(guard).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=GuardSerializer)
    def retrieve(self, request: Request, **kwargs) -> Response:
        return Response(GuardSerializer(self._guard()).data)

    @extend_schema(request=GuardUpdateSerializer, responses=GuardSerializer)
    def partial_update(self, request: Request, **kwargs) -> Response:
        data = _parse(GuardUpdateSerializer, request)
        guard = guards.guard_update(guard=self._guard(), data=data, actor=request.user, source=API)
        return Response(GuardSerializer(guard).data)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request: Request, **kwargs) -> Response:
        guards.guard_delete(guard=self._guard(), actor=request.user, source=API)
        return Response(status=status.HTTP_204_NO_CONTENT)
