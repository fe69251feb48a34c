"""Shapes of the management API: parse and render only; the services validate and write."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from rest_framework import serializers

from evaluation.engine import OPERATORS
from flags.models import (
    ApiKey,
    AuditEntry,
    Environment,
    Flag,
    FlagConfig,
    Membership,
    Project,
    Segment,
)
from flags.services import secure_mode_secret_prefix
from flags.validation import KEY_MESSAGE, KEY_PATTERN


def key_field(**kwargs) -> serializers.RegexField:
    """A key as the store accepts it: lowercase letters, digits, '-', '_', '.'."""
    return serializers.RegexField(
        rf"^{KEY_PATTERN}\Z",
        max_length=kwargs.pop("max_length", 100),
        error_messages={"invalid": KEY_MESSAGE},
        **kwargs,
    )


EARLIEST, LATEST = 1970, 9000


def check_datetime_range(value):
    """Refuse instants the store cannot hold (or no one means): outside 1970 to 9000 UTC."""
    try:
        year = value.astimezone(UTC).year
    except (OverflowError, ValueError):
        year = 0
    if not EARLIEST <= year <= LATEST:
        raise serializers.ValidationError(f"must be between {EARLIEST} and {LATEST}")
    return value


class InstantField(serializers.DateTimeField):
    """An ISO 8601 date-time, within the range the store holds."""

    def to_internal_value(self, value):
        return check_datetime_range(super().to_internal_value(value))


class StrictSerializer(serializers.Serializer):
    """Rejects fields it does not know, so a typo is an error rather than silently ignored."""

    def to_internal_value(self, data: Any) -> dict:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({unknown[0]: ["unknown field"]})
        return super().to_internal_value(data)


# --- The flag document's shapes (also what the OpenAPI schema shows) -----------------------


class TextField(serializers.CharField):
    """A string, never a number turned into one (an id of 7 is a mistake, not "7")."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class NumberField(serializers.FloatField):
    """A JSON number, never a string or a boolean read as one (`true` is not 1)."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class ConditionSerializer(StrictSerializer):
    attribute = serializers.CharField(required=False, allow_blank=False, max_length=200)
    operator = serializers.ChoiceField(choices=sorted(OPERATORS))
    values = serializers.ListField(child=serializers.JSONField(), required=False, max_length=10_000)
    negate = serializers.BooleanField(required=False, default=False)
    numericStrings = serializers.BooleanField(  # noqa: N815
        required=False,
        help_text="A numeric comparison reads a string written as a number as that number.",
    )


class RolloutVariantSerializer(StrictSerializer):
    variant = serializers.CharField(max_length=64)
    weight = serializers.IntegerField()  # which weights a rollout takes: the engine's check


class RolloutSerializer(StrictSerializer):
    bucketBy = serializers.CharField(required=False, default="targetingKey", max_length=100)  # noqa: N815
    salt = TextField(
        required=False,
        allow_blank=True,
        max_length=100,
        help_text="The rollout's own bucketing salt (an import's); absent keeps the salt of the "
        'rollout this one replaces, "" gives it the flag\'s salt.',
    )
    variants = RolloutVariantSerializer(many=True)


class ServingSerializer(StrictSerializer):
    """Either `{"variant": KEY}` or `{"rollout": {...}}` (the services check which)."""

    variant = serializers.CharField(required=False, max_length=64)
    rollout = RolloutSerializer(required=False)


class RuleSerializer(StrictSerializer):
    id = TextField(
        required=False,
        allow_blank=True,
        max_length=64,
        help_text="The rule's stable key: give it to change the rule in place; leave it out "
        "for a new rule (a key is generated). Listed rules replace the current ones.",
    )
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    conditions = ConditionSerializer(many=True, required=False, default=list)
    serve = ServingSerializer()


class TargetSerializer(StrictSerializer):
    variant = serializers.CharField(max_length=64)
    values = serializers.ListField(child=serializers.CharField(max_length=500), max_length=10_000)


class PrerequisiteSerializer(StrictSerializer):
    flag = serializers.CharField(max_length=100)
    variants = serializers.ListField(child=serializers.CharField(max_length=64), min_length=1)


class FlagConfigInputSerializer(StrictSerializer):
    """A change to a flag's configuration in one environment; lists given replace the old."""

    version = serializers.IntegerField(
        required=False, help_text="The version you read; a different current version gives 409."
    )
    enabled = serializers.BooleanField(required=False)
    offVariant = serializers.CharField(required=False, max_length=64)  # noqa: N815
    defaultServe = ServingSerializer(required=False)  # noqa: N815
    # The stubs' BaseSerializer lacks the ListSerializer arguments many=True passes on.
    rules = RuleSerializer(many=True, required=False, max_length=1000)  # type: ignore[call-arg]
    targets = TargetSerializer(many=True, required=False, max_length=1000)  # type: ignore[call-arg]
    prerequisites = PrerequisiteSerializer(many=True, required=False, max_length=100)  # type: ignore[call-arg]


class ToggleSerializer(StrictSerializer):
    enabled = serializers.BooleanField()
    version = serializers.IntegerField(required=False)


# --- Resources ----------------------------------------------------------------------------


class EnvironmentSerializer(serializers.ModelSerializer):
    secure_mode_secret = serializers.SerializerMethodField(
        help_text="The secure mode secret's prefix (null until one is made); never the secret."
    )

    class Meta:
        model = Environment
        fields = ["key", "name", "protected", "secure_mode", "secure_mode_secret", "version"]
        read_only_fields = ["version"]

    def get_secure_mode_secret(self, environment: Environment) -> str | None:
        return secure_mode_secret_prefix(environment)


class SecureModeSecretSerializer(serializers.Serializer):
    environment = serializers.CharField()
    prefix = serializers.CharField()
    secret = serializers.CharField(
        help_text="Shown once: give it to your servers, which compute targetingKeyHash with it."
    )


class EnvironmentInputSerializer(StrictSerializer):
    key = key_field(max_length=64)
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    protected = serializers.BooleanField(required=False, default=False)


class EnvironmentUpdateSerializer(StrictSerializer):
    name = serializers.CharField(required=False, max_length=200)
    protected = serializers.BooleanField(required=False)
    secure_mode = serializers.BooleanField(required=False)


class ProjectSerializer(serializers.ModelSerializer):
    environments = EnvironmentSerializer(many=True, read_only=True)

    class Meta:
        model = Project
        fields = ["key", "name", "description", "require_approval", "created_at", "environments"]


class ProjectInputSerializer(StrictSerializer):
    key = key_field()
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    description = serializers.CharField(required=False, allow_blank=True)


class VariantSerializer(StrictSerializer):
    key = key_field(max_length=64)
    value = serializers.JSONField()
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)


class FlagSerializer(serializers.ModelSerializer):
    variants = serializers.SerializerMethodField()
    tags = serializers.SerializerMethodField()
    owner = serializers.SerializerMethodField()
    environments = serializers.SerializerMethodField()
    clientSide = serializers.BooleanField(  # noqa: N815
        source="client_side", help_text="Client-side keys may evaluate it."
    )

    class Meta:
        model = Flag
        fields = [
            "key",
            "name",
            "description",
            "type",
            "salt",
            "archived",
            "clientSide",
            "owner",
            "tags",
            "variants",
            "environments",
            "created_at",
            "updated_at",
        ]

    def get_variants(self, flag: Flag) -> list[dict]:
        return [{"key": v.key, "name": v.name, "value": v.value} for v in flag.variants.all()]

    def get_tags(self, flag: Flag) -> list[str]:
        return sorted(tag.name for tag in flag.tags.all())

    def get_owner(self, flag: Flag) -> str | None:
        return flag.owner.get_username() if flag.owner else None

    def get_environments(self, flag: Flag) -> dict[str, dict]:
        """Each environment's on/off state and configuration version, at a glance."""
        return {
            config.environment.key: {"enabled": config.enabled, "version": config.version}
            for config in flag.configs.all()
        }


class FlagInputSerializer(StrictSerializer):
    key = key_field()
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    description = serializers.CharField(required=False, allow_blank=True)
    type = serializers.ChoiceField(choices=Flag.Type.values, default=Flag.Type.BOOLEAN)
    # The stubs' BaseSerializer lacks the ListSerializer arguments many=True passes on.
    variants = VariantSerializer(many=True, required=False, max_length=100)  # type: ignore[call-arg]
    tags = serializers.ListField(child=serializers.CharField(max_length=64), required=False)
    salt = serializers.CharField(required=False, allow_blank=True, max_length=100)
    clientSide = serializers.BooleanField(  # noqa: N815
        required=False, help_text="Client-side keys may evaluate it (default false)."
    )


class FlagUpdateSerializer(StrictSerializer):
    key = serializers.CharField(required=False, help_text="Immutable: only the current key.")
    type = serializers.CharField(required=False, help_text="Immutable: only the current type.")
    name = serializers.CharField(required=False, max_length=200)
    description = serializers.CharField(required=False, allow_blank=True)
    # The stubs' BaseSerializer lacks the ListSerializer arguments many=True passes on.
    variants = VariantSerializer(many=True, required=False, max_length=100)  # type: ignore[call-arg]
    tags = serializers.ListField(child=serializers.CharField(max_length=64), required=False)
    salt = serializers.CharField(required=False, allow_blank=True, max_length=100)
    archived = serializers.BooleanField(required=False)
    clientSide = serializers.BooleanField(required=False)  # noqa: N815
    owner = serializers.CharField(required=False, allow_null=True, help_text="A username.")


class FlagConfigSerializer(serializers.Serializer):
    """A flag's configuration in one environment, in the flag document's shape."""

    flag = serializers.CharField()
    environment = serializers.CharField()
    version = serializers.IntegerField()
    updated_at = serializers.DateTimeField()
    enabled = serializers.BooleanField()
    offVariant = serializers.CharField()  # noqa: N815
    defaultServe = ServingSerializer()  # noqa: N815
    rules = RuleSerializer(many=True)
    targets = TargetSerializer(many=True)
    prerequisites = PrerequisiteSerializer(many=True)

    @staticmethod
    def render(config: FlagConfig, state: dict) -> dict:
        return {
            "flag": config.flag.key,
            "environment": config.environment.key,
            "version": config.version,
            "updated_at": config.updated_at,
            **{
                key: state[key]
                for key in (
                    "enabled",
                    "offVariant",
                    "defaultServe",
                    "rules",
                    "targets",
                    "prerequisites",
                )
            },
        }


class SegmentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Segment
        fields = ["key", "name", "description", "conditions", "included", "excluded", "updated_at"]


class SegmentInputSerializer(StrictSerializer):
    key = key_field()
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    description = serializers.CharField(required=False, allow_blank=True)
    conditions = ConditionSerializer(many=True, required=False)
    included = serializers.ListField(child=serializers.CharField(), required=False)
    excluded = serializers.ListField(child=serializers.CharField(), required=False)


class SegmentUpdateSerializer(SegmentInputSerializer):
    key = key_field(required=False)


class ApiKeySerializer(serializers.ModelSerializer):
    environment = serializers.CharField(source="environment.key")
    status = serializers.SerializerMethodField()

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "kind",
            "environment",
            "prefix",
            "created_at",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "status",
        ]

    def get_status(self, key: ApiKey) -> str:
        from django.utils import timezone

        if key.revoked_at:
            return "revoked"
        if key.expires_at and key.expires_at <= timezone.now():
            return "expired"
        return "active"


class ApiKeyCreatedSerializer(ApiKeySerializer):
    secret = serializers.CharField(help_text="Shown once; only its digest is stored.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "secret"]


class ApiKeyInputSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200)
    kind = serializers.ChoiceField(choices=ApiKey.Kind.values)
    environment = serializers.CharField(max_length=64)
    expires_at = InstantField(required=False, allow_null=True)


class MembershipSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username")

    class Meta:
        model = Membership
        fields = ["user", "role"]


class MembershipInputSerializer(StrictSerializer):
    user = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=Membership.Role.values)


class AuditEntrySerializer(serializers.ModelSerializer):
    project = serializers.CharField(source="project.key", default=None, allow_null=True)
    environment = serializers.CharField(source="environment.key", default=None, allow_null=True)

    class Meta:
        model = AuditEntry
        fields = [
            "id",
            "created_at",
            "actor_name",
            "source",
            "action",
            "object_type",
            "object_key",
            "project",
            "environment",
            "flag_key",
            "before",
            "after",
            "comment",
        ]
