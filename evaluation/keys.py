"""The shared cache's key scheme: every key and channel the service names, in one place.

Keys given to Django's cache (`cache.get(keys.version(7))`) get its `KEY_PREFIX` and key
version from the cache itself; keys used on Redis directly go through `cache.make_key`
first, so they share that prefix. The texts never change lightly: workers of two releases
run side by side during a deploy, and a renamed key would split what they share.

  `env:{id}:version`          the environment's current version (only ever increases)
  `env:{id}:doc:{version}`    the flag document of that version (evaluation.cache)
  `env:{id}:secure:{version}` "off" or "on": whether secure mode is on at that version (never
                              the secret), for a process that starts while the database is away
                              (evaluation.secure_mode)
  `credential:{digest}`       a resolved API key, kept as the last known one for outages
                              (evaluation.credentials)
  `apikey:{digest}:used`      which process records the key's `last_used_at` this minute
  `exposures:{id}:{hour}`     a Redis hash of evaluation counts waiting to be drained
  `exposures:pending`         the Redis set of those hashes (evaluation.exposures)
  `units:{id}:{day}`         a Redis sorted set of first unit exposures, score = first seen
  `units:pending`             the Redis set of those sets (evaluation.events)
  `events:{id}:{day}`         a Redis hash of per-unit event sums waiting to be drained
  `events:pending`            the Redis set of those hashes (evaluation.events)
  `totals:{digest}`           an analysis's per-variant totals of one metric (or units), the
                              digest of its inputs and the data's watermark (flags.experiments)
  `{CACHE_PREFIX}:changes`    the pub/sub channel of committed changes (evaluation.broadcast)
"""

from __future__ import annotations

from django.conf import settings

VERSION = "env:{environment_id}:version"
DOCUMENT = "env:{environment_id}:doc:{version}"
SECURE_MODE = "env:{environment_id}:secure:{version}"
CREDENTIAL = "credential:{digest}"
CREDENTIAL_USED = "apikey:{digest}:used"
EXPOSURES = "exposures:{environment_id}:{hour}"
EXPOSURES_PENDING = "exposures:pending"
UNITS = "units:{environment_id}:{day}"
UNITS_PENDING = "units:pending"
EVENTS = "events:{environment_id}:{day}"
EVENTS_PENDING = "events:pending"
TOTALS = "totals:{digest}"
CHANGES = "{prefix}:changes"


def version(environment_id: int) -> str:
    return VERSION.format(environment_id=environment_id)


def document(environment_id: int, version: int) -> str:
    return DOCUMENT.format(environment_id=environment_id, version=version)


def secure_mode(environment_id: int, version: int) -> str:
    return SECURE_MODE.format(environment_id=environment_id, version=version)


def credential(digest: str) -> str:
    return CREDENTIAL.format(digest=digest)


def credential_used(digest: str) -> str:
    return CREDENTIAL_USED.format(digest=digest)


def exposures(environment_id: int, hour: int) -> str:
    return EXPOSURES.format(environment_id=environment_id, hour=hour)


def units(environment_id: int, day: int) -> str:
    return UNITS.format(environment_id=environment_id, day=day)


def events(environment_id: int, day: int) -> str:
    return EVENTS.format(environment_id=environment_id, day=day)


def totals(digest: str) -> str:
    return TOTALS.format(digest=digest)


def changes_channel() -> str:
    # A channel is not a cache key: it carries the prefix itself, not the cache's version.
    return CHANGES.format(prefix=settings.CACHE_PREFIX)
