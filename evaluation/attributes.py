"""The context attributes evaluations were asked with, per environment: the admin's
condition builder suggests them (flags.admin.widgets.project_vocabulary).

The evaluation path looks each name of a context up in a set of this process's, without a
lock; only a name the process has not seen before goes into a batch, which the flusher
writes to the database (one statement per flush, existing names left as they are). Both
are bounded whatever contexts clients send: a process keeps at most
MAX_PER_ENVIRONMENT names per environment, and the database takes no more than
MAX_STORED per environment. Names that could not be condition attributes anyway (empty,
longer than MAX_NAME, with control characters or lone surrogates) and the secure mode
hash are never kept.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from django.db.models import Count

from evaluation.batches import Batch, text_problem
from evaluation.secure_mode import HASH_ATTRIBUTE
from flags.models import SeenAttribute
from flagsite.failures import DATABASE, reaching

MAX_NAME = 100  # as a condition's attribute (flags.validation)
MAX_PER_ENVIRONMENT = 200
MAX_STORED = 500
IGNORED = frozenset({"targetingKey", HASH_ATTRIBUTE})  # targetingKey is always suggested

# environment id -> the names this process has seen (or refused) there
_known: dict[int, set[str]] = {}


def _flush() -> int:
    return flush()


_batch: Batch[tuple[int, str], float] = Batch(
    "attribute", flush=_flush, merge=min, limit=MAX_PER_ENVIRONMENT
)


def note(environment_id: int, context: dict) -> None:
    """Remember the context's attribute names; costs a set lookup per name once known."""
    known = _known.get(environment_id)
    if known is None:
        known = _known[environment_id] = set()
    fresh = [name for name in context if name not in known]
    if not fresh or len(known) >= MAX_PER_ENVIRONMENT:
        return
    known.update(fresh)  # refused names too: each is looked at once
    now = time.time()
    kept = [
        ((environment_id, name), now)
        for name in fresh
        if name not in IGNORED and name and text_problem("attribute", name, MAX_NAME) is None
    ]
    if kept:
        _batch.add_many(kept)


def flush() -> int:
    """Write the names noted since the last flush; their number. Raises only when the
    database is away (the names then wait for the next flush)."""
    items = _batch.take()
    if not items:
        return 0
    try:
        with reaching(DATABASE):  # says once that the database is away, and when it is back
            return _write(items)
    except Exception:
        _batch.give_back(items)
        raise


def _write(items: dict[tuple[int, str], float]) -> int:
    stored = dict(
        SeenAttribute.objects.filter(environment_id__in={e for e, _ in items})
        .values_list("environment_id")
        .annotate(count=Count("id"))
    )
    rows = []
    for (environment_id, name), at in items.items():
        if stored.get(environment_id, 0) >= MAX_STORED:
            continue  # full (a name already stored would only have been left as it is)
        stored[environment_id] = stored.get(environment_id, 0) + 1
        first_seen = datetime.fromtimestamp(at, UTC)
        rows.append(SeenAttribute(environment_id=environment_id, name=name, first_seen=first_seen))
    SeenAttribute.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def clear_local() -> None:
    """Forget what this process saw (tests)."""
    _known.clear()
    _batch.take()
