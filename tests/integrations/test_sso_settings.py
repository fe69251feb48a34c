"""Single sign-on is configured by environment variables, checked at start-up in a fresh
process: a mistake stops `manage.py check` with one line naming the variable."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.deploy.conftest import JWT_SECRET, REPO, clean_env, run_manage

SSO = {
    "JWT_SECRET": JWT_SECRET,
    "OIDC_ISSUER": "https://login.example.com/realms/acme",
    "OIDC_CLIENT_ID": "flags",
    "OIDC_CLIENT_SECRET": "s3cret",
}


@pytest.mark.parametrize(
    ("variables", "variable"),
    [
        ({**SSO, "OIDC_ROLE_MAP": "admins=shop"}, "OIDC_ROLE_MAP"),
        ({**SSO, "OIDC_ROLE_MAP": "admins=shop:owner"}, "OIDC_ROLE_MAP"),
        ({**SSO, "OIDC_ROLE_MAP": "admins=Shop!:admin"}, "OIDC_ROLE_MAP"),
        ({**SSO, "OIDC_CLIENT_SECRET": ""}, "OIDC_CLIENT_SECRET"),
        ({**SSO, "OIDC_ISSUER": "login.example.com"}, "OIDC_ISSUER"),
        ({**SSO, "OIDC_SCOPES": "email profile"}, "OIDC_SCOPES"),
        ({"JWT_SECRET": JWT_SECRET, "LOCAL_LOGIN": "false"}, "LOCAL_LOGIN"),
        ({**SSO, "NODE_ENV": "production", "OIDC_ISSUER": "http://idp.internal"}, "OIDC_ISSUER"),
    ],
)
def test_a_bad_sso_setting_stops_check_with_one_line_naming_it(variables, variable):
    result = run_manage("check", env=clean_env(**variables))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"configuration error: {variable}: "), lines


def test_the_variables_choose_who_may_log_in():
    probe = "import django, json; django.setup(); from django.conf import settings; "
    probe += "print(json.dumps(settings.AUTHENTICATION_BACKENDS))"

    def backends(**variables: str) -> list[str]:
        env = clean_env(DJANGO_SETTINGS_MODULE="flagsite.settings", **variables)
        done = subprocess.run(
            [sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    lockouts = "axes.backends.AxesStandaloneBackend"  # always first: refuses locked-out logins
    local = "django.contrib.auth.backends.ModelBackend"
    sso = "integrations.sso.SsoBackend"
    assert backends(JWT_SECRET=JWT_SECRET) == [lockouts, local]
    assert backends(**SSO, OIDC_ROLE_MAP="acme-admins=shop:admin") == [lockouts, sso, local]
    assert backends(**SSO, LOCAL_LOGIN="false") == [lockouts, sso]
