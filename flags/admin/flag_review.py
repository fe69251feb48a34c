"""The flag page's review step for changes to protected environments.

Saving the flag page when it changes a protected environment first shows a review page:
per protected environment, the change line by line (`history.state_diff`, as the
confirmation pages show it) and a comment box. The page posts the original form data back
in hidden fields, with a signed token naming the flag, the person, what the page showed
(`page_fingerprint`) and a digest of the reviewed changes; the final save validates the
form again, checks the token and writes the reviewed change through the services, with the
comment in the audit entry, or opens a change request where approval is required.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property

from django.core import signing
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from flags import history, services
from flags.admin.confirmations import _current, _error_text
from flags.models import Flag, FlagConfig
from flags.roles import Action, allows, needs_change_request, role_of
from flags.validation import check_text

TOKEN_FIELD = "_review"
TOKEN_SALT = "flags.admin.flag-review"
TOKEN_AGE = 3600  # seconds a review page stays valid
COMMENT_FIELD = "review_comment_{}"
TITLE_FIELD = "review_title_{}"
OWN_FIELDS = {"csrfmiddlewaretoken", TOKEN_FIELD}


@dataclass
class EnvironmentReview:
    config: FlagConfig
    change: dict
    mode: str  # "save", "propose" or "refused"
    refused: str = ""
    comment: str = ""
    title: str = ""

    @cached_property
    def lines(self) -> list[str]:
        """The change, line by line, as the confirmation pages show one (read when shown)."""
        current = _current(self.config)
        return history.state_diff(current, {**current, **self.change})

    @property
    def comment_name(self) -> str:
        return COMMENT_FIELD.format(self.config.environment_id)

    @property
    def title_name(self) -> str:
        return TITLE_FIELD.format(self.config.environment_id)


@dataclass
class ReviewNeeded(Exception):
    """Raised inside the save (its transaction rolls back): show the review page."""

    reviews: list[EnvironmentReview]
    token: str
    error: str = ""
    status: int = 200
    hidden: list[tuple[str, str]] = field(default_factory=list)


class ReviewRefused(Exception):
    """A forged, foreign or stale review: nothing is written (a 400 or 409 page)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def mode_of(request: HttpRequest, config: FlagConfig) -> tuple[str, str]:
    """How this person's change to the environment is written: saved, proposed, refused."""
    user, environment, project = request.user, config.environment, config.flag.project
    if allows(user, project, Action.CONFIGURE, environment) and not needs_change_request(
        user, environment
    ):
        return "save", ""
    if needs_change_request(user, environment) and allows(user, project, Action.CONFIGURE):
        return "propose", ""
    role = role_of(user, project) or "no role"
    return "refused", (
        f"You are {role} in project {project.key!r}: changes to protected environment "
        f"{environment.name} need the {Action.CONFIGURE_PROTECTED.least_role} role "
        "(or a higher one)."
    )


def _digest(changes: dict[int, dict]) -> str:
    text = json.dumps({str(k): v for k, v in changes.items()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8", "backslashreplace")).hexdigest()


def _fingerprint(flag: Flag) -> str:
    """What the page shows of the flag now (read with this request's flag and configs)."""
    from flags.admin.flags import page_fingerprint

    return page_fingerprint(flag)


def _hidden(request: HttpRequest) -> list[tuple[str, str]]:
    """The posted form, to post again (the review's own fields left out)."""
    return [
        (name, value)
        for name, values in request.POST.lists()
        if name not in OWN_FIELDS and not name.startswith(("review_comment_", "review_title_"))
        for value in values
    ]


def check_token(request: HttpRequest, flag: Flag, raw: str) -> dict:
    """The review token's content, if it is this person's review of the flag as it is now
    (else ReviewRefused: 400 for a forged or foreign token, 409 for a stale one)."""
    if not raw.isascii() or len(raw) > 4000 or "\x00" in raw:
        raise ReviewRefused(400, "The review token is not valid; nothing was saved.")
    try:
        shown = signing.loads(raw, salt=TOKEN_SALT, max_age=TOKEN_AGE)
    except signing.SignatureExpired as error:
        raise ReviewRefused(409, "This review is over an hour old; nothing was saved.") from error
    except signing.BadSignature as error:
        raise ReviewRefused(400, "The review token is not valid; nothing was saved.") from error
    if not isinstance(shown, dict) or shown.get("flag") != flag.pk:
        raise ReviewRefused(400, "The review token is for another flag; nothing was saved.")
    if shown.get("user") != request.user.pk:
        raise ReviewRefused(400, "The review token is someone else's; nothing was saved.")
    if shown.get("page") != _fingerprint(flag):
        raise ReviewRefused(
            409,
            f"{flag.key} was changed by someone else since the review was shown; nothing was "
            "saved. Open the flag page again and make your change again.",
        )
    return shown


def reviewed(
    request: HttpRequest, flag: Flag, configs: dict[int, FlagConfig], changes: dict[int, dict]
) -> dict[int, EnvironmentReview]:
    """The reviewed protected changes (with their comments), or raise to show or refuse."""
    protected = {
        env_id: change
        for env_id, change in changes.items()
        if configs[env_id].environment.protected
    }
    if not protected:
        return {}
    reviews = {}
    for env_id, change in sorted(protected.items()):
        config = configs[env_id]
        mode, refused = mode_of(request, config)
        reviews[env_id] = EnvironmentReview(
            config=config,
            change=change,
            mode=mode,
            refused=refused,
            comment=_shown(request.POST.get(COMMENT_FIELD.format(env_id), "")),
            title=_shown(
                request.POST.get(TITLE_FIELD.format(env_id), "")
                or f"Change {flag.key} in {config.environment.name}"
            ),
        )
    payload = {
        "flag": flag.pk,
        "user": request.user.pk,
        "page": _fingerprint(flag),
        "changes": _digest(protected),
    }
    token = signing.dumps(payload, salt=TOKEN_SALT)
    raw = request.POST.get(TOKEN_FIELD)
    if raw is None:
        raise ReviewNeeded(list(reviews.values()), token, hidden=_hidden(request))
    shown = check_token(request, flag, raw)
    if shown.get("changes") != payload["changes"]:
        raise ReviewRefused(400, "The change is not the one reviewed; nothing was saved.")
    if any(review.mode == "refused" for review in reviews.values()):
        raise ReviewNeeded(list(reviews.values()), token, hidden=_hidden(request))
    problems = []
    for review in reviews.values():
        try:
            review.comment = services.checked_comment(request.POST.get(review.comment_name, ""))
            if review.mode == "propose":
                title = request.POST.get(review.title_name, "")
                check_text(title, "title")
                review.title = title[:200]
        except ValidationError as error:
            problems.append(f"{review.config.environment.name}: {_error_text(error)}")
    if problems:
        raise ReviewNeeded(
            list(reviews.values()), token, "; ".join(problems), 400, hidden=_hidden(request)
        )
    return reviews


def _shown(text: str) -> str:
    return text.replace("\x00", "").encode("utf-8", "backslashreplace").decode()
