"""Imports of other systems' exports over the API: the CLI's `import --from`, as a request."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers as fields
from rest_framework.request import Request
from rest_framework.response import Response

from flags import importers, transfer
from flags.api.serializers import StrictSerializer
from flags.api.views import API, ProjectScoped, _parse


class ImportInputSerializer(StrictSerializer):
    # The serializer's metaclass takes declared fields off the class: no clash with Field.source.
    source = fields.ChoiceField(choices=importers.SOURCES)  # type: ignore[assignment]
    document = fields.JSONField(help_text="The export, as the other system wrote it.")
    dryRun = fields.BooleanField(required=False, default=False)  # noqa: N815
    existing = fields.ChoiceField(choices=transfer.EXISTING, required=False, default="skip")


ImportReport = inline_serializer(
    name="ImportReport",
    fields={
        "project": fields.CharField(),
        "environments": fields.ListField(child=fields.CharField()),
        "counts": fields.DictField(child=fields.IntegerField()),
        "items": fields.ListField(child=fields.DictField()),
        "untouched": fields.ListField(child=fields.CharField()),
        "dry_run": fields.BooleanField(),
        "conversion": fields.DictField(),
    },
)


class ImportViewSet(ProjectScoped):
    @extend_schema(
        request=ImportInputSerializer,
        responses={200: ImportReport, 400: OpenApiTypes.OBJECT},
        description="Import an Unleash, flagd, LaunchDarkly or Flagsmith export into this "
        "environment, all or nothing; flags that cannot be expressed are listed in "
        "`conversion.skipped` with the reason and left out (docs/migrating.md).",
    )
    def create(self, request: Request, project_key: str, environment_key: str) -> Response:
        data = _parse(ImportInputSerializer, request)
        environment = self.project.environments.filter(key=environment_key).first()
        plan, conversion = importers.import_from(
            source=data["source"],
            data=data["document"],
            project_key=self.project.key,
            environment_key=environment.key if environment else environment_key,
            existing=data["existing"],
            dry_run=data["dryRun"],
            actor=request.user,
            door=API,
        )
        return Response(
            {**plan.to_dict(), "dry_run": data["dryRun"], "conversion": conversion.to_dict()}
        )
