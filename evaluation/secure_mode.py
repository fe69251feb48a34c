"""Secure mode: a client key's targetingKey counts only when the customer's server signed it.

With secure mode on for an environment, every evaluation by a client key carries
`context.targetingKeyHash`: the lowercase hex HMAC-SHA256 of `context.targetingKey`, keyed
with the environment's secure mode secret (UTF-8 both), computed by the customer's server
(`flagclient.secure_mode_hash`). A browser can then evaluate only as the user its page was
rendered for. See docs/security.md.

Each process reads an environment's setting and secret from the database once per
environment version (turning secure mode on or off and rotating the secret bump it), so
the hot path costs one HMAC. While the database is away the last setting read is used. A
process that has read none (a worker started during the outage) asks the shared cache
whether secure mode is off at that version: every process that read the setting noted
"off" or "on" there, never the secret. Off, it evaluates; on or unknown, it refuses with
StoreUnavailable (503), never evaluating unchecked.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from dataclasses import dataclass

from django.core.cache import cache

from evaluation import keys
from flags.models import Environment
from flagsite.failures import CACHE, DATABASE, StoreUnavailable, reaching

# The context attribute that carries the hash; never evaluated (rules cannot see it).
HASH_ATTRIBUTE = "targetingKeyHash"
HASH_LENGTH = 64  # hex digits of a SHA-256


@dataclass(frozen=True, slots=True)
class Setting:
    """An environment's secure mode as of `version`."""

    version: int
    enabled: bool
    secret: bytes


class Refusal(Exception):
    """The context is not vouched for: `status` 400 (malformed) or 403 (no valid hash)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_settings: dict[int, Setting] = {}


def compute_hash(secret: str, targeting_key: str) -> str:
    """The hash the customer's server sends along (the SDK's `secure_mode_hash`)."""
    return hmac.new(secret.encode(), targeting_key.encode(), hashlib.sha256).hexdigest()


def setting(environment_id: int, version: int) -> Setting:
    """The environment's secure mode for a snapshot of `version` (read once per version)."""
    known = _settings.get(environment_id)
    if known is not None and known.version == version:
        return known
    try:
        with reaching(DATABASE):
            row = (
                Environment.objects.filter(pk=environment_id)
                .values_list("secure_mode", "secure_mode_secret")
                .first()
            )
    except StoreUnavailable:
        if known is not None:
            return known  # the database is away: the last setting read holds
        if _noted(environment_id, version) != "off":
            raise
        return Setting(version, False, b"")  # off at this version, as a process read it
    enabled, secret = row if row is not None else (False, "")
    fresh = Setting(version, bool(enabled and secret), secret.encode())
    _settings[environment_id] = fresh
    _note(environment_id, fresh)
    return fresh


# Past a week a process that starts during an outage refuses client keys as before.
NOTE_SECONDS = 7 * 24 * 3600


def _note(environment_id: int, setting: Setting) -> None:
    """Tell processes that start during a database outage whether it is on (no secret)."""
    with contextlib.suppress(StoreUnavailable), reaching(CACHE):
        cache.set(
            keys.secure_mode(environment_id, setting.version),
            "on" if setting.enabled else "off",
            NOTE_SECONDS,
        )


def _noted(environment_id: int, version: int) -> str | None:
    with contextlib.suppress(StoreUnavailable), reaching(CACHE):
        return cache.get(keys.secure_mode(environment_id, version))
    return None


def verify(context: dict, mode: Setting) -> None:
    """Refusal unless the context's targetingKeyHash is the HMAC of its targetingKey."""
    targeting_key = context.get("targetingKey")
    if targeting_key is None:
        raise Refusal(403, "secure mode is on: send context.targetingKey and its hash")
    if targeting_key.__class__ is not str:
        raise Refusal(400, "context.targetingKey must be a string")
    presented = context.get(HASH_ATTRIBUTE)
    if presented is None:
        raise Refusal(
            403,
            f"secure mode is on: context.{HASH_ATTRIBUTE} is missing "
            "(your server computes it; see docs/security.md)",
        )
    if presented.__class__ is not str:
        raise Refusal(400, f"context.{HASH_ATTRIBUTE} must be a string")
    message = targeting_key.encode("utf-8", "surrogatepass")  # never raises
    expected = hmac.new(mode.secret, message, hashlib.sha256).hexdigest()
    # The length and the characters are not secret; the digest comparison is constant-time.
    if len(presented) != HASH_LENGTH or not hmac.compare_digest(
        expected.encode(), presented.lower().encode("ascii", "replace")
    ):
        raise Refusal(403, f"secure mode is on: context.{HASH_ATTRIBUTE} does not match")


def without_hash(context: dict) -> dict:
    """The context the engine sees: the hash is a credential, not an attribute."""
    if HASH_ATTRIBUTE not in context:
        return context
    return {name: value for name, value in context.items() if name != HASH_ATTRIBUTE}


def clear_local() -> None:
    """Forget what this process read (tests, and after a fork)."""
    _settings.clear()
