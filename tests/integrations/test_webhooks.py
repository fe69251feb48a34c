"""Outgoing webhooks against real receivers on loopback: what is sent, signed, filtered,
retried, kept in order, given up on, shown in the admin; Slack messages."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient

from flags import approvals, services
from flags.models import AuditEntry
from integrations import delivery, events, webhooks
from integrations.models import Delivery, Webhook
from tests import factories

pytestmark = pytest.mark.django_db
SYSTEM = factories.SYSTEM


def api_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def config_url(flag, environment: str, rest: str = "") -> str:
    return f"/api/v1/projects/{flag.project.key}/flags/{flag.key}/environments/{environment}{rest}"


@pytest.fixture
def project():
    return factories.project("shop")


@pytest.fixture
def flag(project):
    return factories.flag(project, "new-checkout")


@pytest.fixture
def admin(project):
    return factories.member(project, "admin", username="alice")


def hook(project, url: str, **data) -> tuple[Webhook, str]:
    return webhooks.webhook_create(
        project=project, data={"name": "receiver", "url": url, **data}, **SYSTEM
    )


def test_a_switch_is_delivered_signed_with_the_version_historys_diff(
    project, flag, admin, receivers, documented_verify
):
    receiver = receivers()
    webhook, secret = hook(project, receiver.url)
    api = api_for(admin)

    switched = api.post(config_url(flag, "development", "/toggle"), {"enabled": True}, "json")
    assert switched.status_code == 200, switched.content
    assert receiver.received == []  # queued, not sent by the write

    sent = delivery.deliver_due()

    assert [d.status for d in sent] == ["sent"]
    (request,) = receiver.received
    assert documented_verify(secret, request.headers, request.body)
    assert not documented_verify("whsec_wrong", request.headers, request.body)
    body = request.json
    assert body["kind"] == "flag.switched" and request.headers["X-Flags-Event"] == "flag.switched"
    assert body["kinds"] == ["flag.switched", "flag.changed"]
    assert (body["project"], body["environment"], body["flag"]) == (
        "shop",
        "development",
        "new-checkout",
    )
    assert body["actor"] == "alice" and body["source"] == "api" and body["version"] == 2
    versions = api.get(config_url(flag, "development", "/versions")).json()
    newest = versions["results"][0] if isinstance(versions, dict) else versions[0]
    assert body["changes"] == newest["changes"] == ["enabled: off → on"]
    assert body["before"]["enabled"] is False and body["after"]["enabled"] is True


def test_a_tampered_or_replayed_delivery_does_not_verify(
    project, flag, receivers, documented_verify
):
    receiver = receivers()
    _, secret = hook(project, receiver.url)
    factories.configure(flag, "development", enabled=True)
    delivery.deliver_due()
    (request,) = receiver.received

    tampered = request.body.replace(b'"enabled":true', b'"enabled":false')
    assert tampered != request.body
    assert not documented_verify(secret, request.headers, tampered)
    old = {
        **request.headers,
        "X-Flags-Timestamp": str(int(request.headers["X-Flags-Timestamp"]) - 301),
    }
    assert not documented_verify(secret, old, request.body)


def test_webhooks_get_only_their_environments_and_kinds(project, flag, receivers):
    production_only = receivers()
    archive_only = receivers()
    everything = receivers()
    hook(project, production_only.url, environments=["production"])
    hook(project, archive_only.url, kinds=["flag.archived"])
    hook(project, everything.url)

    factories.configure(flag, "development", enabled=True)
    factories.configure(flag, "production", offVariant="on")
    services.flag_update(flag=flag, data={"archived": True}, **SYSTEM)
    delivery.deliver_due()

    assert [(r.json["kind"], r.json["environment"]) for r in production_only.received] == [
        ("flag.changed", "production"),
        ("flag.archived", None),  # a flag's own change concerns every environment
    ]
    assert [r.json["kind"] for r in archive_only.received] == ["flag.archived"]
    assert [r.json["kind"] for r in everything.received] == [
        "flag.switched",
        "flag.changed",
        "flag.archived",
    ]


def test_a_change_that_rolls_back_sends_nothing(project, flag, receivers):
    receiver = receivers()
    hook(project, receiver.url)

    with pytest.raises(RuntimeError), transaction.atomic():
        factories.configure(flag, "development", enabled=True)
        raise RuntimeError("the change fails after its audit entry was written")

    assert Delivery.objects.count() == 0
    assert delivery.deliver_due() == []
    assert receiver.received == []


def test_a_failed_attempt_is_retried_with_exponential_backoff(project, flag, receivers, settings):
    settings.WEBHOOK_RETRY_SECONDS = 10
    receiver = receivers(statuses=[500, 503])
    hook(project, receiver.url)
    factories.configure(flag, "development", enabled=True)
    start = timezone.now()

    def at(seconds: float) -> list[Delivery]:
        return delivery.deliver_due(start + timedelta(seconds=seconds))

    assert [d.error for d in at(0)] == ["answered HTTP 500"]
    assert at(9) == []  # first retry after 10 s
    assert [d.error for d in at(11)] == ["answered HTTP 503"]
    assert at(11 + 19) == []  # then after 20 s
    (sent,) = at(11 + 21)

    assert sent.status == "sent" and sent.attempts == 3 and sent.response_status == 200
    assert len(receiver.received) == 3
    assert len({r.headers["X-Flags-Delivery"] for r in receiver.received}) == 1
    timestamps = [int(r.headers["X-Flags-Timestamp"]) for r in receiver.received]
    assert timestamps == sorted(timestamps)  # each attempt signed anew


def test_a_receiver_gets_changes_in_order_even_behind_a_retry(project, flag, receivers):
    receiver = receivers(statuses=[500])
    hook(project, receiver.url)
    for variant in ("off", "on", "off"):
        factories.configure(flag, "development", defaultServe={"variant": variant})
    start = timezone.now()

    assert len(delivery.deliver_due(start)) == 1  # the first failed: the others wait behind it
    assert len(receiver.received) == 1
    assert len(delivery.deliver_due(start + timedelta(minutes=5))) == 3

    versions = [r.json["version"] for r in receiver.received]
    assert versions == [2, 2, 3, 4]


def test_repeated_failures_disable_the_webhook(project, flag, receivers, settings):
    settings.WEBHOOK_DISABLE_AFTER = 3
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    receiver = receivers(statuses=[500] * 10)
    webhook, _ = hook(project, receiver.url)
    for enabled in (True, False):
        factories.configure(flag, "development", enabled=enabled)
    start = timezone.now()

    for minutes in range(10):
        delivery.deliver_due(start + timedelta(minutes=minutes))

    webhook.refresh_from_db()
    assert webhook.active is False and "3 failed attempts" in webhook.disabled_reason
    assert len(receiver.received) == 3
    assert list(webhook.deliveries.order_by("id").values_list("status", "attempts")) == [
        ("failed", 2),
        ("failed", 1),
    ]
    factories.configure(flag, "development", enabled=True)
    assert webhook.deliveries.count() == 2  # a disabled webhook gets nothing new

    webhooks.webhook_update(webhook=webhook, data={"active": True}, **SYSTEM)
    webhook.refresh_from_db()
    assert webhook.active and webhook.failures == 0 and webhook.disabled_reason == ""


def test_an_unreachable_receiver_is_an_attempt_that_failed(project, flag, settings):
    hook(project, "http://127.0.0.1:9/nothing-listens-here")
    factories.configure(flag, "development", enabled=True)

    (attempt,) = delivery.deliver_due()

    assert attempt.status == "pending" and attempt.attempts == 1
    assert attempt.error.startswith("cannot connect")


def test_change_requests_opened_and_approved_are_events(project, flag, receivers):
    project.require_approval = True
    project.save()
    receiver = receivers()
    hook(project, receiver.url, kinds=["change_request.opened", "change_request.approved"])
    author = factories.member(project, "editor", username="ed")
    reviewer = factories.member(project, "publisher", username="pat")

    request = approvals.change_request_create(
        config=factories.config(flag, "production"),
        data={"enabled": True},
        title="Launch",
        actor=author,
        source="api",
    )
    approvals.change_request_review(request=request, approve=True, actor=reviewer, source="api")
    delivery.deliver_due()

    opened, approved = (r.json for r in receiver.received)
    assert opened["kind"] == "change_request.opened" and opened["actor"] == "ed"
    assert opened["changes"] == ["enabled: off → on"]
    assert approved["kind"] == "change_request.approved" and approved["actor"] == "pat"
    assert approved["changeRequest"] == {"id": request.pk, "title": "Launch", "author": "ed"}


def test_an_approved_segment_request_is_an_event_of_each_environment_it_changes(
    project, flag, receivers
):
    project.require_approval = True
    project.save()
    services.segment_create(project=project, key="beta", data={"included": ["u1"]}, **SYSTEM)
    rule = {"conditions": [{"operator": "in_segment", "values": ["beta"]}]}
    services.flag_config_update(
        config=factories.config(flag, "production"),
        data={"enabled": True, "rules": [{**rule, "serve": {"variant": "on"}}]},
        **SYSTEM,
    )
    production, staging = receivers(), receivers()
    hook(project, production.url, kinds=["change_request.approved"], environments=["production"])
    hook(project, staging.url, kinds=["change_request.approved"], environments=["staging"])
    author = factories.member(project, "editor", username="ed")
    reviewer = factories.member(project, "publisher", username="pat")

    request = approvals.segment_change_request_create(
        segment=project.segments.get(key="beta"),
        data={"included": ["u1", "u2"]},
        actor=author,
        source="api",
    )
    approvals.change_request_review(request=request, approve=True, actor=reviewer, source="api")
    delivery.deliver_due()

    (approved,) = (r.json for r in production.received)
    assert approved["kind"] == "change_request.approved" and approved["segment"] == "beta"
    assert approved["environment"] == "production" and approved["actor"] == "pat"
    assert staging.received == [], "staging's answers did not change"


def test_rollout_steps_and_guarded_pauses_are_events(project, flag, receivers):
    from flags import schedules

    receiver = receivers()
    hook(project, receiver.url, kinds=["rollout.step", "guarded_rollout.paused"])
    config = factories.config(flag, "staging")
    now = timezone.now()
    schedules.rollout_create(
        config=config,
        variant="on",
        steps=[{"at": now + timedelta(minutes=1), "percentage": 10}],
        **SYSTEM,
    )
    schedules.due_changes_apply(now + timedelta(minutes=2))
    events.guarded_rollout_paused(config=config, reason="error rate 4% over 1%")
    delivery.deliver_due()

    step, paused = (r.json for r in receiver.received)
    assert step["kind"] == "rollout.step" and step["source"] == "scheduler"
    assert "enabled: off → on" in step["changes"]
    assert paused["kind"] == "guarded_rollout.paused"
    assert paused["reason"] == "error rate 4% over 1%"


def test_slack_format_renders_a_readable_message_that_pings_nobody(project, flag, receivers):
    receiver = receivers()
    hook(project, receiver.url, format="slack")
    rule = {"name": "<!channel> beta & co", "conditions": [], "serve": {"variant": "on"}}
    factories.configure(flag, "production", enabled=True, rules=[rule])
    delivery.deliver_due()

    message = receiver.received[0].json
    assert message["text"] == "*system* switched *new-checkout* on in *production* (shop)"
    assert message["blocks"][0]["text"]["text"] == message["text"]
    changes = message["blocks"][1]["text"]["text"]
    assert "• enabled: off → on" in changes
    assert "&lt;!channel&gt; beta &amp; co" in changes and "<!channel>" not in changes
    assert message["blocks"][2]["elements"][0]["text"].startswith("flag.switched · system · ")


def test_hostile_webhook_settings_are_refused_naming_the_field(project):
    cases = [
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "http://exa mple.com/"}, "url"),
        ({"url": "http://example.com/\x00"}, "url"),
        ({"url": "http://example.com/" + "a" * 3000}, "url"),
        ({"name": "\ud800"}, "name"),
        ({"kinds": ["flag.exploded"]}, "kinds"),
        ({"kinds": "flag.changed"}, "kinds"),
        ({"environments": ["moon"]}, "environments"),
        ({"format": "xml"}, "format"),
        ({"colour": "red"}, "colour"),
    ]
    for data, field in cases:
        with pytest.raises(ValidationError) as caught:
            webhooks.webhook_create(
                project=project, data={"name": "x", "url": "http://127.0.0.1:1/", **data}, **SYSTEM
            )
        assert field in caught.value.message_dict, (data, caught.value)
    assert Webhook.objects.count() == 0


def test_webhook_changes_are_audited_without_secret_or_url_path(project, admin):
    webhook, secret = webhooks.webhook_create(
        project=project,
        data={"name": "slack", "url": "https://hooks.slack.com/services/T0/B0/XYZSECRET"},
        actor=admin,
        source="admin",
    )
    entry = AuditEntry.objects.get(object_type="webhook")
    text = json.dumps([entry.before, entry.after])
    assert entry.actor_name == "alice" and entry.after["host"] == "hooks.slack.com"
    assert "XYZSECRET" not in text and secret not in text
    editor = factories.member(project, "editor")
    with pytest.raises(PermissionDenied, match="needs the admin role"):
        webhooks.webhook_update(webhook=webhook, data={"active": False}, actor=editor, source="api")


def test_every_delivery_is_visible_to_project_admins_in_the_admin(
    project, flag, admin, receivers, client
):
    receiver = receivers(statuses=[500])
    hook(project, receiver.url)
    factories.configure(flag, "development", enabled=True)
    delivery.deliver_due()

    client.force_login(admin)
    page = client.get("/admin/integrations/delivery/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "flag.switched" in text and "answered HTTP 500" in text and "pending" in text
    detail = client.get(f"/admin/integrations/delivery/{Delivery.objects.get().pk}/change/")
    assert "enabled: off → on" in detail.content.decode()

    client.force_login(factories.member(project, "editor"))
    assert client.get("/admin/integrations/delivery/").status_code == 403


def test_the_admin_shows_a_new_webhooks_secret_once(project, admin, client):
    client.force_login(admin)
    response = client.post(
        "/admin/integrations/webhook/add/",
        {
            "project": project.pk,
            "name": "ops",
            "url": "https://ops.example.com/flags",
            "format": "json",
            "environments": "production",
            "kinds": ["flag.switched"],
            "active": "on",
        },
        follow=True,
    )
    assert response.status_code == 200
    webhook = Webhook.objects.get()
    assert webhook.environments == ["production"] and webhook.kinds == ["flag.switched"]
    assert webhook.secret in response.content.decode()
    again = client.get(f"/admin/integrations/webhook/{webhook.pk}/change/")
    assert webhook.secret not in again.content.decode()


def test_receivers_at_private_addresses_are_refused_unless_allowed(
    project, flag, receivers, settings
):
    settings.WEBHOOK_PRIVATE_TARGETS = False
    receiver = receivers()
    hook(project, receiver.url.replace("127.0.0.1", "localhost"))
    factories.configure(flag, "development", enabled=True)

    (attempt,) = delivery.deliver_due()

    assert attempt.error.startswith("refused: the receiver is at private address")
    assert receiver.received == []
    settings.WEBHOOK_PRIVATE_TARGETS = True
    assert [d.status for d in delivery.deliver_due(timezone.now() + timedelta(minutes=1))] == [
        "sent"
    ]


def test_the_changes_comment_reaches_the_receivers(project, flag, receivers):
    plain, slack = receivers(), receivers()
    hook(project, plain.url)
    webhooks.webhook_create(
        project=project, data={"name": "slack", "url": slack.url, "format": "slack"}, **SYSTEM
    )
    config = factories.config(flag, "production")
    services.flag_toggle(config=config, enabled=True, comment="Launch <!channel>", **SYSTEM)
    delivery.deliver_due()

    assert plain.received[0].json["comment"] == "Launch <!channel>"
    texts = [block["text"]["text"] for block in slack.received[0].json["blocks"] if "text" in block]
    assert "_Why:_ Launch &lt;!channel&gt;" in texts
