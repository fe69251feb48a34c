"""The flag store: projects, environments, flags, their per-environment targeting, audit.

Models stay thin: fields, constraints and `clean()`, which delegates to `flags.validation`
so the admin's forms and the services reject the same input with the same messages.
"""

import secrets

from django.conf import settings
from django.db import models

from evaluation.engine.bucketing import SCHEMES as BUCKETING_SCHEMES
from flags import validation
from flags.validation import KEY_VALIDATOR


def key_field(max_length: int = 100, **kwargs) -> models.CharField:
    return models.CharField(max_length=max_length, validators=[KEY_VALIDATOR], **kwargs)


class Project(models.Model):
    key = key_field(unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    require_approval = models.BooleanField(
        default=False, help_text="Changes to protected environments need an approved request."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.name or self.key


class Environment(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="environments")
    key = key_field(max_length=64)
    name = models.CharField(max_length=200)
    protected = models.BooleanField(
        default=False, help_text="Only project admins and publishers change flags here."
    )
    position = models.PositiveIntegerField(default=0)
    secure_mode = models.BooleanField(
        default=False,
        help_text="Client keys must send targetingKeyHash, the HMAC of targetingKey that "
        "your server computes with the environment's secure mode secret.",
    )
    # The secure mode secret: the service must hold it to verify hashes, so it is kept
    # (never shown after it is made, never logged, never in the audit or a document).
    secure_mode_secret = models.CharField(max_length=100, blank=True, editable=False)
    # Bumped in the same transaction as every change that alters this environment's flag
    # document or what its keys are answered (secure mode); the evaluation cache keys on it.
    version = models.PositiveBigIntegerField(default=1, editable=False)

    class Meta:
        ordering = ["project__key", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "key"], name="environment_key_unique")
        ]

    def __str__(self) -> str:
        return f"{self.project.key}/{self.key}"


class Tag(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="tags")
    name = key_field(max_length=64)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="tag_unique")]

    def __str__(self) -> str:
        return self.name


class Flag(models.Model):
    class Type(models.TextChoices):
        BOOLEAN = "boolean"
        STRING = "string"
        NUMBER = "number"
        JSON = "json"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="flags")
    key = key_field(help_text="Immutable once created; what services ask for.")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    type = models.CharField(max_length=16, choices=Type.choices, default=Type.BOOLEAN)
    salt = models.CharField(
        max_length=100, blank=True, help_text="Bucketing salt; empty means the flag key."
    )
    bucketing = models.CharField(
        max_length=16,
        choices=[(scheme, scheme) for scheme in BUCKETING_SCHEMES],
        default="flagd",
        help_text="How rollouts place users: flagd's scheme, or that of the system the flag "
        "was imported from (docs/evaluation.md#bucketing).",
    )
    tags = models.ManyToManyField(Tag, blank=True, related_name="flags")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    archived = models.BooleanField(default=False)
    client_side = models.BooleanField(
        default=False,
        verbose_name="available to client-side keys",
        help_text="Client keys (browsers, mobile apps) may evaluate this flag.",
    )
    # Bumped by every change to the flag's own fields (variants, archived, ...): the base a
    # change request on the flag was written against.
    version = models.PositiveIntegerField(default=1, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project__key", "key"]
        constraints = [models.UniqueConstraint(fields=["project", "key"], name="flag_key_unique")]

    def __str__(self) -> str:
        return self.key


class Variant(models.Model):
    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="variants")
    key = key_field(max_length=64)
    name = models.CharField(max_length=200, blank=True)
    value = models.JSONField(help_text="A JSON value of the flag's type.")
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]
        constraints = [models.UniqueConstraint(fields=["flag", "key"], name="variant_key_unique")]

    def __str__(self) -> str:
        return self.key

    def clean(self) -> None:
        validation.check_variant_value(self.flag.type, self.value)


class Serving(models.Model):
    """What is served: one variant, or a weighted rollout across the flag's variants."""

    serve_variant = models.CharField(max_length=64, blank=True, verbose_name="variant")
    # [{"variant": KEY, "weight": N}, ...] in bucketing order, as in the flag document;
    # empty when one variant is served.
    rollout = models.JSONField(
        default=list,
        blank=True,
        help_text='Weights by variant in order, e.g. [{"variant": "on", "weight": 25}, '
        '{"variant": "off", "weight": 75}]; empty for one variant.',
    )
    bucket_by = models.CharField(max_length=100, default="targetingKey")
    # The rollout's own bucketing salt (an import's: Unleash's groupId of the strategy);
    # empty means the flag's salt.
    salt = models.CharField(
        max_length=100,
        blank=True,
        verbose_name="rollout salt",
        help_text="The rollout's bucketing salt; empty means the flag's.",
    )

    class Meta:
        abstract = True

    def serving(self) -> dict:
        return validation.serving_document(
            self.serve_variant, self.rollout, self.bucket_by, self.salt
        )


class FlagConfig(Serving):
    """A flag's configuration in one environment: on/off, the off variant, the default."""

    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="configs")
    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="flag_configs"
    )
    enabled = models.BooleanField(default=False)
    off_variant = models.CharField(max_length=64)
    # Optimistic concurrency and history: bumped by every change to this configuration.
    version = models.PositiveIntegerField(default=1, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["flag", "environment__position", "environment_id"]
        verbose_name = "environment configuration"
        constraints = [
            models.UniqueConstraint(fields=["flag", "environment"], name="flag_config_unique")
        ]

    def __str__(self) -> str:
        return f"{self.flag.key} in {self.environment.key}"

    def clean(self) -> None:
        validation.check_config(self)


def new_rule_key() -> str:
    """A rule's key when none is given: random, so it never repeats a deleted rule's."""
    return secrets.token_hex(4)


class Rule(Serving):
    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="rules")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    # The rule's identity (`id` in the flag document, `ruleId` in evaluation results): kept
    # through every edit, export and import, and promotion to another environment.
    key = key_field(max_length=64, default=new_rule_key)
    position = models.PositiveIntegerField(default=0)
    name = models.CharField(max_length=200, blank=True)
    conditions = models.JSONField(
        default=list,
        blank=True,
        help_text='All must hold, e.g. [{"attribute": "country", "operator": "in", '
        '"values": ["US"]}]; an empty list matches everyone.',
    )

    class Meta:
        ordering = ["environment__position", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["flag", "environment", "key"], name="rule_key_unique")
        ]

    def __str__(self) -> str:
        return self.name or f"rule {self.key}"

    def clean(self) -> None:
        validation.check_rule(self)


class Target(models.Model):
    """Individually targeted context keys that get one variant."""

    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="targets")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    variant = models.CharField(max_length=64)
    values = models.JSONField(default=list, help_text='Targeting keys, e.g. ["user-1"].')

    class Meta:
        ordering = ["environment__position", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["flag", "environment", "variant"], name="target_variant_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.variant}: {len(self.values or [])} keys"

    def clean(self) -> None:
        validation.check_target(self)


class Prerequisite(models.Model):
    """The flag is served only if `required_flag` serves one of `variants` first."""

    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="prerequisites")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    required_flag = models.ForeignKey(Flag, on_delete=models.PROTECT, related_name="+")
    variants = models.JSONField(default=list, help_text='Variant keys, e.g. ["on"].')

    class Meta:
        ordering = ["environment__position", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["flag", "environment", "required_flag"], name="prerequisite_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.required_flag.key} in {self.variants}"

    def clean(self) -> None:
        validation.check_prerequisite(self)


class Segment(models.Model):
    """A named, reusable set of conditions at project level."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="segments")
    key = key_field()
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    conditions = models.JSONField(default=list, blank=True)
    included = models.JSONField(default=list, blank=True, help_text="Targeting keys always in.")
    excluded = models.JSONField(default=list, blank=True, help_text="Targeting keys always out.")
    # Bumped by every change: the base a change request on the segment was written against.
    version = models.PositiveIntegerField(default=1, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project__key", "key"]
        constraints = [
            models.UniqueConstraint(fields=["project", "key"], name="segment_key_unique")
        ]

    def __str__(self) -> str:
        return self.key

    def clean(self) -> None:
        validation.check_segment(self)


class DocumentChange(models.Model):
    """What one version of an environment changed in its flag document: the ids of the flags
    and segments the write that made `version` made, changed or deleted, recorded in that
    write's transaction (flags.services.steps). A process holding the document of an earlier
    version reads the rows of these only (evaluation.documents). A list is null when the write
    changed too many to list (a large import): a build across it reads every revision."""

    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="document_changes"
    )
    version = models.PositiveBigIntegerField()
    flags = models.JSONField(null=True, default=list)
    segments = models.JSONField(null=True, default=list)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "version"], name="document_change_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.environment_id} v{self.version}"


class Membership(models.Model):
    """A person's role in a project."""

    class Role(models.TextChoices):
        VIEWER = "viewer"
        EDITOR = "editor"
        PUBLISHER = "publisher"
        ADMIN = "admin"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        ordering = ["project__key", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} of {self.project.key}"


class ApiKey(models.Model):
    """A credential for services: server keys read documents, client keys only evaluate."""

    class Kind(models.TextChoices):
        SERVER = "server"
        CLIENT = "client"

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="api_keys")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    name = models.CharField(max_length=200)
    prefix = models.CharField(max_length=16, db_index=True, editable=False)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class AuditEntry(models.Model):
    """Who changed what, when, from which door; written in the change's own transaction."""

    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    environment = models.ForeignKey(
        Environment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150)
    source = models.CharField(max_length=16)
    action = models.CharField(max_length=32)
    object_type = models.CharField(max_length=32)
    object_key = models.CharField(max_length=200)
    flag_key = models.CharField(max_length=100, blank=True, db_index=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    # Why, in the words of whoever made the change (the admin's confirmation pages ask).
    comment = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.actor_name} {self.action} {self.object_type} {self.object_key}"


# --- Safe rollouts: history, change requests, schedules, exposure counts -----------------


class FlagConfigVersion(models.Model):
    """One numbered version of a flag's configuration in an environment, in full.

    Written by the services in the change's own transaction, so restoring a version is
    writing its `state` back through `flag_config_update`.
    """

    config = models.ForeignKey(FlagConfig, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    state = models.JSONField()
    action = models.CharField(max_length=32)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150)
    source = models.CharField(max_length=16)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["config", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["config", "version"], name="flag_config_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.config} v{self.version}"


class ChangeRequest(models.Model):
    """A proposed change to what a protected environment serves, reviewed by others.

    Most change one flag's configuration in one environment (`config`); a change to a flag's
    own fields (`flag`: variants, archived, ...) or to a segment (`segment`) is proposed the
    same way when it alters what a protected environment serves, and `impact` says how.
    """

    class Kind(models.TextChoices):
        CONFIG = "config"
        FLAG = "flag"
        SEGMENT = "segment"

    class Status(models.TextChoices):
        OPEN = "open"
        APPROVED = "approved"  # approved, waiting for its time (or blocked by a conflict)
        APPLIED = "applied"
        REJECTED = "rejected"
        CANCELLED = "cancelled"

    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.CONFIG)
    config = models.ForeignKey(
        FlagConfig, null=True, blank=True, on_delete=models.CASCADE, related_name="requests"
    )
    flag = models.ForeignKey(
        Flag, null=True, blank=True, on_delete=models.CASCADE, related_name="change_requests"
    )
    segment = models.ForeignKey(
        Segment, null=True, blank=True, on_delete=models.CASCADE, related_name="change_requests"
    )
    # [{"environment": key, "subject": "flag checkout", "changes": [line, ...]}, ...]
    impact = models.JSONField(default=list, blank=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    author_name = models.CharField(max_length=150)
    title = models.CharField(max_length=200, blank=True)
    data = models.JSONField(help_text="The change, as the configuration PATCH takes it.")
    base_version = models.PositiveIntegerField()
    base_state = models.JSONField()
    proposed_state = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    scheduled_at = models.DateTimeField(null=True, blank=True)
    applied_version = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"change request {self.pk} on {self.subject}"

    @property
    def subject(self) -> str:
        if self.kind == self.Kind.FLAG:
            return f"flag {self.flag.key}"
        if self.kind == self.Kind.SEGMENT:
            return f"segment {self.segment.key}"
        return str(self.config)

    @property
    def project(self) -> Project:
        if self.kind == self.Kind.FLAG:
            return self.flag.project
        if self.kind == self.Kind.SEGMENT:
            return self.segment.project
        return self.config.flag.project


class ChangeReview(models.Model):
    """One person's approval or rejection of a change request (for its current base)."""

    class Decision(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"

    request = models.ForeignKey(ChangeRequest, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewer_name = models.CharField(max_length=150)
    decision = models.CharField(max_length=8, choices=Decision.choices)
    base_version = models.PositiveIntegerField()
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.reviewer_name} {self.decision}s request {self.request_id}"


class ScheduledChange(models.Model):
    """A change to apply at a time: one step of a rollout, an approved request, or alone."""

    class Status(models.TextChoices):
        PENDING = "pending"
        APPLIED = "applied"
        CANCELLED = "cancelled"
        FAILED = "failed"

    config = models.ForeignKey(FlagConfig, on_delete=models.CASCADE, related_name="schedule")
    data = models.JSONField(help_text="The change, as the configuration PATCH takes it.")
    run_at = models.DateTimeField(db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    rollout = models.CharField(max_length=32, blank=True, help_text="Steps of one rollout.")
    request = models.ForeignKey(
        ChangeRequest, null=True, blank=True, on_delete=models.CASCADE, related_name="schedule"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by_name = models.CharField(max_length=150)
    created_at = models.DateTimeField(auto_now_add=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    applied_version = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["run_at", "id"]
        indexes = [models.Index(fields=["status", "run_at"], name="scheduled_change_due")]

    def __str__(self) -> str:
        return f"change to {self.config} at {self.run_at:%Y-%m-%d %H:%M}"


class RolloutGuard(models.Model):
    """A guard metric of a stepped rollout: checked before each step, it stops the rollout
    (pausing it, or rolling back to the control) once the treatment has clearly regressed."""

    class Action(models.TextChoices):
        ROLLBACK = "rollback", "roll back to the control"
        PAUSE = "pause", "pause (cancel the steps left)"

    class Status(models.TextChoices):
        ACTIVE = "active"  # checked before each step of its rollout
        TRIPPED = "tripped"  # found a regression and stopped the rollout
        PASSED = "passed"  # every step of the rollout was applied without a regression
        STOPPED = "stopped"  # the rollout ended otherwise (cancelled, killed, another guard)

    config = models.ForeignKey(FlagConfig, on_delete=models.CASCADE, related_name="guards")
    rollout = models.CharField(max_length=32, db_index=True, help_text="The rollout's id.")
    metric = models.ForeignKey("Metric", on_delete=models.PROTECT, related_name="guards")
    control_variant = models.CharField(max_length=64)
    treatment_variant = models.CharField(max_length=64)
    tolerance = models.FloatField(
        default=0.0, help_text="How much worse than the control is tolerated, in percent."
    )
    action = models.CharField(max_length=8, choices=Action.choices, default=Action.ROLLBACK)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.ACTIVE)
    checked_at = models.DateTimeField(null=True, blank=True)
    decision = models.CharField(max_length=16, blank=True)
    p_value = models.FloatField(null=True, blank=True)
    tripped_at = models.DateTimeField(null=True, blank=True)
    restarted_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When an edit restarted the test: it counts units exposed since then.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["config", "rollout", "id"]

    def __str__(self) -> str:
        return f"guard {self.metric} of rollout {self.rollout}"


class ExposureCount(models.Model):
    """Evaluations of a flag in an environment per variant, reason and hour."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    flag_key = models.CharField(max_length=100)
    variant = models.CharField(max_length=64, blank=True)
    reason = models.CharField(max_length=32)
    hour = models.DateTimeField()
    count = models.PositiveBigIntegerField(default=0)
    last_at = models.DateTimeField()

    class Meta:
        ordering = ["-hour", "flag_key", "variant"]
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "flag_key", "variant", "reason", "hour"],
                name="exposure_count_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.flag_key}/{self.variant} {self.reason} {self.hour:%Y-%m-%d %H}h"


class UnitExposure(models.Model):
    """When a unit (a context's targetingKey) was first served a variant of a rollout.

    One row per environment, flag, variant and unit, so a unit that saw two variants (the
    weights changed, or its key was shared) has two rows and an analysis can leave it out.
    """

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    flag_key = models.CharField(max_length=100)
    variant = models.CharField(max_length=64)
    unit = models.CharField(max_length=256)
    first_seen = models.DateTimeField()

    class Meta:
        constraints = [
            # Its index, led by environment and flag, is the join's: a flag's units.
            models.UniqueConstraint(
                fields=["environment", "flag_key", "variant", "unit"],
                name="unit_exposure_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.flag_key}/{self.variant} {self.unit} since {self.first_seen:%Y-%m-%d %H:%M}"


class UnitEventDay(models.Model):
    """One unit's events of one name in an environment on one day (UTC), summed.

    `count` counts the events, `valued` those that carried a value; `value_sum` and
    `value_squares` sum their values and squares, for per-unit sums, means and variances.
    """

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    event = models.CharField(max_length=100)
    unit = models.CharField(max_length=256)
    day = models.DateField()
    count = models.PositiveBigIntegerField(default=0)
    valued = models.PositiveBigIntegerField(default=0)
    value_sum = models.FloatField(default=0.0)
    value_squares = models.FloatField(default=0.0)
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()

    class Meta:
        constraints = [
            # Its index, led by environment, event and unit, is the join's.
            models.UniqueConstraint(
                fields=["environment", "event", "unit", "day"], name="unit_event_day_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.event} {self.unit} {self.day:%Y-%m-%d}: {self.count}"


class IngestedData(models.Model):
    """How often ingestion has written an environment's first exposures of one flag, or its
    events of one name, of one day (UTC), and the latest time it wrote for them: the
    watermark an analysis's cached totals are keyed by (flags.ingested).

    Bumped in the transaction that writes the rows, so no reader sees new rows under an old
    version.
    """

    class Kind(models.TextChoices):
        EXPOSURES = "exposures"  # `name` is a flag key
        EVENTS = "events"  # `name` is an event name

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=100)
    day = models.DateField()  # of the rows written: a first exposure's, an event's
    version = models.PositiveBigIntegerField(default=0)
    latest = models.DateTimeField()  # the latest first-exposure or event time written

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "kind", "name", "day"], name="ingested_data_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.name} {self.day:%Y-%m-%d}: version {self.version}"


class SeenAttribute(models.Model):
    """An attribute name evaluations in an environment were asked with (the condition
    builder suggests them); written by evaluation.attributes, bounded per environment."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100)
    first_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["environment", "name"], name="seen_attribute_unique")
        ]

    def __str__(self) -> str:
        return self.name


# --- Experiments: metrics, and a flag's rollout compared on them -------------------------


class Metric(models.Model):
    """What an experiment measures per unit: an event's conversion, or its values' sum or mean.

    Counted from each unit's first exposure to the end of its window (docs/experiments.md).
    """

    class Kind(models.TextChoices):
        CONVERSION = "conversion"
        NUMERIC = "numeric"

    class Aggregation(models.TextChoices):
        SUM = "sum"
        MEAN = "mean"

    class Better(models.TextChoices):
        HIGHER = "higher", "higher is better"
        LOWER = "lower", "lower is better"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="metrics")
    key = key_field()
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    event = models.CharField(
        max_length=100,
        verbose_name="event name",
        help_text="The event the SDK's track (or POST /api/v1/sdk/events) sends, e.g. purchase.",
    )
    kind = models.CharField(
        max_length=16,
        choices=Kind.choices,
        default=Kind.CONVERSION,
        help_text="Conversion: did the unit send the event in its window. Numeric: the "
        "event's values per unit.",
    )
    aggregation = models.CharField(
        max_length=8,
        choices=Aggregation.choices,
        blank=True,
        help_text="Numeric metrics only: each unit's sum of values (0 without events), or "
        "their mean (units without a value left out).",
    )
    window_days = models.PositiveIntegerField(
        default=7,
        verbose_name="window (days)",
        help_text="Events count from the unit's first exposure to the end of this many "
        "days after its day (UTC).",
    )
    better = models.CharField(max_length=8, choices=Better.choices, default=Better.HIGHER)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project__key", "key"]
        constraints = [models.UniqueConstraint(fields=["project", "key"], name="metric_key_unique")]

    def __str__(self) -> str:
        return self.name or self.key

    def clean(self) -> None:
        validation.check_metric(self)


class Experiment(models.Model):
    """A flag's rollout in one environment, its variants compared with a control on metrics.

    Starting records the rollout's weights and the configuration's version, so the page can
    check the sample ratio against them and say when the rollout or rules changed since.
    """

    class Status(models.TextChoices):
        DRAFT = "draft"
        RUNNING = "running"
        STOPPED = "stopped"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="experiments")
    key = key_field()
    name = models.CharField(max_length=200)
    hypothesis = models.TextField(
        blank=True, help_text="What you expect to change, and why; read when deciding."
    )
    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="experiments")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    control_variant = models.CharField(
        max_length=64, help_text="The variant the others are compared with."
    )
    metrics = models.ManyToManyField(Metric, related_name="experiments")
    status = models.CharField(
        max_length=8, choices=Status.choices, default=Status.DRAFT, editable=False
    )
    starts_at = models.DateTimeField(null=True, blank=True, editable=False)
    ends_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The rollout split at the start ([{"variant": KEY, "weight": N}, ...]) and the
    # configuration's version then: later versions that change it are reported.
    start_weights = models.JSONField(default=list, blank=True, editable=False)
    start_version = models.PositiveIntegerField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project__key", "-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "key"], name="experiment_key_unique")
        ]

    def __str__(self) -> str:
        return self.name or self.key

    def clean(self) -> None:
        validation.check_experiment(self)
