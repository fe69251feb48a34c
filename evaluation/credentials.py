"""API keys on the evaluation path: a presented secret -> the credential it stands for.

The evaluation endpoints are the hot path, so a key is looked up in the database at most
once per `SHARED_SECONDS` across all processes sharing the cache, and each process keeps
what it resolved for `LOCAL_SECONDS`:

  request -> process memory (LOCAL_SECONDS) -> shared cache `credential:{digest}`
          (answers younger than SHARED_SECONDS) -> database

Revocation bound: after a revoke commits, the revoked key is written to the shared cache
(`record_revocation`, which the service registers with `on_commit`), so other processes
see it once their own copy is older than LOCAL_SECONDS. Even when a process re-caches the
key between its database read and that write (a race), its entry counts as an answer for
at most SHARED_SECONDS. A revoked key therefore stops working everywhere within
`REVOCATION_BOUND_SECONDS` (5 s), usually within 2 s. Expiry is checked on every request
against the cached `expires_at`, so it is exact.

Outages: a shared entry of a known key stays in the cache for `KNOWN_SECONDS` although it
counts as an answer for only SHARED_SECONDS: it is the last known credential. While the
database is away the newest thing this process or the shared cache knows about a key is
used, however old: a key known before the outage keeps working, a key revoked at least
REVOCATION_BOUND_SECONDS before it stays refused, a digest answered "unknown" stays
unknown (401), and a key nobody has seen is refused with StoreUnavailable (503) rather
than called unknown, because the service cannot tell. No key can be created or revoked
while the database is away, so the credentials served are those of the moment it went.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass

from django.core.cache import cache
from django.utils import timezone

from evaluation import keys
from flags.models import ApiKey
from flagsite.failures import CACHE, DATABASE, StoreUnavailable, ensure_may_block, reaching

LOCAL_SECONDS = 2.0
SHARED_SECONDS = 3
REVOCATION_BOUND_SECONDS = LOCAL_SECONDS + SHARED_SECONDS
# A known key's entry outlives its SHARED_SECONDS as the answer of last resort in an outage.
KNOWN_SECONDS = 24 * 3600
# `last_used_at` is written at most this often per key, whatever the traffic.
TOUCH_SECONDS = 60
# Past this many remembered digests (most of them guesses) the process forgets them all.
LOCAL_LIMIT = 10_000
# Longer is not a key this service issued; refusing it early keeps hashing cheap.
MAX_SECRET_LENGTH = 200

SERVER = ApiKey.Kind.SERVER.value
CLIENT = ApiKey.Kind.CLIENT.value

# Time sources, which tests move forward instead of sleeping: `clock` for this process's
# copies, `wall_clock` for the age of shared entries (comparable across processes).
clock = time.monotonic
wall_clock = time.time


def key_digest(secret: str) -> str:
    # Keys carry 256 random bits, so one SHA-256 is enough: nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


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


@dataclass(frozen=True, slots=True)
class _Answer:
    """What the database said about a digest (None: no such key), and when (wall clock)."""

    credential: Credential | None
    resolved_at: float


# digest -> (the answer, when this process last took it, on `clock`)
_local: dict[str, tuple[_Answer, float]] = {}
_touched: dict[str, float] = {}


def presented_secret(headers: Mapping[str, str]) -> str | None:
    """The key from `X-API-Key: <key>` or, failing that, `Authorization: Bearer <key>`.

    `headers` has lower-case names (or is case-insensitive, as Django's `request.headers`).
    X-API-Key wins when both are sent, so a caller whose Authorization header carries
    something else (a gateway's token, a person's JWT) can still present a key.
    """
    secret = headers.get("x-api-key")
    if secret and secret.strip():
        return secret.strip()
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() == "bearer" and secret.strip():
            return secret.strip()
    return None


def authenticate(headers: Mapping[str, str], *, server_only: bool = False) -> Credential:
    """The credential the request's headers present, or CredentialError (401 or 403).

    StoreUnavailable (503) when the database is away and this key was never seen.
    """
    secret = presented_secret(headers)
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
    """The credential with this digest (revoked or expired included); None if unknown.

    Raises StoreUnavailable only when the database is away and nothing is known of the key.
    """
    now = clock()
    entry = _local.get(digest)
    if entry is not None and now - entry[1] < LOCAL_SECONDS:
        return entry[0].credential
    shared = _from_shared_cache(digest)
    if shared is not None and wall_clock() - shared.resolved_at < SHARED_SECONDS:
        return _remember(digest, shared, now)
    try:
        answer = _from_database(digest)
    except StoreUnavailable:
        known = [answer for answer in (entry and entry[0], shared) if answer is not None]
        if not known:
            raise
        # The newest of what is known; kept for LOCAL_SECONDS before the next attempt.
        return _remember(digest, max(known, key=lambda answer: answer.resolved_at), now)
    _share(digest, answer)
    return _remember(digest, answer, now)


def _remember(digest: str, answer: _Answer, now: float) -> Credential | None:
    if len(_local) >= LOCAL_LIMIT and digest not in _local:
        # Mostly guesses: forget the unknown digests, and everything only if keys fill it.
        known = {key: entry for key, entry in _local.items() if entry[0].credential is not None}
        _local.clear()
        if len(known) < LOCAL_LIMIT // 2:
            _local.update(known)
    _local[digest] = (answer, now)
    return answer.credential


def record_revocation(digest: str) -> None:
    """After a revoke commits: write the revoked key where every process looks first."""
    try:
        answer = _from_database(digest)
    except StoreUnavailable:
        with contextlib.suppress(StoreUnavailable), reaching(CACHE):
            cache.delete(keys.credential(digest))
        return
    _share(digest, answer)
    _remember(digest, answer, clock())


def _from_shared_cache(digest: str) -> _Answer | None:
    """The shared answer (revoked and unknown keys included), or None if there is none.

    Unknown digests are cached too (briefly), so guessed keys do not reach the database.
    """
    try:
        with reaching(CACHE):
            cached = cache.get(keys.credential(digest))
    except StoreUnavailable:  # a dead Redis must not stop evaluation
        return None
    if not isinstance(cached, tuple) or not cached:
        return None
    resolved_at, *fields = cached
    if not fields:
        return _Answer(None, resolved_at)
    key_id, environment_id, kind, expires_at, revoked = fields
    return _Answer(
        Credential(key_id, digest, environment_id, kind, expires_at, revoked), resolved_at
    )


def _from_database(digest: str) -> _Answer:
    resolved_at = wall_clock()  # before the read: an answer is never newer than it claims
    with reaching(DATABASE):
        row = (
            ApiKey.objects.filter(digest=digest)
            .values_list("pk", "environment_id", "kind", "expires_at", "revoked_at")
            .first()
        )
    if row is None:
        return _Answer(None, resolved_at)
    key_id, environment_id, kind, expires_at, revoked_at = row
    expires = expires_at.timestamp() if expires_at is not None else None
    credential = Credential(key_id, digest, environment_id, kind, expires, revoked_at is not None)
    return _Answer(credential, resolved_at)


def _share(digest: str, answer: _Answer) -> None:
    credential = answer.credential
    if credential is None:
        # Guesses are many: their entries stay only as long as they count as an answer.
        record: tuple = (answer.resolved_at,)
        seconds = SHARED_SECONDS
    else:
        record = (
            answer.resolved_at,
            credential.key_id,
            credential.environment_id,
            credential.kind,
            credential.expires_at,
            credential.revoked,
        )
        seconds = KNOWN_SECONDS
    with contextlib.suppress(StoreUnavailable), reaching(CACHE):
        cache.set(keys.credential(digest), record, seconds)


def _touch(credential: Credential) -> None:
    """Record use at most once per TOUCH_SECONDS per key, across processes when shared."""
    now = clock()
    last = _touched.get(credential.digest)
    if last is not None and now - last < TOUCH_SECONDS:
        return
    ensure_may_block()  # before the mark: a request redone off the event loop still touches
    if len(_touched) >= LOCAL_LIMIT:
        _touched.clear()
    _touched[credential.digest] = now
    try:
        with reaching(CACHE):
            first = cache.add(keys.credential_used(credential.digest), 1, TOUCH_SECONDS)
    except StoreUnavailable:
        first = True
    if first:
        # Bookkeeping, not a change to the flag store: no audit entry, no version bump.
        # While the database is away the minute's touch is skipped, not retried.
        with contextlib.suppress(StoreUnavailable), reaching(DATABASE):
            ApiKey.objects.filter(pk=credential.key_id).update(last_used_at=timezone.now())


def clear_local() -> None:
    """Forget what this process resolved (tests, and after a fork)."""
    _local.clear()
    _touched.clear()
