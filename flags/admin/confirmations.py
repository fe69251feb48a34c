"""Confirmation pages for changes to protected environments: what changes, and a comment.

Switching a flag in a protected environment from the list, restoring one of its versions
and the kill switch each show a page first: the change line by line, a comment box (the
comment goes into the audit entry), and one button. Where the project requires approval
and the person is not a project admin, the page opens a change request instead, with the
same change. The pages parse and display; the writes are the services'.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from django.contrib import messages
from django.contrib.admin import AdminSite
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from evaluation.documents import flag_state
from flags import approvals, history, schedules, services
from flags.admin.parameters import BadParameter
from flags.errors import NotFound
from flags.models import FlagConfig
from flags.roles import Action, allows, needs_change_request, role_of
from flags.services import ConflictError
from flags.validation import check_fields

SOURCE = "admin"
LARGEST_ID = 2**63 - 1  # the store's row ids and versions are 64-bit


@dataclass
class Confirmation:
    """One change waiting for its confirmation: what it does and how it is written."""

    title: str
    button: str
    changes: list[str]
    data: dict  # the change as a change request takes it
    write: Callable[[str], object]  # the direct write, given the comment
    done: str  # the message once written
    back: str  # where to go afterwards
    approved: bool = False  # needs no change request (the kill switch)
    notes: list[str] = field(default_factory=list)
    nothing_to_do: str = ""
    hidden: dict[str, str] = field(default_factory=dict)  # posted back with the form
    danger: bool = False  # the button is red


def row_id(value: int, name: str) -> int:
    """A path's id or version that the store can look up (else a 400 page naming it)."""
    if not 0 < value <= LARGEST_ID:
        raise BadParameter(name, f"expected a whole number from 1 to {LARGEST_ID}")
    return value


def _error_text(error: Exception) -> str:
    if isinstance(error, ValidationError) and hasattr(error, "error_dict"):
        return "; ".join(f"{field}: {m}" for field, ms in error.message_dict.items() for m in ms)
    if isinstance(error, ValidationError):
        return "; ".join(error.messages)
    return str(error)


def _next_url(request: HttpRequest, default: str) -> str:
    target = request.GET.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


def _shown(text: str) -> str:
    """Refused text, as the page can show it again (no NUL, no lone surrogate)."""
    return text.replace("\x00", "").encode("utf-8", "backslashreplace").decode()


def _current(config: FlagConfig) -> dict:
    return history.config_part(flag_state(config.flag, config.environment))


class ConfirmationPages:
    """The confirmation views of the safe-rollout pages (mixed into their model admin)."""

    admin_site: AdminSite
    message_user: Callable
    _config: Callable[[HttpRequest, int], FlagConfig]
    _crumbs: Callable

    def switch_confirm_view(self, request: HttpRequest, config_id: int) -> HttpResponse:
        """`enabled=on|off` (query or form): switch the flag in one environment."""
        config = self._config(request, row_id(config_id, "config_id"))
        raw = request.POST.get("enabled") or request.GET.get("enabled", "")
        if raw not in ("on", "off"):
            raise BadParameter("enabled", f"expected on or off, not {raw[:40]!r}")
        enabled = raw == "on"
        flag, environment = config.flag, config.environment
        state = "on" if enabled else "off"
        back = _next_url(request, reverse("admin:flags_flag_changelist"))
        confirmation = Confirmation(
            title=f"Turn {flag.key} {state} in {environment.name}",
            button=f"Turn {state} in {environment.name}",
            changes=history.state_diff(_current(config), {**_current(config), "enabled": enabled}),
            data={"enabled": enabled},
            write=lambda comment: services.flag_config_update(
                config=config,
                data={"enabled": enabled},
                actor=request.user,
                source=SOURCE,
                expected_version=self._expected(request, config),
                comment=comment,
            ),
            done=f"{flag.key} is {state} in {environment.name}.",
            back=back,
            hidden={"enabled": raw},
            nothing_to_do=(
                f"{flag.key} is already {state} in {environment.name}."
                if config.enabled == enabled
                else ""
            ),
        )
        return self._confirm(request, config, confirmation)

    def restore_confirm_view(
        self, request: HttpRequest, config_id: int, version: int
    ) -> HttpResponse:
        """Write an old version of the configuration back, as a new version."""
        config = self._config(request, row_id(config_id, "config_id"))
        version = row_id(version, "version")
        try:
            state = history.version_state(config, version)
        except NotFound as error:
            raise Http404(str(error)) from error
        flag, environment = config.flag, config.environment
        changes = history.state_diff(_current(config), state)
        same = (
            f"Version {version} is the current configuration."
            if version == config.version
            else f"Version {version} is what {environment.name} serves now: nothing to restore."
        )
        confirmation = Confirmation(
            title=f"Restore version {version} of {flag.key} in {environment.name}",
            button=f"Restore version {version}",
            changes=changes,
            data=state,
            write=lambda comment: services.version_restore(
                config=config,
                version=version,
                actor=request.user,
                source=SOURCE,
                expected_version=self._expected(request, config),
                comment=comment,
            ),
            done=f"Version {version} restored as version {config.version + 1}.",
            back=reverse("admin:flags_rollout_versions", args=[config.pk]),
            nothing_to_do=same if version == config.version or not changes else "",
        )
        return self._confirm(request, config, confirmation)

    def kill_confirm_view(self, request: HttpRequest, config_id: int) -> HttpResponse:
        """The kill switch: off now, pending scheduled changes cancelled; no request needed."""
        config = self._config(request, row_id(config_id, "config_id"))
        flag, environment = config.flag, config.environment
        pending = list(schedules.schedule_of(config, pending_only=True))
        changes = history.state_diff(_current(config), {**_current(config), "enabled": False})
        changes += [
            f"scheduled change #{change.pk} ({change.run_at:%Y-%m-%d %H:%M} UTC) cancelled"
            for change in pending
        ]
        confirmation = Confirmation(
            title=f"Kill switch: {flag.key} off in {environment.name}",
            button=f"Turn off now in {environment.name}",
            changes=changes,
            data={"enabled": False},
            write=lambda comment: schedules.flag_kill(
                config=config, actor=request.user, source=SOURCE, comment=comment
            ),
            done=f"{flag.key} is off in {environment.name}; schedule cancelled.",
            back=reverse("admin:flags_rollout_versions", args=[config.pk]),
            approved=True,
            danger=True,
            notes=["The kill switch needs no change request, even where approval is required."],
            nothing_to_do=(
                f"{flag.key} is already off in {environment.name} and nothing is scheduled."
                if not config.enabled and not pending
                else ""
            ),
        )
        return self._confirm(request, config, confirmation)

    # --- The page and its two buttons

    def _expected(self, request: HttpRequest, config: FlagConfig) -> int:
        raw = request.POST.get("version", "")
        if raw.isascii() and raw.isdigit() and len(raw) <= 18:
            return int(raw)
        raise ValidationError({"version": f"expected a whole number, not {raw[:40]!r}"})

    def _confirm(
        self, request: HttpRequest, config: FlagConfig, confirmation: Confirmation
    ) -> HttpResponse:
        user, environment = request.user, config.environment
        project = config.flag.project
        may_write = allows(user, project, Action.CONFIGURE, environment)
        direct = may_write and (
            confirmation.approved or not needs_change_request(user, environment)
        )
        propose = (
            not direct
            and needs_change_request(user, environment)
            and allows(user, project, Action.CONFIGURE)
        )
        context = {
            "config": config,
            "confirmation": confirmation,
            "direct": direct and not confirmation.nothing_to_do,
            "propose": propose and not confirmation.nothing_to_do,
            "refused": "" if direct or propose else self._refusal(user, config),
            "comment": request.POST.get("comment", ""),
            "request_title": request.POST.get("title", confirmation.title),
            "error": "",
        }
        if request.method == "POST" and ("confirm" in request.POST or "propose" in request.POST):
            done, status = self._confirm_post(request, config, confirmation, context)
            if done is not None:
                return done
        else:
            status = 200
        return self._confirm_page(request, config, confirmation, context, status)

    def _confirm_post(self, request, config, confirmation, context):
        """Write the confirmed change; (a redirect, 200) or (None, the error page's status)."""
        if confirmation.nothing_to_do:
            context["error"] = confirmation.nothing_to_do
            return None, 409
        try:
            check_fields(request.POST)
            comment = services.checked_comment(request.POST.get("comment", ""))
            if "confirm" in request.POST and context["direct"]:
                confirmation.write(comment)
                self.message_user(request, confirmation.done, messages.SUCCESS)
                return HttpResponseRedirect(confirmation.back), 200
            if "propose" in request.POST and context["propose"]:
                change = approvals.change_request_create(
                    config=config,
                    data=confirmation.data,
                    title=request.POST.get("title", "")[:200],
                    expected_version=self._expected(request, config),
                    actor=request.user,
                    source=SOURCE,
                    comment=comment,
                )
                self.message_user(
                    request,
                    f"Change request #{change.pk} opened; another publisher or admin reviews it.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(
                    reverse("admin:flags_rollout_request", args=[change.pk])
                ), 200
            raise PermissionDenied(context["refused"] or "This page cannot do that.")
        except ValidationError as error:
            context["error"] = _error_text(error)
            context["comment"] = _shown(context["comment"])
            context["request_title"] = _shown(context["request_title"])
            return None, 400
        except PermissionDenied as error:
            context["error"] = _error_text(error)
            return None, 403
        except ConflictError as error:
            context["error"] = f"{error}. The page now shows the current configuration."
            return None, 409

    def _refusal(self, user, config: FlagConfig) -> str:
        environment = config.environment
        role = role_of(user, config.flag.project) or "no role"
        needed = Action.CONFIGURE_PROTECTED if environment.protected else Action.CONFIGURE
        where = "protected environment" if environment.protected else "environment"
        return (
            f"You are {role} in project {config.flag.project.key!r}: changes to {where} "
            f"{environment.name} need the {needed.least_role} role (or a higher one)."
        )

    def _confirm_page(self, request, config, confirmation, context, status: int) -> HttpResponse:
        page = {
            **self.admin_site.each_context(request),
            "title": confirmation.title,
            "crumbs": self._crumbs(config.flag.project, config.flag),
            **context,
        }
        return TemplateResponse(request, "admin/flags/rollouts/confirm.html", page, status=status)
