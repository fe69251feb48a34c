"""The management API of the integrations (project admins): webhooks and their deliveries,
triggers. Parse, call `integrations.webhooks` / `integrations.triggers`, render."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers as fields
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from flags import selectors
from flags.api.serializers import StrictSerializer
from flags.api.views import ProjectScoped, _parse, paginated
from flags.roles import Action, authorize
from integrations import triggers, webhooks
from integrations.events import KINDS
from integrations.models import Trigger, Webhook

API = "api"


class WebhookInputSerializer(StrictSerializer):
    name = fields.CharField(max_length=200)
    url = fields.CharField(max_length=2000, help_text="http:// or https:// receiver.")
    format = fields.ChoiceField(choices=Webhook.Format.values, required=False)
    environments = fields.ListField(
        child=fields.CharField(max_length=64), required=False, max_length=100
    )
    kinds = fields.ListField(child=fields.ChoiceField(choices=list(KINDS)), required=False)
    active = fields.BooleanField(required=False)


class WebhookSerializer(fields.Serializer):
    id = fields.IntegerField()
    name = fields.CharField()
    url = fields.CharField()
    format = fields.CharField()
    environments = fields.ListField(child=fields.CharField())
    kinds = fields.ListField(child=fields.CharField())
    active = fields.BooleanField()
    failures = fields.IntegerField()
    disabledReason = fields.CharField(source="disabled_reason")  # noqa: N815
    createdAt = fields.DateTimeField(source="created_at")  # noqa: N815


class WebhookCreatedSerializer(WebhookSerializer):
    secret = fields.CharField(help_text="The signing secret; shown this once.")


class DeliverySerializer(fields.Serializer):
    id = fields.IntegerField()
    event = fields.IntegerField(source="event_id")
    kind = fields.CharField(source="event.kind")
    flag = fields.CharField(source="event.flag_key")
    environment = fields.CharField(source="event.environment_key")
    status = fields.CharField()
    attempts = fields.IntegerField()
    responseStatus = fields.IntegerField(source="response_status", allow_null=True)  # noqa: N815
    error = fields.CharField()
    durationMs = fields.IntegerField(source="duration_ms", allow_null=True)  # noqa: N815
    nextAttemptAt = fields.DateTimeField(source="next_attempt_at")  # noqa: N815
    lastAttemptAt = fields.DateTimeField(source="last_attempt_at", allow_null=True)  # noqa: N815
    createdAt = fields.DateTimeField(source="created_at")  # noqa: N815


class TriggerInputSerializer(StrictSerializer):
    flag = fields.CharField(max_length=100)
    environment = fields.CharField(max_length=64)
    action = fields.ChoiceField(choices=Trigger.Action.values, required=False)
    name = fields.CharField(max_length=100)
    protectedGrant = fields.BooleanField(required=False, default=False)  # noqa: N815


class TriggerSerializer(fields.Serializer):
    uid = fields.CharField()
    name = fields.CharField()
    flag = fields.CharField(source="flag.key")
    environment = fields.CharField(source="environment.key")
    action = fields.CharField()
    protectedGrant = fields.BooleanField(source="protected_grant")  # noqa: N815
    url = fields.SerializerMethodField()
    prefix = fields.CharField()
    revoked = fields.SerializerMethodField()
    fired = fields.IntegerField()
    lastFiredAt = fields.DateTimeField(source="last_fired_at", allow_null=True)  # noqa: N815
    createdAt = fields.DateTimeField(source="created_at")  # noqa: N815

    def get_url(self, trigger: Trigger) -> str:
        return f"/api/v1/triggers/{trigger.uid}"

    def get_revoked(self, trigger: Trigger) -> bool:
        return trigger.revoked_at is not None


class TriggerCreatedSerializer(TriggerSerializer):
    secret = fields.CharField(help_text="The trigger's secret; shown this once.")


class AdminScoped(ProjectScoped):
    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        authorize(request.user, self.project, Action.ADMINISTER)


class WebhookViewSet(AdminScoped):
    def _webhook(self, pk: str) -> Webhook:
        webhook = self.project.webhooks.filter(pk=pk).first() if pk.isdigit() else None
        if webhook is None:
            raise Http404(f"no webhook {pk} in project {self.project.key!r}")
        return webhook

    @extend_schema(responses=paginated(WebhookSerializer))
    def list(self, request: Request, project_key: str) -> Response:
        return self._paginate(self.project.webhooks.order_by("id"), WebhookSerializer)

    @extend_schema(request=WebhookInputSerializer, responses={201: WebhookCreatedSerializer})
    def create(self, request: Request, project_key: str) -> Response:
        data = _parse(WebhookInputSerializer, request)
        webhook, secret = webhooks.webhook_create(
            project=self.project, data=data, actor=request.user, source=API
        )
        body = {**WebhookSerializer(webhook).data, "secret": secret}
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(responses=WebhookSerializer)
    def retrieve(self, request: Request, project_key: str, pk: str) -> Response:
        return Response(WebhookSerializer(self._webhook(pk)).data)

    @extend_schema(request=WebhookInputSerializer, responses=WebhookSerializer)
    def partial_update(self, request: Request, project_key: str, pk: str) -> Response:
        data = _parse(WebhookInputSerializer, request, partial=True)
        webhook = webhooks.webhook_update(
            webhook=self._webhook(pk), data=data, actor=request.user, source=API
        )
        return Response(WebhookSerializer(webhook).data)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, project_key: str, pk: str) -> Response:
        webhooks.webhook_delete(webhook=self._webhook(pk), actor=request.user, source=API)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses=paginated(DeliverySerializer))
    @action(detail=True)
    def deliveries(self, request: Request, project_key: str, pk: str) -> Response:
        rows = self._webhook(pk).deliveries.select_related("event").order_by("-id")
        return self._paginate(rows, DeliverySerializer)


class TriggerViewSet(AdminScoped):
    def _triggers(self):
        return Trigger.objects.filter(project=self.project).select_related("flag", "environment")

    @extend_schema(responses=paginated(TriggerSerializer))
    def list(self, request: Request, project_key: str) -> Response:
        return self._paginate(self._triggers().order_by("id"), TriggerSerializer)

    @extend_schema(request=TriggerInputSerializer, responses={201: TriggerCreatedSerializer})
    def create(self, request: Request, project_key: str) -> Response:
        data = _parse(TriggerInputSerializer, request)
        flag = selectors.flag_for(self.project, data["flag"])
        environment = selectors.environment_for(self.project, data["environment"])
        trigger, secret = triggers.trigger_create(
            flag=flag,
            environment=environment,
            name=data["name"],
            action=data.get("action") or Trigger.Action.OFF,
            protected_grant=data["protectedGrant"],
            actor=request.user,
            source=API,
        )
        body = {**TriggerSerializer(trigger).data, "secret": secret}
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=TriggerSerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, project_key: str, uid: str) -> Response:
        trigger = self._triggers().filter(uid=uid).first()
        if trigger is None:
            raise Http404(f"no trigger {uid} in project {self.project.key!r}")
        trigger = triggers.trigger_revoke(trigger=trigger, actor=request.user, source=API)
        return Response(TriggerSerializer(trigger).data)
