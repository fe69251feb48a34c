"""Single sign-on for the admin against a real OpenID Connect provider on loopback: login,
groups mapped to project roles at every login, removal from a group, superusers, local
accounts switched off, and a wrong issuer or a bad signature refused."""

from __future__ import annotations

import httpx
import pytest
from django.contrib.auth import get_user_model

from flags.models import AuditEntry, Membership
from integrations.conf import LOCAL_BACKEND, SSO_BACKEND
from integrations.models import SsoIdentity
from tests import factories
from tests.integrations.oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider, sso_login

PASSWORD = "provider-password"
ROLE_MAP = "flags-admins=shop:admin, flags-devs=shop:editor, flags-devs=checkout:viewer"


def person(*groups: str) -> dict:
    return {"password": PASSWORD, "email": "alice@example.com", "groups": list(groups)}


@pytest.fixture
def start_provider(tmp_path, live_server, settings):
    """Start a provider and point the service at it; `configured_issuer` may differ."""
    started: list[Provider] = []

    def start(users: dict, *, configure_origin: bool = False, **options) -> Provider:
        provider = Provider(
            workdir=tmp_path,
            redirect_uri=f"{live_server.url}/oidc/callback/",
            users=users,
            **options,
        )
        started.append(provider)
        # The issuer configured here: the provider's own, or its bare origin.
        settings.OIDC_ISSUER = provider.url + ("" if configure_origin else provider.issuer_path)
        settings.OIDC_CLIENT_ID = CLIENT_ID
        settings.OIDC_CLIENT_SECRET = CLIENT_SECRET
        settings.OIDC_SCOPES = "openid email profile groups"
        settings.OIDC_ROLE_MAP = ROLE_MAP
        settings.OIDC_SUPERUSER_GROUPS = ["flags-root"]
        settings.AUTHENTICATION_BACKENDS = [SSO_BACKEND, LOCAL_BACKEND]
        return provider

    yield start
    for provider in started:
        provider.stop()


@pytest.fixture
def projects(transactional_db):
    return factories.project("shop"), factories.project("checkout")


def roles(username: str) -> dict[str, str]:
    rows = Membership.objects.filter(user__username=username).values_list("project__key", "role")
    return dict(rows)


def test_login_gives_the_roles_of_the_groups_and_takes_them_away_at_next_login(
    start_provider, projects, live_server
):
    provider = start_provider({"alice": person("flags-devs")})

    _, page = sso_login(live_server.url, "alice", PASSWORD)

    assert page.status_code == 200 and page.url.path == "/admin/", page.text[:500]
    assert "alice" in page.text
    assert roles("alice") == {"shop": "editor", "checkout": "viewer"}
    user = get_user_model().objects.get(username="alice")
    assert user.is_staff and not user.is_superuser and not user.has_usable_password()
    identity = SsoIdentity.objects.get(user=user)
    assert identity.issuer == provider.url and identity.groups == ["flags-devs"]

    # Moved from the developers to the admins: the next login says so.
    provider.set_users({"alice": person("flags-admins")})
    _, page = sso_login(live_server.url, "alice", PASSWORD)
    assert page.url.path == "/admin/"
    assert roles("alice") == {"shop": "admin"}

    # Taken out of every group: the role goes and the door stays shut.
    provider.set_users({"alice": person()})
    _, page = sso_login(live_server.url, "alice", PASSWORD)
    assert page.url.path == "/admin/login/"
    assert "Single sign-on failed" in page.text
    assert roles("alice") == {}
    assert get_user_model().objects.get(username="alice").is_staff is False
    changes = AuditEntry.objects.filter(source="sso", object_type="membership")
    assert changes.count() == 5  # editor+viewer, admin and none in shop, none in checkout
    assert get_user_model().objects.filter(username__startswith="alice").count() == 1


def test_a_superuser_group_grants_and_takes_superuser_status(start_provider, projects, live_server):
    provider = start_provider({"root": person("flags-root")})

    _, page = sso_login(live_server.url, "root", PASSWORD)
    assert page.url.path == "/admin/"
    assert get_user_model().objects.get(username="root").is_superuser

    provider.set_users({"root": person("flags-root-former")})
    _, page = sso_login(live_server.url, "root", PASSWORD)
    assert page.url.path == "/admin/login/"
    assert not get_user_model().objects.get(username="root").is_superuser


def test_a_local_account_with_the_same_name_is_never_taken_over(
    start_provider, projects, live_server
):
    local = factories.user("alice")
    start_provider({"alice": person("flags-admins")})

    _, page = sso_login(live_server.url, "alice", PASSWORD)

    assert page.url.path == "/admin/"
    identity = SsoIdentity.objects.get()
    assert identity.user != local and identity.user.username.startswith("alice-")
    assert roles("alice") == {}


def test_local_accounts_can_be_switched_off(start_provider, projects, live_server, settings):
    factories.member(projects[0], "admin", username="local-admin")
    start_provider({"alice": person("flags-admins")})
    settings.LOCAL_LOGIN = False
    settings.AUTHENTICATION_BACKENDS = [SSO_BACKEND]

    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        login_page = client.get("/admin/login/")
        assert "Sign in with single sign-on" in login_page.text
        assert 'name="password"' not in login_page.text
        token = client.post(
            "/api/v1/auth/token/",
            json={"username": "local-admin", "password": "correct-horse-battery-staple"},
        )
        assert token.status_code == 401

    _, page = sso_login(live_server.url, "alice", PASSWORD)
    assert page.url.path == "/admin/"


def test_local_accounts_still_log_in_beside_single_sign_on(start_provider, projects, live_server):
    factories.member(projects[0], "admin", username="local-admin")
    start_provider({})
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        page = client.get("/admin/login/")
        assert "Sign in with single sign-on" in page.text and 'name="password"' in page.text
        token = client.post(
            "/api/v1/auth/token/",
            json={"username": "local-admin", "password": "correct-horse-battery-staple"},
        )
        assert token.status_code == 200


def test_a_provider_that_is_not_the_configured_issuer_is_refused(
    start_provider, projects, live_server
):
    # Its discovery document names another issuer than the one configured.
    start_provider(
        {"alice": person("flags-admins")}, issuer_path="/elsewhere", configure_origin=True
    )

    _, page = sso_login(live_server.url, "alice", PASSWORD)

    assert page.url.path == "/admin/login/" and "cannot be reached or is misconfigured" in page.text
    assert not get_user_model().objects.filter(username="alice").exists()


def test_an_id_token_from_another_issuer_is_refused(start_provider, projects, live_server):
    # Its discovery document claims the configured issuer; its tokens say who signed them.
    start_provider(
        {"alice": person("flags-admins")},
        issuer_path="/real",
        announce_origin=True,
        configure_origin=True,
    )

    _, page = sso_login(live_server.url, "alice", PASSWORD)

    assert page.url.path == "/admin/login/" and "did not verify" in page.text
    assert not get_user_model().objects.filter(username="alice").exists()


def test_an_id_token_with_a_bad_signature_is_refused(start_provider, projects, live_server):
    start_provider({"alice": person("flags-admins")}, forge_jwks=True)

    _, page = sso_login(live_server.url, "alice", PASSWORD)

    assert page.url.path == "/admin/login/" and "did not verify" in page.text
    assert not get_user_model().objects.filter(username="alice").exists()


@pytest.mark.django_db
def test_the_sso_doors_are_closed_when_it_is_not_configured(client, settings):
    settings.OIDC_ISSUER = ""
    assert client.get("/oidc/authenticate/").status_code == 404
    assert client.get("/oidc/callback/?code=x&state=y").status_code == 404
    assert 'name="password"' in client.get("/admin/login/").content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    [
        "code=x&state=forged",
        "code=%00&state=%00",
        "code=" + "a" * 5000 + "&state=" + "b" * 5000,
        "state=%ED%A0%80&code=%F0%9F",
        "error=access_denied&state=nothing",
        "",
    ],
)
def test_a_forged_or_hostile_callback_goes_back_to_the_login_page(client, settings, query):
    settings.OIDC_ISSUER = "http://127.0.0.1:9/never-contacted"
    settings.OIDC_CLIENT_ID, settings.OIDC_CLIENT_SECRET = CLIENT_ID, CLIENT_SECRET
    settings.AUTHENTICATION_BACKENDS = [SSO_BACKEND, LOCAL_BACKEND]

    response = client.get(f"/oidc/callback/?{query}")

    assert response.status_code == 302 and response["Location"] == "/admin/login/"
    assert get_user_model().objects.count() == 0
