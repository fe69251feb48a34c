"""Single sign-on for the admin with OpenID Connect (mozilla-django-oidc), and project roles
from the provider's groups, applied at each login.

The provider is found from `OIDC_ISSUER` by discovery (`/.well-known/openid-configuration`,
whose `issuer` must be exactly the configured one). The library runs the authorization code
flow with PKCE and checks the ID token's signature (RS256, the provider's JWKS) and nonce;
this module adds what it leaves to the application: the token's `iss` and `aud`, the
userinfo's `sub`, and who the person is here.

People are matched by (issuer, `sub`), never by e-mail. At each login the groups claim
(`OIDC_GROUPS_CLAIM`) decides, through `OIDC_ROLE_MAP`, the person's role in every project
the map names: the best role any of their groups gives, or none (the membership is removed).
Projects the map does not name keep the roles given by hand. `OIDC_SUPERUSER_GROUPS`
grant and take away superuser status the same way. Someone left with no role anywhere is
refused at the door.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils import timezone
from mozilla_django_oidc import auth as oidc_auth
from mozilla_django_oidc import views as oidc_views
from mozilla_django_oidc.utils import import_from_settings

from flags import services
from flags.models import Membership, Project
from flags.roles import RANK
from integrations.conf import role_map
from integrations.models import SsoIdentity

log = logging.getLogger(__name__)

SOURCE = "sso"
DISCOVERY_SECONDS = 3600
USERNAME = re.compile(r"[\w.@+-]{1,150}\Z")

# The provider's endpoints, as mozilla-django-oidc names them, from the discovery document.
DISCOVERED = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
}
# What the library reads, from this service's own settings or fixed here.
FIXED: dict[str, Any] = {
    "OIDC_RP_SIGN_ALGO": "RS256",
    "OIDC_USE_PKCE": True,
    "OIDC_TIMEOUT": 10,
    "OIDC_CREATE_USER": True,
    "LOGIN_REDIRECT_URL": "/admin/",
    "LOGIN_REDIRECT_URL_FAILURE": "/admin/login/",
}
RENAMED = {
    "OIDC_RP_CLIENT_ID": "OIDC_CLIENT_ID",
    "OIDC_RP_CLIENT_SECRET": "OIDC_CLIENT_SECRET",
    "OIDC_RP_SCOPES": "OIDC_SCOPES",
}


class SsoUnavailable(Exception):
    """The provider cannot be used: unreachable, or not the issuer it should be."""


def enabled() -> bool:
    return bool(getattr(settings, "OIDC_ISSUER", ""))


def local_login() -> bool:
    return getattr(settings, "LOCAL_LOGIN", True)


_discovered: dict[str, tuple[dict, float]] = {}
_discovery_lock = threading.Lock()


def discovery(issuer: str | None = None) -> dict:
    """The provider's metadata, fetched once an hour; SsoUnavailable if it is not `issuer`."""
    issuer = issuer or settings.OIDC_ISSUER
    with _discovery_lock:
        cached = _discovered.get(issuer)
        if cached and time.monotonic() - cached[1] < DISCOVERY_SECONDS:
            return cached[0]
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=FIXED["OIDC_TIMEOUT"])
        response.raise_for_status()
        metadata = response.json()
    except (requests.RequestException, ValueError) as error:
        raise SsoUnavailable(f"cannot read {url}: {type(error).__name__}") from error
    if not isinstance(metadata, dict) or metadata.get("issuer") != issuer:
        found = metadata.get("issuer") if isinstance(metadata, dict) else None
        raise SsoUnavailable(f"the provider says it is {found!r}, not {issuer!r}")
    missing = [name for name in DISCOVERED.values() if not isinstance(metadata.get(name), str)]
    if missing:
        raise SsoUnavailable(f"the provider's metadata lacks {', '.join(missing)}")
    with _discovery_lock:
        _discovered[issuer] = (metadata, time.monotonic())
    return metadata


def sso_setting(attr: str, *default: Any) -> Any:
    """mozilla-django-oidc's settings, read when used (tests and discovery can change them)."""
    if attr in DISCOVERED:
        return discovery()[DISCOVERED[attr]]
    if attr in RENAMED:
        return getattr(settings, RENAMED[attr])
    if attr in FIXED:
        return FIXED[attr]
    return import_from_settings(attr, *default)


# --- Roles from groups --------------------------------------------------------------------


def roles_from_groups(groups: list[str]) -> dict[str, str | None]:
    """{project key: best role} for every project the map names (None: no role there)."""
    mapping = role_map(settings.OIDC_ROLE_MAP)
    roles: dict[str, str | None] = {
        project: None for grants in mapping.values() for project in grants
    }
    for group in groups:
        for project, role in mapping.get(group, {}).items():
            current = roles[project]
            if current is None or RANK[role] > RANK[current]:
                roles[project] = role
    return roles


def apply_roles(user, groups: list[str]) -> None:
    """Make the user's roles, and superuser status, what their groups say now (audited)."""
    for key, role in roles_from_groups(groups).items():
        project = Project.objects.filter(key=key).first()
        if project is None:
            log.warning("OIDC_ROLE_MAP names project %r, which does not exist", key)
            continue
        current = Membership.objects.filter(project=project, user=user).first()
        if (current.role if current else None) != role:
            services.membership_set(
                project=project, user=user, role=role, actor=None, source=SOURCE
            )
    superuser = bool(set(groups) & set(settings.OIDC_SUPERUSER_GROUPS))
    entitled = superuser or Membership.objects.filter(user=user).exists()
    if (user.is_superuser, user.is_staff) != (superuser, entitled):
        before = {"superuser": user.is_superuser, "staff": user.is_staff}
        user.is_superuser, user.is_staff = superuser, entitled
        user.save(update_fields=["is_superuser", "is_staff"])
        services.audit(
            actor=None,
            source=SOURCE,
            action="access",
            obj_type="user",
            obj_key=user.get_username(),
            project=None,
            before=before,
            after={"superuser": superuser, "staff": entitled},
        )


# --- The authentication backend -----------------------------------------------------------


class SsoBackend(oidc_auth.OIDCAuthenticationBackend):
    """The library's backend, with discovery, issuer and audience checks, and role mapping."""

    get_settings = staticmethod(sso_setting)

    def __init__(self, *args, **kwargs) -> None:
        # The library reads every setting here; the endpoints are read when first used so
        # that an unreachable provider never breaks the sessions of people already in.
        self.UserModel = get_user_model()

    OIDC_RP_CLIENT_ID = property(lambda self: sso_setting("OIDC_RP_CLIENT_ID"))
    OIDC_RP_CLIENT_SECRET = property(lambda self: sso_setting("OIDC_RP_CLIENT_SECRET"))
    OIDC_RP_SIGN_ALGO = property(lambda self: sso_setting("OIDC_RP_SIGN_ALGO"))
    OIDC_RP_IDP_SIGN_KEY = None
    OIDC_OP_TOKEN_ENDPOINT = property(lambda self: sso_setting("OIDC_OP_TOKEN_ENDPOINT"))
    OIDC_OP_USER_ENDPOINT = property(lambda self: sso_setting("OIDC_OP_USER_ENDPOINT"))
    OIDC_OP_JWKS_ENDPOINT = property(lambda self: sso_setting("OIDC_OP_JWKS_ENDPOINT"))

    def verify_token(self, token, **kwargs) -> dict:
        payload = super().verify_token(token, **kwargs)
        if payload.get("iss") != settings.OIDC_ISSUER:
            raise SuspiciousOperation(f"the ID token's issuer is {payload.get('iss')!r}")
        audience = payload.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if settings.OIDC_CLIENT_ID not in audiences:
            raise SuspiciousOperation("the ID token is not meant for this client")
        if len(audiences) > 1 and payload.get("azp") != settings.OIDC_CLIENT_ID:
            raise SuspiciousOperation("the ID token was issued to another party")
        return payload

    def get_userinfo(self, access_token, id_token, payload) -> dict:
        info = super().get_userinfo(access_token, id_token, payload)
        if not isinstance(info, dict) or info.get("sub") != payload.get("sub"):
            raise SuspiciousOperation("the userinfo is about someone else than the ID token")
        return {**payload, **info}

    def verify_claims(self, claims: dict) -> bool:
        groups = claims.get(settings.OIDC_GROUPS_CLAIM, [])
        valid_groups = isinstance(groups, list) and all(isinstance(g, str) for g in groups)
        return isinstance(claims.get("sub"), str) and bool(claims["sub"]) and valid_groups

    def filter_users_by_claims(self, claims: dict):
        return self.UserModel.objects.filter(
            sso_identity__issuer=settings.OIDC_ISSUER, sso_identity__subject=claims["sub"]
        )

    def _username(self, claims: dict) -> str:
        for candidate in (claims.get("preferred_username"), claims.get("email")):
            if isinstance(candidate, str) and USERNAME.match(candidate):
                if not self.UserModel.objects.filter(username=candidate).exists():
                    return candidate
                # Taken by someone else (a local account): never take it over.
                return f"{candidate[:130]}-{services.key_digest(claims['sub'])[:8]}"
        return f"sso-{services.key_digest(claims['sub'])[:16]}"

    @transaction.atomic
    def create_user(self, claims: dict):
        user = self.UserModel.objects.create_user(
            self._username(claims), email=_email(claims), is_staff=False
        )  # no password: this person logs in through the provider only
        SsoIdentity.objects.create(user=user, issuer=settings.OIDC_ISSUER, subject=claims["sub"])
        return self.update_user(user, claims)

    @transaction.atomic
    def update_user(self, user, claims: dict):
        groups = claims.get(settings.OIDC_GROUPS_CLAIM, [])
        if user.email != _email(claims):
            user.email = _email(claims)
            user.save(update_fields=["email"])
        SsoIdentity.objects.filter(user=user).update(groups=groups, last_login_at=timezone.now())
        apply_roles(user, groups)
        return user

    def get_or_create_user(self, access_token, id_token, payload):
        user = super().get_or_create_user(access_token, id_token, payload)
        if user is not None and not user.is_staff:
            raise SuspiciousOperation(f"{user.get_username()}'s groups give no role here")
        return user


def _email(claims: dict) -> str:
    email = claims.get("email")
    return email[:254] if isinstance(email, str) and "\x00" not in email else ""


# --- The two views: to the provider and back ----------------------------------------------


def _failed(request: HttpRequest, message: str) -> HttpResponse:
    messages.error(request, f"Single sign-on failed: {message}")
    return HttpResponseRedirect(FIXED["LOGIN_REDIRECT_URL_FAILURE"])


class LoginView(oidc_views.OIDCAuthenticationRequestView):
    get_settings = staticmethod(sso_setting)

    def __init__(self, *args, **kwargs) -> None:
        oidc_views.View.__init__(self, *args, **kwargs)

    def get(self, request: HttpRequest) -> HttpResponse:
        if not enabled():
            raise Http404("single sign-on is not configured")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = sso_setting("OIDC_OP_AUTHORIZATION_ENDPOINT")
        except SsoUnavailable as error:
            log.warning("single sign-on unavailable: %s", error)
            return _failed(request, "the provider cannot be reached or is misconfigured")
        self.OIDC_RP_CLIENT_ID = sso_setting("OIDC_RP_CLIENT_ID")
        return super().get(request)


class CallbackView(oidc_views.OIDCAuthenticationCallbackView):
    get_settings = staticmethod(sso_setting)

    def get(self, request: HttpRequest) -> HttpResponse:
        if not enabled():
            raise Http404("single sign-on is not configured")
        try:
            response = super().get(request)
        except (SuspiciousOperation, SsoUnavailable, requests.RequestException) as error:
            log.warning("single sign-on refused: %s", error)
            return _failed(request, "the provider's answer did not verify")
        if not request.user.is_authenticated:
            return _failed(request, "you have no role here, or the login was cancelled")
        return response
