"""Sending queued webhook deliveries: signing, Slack messages, retries, the worker.

A receiver gets its deliveries one at a time, oldest first: a worker leases the webhook
(`lease_until`), sends the head of its queue outside any transaction, then records the
outcome. A failed attempt is retried with exponential back-off (`WEBHOOK_RETRY_SECONDS`,
doubled each time, at most an hour) up to `WEBHOOK_MAX_ATTEMPTS`, and later deliveries to
that receiver wait behind it, so a receiver sees changes in the order they were made.
`WEBHOOK_DISABLE_AFTER` failed attempts in a row disable the webhook. The lease is taken
with a compare-and-set UPDATE, so several workers (threads or processes) share the queue.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import F, OuterRef, Q, Subquery
from django.utils import timezone

from integrations.models import Delivery, Webhook

log = logging.getLogger(__name__)

USER_AGENT = "flagsite-webhooks/1"
MAX_BACKOFF_SECONDS = 3600
# Workers poll this often for deliveries queued by other processes.
POLL_SECONDS = 1.0
SLACK_TEXT_LIMIT = 2900  # Slack refuses section texts over 3,000 characters

_wake = threading.Event()


def wake() -> None:
    """Tell this process's worker (if it runs one) that deliveries were just committed."""
    _wake.set()


# --- What is sent -------------------------------------------------------------------------


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`v1=` and the hex HMAC-SHA256 of `{timestamp}.{body}` under the webhook's secret."""
    signed = str(timestamp).encode() + b"." + body
    return "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def _slack_escape(text: str) -> str:
    # Slack reads <...> as links and mentions (<!channel>): names must not ping anyone.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_headline(body: dict) -> str:
    who, flag = _slack_escape(body["actor"]), _slack_escape(body.get("flag") or "?")
    where = f" in *{_slack_escape(body['environment'])}*" if body.get("environment") else ""
    project = _slack_escape(body["project"])
    after = body.get("after") or {}
    kind = body["kind"]
    if kind == "flag.switched":
        state = "on" if after.get("enabled") else "off"
        return f"*{who}* switched *{flag}* {state}{where} ({project})"
    if kind == "rollout.step":
        return f"Rollout step applied to *{flag}*{where} ({project})"
    if kind == "flag.archived":
        return f"*{who}* archived *{flag}* ({project})"
    if kind == "change_request.opened":
        return f"*{who}* opened a change request for *{flag}*{where} ({project})"
    if kind == "change_request.approved":
        return f"A change request for *{flag}*{where} was approved by *{who}* ({project})"
    if kind == "guarded_rollout.paused":
        return f"The guarded rollout of *{flag}*{where} was paused ({project})"
    return f"*{who}* changed *{flag}*{where} ({project})"


def slack_message(body: dict) -> dict:
    """A Slack incoming-webhook message: a headline, what changed, and where it came from."""
    headline = _slack_headline(body)
    changes = "\n".join(f"• {_slack_escape(line)}" for line in body.get("changes") or [])
    if len(changes) > SLACK_TEXT_LIMIT:
        changes = changes[:SLACK_TEXT_LIMIT] + "\n…"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": headline}}
    ]
    if changes:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": changes}})
    comment = (body.get("comment") or "")[:SLACK_TEXT_LIMIT]
    if comment:
        why = f"_Why:_ {_slack_escape(comment)}"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": why}})
    context = f"{body['kind']} · {_slack_escape(body['source'])} · {body['occurredAt'][:19]}Z"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": headline, "blocks": blocks}


def request_body(delivery: Delivery) -> bytes:
    event = delivery.event
    if delivery.webhook.format == Webhook.Format.SLACK:
        payload = slack_message(event.body)
    else:
        payload = {"id": event.pk, "delivery": delivery.pk, **event.body}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def request_headers(delivery: Delivery, body: bytes, now: float | None = None) -> dict:
    timestamp = int(now if now is not None else time.time())
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Flags-Event": delivery.event.kind,
        "X-Flags-Event-Id": str(delivery.event_id),
        "X-Flags-Delivery": str(delivery.pk),
        "X-Flags-Timestamp": str(timestamp),
        "X-Flags-Signature": signature(delivery.webhook.secret, timestamp, body),
    }


# --- One attempt --------------------------------------------------------------------------


@dataclass
class Outcome:
    ok: bool
    status: int | None
    error: str
    duration_ms: int


def private_address(url: str) -> str | None:
    """The first loopback, private, link-local or reserved address the URL's host has."""
    try:
        infos = socket.getaddrinfo(urlsplit(url).hostname, None)
    except (socket.gaierror, UnicodeError):
        return None  # the attempt itself reports that the host cannot be reached
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global or address.is_multicast:
            return str(address)
    return None


def send(delivery: Delivery) -> Outcome:
    """POST the delivery once; never raises (every failure is an Outcome)."""
    body = request_body(delivery)
    started = time.monotonic()
    if not settings.WEBHOOK_PRIVATE_TARGETS:
        # Project admins choose the URLs: they must not reach the service's own network.
        address = private_address(delivery.webhook.url)
        if address is not None:
            return Outcome(False, None, f"refused: the receiver is at private address {address}", 0)
    try:
        response = requests.post(
            delivery.webhook.url,
            data=body,
            headers=request_headers(delivery, body),
            timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
            allow_redirects=False,
        )
        response.close()
    except requests.Timeout:
        error, status = f"no answer within {settings.WEBHOOK_TIMEOUT_SECONDS}s", None
    except requests.RequestException as failure:
        error, status = f"cannot connect: {type(failure).__name__}", None
    else:
        status = response.status_code
        error = "" if 200 <= status < 300 else f"answered HTTP {status}"
    duration = int((time.monotonic() - started) * 1000)
    return Outcome(ok=not error, status=status, error=error, duration_ms=duration)


def backoff(attempts: int) -> timedelta:
    """Wait before attempt `attempts + 1`: the base, doubled after each failure."""
    seconds = settings.WEBHOOK_RETRY_SECONDS * 2 ** max(0, attempts - 1)
    return timedelta(seconds=min(seconds, MAX_BACKOFF_SECONDS))


# --- The queue ----------------------------------------------------------------------------


def _head_due():
    head = Delivery.objects.filter(webhook=OuterRef("pk"), status=Delivery.Status.PENDING)
    return head.order_by("id").values("next_attempt_at")[:1]


def claim(now: datetime | None = None) -> Delivery | None:
    """Lease a webhook whose oldest pending delivery is due; that delivery, or None.

    The lease is a compare-and-set UPDATE: of several workers racing for one webhook, one
    moves its lease and the others see no row changed. An idle worker only reads.
    """
    now = now or timezone.now()
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    candidates = (
        Webhook.objects.filter(free, active=True)
        .annotate(head_at=Subquery(_head_due()))
        .filter(head_at__lte=now)
        .order_by("head_at", "id")
        .values_list("pk", flat=True)[:10]
    )
    lease = now + timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS + 30)
    for pk in list(candidates):
        if Webhook.objects.filter(free, pk=pk).update(lease_until=lease) != 1:
            continue  # another worker took it
        head = (
            Delivery.objects.filter(webhook_id=pk, status=Delivery.Status.PENDING)
            .select_related("event", "webhook")
            .order_by("id")
            .first()
        )
        if head is not None:
            return head
        Webhook.objects.filter(pk=pk).update(lease_until=None)
    return None


@transaction.atomic
def record(delivery: Delivery, outcome: Outcome, now: datetime | None = None) -> Delivery:
    """Write the attempt's outcome, schedule a retry or give up, and release the lease."""
    now = now or timezone.now()
    delivery.attempts += 1
    delivery.last_attempt_at = now
    delivery.response_status = outcome.status
    delivery.error = outcome.error[:300]
    delivery.duration_ms = outcome.duration_ms
    if outcome.ok:
        delivery.status = Delivery.Status.SENT
    elif delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
        delivery.status = Delivery.Status.FAILED
    else:
        delivery.next_attempt_at = now + backoff(delivery.attempts)
    # Writes first, reads after: SQLite then takes its write lock at once, never upgrading.
    delivery.save()
    failures = 0 if outcome.ok else F("failures") + 1
    webhooks = Webhook.objects.filter(pk=delivery.webhook_id)
    webhooks.update(failures=failures, lease_until=None)
    webhook = webhooks.get()
    if not outcome.ok and webhook.active and webhook.failures >= settings.WEBHOOK_DISABLE_AFTER:
        _disable(webhook)
        webhook.save(update_fields=["active", "disabled_reason"])
    delivery.webhook = webhook
    return delivery


def _disable(webhook: Webhook) -> None:
    webhook.active = False
    webhook.disabled_reason = (
        f"disabled after {webhook.failures} failed attempts in a row "
        f"({timezone.now():%Y-%m-%d %H:%M} UTC); fix the receiver and enable it again"
    )
    webhook.deliveries.filter(status=Delivery.Status.PENDING).update(
        status=Delivery.Status.FAILED, error="the webhook was disabled"
    )
    log.warning("webhook %s disabled after %s failed attempts", webhook.pk, webhook.failures)


def deliver_one(now: datetime | None = None) -> Delivery | None:
    """Claim, send and record one delivery; None when nothing is due."""
    delivery = claim(now)
    if delivery is None:
        return None
    return record(delivery, send(delivery), now)


def deliver_due(now: datetime | None = None, limit: int = 1000) -> list[Delivery]:
    """Send every delivery due at `now`, one after the other (the --once pass, the tests)."""
    done = []
    for _ in range(limit):
        delivery = deliver_one(now)
        if delivery is None:
            break
        done.append(delivery)
    return done


# --- The worker ---------------------------------------------------------------------------


class Worker:
    """Threads that send deliveries until `stop` is set; a hung receiver holds one thread."""

    def __init__(self, threads: int = 4, poll_seconds: float = POLL_SECONDS) -> None:
        self.threads = threads
        self.poll_seconds = poll_seconds
        self.stop = threading.Event()

    def run(self) -> None:
        with ThreadPoolExecutor(self.threads, thread_name_prefix="webhooks") as pool:
            for _ in range(self.threads):
                pool.submit(self._loop)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="webhooks", daemon=True)
        thread.start()
        return thread

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                close_old_connections()
                delivered = deliver_one()
            except Exception:  # a worker thread must outlive a database hiccup
                log.exception("webhook delivery failed")
                delivered = None
            if delivered is None and _wake.wait(self.poll_seconds):
                _wake.clear()
        close_old_connections()
