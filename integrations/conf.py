"""Settings of the integrations, derived from the environment's values by flagsite.settings.

Pure: imports nothing from Django, so the settings module can call it before Django is set
up. A bad value raises `ConfigurationError(variable, problem)`, which the settings turn into
their one-line start-up error.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

ROLES = ("viewer", "editor", "publisher", "admin")
PROJECT_KEY = re.compile(r"[a-z0-9][a-z0-9_.-]*\Z")
LOCAL_BACKEND = "django.contrib.auth.backends.ModelBackend"
SSO_BACKEND = "integrations.sso.SsoBackend"


class ConfigurationError(ValueError):
    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(variable, problem)
        self.variable = variable
        self.problem = problem


def role_map(text: str) -> dict[str, dict[str, str]]:
    """`GROUP=PROJECT:ROLE, ...` -> {group: {project: role}}; a group may name many projects.

    The group is everything before the last `=`, so group names may hold `/` or spaces
    (Keycloak's `/flags/admins`, Azure's object ids).
    """
    mapping: dict[str, dict[str, str]] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        group, equals, grant = entry.rpartition("=")
        project, colon, role = grant.strip().partition(":")
        group, project, role = group.strip(), project.strip(), role.strip()
        if not equals or not group or not colon:
            raise ConfigurationError("OIDC_ROLE_MAP", f"{entry!r} is not GROUP=PROJECT:ROLE")
        if not PROJECT_KEY.match(project):
            raise ConfigurationError("OIDC_ROLE_MAP", f"{project!r} is not a project key")
        if role not in ROLES:
            raise ConfigurationError(
                "OIDC_ROLE_MAP", f"unknown role {role!r} (one of {', '.join(ROLES)})"
            )
        mapping.setdefault(group, {})[project] = role
    return mapping


def sso_settings(
    *,
    issuer: str,
    client_id: str,
    client_secret: str,
    scopes: str,
    role_map_text: str,
    local_login: bool,
    production_like: bool,
) -> dict:
    """Django settings for the admin's login: which backends authenticate people."""
    role_map(role_map_text)  # refuse a bad map at start-up, not at the first login
    backends = [LOCAL_BACKEND] if local_login else []
    if not issuer:
        if not local_login:
            raise ConfigurationError(
                "LOCAL_LOGIN", "false needs single sign-on (set OIDC_ISSUER), or nobody logs in"
            )
        return {"AUTHENTICATION_BACKENDS": backends}
    parts = urlsplit(issuer)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query:
        raise ConfigurationError("OIDC_ISSUER", f"{issuer!r} is not an https:// issuer URL")
    if production_like and parts.scheme != "https":
        raise ConfigurationError("OIDC_ISSUER", "must be https:// when production-like")
    for variable, value in (("OIDC_CLIENT_ID", client_id), ("OIDC_CLIENT_SECRET", client_secret)):
        if not value:
            raise ConfigurationError(variable, "must be set with OIDC_ISSUER")
    if "openid" not in scopes.split():
        raise ConfigurationError("OIDC_SCOPES", "must include openid")
    return {"AUTHENTICATION_BACKENDS": [SSO_BACKEND, *backends]}
