"""Safe rollouts in the admin: versions with diffs and restore, change requests, exposures.

The pages hang off the change requests' admin; the flag page links to them per environment
(`rollout_links`), and changes to protected environments are confirmed on the pages of
flags.admin.confirmations. Writes go through flags.history / flags.approvals /
flags.schedules.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html_join

from evaluation import exposures
from flags import approvals, dashboard, guards, history, schedules, services
from flags.admin.confirmations import ConfirmationPages, row_id
from flags.admin.parameters import CheckedParametersAdmin, whole_number
from flags.errors import NotFound
from flags.models import ChangeRequest, Flag, FlagConfig, Metric, Project, RolloutGuard, Segment
from flags.roles import Action, allows, needs_change_request, visible_projects
from flags.services import ConflictError
from flags.validation import check_fields, load_json

SOURCE = "admin"


@admin.display(description="safe rollouts")
def rollout_links(flag) -> str:
    """Per environment: versions (diff, restore, propose) and evaluations; for the flag page."""
    rows = []
    for config in flag.configs.select_related("environment"):
        rows.append(
            (
                config.environment.name,
                reverse("admin:flags_rollout_versions", args=[config.pk]),
                reverse("admin:flags_rollout_exposures", args=[config.pk]),
            )
        )
    return format_html_join(
        " · ",
        '{}: <a href="{}">versions</a>, <a href="{}">evaluations</a>',
        rows,
    )


def _posted_number(post, name: str, default: int | None = None) -> int:
    raw = post.get(name, "")
    if raw == "" and default is not None:
        return default
    if raw.isascii() and raw.isdigit() and len(raw) <= 18:
        return int(raw)
    raise ValidationError({name: f"expected a whole number, not {raw[:40]!r}"})


def _guard_form(post) -> dict:
    """A guard's boxes -> what flags.guards takes: the metric, the tolerance, the action."""
    data: dict[str, object] = {}
    for name in ("metric", "action"):
        if post.get(name):
            data[name] = post[name]
    raw = post.get("tolerance", "").strip()
    if raw:
        try:
            data["tolerance"] = float(raw)
        except ValueError:
            raise ValidationError({"tolerance": f"a percentage, not {raw[:40]!r}"}) from None
    return data


def _rollout_form(post, now: datetime) -> dict:
    """The stepped-rollout boxes -> what flags.schedules.rollout_create takes: the variant,
    the one the rest get, the steps (percentages, one every N hours from the first), and at
    most one guard (a metric picked)."""
    percentages = schedules.percentages_from_text(post.get("percentages", ""))
    hours = _posted_number(post, "every_hours", 24)
    first = now
    start = post.get("start", "").strip()
    if start:
        try:
            first = datetime.fromisoformat(start)
        except ValueError:
            raise ValidationError(
                {"start": f"a date and time (UTC) like 2027-01-31T09:00, not {start[:40]!r}"}
            ) from None
        first = first if first.tzinfo else first.replace(tzinfo=UTC)  # the box's is UTC
    data: dict[str, object] = {
        "variant": post.get("variant", ""),
        "towards": post.get("towards") or None,
        "bucket_by": post.get("bucket_by", "").strip() or "targetingKey",
        "steps": schedules.steps_every(percentages, hours=hours, first=first, now=now),
        "guards": [_guard_form(post)] if post.get("metric") else [],
    }
    return data


def _error_text(error: Exception) -> str:
    if isinstance(error, ValidationError) and hasattr(error, "error_dict"):
        return "; ".join(f"{field}: {m}" for field, ms in error.message_dict.items() for m in ms)
    if isinstance(error, ValidationError):
        return "; ".join(error.messages)
    return str(error)


@admin.register(ChangeRequest)
class ChangeRequestAdmin(ConfirmationPages, CheckedParametersAdmin):
    list_display = ("id", "flag", "environment", "title", "author_name", "status", "created_at")
    list_filter = ("status", "kind")
    list_select_related = ("config__flag", "config__environment", "flag", "segment")
    search_fields = ("title", "config__flag__key", "flag__key", "segment__key", "author_name")

    # --- The list: requests of the projects the person can see, read-only rows

    def get_queryset(self, request: HttpRequest):
        projects = visible_projects(request.user)
        return (
            super()
            .get_queryset(request)
            .filter(
                Q(config__flag__project__in=projects)
                | Q(flag__project__in=projects)
                | Q(segment__project__in=projects)
            )
        )

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return self.has_module_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="flag")
    def flag(self, obj: ChangeRequest) -> str:
        if obj.kind == ChangeRequest.Kind.SEGMENT:
            return f"segment {obj.segment.key}"
        return obj.config.flag.key if obj.config else obj.flag.key

    @admin.display(description="environment")
    def environment(self, obj: ChangeRequest) -> str:
        if obj.config is None:
            return ", ".join(sorted({item["environment"] for item in obj.impact}))
        return obj.config.environment.name

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return HttpResponseRedirect(reverse("admin:flags_rollout_request", args=[object_id]))

    # --- Extra pages

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "versions/<int:config_id>/", view(self.versions_view), name="flags_rollout_versions"
            ),
            path(
                "exposures/<int:config_id>/",
                view(self.exposures_view),
                name="flags_rollout_exposures",
            ),
            path("stale/", view(self.stale_view), name="flags_rollout_stale"),
            path("<int:pk>/review/", view(self.request_view), name="flags_rollout_request"),
            path(
                "confirm/switch/<int:config_id>/",
                view(self.switch_confirm_view),
                name="flags_rollout_confirm_switch",
            ),
            path(
                "confirm/restore/<int:config_id>/<int:version>/",
                view(self.restore_confirm_view),
                name="flags_rollout_confirm_restore",
            ),
            path(
                "confirm/kill/<int:config_id>/",
                view(self.kill_confirm_view),
                name="flags_rollout_confirm_kill",
            ),
            *super().get_urls(),
        ]

    def _config(self, request: HttpRequest, config_id: int) -> FlagConfig:
        config = get_object_or_404(
            FlagConfig.objects.select_related("flag__project", "environment__project"),
            pk=row_id(config_id, "config_id"),
        )
        if not allows(request.user, config.flag.project, Action.READ):
            raise Http404("No such flag.")
        return config

    def _crumbs(self, project: Project | None, subject: Flag | Segment | None = None) -> list:
        """Home › Flags › Projects › <project> › <flag or segment>: (label, url) pairs."""
        crumbs = [("Projects", reverse("admin:flags_project_changelist"))]
        if project is not None:
            crumbs.append(
                (
                    project.name or project.key,
                    reverse("admin:flags_project_change", args=[project.pk]),
                )
            )
        if isinstance(subject, Flag):
            crumbs.append((subject.key, reverse("admin:flags_flag_change", args=[subject.pk])))
        elif isinstance(subject, Segment):
            crumbs.append((subject.key, reverse("admin:flags_segment_change", args=[subject.pk])))
        return crumbs

    def _page(
        self, request: HttpRequest, template: str, title: str, crumbs: list | None = None, **context
    ) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "crumbs": crumbs or [],
            **context,
        }
        return TemplateResponse(request, f"admin/flags/rollouts/{template}", context)

    def _run(self, request: HttpRequest, action, success: str) -> bool:
        try:
            action()
        except (PermissionDenied, ValidationError, ConflictError) as error:
            self.message_user(request, _error_text(error), messages.ERROR)
            return False
        except NotFound as error:
            raise Http404(str(error)) from error
        self.message_user(request, success, messages.SUCCESS)
        return True

    def versions_view(self, request: HttpRequest, config_id: int) -> HttpResponse:
        """Versions with their diffs; restore one; propose or schedule a change."""
        config = self._config(request, config_id)
        user = request.user
        if request.method == "POST":
            self._versions_post(request, config)
            return HttpResponseRedirect(request.path)
        may_write = allows(user, config.flag.project, Action.CONFIGURE, config.environment)
        needs_request = needs_change_request(user, config.environment)
        may_propose = allows(user, config.flag.project, Action.CONFIGURE)
        variants = [variant.key for variant in config.flag.variants.all()]
        return self._page(
            request,
            "versions.html",
            f"Versions of {config.flag.key} in {config.environment.name}",
            crumbs=self._crumbs(config.flag.project, config.flag),
            config=config,
            versions=history.versions_of(config),
            may_restore=may_write and not needs_request,
            # Protected environments confirm a restore or the kill switch on a page of
            # their own (with a comment), which opens a change request where one is needed.
            confirm=config.environment.protected,
            may_propose_restore=config.environment.protected and needs_request and may_propose,
            may_propose=may_propose,
            may_kill=may_write,
            requests=approvals.change_requests_of(project=config.flag.project, config=config)[:20],
            schedule=schedules.schedule_of(config)[:50],
            guards=[(guard, guards.guard_state(guard)) for guard in guards.guards_of(config)[:20]],
            running_rollouts=guards.running_rollouts(config),
            metrics=Metric.objects.filter(project=config.flag.project).order_by("key"),
            guard_actions=RolloutGuard.Action.choices,
            may_guard=may_write and not needs_request,
            variants=variants,
            rollout_default=next((key for key in variants if key != config.off_variant), None),
        )

    def _versions_post(self, request: HttpRequest, config: FlagConfig) -> None:
        try:
            action, success = self._versions_action(request, config)
        except (ValidationError, NotFound) as error:  # the form's own input, before any service
            self.message_user(request, _error_text(error), messages.ERROR)
            return
        if action is not None:
            self._run(request, action, success)

    def _versions_action(self, request: HttpRequest, config: FlagConfig):
        """What the versions page's form asks for, as (the write, its success message)."""
        user, post = request.user, request.POST
        check_fields(post)
        version = _posted_number(post, "version", config.version)
        if "restore" in post:
            number = _posted_number(post, "restore")
            return (
                lambda: services.version_restore(
                    config=config,
                    version=number,
                    actor=user,
                    source=SOURCE,
                    expected_version=version,
                ),
                f"Version {number} restored as a new version.",
            )
        if "kill" in post:
            return (
                lambda: schedules.flag_kill(config=config, actor=user, source=SOURCE),
                f"{config.flag.key} is off in {config.environment.name}; schedule cancelled.",
            )
        if "propose" in post:
            data = load_json(post.get("changes") or "{}", "changes")
            if not isinstance(data, dict):
                raise ValidationError({"changes": "The change is a JSON object."})
            return (
                lambda: approvals.change_request_create(
                    config=config,
                    data=data,
                    title=post.get("title", ""),
                    expected_version=version,
                    actor=user,
                    source=SOURCE,
                ),
                "Change request opened; someone else with the publisher role reviews it.",
            )
        if {"guard_add", "guard_edit", "guard_remove"} & set(post):
            return self._guard_action(request, config)
        if "rollout_start" in post:
            data = _rollout_form(post, datetime.now(UTC))
            steps = data["steps"]
            guarded = " with guard " + str(post["metric"]) if data["guards"] else ""
            return (
                lambda: schedules.rollout_create(config=config, **data, actor=user, source=SOURCE),
                f"Stepped rollout of {data['variant']} started{guarded}: "
                f"{len(steps)} step{'s' if len(steps) != 1 else ''}, the first at "
                f"{steps[0]['at']:%Y-%m-%d %H:%M} UTC (applied by the scheduler's next pass).",
            )
        return None, ""

    def _guard_action(self, request: HttpRequest, config: FlagConfig):
        """Add, edit or remove a guard of a running rollout, through flags.guards."""
        user, post = request.user, request.POST
        if "guard_add" in post:
            rollout = post.get("rollout", "")
            data = _guard_form(post)
            return (
                lambda: guards.guard_create(
                    config=config, rollout=rollout, data=data, actor=user, source=SOURCE
                ),
                f"Guard {data.get('metric')} added to rollout {rollout}.",
            )
        guard = guards.guard_for(config, _posted_number(post, "guard"))
        if "guard_remove" in post:
            return (
                lambda: guards.guard_delete(guard=guard, actor=user, source=SOURCE),
                f"Guard {guard.metric.key} removed; rollout {guard.rollout} goes on without it.",
            )
        data = _guard_form(post)

        def edit() -> None:
            edited = guards.guard_update(guard=guard, data=data, actor=user, source=SOURCE)
            if edited.restarted_at != guard.restarted_at:
                self.message_user(
                    request,
                    f"The test of guard {edited.metric.key} restarted now: it counts only "
                    "units first exposed from now on.",
                    messages.WARNING,
                )

        return edit, "Guard saved."

    def request_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        change_request = get_object_or_404(
            ChangeRequest.objects.select_related(*approvals.RELATED), pk=row_id(pk, "pk")
        )
        if change_request.config_id is None:
            config = None
            if not allows(request.user, change_request.project, Action.READ):
                raise Http404("No such change request.")
            subject = change_request.flag or change_request.segment
            crumbs = self._crumbs(change_request.project, subject)
            title = f"Change request #{pk}: {change_request.subject}"
            diff = [
                f"{item['environment']}: {line}"
                for item in change_request.impact
                for line in item["changes"]
            ]
        else:
            config = self._config(request, change_request.config_id)
            crumbs = self._crumbs(config.flag.project, config.flag)
            title = f"Change request #{pk}: {config.flag.key} in {config.environment.name}"
            diff = history.state_diff(change_request.base_state, change_request.proposed_state)
        if request.method == "POST":
            self._request_post(request, change_request)
            return HttpResponseRedirect(request.path)
        return self._page(
            request,
            "request.html",
            title,
            crumbs=crumbs,
            config=config,
            why=approvals.proposal_comment(change_request),
            change=change_request,
            current_version=approvals.current_version(change_request),
            conflict=approvals.is_conflict(change_request),
            diff=diff,
            reviews=change_request.reviews.all(),
            approvals_required=approvals.approvals_required(),
            is_author=change_request.author_id == request.user.pk,
            changes_json=json.dumps(change_request.data, indent=2),
        )

    def _request_post(self, request: HttpRequest, change_request: ChangeRequest) -> None:
        user, post = request.user, request.POST
        try:
            check_fields(post)
        except ValidationError as error:
            self.message_user(request, _error_text(error), messages.ERROR)
            return
        comment = post.get("comment", "")
        if "approve" in post or "reject" in post:
            approve = "approve" in post
            self._run(
                request,
                lambda: approvals.change_request_review(
                    request=change_request,
                    approve=approve,
                    comment=comment,
                    actor=user,
                    source=SOURCE,
                ),
                "Approved." if approve else "Rejected.",
            )
        elif "rebase" in post:
            self._run(
                request,
                lambda: approvals.change_request_rebase(
                    request=change_request,
                    confirm=post.get("confirm") == "on",
                    actor=user,
                    source=SOURCE,
                ),
                "Rebased on the current version; it needs approval again.",
            )
        elif "cancel" in post:
            self._run(
                request,
                lambda: approvals.change_request_cancel(
                    request=change_request, actor=user, source=SOURCE
                ),
                "Cancelled.",
            )

    def exposures_view(self, request: HttpRequest, config_id: int) -> HttpResponse:
        """Evaluations per variant and hour over the last days, and when last evaluated."""
        config = self._config(request, config_id)
        days = whole_number(request, "days", 7, 1, 90)
        since = datetime.now(UTC) - timedelta(days=days)
        series = exposures.exposure_series(config.environment_id, config.flag.key, since)
        variants = sorted({row["variant"] for row in series})
        hours: dict[datetime, dict[str, int]] = {}
        for row in series:
            hours.setdefault(row["hour"], {})[row["variant"]] = row["total"]
        peak = max((row["total"] for row in series), default=0) or 1
        table = [
            (hour, [(counts.get(v, 0), 100 * counts.get(v, 0) // peak) for v in variants])
            for hour, counts in sorted(hours.items(), reverse=True)
        ]
        totals = [sum(row["total"] for row in series if row["variant"] == v) for v in variants]
        return self._page(
            request,
            "exposures.html",
            f"Evaluations of {config.flag.key} in {config.environment.name}",
            crumbs=self._crumbs(config.flag.project, config.flag),
            config=config,
            days=days,
            variants=variants,
            totals=totals,
            table=table,
            last=exposures.last_evaluated(config.environment_id, config.flag.key),
        )

    def stale_view(self, request: HttpRequest) -> HttpResponse:
        days = whole_number(request, "days", settings.STALE_FLAG_DAYS, 1, 3650)
        projects = dashboard.stale_by_project(request.user, days=days)
        return self._page(request, "stale.html", "Stale flags", projects=projects, days=days)
