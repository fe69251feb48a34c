"""Incoming triggers over HTTP: switch a flag for an alerting system, audited as the trigger,
throttled, hashed, revocable, careful with protected environments, and hostile bodies."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from flags import schedules, services
from flags.models import AuditEntry, ScheduledChange
from integrations import triggers
from integrations.models import Trigger
from tests import factories

pytestmark = pytest.mark.django_db
SYSTEM = factories.SYSTEM

ALERTMANAGER = {
    "version": "4",
    "status": "firing",
    "receiver": "flags",
    "groupLabels": {"alertname": "CheckoutErrors"},
    "commonLabels": {"alertname": "CheckoutErrors", "severity": "page"},
    "alerts": [{"status": "firing", "labels": {"alertname": "CheckoutErrors"}}],
}


@pytest.fixture
def project():
    return factories.project("shop")


@pytest.fixture
def admin(project):
    return factories.member(project, "admin", username="alice")


@pytest.fixture
def flag(project):
    flag = factories.flag(project, "new-checkout")
    for environment in ("staging", "production"):
        factories.configure(flag, environment, enabled=True)
    return flag


def make(flag, admin, environment: str = "staging", **options) -> tuple[Trigger, str]:
    return triggers.trigger_create(
        flag=flag,
        environment=factories.environment(flag.project, environment),
        name=options.pop("name", "alertmanager"),
        actor=admin,
        source="admin",
        **options,
    )


def fire(client, trigger: Trigger, secret: str, body=None, **headers):
    data = json.dumps(body) if body is not None and not isinstance(body, bytes | str) else body
    return client.post(
        f"/api/v1/triggers/{trigger.uid}",
        data=data or b"",
        content_type="application/json",
        headers={"Authorization": f"Bearer {secret}", **headers},
    )


def test_an_alert_switches_the_flag_off_audited_as_the_trigger(client, flag, admin):
    trigger, secret = make(flag, admin)

    response = fire(client, trigger, secret, ALERTMANAGER)

    assert response.status_code == 200, response.content
    assert response.json() == {
        "trigger": trigger.uid,
        "flag": "new-checkout",
        "environment": "staging",
        "enabled": False,
        "changed": True,
        "version": 3,
    }
    config = factories.config(flag, "staging")
    assert config.enabled is False
    assert config.versions.get(version=3).actor_name == "trigger:alertmanager"
    change = AuditEntry.objects.get(object_type="flag_config", action="kill")
    assert (change.actor_name, change.source) == ("trigger:alertmanager", "trigger")
    fired = AuditEntry.objects.get(object_type="trigger", action="fire")
    assert fired.after == {
        "changed": True,
        "enabled": False,
        "version": 3,
        "reason": "firing: CheckoutErrors",
    }

    again = fire(client, trigger, secret, {"reason": "still failing"})
    assert again.json()["changed"] is False and again.json()["version"] == 3
    trigger.refresh_from_db()
    assert trigger.fired == 2 and trigger.last_fired_at is not None


def test_an_on_trigger_switches_the_flag_on(client, flag, admin):
    factories.configure(flag, "staging", enabled=False)
    trigger, secret = make(flag, admin, action="on", name="recovered")

    response = fire(client, trigger, secret)

    assert response.json()["enabled"] is True
    assert factories.config(flag, "staging").enabled is True


def test_the_secret_may_come_in_the_query_for_tools_that_only_take_a_url(client, flag, admin):
    trigger, secret = make(flag, admin)
    response = client.post(f"/api/v1/triggers/{trigger.uid}?token={secret}")
    assert response.status_code == 200 and response.json()["enabled"] is False


def test_the_secret_is_shown_once_and_stored_as_its_digest(flag, admin, client):
    client.force_login(admin)
    created = client.post(
        "/admin/integrations/trigger/add/",
        {
            "flag": flag.pk,
            "environment": factories.environment(flag.project, "staging").pk,
            "action": "off",
            "name": "datadog",
        },
        follow=True,
    )
    trigger = Trigger.objects.get()
    page = created.content.decode()
    secret = page.split('class="flags-secret">', 1)[1].split("<", 1)[0]
    assert secret.startswith("fft_") and len(secret) > 40
    assert f"/api/v1/triggers/{trigger.uid}" in page
    assert trigger.digest == triggers.digest(secret)
    stored = json.dumps(list(Trigger.objects.values()), default=str)
    audit = json.dumps(list(AuditEntry.objects.values("before", "after")), default=str)
    assert secret not in stored and secret not in audit
    detail = client.get(f"/admin/integrations/trigger/{trigger.pk}/change/").content.decode()
    assert secret not in detail and trigger.prefix in detail


def test_wrong_secret_unknown_trigger_and_revoked_trigger_are_refused(client, flag, admin):
    trigger, secret = make(flag, admin)

    wrong = fire(client, trigger, "fft_not-the-secret")
    unknown = client.post(
        "/api/v1/triggers/trg_nope", headers={"Authorization": f"Bearer {secret}"}
    )
    missing = client.post(f"/api/v1/triggers/{trigger.uid}")
    assert [wrong.status_code, unknown.status_code, missing.status_code] == [401, 401, 401]
    assert wrong.json()["error"] == "not_authenticated"
    assert factories.config(flag, "staging").enabled is True

    triggers.trigger_revoke(trigger=trigger, actor=admin, source="admin")
    revoked = fire(client, trigger, secret)
    assert revoked.status_code == 403 and "revoked" in revoked.json()["detail"]
    assert factories.config(flag, "staging").enabled is True
    assert AuditEntry.objects.filter(object_type="trigger", action="revoke").count() == 1


def test_firings_are_throttled_per_trigger_and_guessers_per_address(client, flag, admin, settings):
    settings.TRIGGER_RATE_PER_MINUTE = 3
    trigger, secret = make(flag, admin)
    statuses = [fire(client, trigger, secret).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    throttled = fire(client, trigger, secret)
    assert throttled.json()["error"] == "throttled" and int(throttled["Retry-After"]) <= 60
    assert AuditEntry.objects.filter(object_type="trigger", action="fire").count() == 3

    other, other_secret = make(flag, admin, name="grafana")
    guesses = [fire(client, other, "fft_guess").status_code for _ in range(35)]
    assert guesses.count(401) == triggers.FAILURES_PER_MINUTE and guesses[-1] == 429
    # Guessing never locks out the holder of the secret.
    assert fire(client, other, other_secret).status_code == 200


def test_a_protected_environment_needs_an_explicit_grant_from_a_project_admin(
    client, project, flag, admin
):
    with pytest.raises(ValidationError) as refused:
        make(flag, admin, "production")
    assert "protected_grant" in refused.value.message_dict
    publisher = factories.member(project, "publisher")
    with pytest.raises(PermissionDenied):
        make(flag, publisher, "production", protected_grant=True)

    project.require_approval = True
    project.save()
    trigger, secret = make(flag, admin, "production", protected_grant=True)
    created = AuditEntry.objects.get(object_type="trigger", action="create")
    assert created.actor_name == "alice" and created.after["protected_grant"] is True
    assert trigger.granted_by == admin

    # An alert switches production off with no change request: that is the grant.
    response = fire(client, trigger, secret, ALERTMANAGER)
    assert response.status_code == 200 and response.json()["enabled"] is False


def test_an_environment_protected_after_the_trigger_was_made_refuses_it(client, flag, admin):
    trigger, secret = make(flag, admin)
    staging = factories.environment(flag.project, "staging")
    services.environment_update(environment=staging, data={"protected": True}, **SYSTEM)

    response = fire(client, trigger, secret)

    assert response.status_code == 403 and "no grant" in response.json()["detail"]
    assert factories.config(flag, "staging").enabled is True


def test_an_off_trigger_cancels_the_rollout_steps_that_would_switch_it_back_on(client, flag, admin):
    config = factories.config(flag, "staging")
    later = timezone.now() + timedelta(hours=1)
    schedules.rollout_create(
        config=config, variant="on", steps=[{"at": later, "percentage": 50}], **SYSTEM
    )
    trigger, secret = make(flag, admin)

    assert fire(client, trigger, secret).status_code == 200

    assert ScheduledChange.objects.get().status == "cancelled"
    schedules.due_changes_apply(later + timedelta(minutes=1))
    assert factories.config(flag, "staging").enabled is False


HOSTILE = [
    (b'{"reason": "a\\u0000b"}', 400, "reason"),
    (b'{"alerts": [{"labels": {"x": "\\u0000"}}]}', 400, "body"),
    (b'{"reason": "\\ud800"}', 400, "reason"),
    (b'{"k\\udfff": 1}', 400, "body"),
    (b"[" * 10_000 + b"]" * 10_000, 400, "body"),
    (b'{"a":' * 5_000 + b"1" + b"}" * 5_000, 400, "body"),
    (b"\xff\xfe not utf-8", 400, "body"),
    (b'{"reason": NaN}', 400, "body"),
    (b"[1, 2]", 400, "body"),
    (b'{"reason": 12}', 400, "reason"),
    (b'{"reason": "x"', 400, "body"),
    (b'{"reason": "' + b"a" * 70_000 + b'"}', 413, "body"),
]


@pytest.mark.parametrize(("body", "status", "field"), HOSTILE)
def test_hostile_bodies_get_a_json_4xx_naming_the_field(client, flag, admin, body, status, field):
    trigger, secret = make(flag, admin)

    response = fire(client, trigger, secret, body)

    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert field in response.json()["fields"], response.json()
    assert factories.config(flag, "staging").enabled is True


def test_wrong_methods_and_oversized_secrets_get_json(client, flag, admin):
    trigger, _ = make(flag, admin)
    got = client.get(f"/api/v1/triggers/{trigger.uid}")
    assert got.status_code == 405 and got["Allow"] == "POST" and got.json()["error"]
    huge = fire(client, trigger, "fft_" + "x" * 100_000)
    assert huge.status_code == 401
    odd = client.post("/api/v1/triggers/" + "\u00e9" * 500, headers={"Authorization": "Bearer x"})
    assert odd.status_code == 401
