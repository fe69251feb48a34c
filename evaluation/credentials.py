"""API keys on the evaluation path: a presented secret -> the credential it stands for.

The evaluation endpoints are the hot path, so a key is looked up in the database at most
once per `SHARED_SECONDS` across all processes sharing the cache, and each process keeps
what it resolved for `LOCAL_SECONDS`:

  request -> process memory (LOCAL_SECONDS) -> shared cache `apikey:{digest}` (SHARED_SECONDS)
          -> database

Revocation bound: revoking a key deletes its shared entry after the commit
(`evaluation.cache.api_key_revoked`), so other processes see it once their own copy is
older than LOCAL_SECONDS. Even when a process re-caches the key between the database read
and the delete (a race), that entry lives at most SHARED_SECONDS. A revoked key therefore
stops working everywhere within `REVOCATION_BOUND_SECONDS` (5 s), usually within 2 s.
Expiry is checked on every request against the cached `expires_at`, so it is exact.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.core.cache import cache
from django.http import HttpRequest
from django.utils import timezone

from flags.models import ApiKey
from flags.services import key_digest

log = logging.getLogger(__name__)

LOCAL_SECONDS = 2.0
SHARED_SECONDS = 3
REVOCATION_BOUND_SECONDS = LOCAL_SECONDS + SHARED_SECONDS
# `last_used_at` is written at most this often per key, whatever the traffic.
TOUCH_SECONDS = 60
# Past this many remembered digests (most of them guesses) the process forgets them all.
LOCAL_LIMIT = 10_000
# Longer is not a key this service issued; refusing it early keeps hashing cheap.
MAX_SECRET_LENGTH = 200

SERVER = ApiKey.Kind.SERVER.value
CLIENT = ApiKey.Kind.CLIENT.value

# Time source of the in-process caches; tests move it forward instead of sleeping.
clock = time.monotonic


@dataclass(frozen=True, slots=True)
class Credential:
    """A resolved API key: which environment it evaluates and what it may do."""

    key_id: int
    digest: str
    environment_id: int
    kind: str
    expires_at: float | None  # epoch seconds
    revoked: bool

    @property
    def is_server(self) -> bool:
        return self.kind == SERVER


class CredentialError(Exception):
    """No usable credential: `status` is 401 (who are you?) or 403 (not allowed)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_MISS = object()
_local: dict[str, tuple[Credential | None, float]] = {}
_touched: dict[str, float] = {}


def shared_key(digest: str) -> str:
    return f"apikey:{digest}"


def used_key(digest: str) -> str:
    return f"apikey:{digest}:used"


def presented_secret(request: HttpRequest) -> str | None:
    """The key from `X-API-Key: <key>` or, failing that, `Authorization: Bearer <key>`.

    X-API-Key wins when both are sent, so a caller whose Authorization header carries
    something else (a gateway's token, a person's JWT) can still present a key.
    """
    meta = request.META
    secret = meta.get("HTTP_X_API_KEY")
    if secret and secret.strip():
        return secret.strip()
    authorization = meta.get("HTTP_AUTHORIZATION")
    if authorization:
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() == "bearer" and secret.strip():
            return secret.strip()
    return None


def authenticate(request: HttpRequest, *, server_only: bool = False) -> Credential:
    """The request's credential, or CredentialError (401 or 403)."""
    secret = presented_secret(request)
    if secret is None:
        raise CredentialError(401, "send an API key as 'Authorization: Bearer <key>' or X-API-Key")
    if len(secret) > MAX_SECRET_LENGTH:
        raise CredentialError(401, "unknown API key")
    credential = resolve(key_digest(secret))
    if credential is None:
        raise CredentialError(401, "unknown API key")
    if credential.revoked:
        raise CredentialError(401, "this API key has been revoked")
    if credential.expires_at is not None and credential.expires_at <= time.time():
        raise CredentialError(401, "this API key has expired")
    if server_only and not credential.is_server:
        raise CredentialError(403, "a client key cannot do this; use a server key")
    _touch(credential)
    return credential


def resolve(digest: str) -> Credential | None:
    """The credential with this digest (revoked or expired included); None if unknown."""
    now = clock()
    entry = _local.get(digest)
    if entry is not None and now - entry[1] < LOCAL_SECONDS:
        return entry[0]
    credential = _from_shared_cache(digest)
    if credential is _MISS:
        credential = _from_database(digest)
    if len(_local) >= LOCAL_LIMIT:
        _local.clear()
    _local[digest] = (credential, now)  # type: ignore[assignment]
    return credential  # type: ignore[return-value]


def _from_shared_cache(digest: str) -> Credential | None | object:
    """The cached credential, None for a cached unknown digest, _MISS for a miss.

    Unknown digests are cached too (as ""), so guessed keys do not reach the database.
    """
    try:
        cached = cache.get(shared_key(digest))
    except Exception as error:  # a dead Redis must not stop evaluation
        log.warning("shared cache unavailable for API keys: %s", error)
        return _MISS
    if cached is None:
        return _MISS
    if cached == "":
        return None
    key_id, environment_id, kind, expires_at, revoked = cached
    return Credential(key_id, digest, environment_id, kind, expires_at, revoked)


def _from_database(digest: str) -> Credential | None:
    row = (
        ApiKey.objects.filter(digest=digest)
        .values_list("pk", "environment_id", "kind", "expires_at", "revoked_at")
        .first()
    )
    if row is None:
        credential, cached = None, ""
    else:
        key_id, environment_id, kind, expires_at, revoked_at = row
        expires = expires_at.timestamp() if expires_at is not None else None
        credential = Credential(
            key_id, digest, environment_id, kind, expires, revoked_at is not None
        )
        cached = (key_id, environment_id, kind, expires, revoked_at is not None)
    try:
        cache.set(shared_key(digest), cached, SHARED_SECONDS)
    except Exception as error:
        log.warning("shared cache unavailable for API keys: %s", error)
    return credential


def _touch(credential: Credential) -> None:
    """Record use at most once per TOUCH_SECONDS per key, across processes when shared."""
    now = clock()
    last = _touched.get(credential.digest)
    if last is not None and now - last < TOUCH_SECONDS:
        return
    if len(_touched) >= LOCAL_LIMIT:
        _touched.clear()
    _touched[credential.digest] = now
    try:
        first = cache.add(used_key(credential.digest), 1, TOUCH_SECONDS)
    except Exception:
        first = True
    if first:
        # Bookkeeping, not a change to the flag store: no audit entry, no version bump.
        ApiKey.objects.filter(pk=credential.key_id).update(last_used_at=timezone.now())


def clear_local() -> None:
    """Forget what this process resolved (tests, and after a fork)."""
    _local.clear()
    _touched.clear()
