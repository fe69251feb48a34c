"""Compilation of a flag document into an immutable snapshot, and evaluation against it."""

from __future__ import annotations

import bisect
import copy
import random
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple, cast

from .bucketing import (
    MAX_TOTAL_WEIGHT,
    RANDOM_ATTRIBUTE,
    SCHEMES,
    TABLE_LIMIT,
    bucket,
    bucket_indexes,
    bucket_value_of,
    chooser,
    murmur3,
)
from .conditions import (
    Context,
    Draw,
    Predicate,
    SharedContext,
    StringSet,
    all_of,
    attribute_getter,
    bind_condition,
    parse_condition,
    string_set_of,
)
from .errors import DocumentError
from .results import ErrorCode, EvaluationResult, Reason, error_result, result
from .reuse import Origin, mark_of, reused_flags, unchanged
from .specialise import (
    SERVE_CALL,
    SERVE_KEY_SPLIT,
    SERVE_KEY_TABLE,
    SERVE_RESULT,
    TEST_CALL,
    TEST_IN,
    TEST_NOT_IN,
    TEST_SEGMENT,
    Shape,
    factory_of,
    group_of,
    groupable,
)
from .text import INVALID_TEXT, is_text, require_text

FLAG_TYPES = ("boolean", "string", "number", "json")
# OpenFeature calls a JSON flag an "object" flag.
_TYPE_ALIASES = {"object": "json"}
# Deeper prerequisite chains than this count as not satisfied, like a cycle.
MAX_PREREQUISITE_DEPTH = 16
# A served JSON value with more strings, numbers, lists and objects than this is refused.
MAX_VALUE_NODES = 100_000

Serve = Callable[[Context], EvaluationResult]
# A flag's evaluation: (context, targeting key, the snapshot's flags, prerequisite chain).
Resolve = Callable[
    [Context, "str | None", "Mapping[str, CompiledFlag]", "tuple[str, ...]"], EvaluationResult
]


class _KeyTable:
    """The commonest rollout (flagd's, bucketed by the targeting key) as data, which
    `CompiledFlag.resolve` reads inline: the entry of each bucket, and its result."""

    __slots__ = ("_missing", "entries", "flag_key", "indexes", "salt", "total")

    def __init__(
        self,
        flag_key: str,
        salt: str,
        indexes: tuple[int, ...],
        entries: tuple[EvaluationResult, ...],
    ) -> None:
        self.flag_key = flag_key
        self.salt = salt
        self.indexes = indexes  # shared by every rollout with the same weights
        self.total = len(indexes)
        self.entries = entries
        self._missing: EvaluationResult | None = None

    def buckets(self) -> tuple[EvaluationResult, ...] | _Buckets:
        """The result of each bucket: one table lookup instead of two, for the usual totals
        (up to 1,000 buckets: larger tables would cost more memory than the lookup saves)."""
        if self.total > 1_000:
            return _Buckets(self.entries, self.indexes)
        return tuple([self.entries[index] for index in self.indexes])

    def cuts(self) -> tuple[int, ...]:
        """For each entry but the first, the smallest hash whose bucket is the entry's or a
        later one's: the entry of a hash `h` is `entries[bisect_right(cuts, h)]`, the same
        as `entries[indexes[(h * total) >> 32]]` (`(h * total) >> 32 >= c` exactly when
        `h >= ceil(c * 2**32 / total)`) without multiplying integers of three digits."""
        total, indexes = self.total, self.indexes
        cumulative = [bisect.bisect_right(indexes, entry) for entry in range(len(self.entries) - 1)]
        return tuple([-(-bound * 2**32 // total) for bound in cumulative])

    def missing(self) -> EvaluationResult:
        """The answer to a context without a targeting key, made at its first use."""
        if self._missing is None:
            self._missing = _missing_key(self.flag_key)
        return self._missing


class _Buckets:
    """The result of each bucket of a large table, read through its bucket indexes."""

    __slots__ = ("entries", "indexes")

    def __init__(self, entries: tuple[EvaluationResult, ...], indexes: tuple[int, ...]) -> None:
        self.entries = entries
        self.indexes = indexes

    def __getitem__(self, bucket: int) -> EvaluationResult:
        return self.entries[self.indexes[bucket]]


def _missing_key(flag_key: str) -> EvaluationResult:
    return error_result(flag_key, ErrorCode.TARGETING_KEY_MISSING, "a rollout needs a targetingKey")


# What a rule or the default serves: a fixed result, a rollout by the targeting key, or a
# function of the context (any other rollout).
Serving = EvaluationResult | _KeyTable | Serve
# One condition of a rule: a predicate, or a string-set condition as data (read inline).
Test = Predicate | StringSet

# What a boolean flag's variants are, wherever a flag is checked or made.
BOOLEAN_VARIANTS: dict[str, bool] = {"on": True, "off": False}


def _require_mapping(value: object, field: str) -> Mapping[str, Any]:
    if value.__class__ is not dict and not isinstance(value, Mapping):
        raise DocumentError(field, "must be an object")
    return value


def _require_list(value: object, field: str) -> Sequence[Any]:
    if not isinstance(value, (list, tuple)):
        raise DocumentError(field, "must be a list")
    return value


def _optional_list(flag: Mapping[str, Any], field: str) -> Sequence[Any]:
    value = flag.get(field)
    return () if value is None else _require_list(value, field)


# --- servings -----------------------------------------------------------------------------


def check_serving(serving: dict[str, Any], variant_keys: list[str]) -> None:
    """Raise DocumentError if `serving` is not a variant or rollout over `variant_keys`."""
    _parse_serving(serving, variant_keys)


def _parse_serving(
    serving: object, variant_keys: Sequence[str]
) -> tuple[str | None, str, tuple[tuple[str, int], ...], str | None]:
    """(variant, bucketBy, ((variant, weight), ...), salt): a variant serving has no weights,
    and a rollout without a salt of its own (None) hashes the flag's."""
    serving = _require_mapping(serving, "")
    variant, rollout = serving.get("variant"), serving.get("rollout")
    if (variant is None) == (rollout is None):
        raise DocumentError("variant", "serve either a variant or a rollout, not both or neither")
    if variant is not None:
        if variant not in variant_keys:
            raise DocumentError("variant", f"unknown variant {variant!r}")
        return variant, "targetingKey", (), None
    rollout = _require_mapping(rollout, "rollout")
    salt = rollout.get("salt")
    if salt is not None:
        if salt.__class__ is not str or not salt:
            raise DocumentError("rollout.salt", f"must be a non-empty string, got {salt!r}")
        require_text(salt, "rollout.salt", "the salt")
    bucket_by = rollout.get("bucketBy", "targetingKey")
    if bucket_by is None:
        bucket_by = "targetingKey"
    if bucket_by.__class__ is not str or not bucket_by:
        raise DocumentError("rollout.bucketBy", "must be an attribute name")
    if not bucket_by.isascii():
        require_text(bucket_by, "rollout.bucketBy", "the attribute name")
    entries = _require_list(rollout.get("variants"), "rollout.variants")
    if not entries:
        raise DocumentError("rollout.variants", "a rollout needs at least one variant")
    weights = _parse_weights(entries, variant_keys)
    total = 0
    for _, weight in weights:
        total += weight
    if total <= 0:
        raise DocumentError("rollout.variants", "at least one weight must be above 0")
    if total > MAX_TOTAL_WEIGHT:
        raise DocumentError("rollout.variants", f"weights must total at most {MAX_TOTAL_WEIGHT}")
    return None, bucket_by, weights, salt


def _parse_weights(
    entries: Sequence[Any], variant_keys: Sequence[str]
) -> tuple[tuple[str, int], ...]:
    weights: list[tuple[str, int]] = []
    listed: set[str] = set()
    for index, entry in enumerate(entries):
        entry = _require_mapping(entry, f"rollout.variants[{index}]")
        key, weight = entry.get("variant"), entry.get("weight")
        if key not in variant_keys:
            raise DocumentError(f"rollout.variants[{index}].variant", f"unknown variant {key!r}")
        if key in listed:  # a variant key: a string
            message = f"variant {key!r} is listed twice"
            raise DocumentError(f"rollout.variants[{index}].variant", message)
        if weight.__class__ is not int or weight < 0:
            message = f"must be an integer >= 0, got {weight!r}"
            raise DocumentError(f"rollout.variants[{index}].weight", message)
        listed.add(cast(str, key))
        weights.append((cast(str, key), weight))
    return tuple(weights)


class _Served(NamedTuple):
    """What a flag's servings are compiled with."""

    variants: Mapping[str, Any]  # variant key -> value
    flag_key: str
    salt: str
    scheme: str
    compilation: _Compilation


def _compile_serving(
    field: str, serving: object, served: _Served, reason: str, rule_id: str | None = None
) -> Serving:
    """A fixed result for a variant serving, or a rollout; a DocumentError names `field`."""
    variants, flag_key, salt, scheme, compilation = served
    if serving.__class__ is dict and len(serving) == 1:
        # `{"variant": key}`, the commonest serving, without the parse `_parse_serving`
        # would make of it (whose errors are left to it).
        variant = serving.get("variant")
        if variant.__class__ is str and variant in variants:
            return result(flag_key, variants[variant], variant, reason, rule_id)
    try:
        parsed = compilation.parsed_serving(serving, variants)
    except DocumentError as exc:
        raise exc.within(field) from None
    variant, bucket_by, weights, own_salt, weights_only, total = parsed
    if variant is not None:
        return result(flag_key, variants[variant], variant, reason, rule_id)
    if own_salt is not None:
        salt = own_salt
    entries = tuple(
        [result(flag_key, variants[key], key, Reason.SPLIT, rule_id) for key, _ in weights]
    )
    if scheme == "flagd" and total <= TABLE_LIMIT and bucket_by == "targetingKey":
        return _KeyTable(flag_key, salt, compilation.bucket_indexes(weights_only), entries)
    if bucket_by == "targetingKey":
        missing = _missing_key(flag_key)
    else:
        missing = error_result(
            flag_key,
            ErrorCode.INVALID_CONTEXT,
            f"a rollout needs the context attribute {bucket_by!r} (a string or a number)",
        )
    if scheme == "flagd" and total <= TABLE_LIMIT:
        return _flagd_table_serve(
            weights, entries, attribute_getter(bucket_by, compilation.draw), missing, salt
        )
    get = attribute_getter(bucket_by, compilation.draw)
    choose = chooser(scheme, flag_key, salt, weights_only)

    def serve(context: Context) -> EvaluationResult:
        value = get(context)
        if value.__class__ is not str:
            value = bucket_value_of(value)
            if value is None:
                return missing
        # Each scheme hashes UTF-8 bytes, never a string its C code would have to encode:
        # a lone surrogate raises UnicodeEncodeError here (INVALID_CONTEXT).
        return entries[choose(value)]

    return serve


def _flagd_table_serve(
    weights: tuple[tuple[str, int], ...],
    entries: tuple[EvaluationResult, ...],
    get: Callable[[Context], Any],
    missing: EvaluationResult,
    salt: str,
) -> Serve:
    """A flagd rollout by an attribute: one precomputed result per bucket, a hash, an index."""
    buckets = _bucket_table(weights, entries)
    total = len(buckets)

    def serve(context: Context) -> EvaluationResult:
        value = get(context)
        if value.__class__ is not str:
            value = bucket_value_of(value)
            if value is None:
                return missing
        # A lone surrogate raises UnicodeEncodeError in bucket(): INVALID_CONTEXT.
        return buckets[bucket(salt, value, total)]

    return serve


def _bucket_table(
    weights: tuple[tuple[str, int], ...], entries: tuple[EvaluationResult, ...]
) -> tuple[EvaluationResult, ...]:
    table: list[EvaluationResult] = []
    for (_, weight), entry in zip(weights, entries, strict=True):
        table.extend([entry] * weight)
    return tuple(table)


# --- flags --------------------------------------------------------------------------------


class CompiledFlag:
    """One flag, compiled: precomputed results and predicates, evaluated without allocating."""

    __slots__ = (
        "archived",
        "enabled",
        "error",
        "fixed",
        "key",
        "off",
        "prerequisite_failed",
        "prerequisites",
        "run",
        "segment_keys",
        "servings",
        "targets",
        "type",
    )

    def __init__(self, key: str) -> None:
        self.key = key
        self.type: str | None = None
        self.enabled = False
        self.error: EvaluationResult | None = None  # archived or broken: always this result
        self.archived = False
        # The answer for every context that is not refused (see `_refusal`), if it is one.
        self.fixed: EvaluationResult | None = None
        self.off: EvaluationResult | None = None
        self.prerequisite_failed: EvaluationResult | None = None
        self.prerequisites: tuple[tuple[str, frozenset[str]], ...] = ()
        self.targets: dict[str, EvaluationResult] = {}
        # (the rule's conditions, what it serves) for each rule, then ((), the default).
        self.servings: tuple[tuple[tuple[Test, ...], Serving], ...] = ()
        self.segment_keys: frozenset[str] = frozenset()  # the segments its conditions read
        # `resolve`, or the same steps generated for this flag's shape: see `specialise`.
        self.run: Resolve | None = None

    def specialise(self) -> Resolve:
        """This flag's evaluation function, made at its first evaluation and kept in `run`.

        An enabled flag without prerequisites gets the function `specialise.factory_of`
        generates for its shape (its rules' kinds of test and serving), bound to its own
        attributes, sets, predicates and results; any other flag, or one whose shape is not
        generated, gets `resolve`. Both give the same answers; two threads evaluating a new
        flag at once may each make one, alike.
        """
        run = self._specialised() or self.resolve
        self.run = run
        return run

    def _specialised(self) -> Resolve | None:
        shaped = self.shaped()
        if shaped is None:
            return None
        shape, cells = shaped
        factory = factory_of(shape)
        if factory is None:
            return None
        return factory(self.targets, murmur3, SharedContext, *cells)

    def shaped(self) -> tuple[Shape, list[Any]] | None:
        """This flag's shape and cells (see `specialise._generate`), or None for a flag
        that keeps the interpreter: one not enabled, with prerequisites, or broken."""
        if not self.enabled or self.prerequisites or self.error is not None:
            return None
        rules: list[tuple[tuple[str, ...], str]] = []
        cells: list[Any] = []
        for tests, serving in self.servings:
            kinds = []
            for test in tests:
                if test.__class__ is tuple:  # a StringSet
                    attribute, strings, flip, predicate = test
                    kinds.append(TEST_NOT_IN if flip else TEST_IN)
                    cells += (attribute, strings, predicate)
                else:
                    keeps_answers = getattr(test, "keeps_answers", False)
                    kinds.append(TEST_SEGMENT if keeps_answers else TEST_CALL)
                    cells.append(test)
            if serving.__class__ is EvaluationResult:
                kind = SERVE_RESULT
                cells.append(serving)
            elif serving.__class__ is _KeyTable:
                table = serving
                kind = SERVE_KEY_TABLE
                cells += (table.missing(), table.salt, table.buckets(), table.total)
            else:
                kind = SERVE_CALL
                cells.append(serving)
            rules.append((tuple(kinds), kind))
            if not tests:
                break
        return (bool(self.targets), tuple(rules)), cells

    def grouped(self) -> tuple[Shape, tuple[str, ...], tuple[Any, ...]] | None:
        """(shape, attributes, member) of this flag for `specialise.group_of`: its shape
        (a rollout of two entries as SERVE_KEY_SPLIT), the attribute each string-set test
        reads, and (key, targets if any, cells without those attributes); None when its
        shape is not one a group evaluates."""
        shaped = self.shaped()
        if shaped is None or not groupable(shaped[0]):
            return None
        has_targets, rules = shaped[0]
        attributes: list[str] = []
        member: list[Any] = [self.key, self.targets] if has_targets else [self.key]
        kinds: list[tuple[tuple[str, ...], str]] = []
        for (tests, serving), (test_kinds, kind) in zip(self.servings, rules, strict=False):
            for test in tests:
                if test.__class__ is tuple:  # a StringSet
                    attributes.append(test[0])
                    member += (test[1], test[3])
                else:  # a segment that keeps its answers
                    member.append(test)
            if serving.__class__ is _KeyTable:
                table = serving
                cuts = table.cuts()
                if len(cuts) == 1:
                    kind = SERVE_KEY_SPLIT
                    member += (table.missing(), table.salt, cuts[0], table.entries)
                else:
                    member += (table.missing(), table.salt, cuts, table.entries)
            else:
                member.append(serving)
            kinds.append((test_kinds, kind))
        return (has_targets, tuple(kinds)), tuple(attributes), tuple(member)

    def resolve(
        self,
        context: Context,
        targeting_key: str | None,
        flags: Mapping[str, CompiledFlag],
        chain: tuple[str, ...],
    ) -> EvaluationResult:
        if not self.enabled:
            return self.off  # type: ignore[return-value]
        if self.prerequisites:
            inner = chain + (self.key,)
            for prerequisite_key, variants in self.prerequisites:
                if not _satisfied(prerequisite_key, variants, context, targeting_key, flags, inner):
                    return self.prerequisite_failed  # type: ignore[return-value]
        if targeting_key is not None and self.targets:
            target = self.targets.get(targeting_key)
            if target is not None:
                return target
        for tests, serving in self.servings:
            for test in tests:
                if test.__class__ is tuple:  # a StringSet: its ASCII case inlined
                    value = context.get(test[0])
                    if value.__class__ is str and value.isascii():
                        if (value in test[1]) is test[2]:
                            break
                        continue
                    if not test[3](context):
                        break
                elif not test(context):  # type: ignore[operator]
                    break
            else:
                if serving.__class__ is EvaluationResult:
                    return serving
                if serving.__class__ is _KeyTable:
                    if targeting_key is None:
                        return serving.missing()
                    # bucketing.bucket(), inlined: the commonest rollout's hot line. The key
                    # is text: the salt was checked at compile time, the targeting key by
                    # the caller, so a string that is not ASCII encodes.
                    key = serving.salt + targeting_key
                    digest = murmur3(key if key.isascii() else key.encode(), 0, False)
                    return serving.entries[serving.indexes[(digest * serving.total) >> 32]]
                return serving(context)  # type: ignore[operator]
        raise AssertionError("the last serving has no predicates")  # pragma: no cover


def _satisfied(
    key: str,
    variants: frozenset[str],
    context: Context,
    targeting_key: str | None,
    flags: Mapping[str, CompiledFlag],
    chain: tuple[str, ...],
) -> bool:
    """Whether prerequisite flag `key` serves one of `variants`; missing or cyclic: no."""
    if key in chain or len(chain) >= MAX_PREREQUISITE_DEPTH:
        return False
    flag = flags.get(key)
    if flag is None or flag.error is not None:
        return False
    run = flag.run
    if run is None:
        run = flag.specialise()
    answer = run(context, targeting_key, flags, chain)
    return answer.error_code is None and answer.variant in variants


def _check_value(flag_type: str, value: object) -> bool:
    cls = value.__class__
    if flag_type == "boolean":
        return cls is bool
    if flag_type == "string":
        return cls is str
    if flag_type == "number":
        return cls is int or cls is float
    return isinstance(value, Mapping)


def _compile_flag(key: str, flag: Mapping[str, Any], compilation: _Compilation) -> CompiledFlag:
    """Compile one (non-archived) flag; raises DocumentError naming the broken field."""
    compiled = CompiledFlag(key)
    flag_type = flag.get("type")
    if flag_type not in FLAG_TYPES:
        raise DocumentError("type", f"must be one of {', '.join(FLAG_TYPES)}, got {flag_type!r}")
    compiled.type = flag_type
    enabled = flag.get("enabled")
    if enabled.__class__ is not bool:
        raise DocumentError("enabled", "must be true or false")
    compiled.enabled = enabled
    salt = flag.get("salt")
    if salt is None:
        salt = key
    if salt.__class__ is not str:
        raise DocumentError("salt", "must be a string")
    if not salt.isascii():
        require_text(salt, "salt", "the salt")
    scheme = flag.get("bucketing")
    if scheme is None:
        scheme = "flagd"
    if scheme not in SCHEMES:
        raise DocumentError("bucketing", f"must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    variants = _compile_variants(flag_type, flag.get("variants"))

    off_key = flag.get("offVariant")
    if off_key not in variants:
        raise DocumentError("offVariant", f"unknown variant {off_key!r}")
    off_value = variants[off_key]
    if not enabled:  # an enabled flag never serves its off variant as such
        compiled.off = result(key, off_value, off_key, Reason.DISABLED)
    # Absent lists (the usual case) keep the empty defaults without a call.
    if flag.get("prerequisites") is not None:
        compiled.prerequisites = _compile_prerequisites(_optional_list(flag, "prerequisites"))
    if compiled.prerequisites:
        failed = result(key, off_value, off_key, Reason.PREREQUISITE_FAILED)
        compiled.prerequisite_failed = failed
    if flag.get("targets") is not None:
        compiled.targets = _compile_targets(_optional_list(flag, "targets"), key, variants)
    used: set[str] = set()
    served = _Served(variants, key, salt, scheme, compilation)
    rules = _compile_rules(_optional_list(flag, "rules"), served, used)
    default = _compile_serving("defaultServe", flag.get("defaultServe"), served, Reason.DEFAULT)
    compiled.servings = (*rules, ((), default))
    compiled.segment_keys = frozenset(used)
    return compiled


def _compile_variants(flag_type: str, variants: object) -> dict[str, Any]:
    """Each variant's key and value, checked; the results are made where they are served."""
    if flag_type == "boolean" and _boolean_variants(variants):
        return {"on": True, "off": False}
    variants = _require_list(variants, "variants")
    if not variants:
        raise DocumentError("variants", "a flag needs at least one variant")
    values: dict[str, Any] = {}
    for index, variant in enumerate(variants):
        variant = _require_mapping(variant, f"variants[{index}]")
        variant_key, value = variant.get("key"), variant.get("value")
        if variant_key.__class__ is not str or not variant_key:
            raise DocumentError(f"variants[{index}].key", "must be a non-empty string")
        if not variant_key.isascii():
            require_text(variant_key, f"variants[{index}].key", "the variant key")
        if variant_key in values:
            message = f"variant {variant_key!r} is listed twice"
            raise DocumentError(f"variants[{index}].key", message)
        if not _check_value(flag_type, value):
            raise DocumentError(f"variants[{index}].value", f"{value!r} is not a {flag_type} value")
        cls = value.__class__
        if cls is not bool and cls is not int and cls is not float:  # those hold no string
            _require_json_text(value, f"variants[{index}].value")
        if flag_type == "json":
            value = copy.deepcopy(value)  # later edits of the document must not leak in
        values[variant_key] = value
    if flag_type == "boolean" and values != BOOLEAN_VARIANTS:
        raise DocumentError("variants", "a boolean flag has exactly on (true) and off (false)")
    return values


def _boolean_variants(variants: object) -> bool:
    """Whether `variants` is `[{"key": "on", "value": true}, {"key": "off", "value": false}]`
    exactly (types included), as nearly every boolean flag's is: what `_compile_variants`
    makes of them without its checks, which they pass."""
    if variants.__class__ is not list or len(variants) != 2:
        return False
    on, off = variants
    if on.__class__ is not dict or off.__class__ is not dict or len(on) != 2 or len(off) != 2:
        return False
    on_key, off_key = on.get("key"), off.get("key")
    return (
        on.get("value") is True
        and off.get("value") is False
        and on_key.__class__ is str
        and on_key == "on"
        and off_key.__class__ is str
        and off_key == "off"
    )


def _require_json_text(value: object, field: str) -> None:
    """Every string of a served value (at any depth, keys too) is valid Unicode.

    Served values are encoded into answers; the walk is iterative, so a deep value cannot
    exhaust the stack, and bounded, so a value that contains itself cannot loop.
    """
    pending, visited = [value], 0
    while pending:
        node = pending.pop()
        visited += 1
        if visited > MAX_VALUE_NODES:
            raise DocumentError(field, f"holds more than {MAX_VALUE_NODES} values")
        cls = node.__class__
        if cls is str:
            require_text(node, field, "a string")  # type: ignore[arg-type]
        elif isinstance(node, Mapping):
            for key, item in node.items():
                if key.__class__ is str:
                    require_text(key, field, "a key")
                pending.append(item)
        elif cls is list or cls is tuple:
            pending.extend(node)  # type: ignore[arg-type]


def _compile_prerequisites(entries: Sequence[Any]) -> tuple[tuple[str, frozenset[str]], ...]:
    prerequisites = []
    for index, entry in enumerate(entries):
        field = f"prerequisites[{index}]"
        entry = _require_mapping(entry, field)
        flag_key = entry.get("flag")
        if flag_key.__class__ is not str or not flag_key:
            raise DocumentError(f"{field}.flag", "must be a flag key")
        require_text(flag_key, f"{field}.flag", "the flag key")
        variants = _require_list(entry.get("variants"), f"{field}.variants")
        if not variants or any(variant.__class__ is not str for variant in variants):
            raise DocumentError(f"{field}.variants", "must list at least one variant key")
        prerequisites.append((flag_key, frozenset(variants)))
    return tuple(prerequisites)


def _compile_targets(
    entries: Sequence[Any], flag_key: str, variants: Mapping[str, Any]
) -> dict[str, EvaluationResult]:
    targets: dict[str, EvaluationResult] = {}
    for index, entry in enumerate(entries):
        field = f"targets[{index}]"
        entry = _require_mapping(entry, field)
        variant = entry.get("variant")
        if variant not in variants:
            raise DocumentError(f"{field}.variant", f"unknown variant {variant!r}")
        variant = cast(str, variant)
        target = result(flag_key, variants[variant], variant, Reason.TARGETING_MATCH)
        for value in _require_list(entry.get("values"), f"{field}.values"):
            if value.__class__ is not str:
                raise DocumentError(f"{field}.values", f"targeting keys are strings: {value!r}")
            require_text(value, f"{field}.values", "a targeting key")
            targets.setdefault(value, target)  # the first target listing a key wins
    return targets


def _compile_rules(
    entries: Sequence[Any], served: _Served, used: set[str]
) -> list[tuple[tuple[Test, ...], Serving]]:
    """The rules' conditions and servings; adds the segments they read to `used`."""
    rules: list[tuple[tuple[Test, ...], Serving]] = []
    for index, entry in enumerate(entries):
        try:
            rules.append(_compile_rule(entry, served, used))
        except DocumentError as exc:
            raise exc.within(f"rules[{index}]") from None
    return rules


def _compile_rule(
    entry: object, served: _Served, used: set[str]
) -> tuple[tuple[Test, ...], Serving]:
    """One rule; a DocumentError names the field within the rule."""
    entry = _require_mapping(entry, "")
    rule_id = entry.get("id")
    if rule_id.__class__ is not str:
        raise DocumentError("id", "must be a string")
    if not rule_id.isascii():
        require_text(rule_id, "id", "the rule id")
    conditions = entry.get("conditions")
    conditions = () if conditions is None else _require_list(conditions, "conditions")
    compilation = served.compilation
    # Alike lists of conditions (as marked by `mark_of`) share their tests: one mark and
    # one lookup for the rule, instead of one of each per condition.
    mark = mark_of(conditions) if conditions else None
    known = None if mark is None else compilation.rule_tests.get(mark)
    if known is None:
        tests: list[Test] = []
        keys: set[str] = set()
        for position, condition in enumerate(conditions):
            try:
                test, segment_keys = _compile_condition(condition, compilation)
            except DocumentError as exc:
                raise exc.within(f"conditions[{position}]") from None
            tests.append(test)
            keys.update(segment_keys)
        known = (tuple(tests), frozenset(keys))
        if mark is not None:
            compilation.rule_tests[mark] = known
    if known[1]:
        used.update(known[1])
    serve = _compile_serving("serve", entry.get("serve"), served, Reason.TARGETING_MATCH, rule_id)
    return known[0], serve


def _compile_condition(
    condition: object, compilation: _Compilation
) -> tuple[Test, tuple[str, ...]]:
    """The test of a condition and the segments it reads; one test for alike conditions
    (alike as marked by `mark_of`, which tells true, 1 and 1.0 apart)."""
    key = mark_of(condition)
    if key is not None:
        known = compilation.tests.get(key)
        if known is not None:
            return known
    test = _bind_condition(condition, compilation.segments, compilation.draw)
    if key is not None:
        compilation.tests[key] = test
    return test


def _bind_condition(
    condition: object, segments: Mapping[str, Predicate | DocumentError], draw: Draw
) -> tuple[Test, tuple[str, ...]]:
    parsed = parse_condition(condition, segments)
    for segment_key in parsed.segment_keys:
        segment = segments[segment_key]
        if isinstance(segment, DocumentError):
            raise DocumentError("values", f"segment {segment_key!r} is invalid: {segment}")
    predicate = bind_condition(parsed, segments, draw)  # type: ignore[arg-type]
    string_set = string_set_of(parsed, predicate)
    return (predicate if string_set is None else string_set), parsed.segment_keys


# --- segments -----------------------------------------------------------------------------


def _compile_segment(segment: object, draw: Draw) -> Predicate:
    """A segment's predicate. For a `SharedContext` (the bulk evaluation of many flags) it
    keeps its answer in the context's `segments` and answers from there the next time, so
    each segment is matched at most once per context, whichever flags read it.

    Two answers are never kept, so that every later read does what it would have done
    alone: a segment with a condition on `$random`, which draws anew at every read; and a
    match that raised (a string that is not valid Unicode, say), which raises again for the
    next flag that reads it. Segments cannot nest (`in_segment` is refused in a segment),
    so no answer is kept while another is being made.
    """
    segment = _require_mapping(segment, "")
    included = frozenset(_string_list(segment, "included"))
    excluded = frozenset(_string_list(segment, "excluded"))
    conditions = segment.get("conditions")
    conditions = () if conditions is None else _require_list(conditions, "conditions")
    predicates = []
    draws = False
    for position, condition in enumerate(conditions):
        try:
            parsed = parse_condition(condition, allow_in_segment=False)
        except DocumentError as exc:
            raise exc.within(f"conditions[{position}]") from None
        draws = draws or parsed.attribute == RANDOM_ATTRIBUTE
        predicates.append(bind_condition(parsed, {}, draw))
    rule = all_of(predicates) if predicates else None

    def match(context: Context) -> bool:
        targeting_key = context.get("targetingKey")
        if targeting_key is not None:
            if targeting_key in included:
                return True
            if targeting_key in excluded:
                return False
        return rule is not None and rule(context)

    if draws:
        return match

    def matches(context: Context) -> bool:
        if context.__class__ is not SharedContext:
            return match(context)
        answers = context.segments
        answer: bool | None = answers.get(matches)
        if answer is None:
            answer = answers[matches] = match(context)
        return answer

    matches.keeps_answers = True  # type: ignore[attr-defined] # read inline: see specialise
    return matches


def _string_list(segment: Mapping[str, Any], field: str) -> list[str]:
    values = segment.get(field)
    values = () if values is None else _require_list(values, field)
    for value in values:
        if value.__class__ is not str:
            raise DocumentError(field, f"targeting keys are strings: {value!r}")
        require_text(value, field, "a targeting key")
    return list(values)


# --- the snapshot -------------------------------------------------------------------------


_INVALID_CONTEXT_TEXT = f"a string read from the context {INVALID_TEXT}"
# The place of an answer evaluate_all computes, until it does.
_PENDING = error_result("", ErrorCode.GENERAL, "not evaluated")


class Snapshot:
    """An immutable, compiled flag document. Safe to share between threads."""

    __slots__ = (
        "_document",
        "_fixed",
        "_fixed_answers",
        "_flag_keys",
        "_flags",
        "_live",
        "_origin",
        "_pending",
        "_plan",
        "_variable",
        "_version",
    )

    def __init__(
        self,
        document: dict[str, Any],
        version: int,
        flags: dict[str, CompiledFlag],
        origin: Origin,
    ) -> None:
        self._document = document
        self._version = version
        self._flags = flags
        self._origin = origin
        origin.compiled = flags
        # Every live flag; the answers that are the same for every context, in document
        # order; and the flags evaluate_all evaluates, the others.
        live: list[tuple[str, CompiledFlag]] = []
        self._fixed: dict[str, EvaluationResult] = {}
        variable: list[tuple[str, CompiledFlag]] = []
        for key, flag in flags.items():
            if flag.archived:
                continue
            live.append((key, flag))
            fixed = flag.fixed
            if fixed is None:
                variable.append((key, flag))
                fixed = _PENDING
            self._fixed[key] = fixed
        self._live = tuple(live)
        self._flag_keys = tuple(self._fixed)
        self._variable = tuple(variable)
        self._fixed_answers: Mapping[str, EvaluationResult] = MappingProxyType(
            {key: fixed for key, fixed in self._fixed.items() if fixed is not _PENDING}
        )
        # How evaluate_all evaluates `_variable`, made at its first call.
        self._plan: _BulkPlan | None = None
        # `_variable`'s keys in document order, the start of evaluate_dependent's answers.
        self._pending = {key: _PENDING for key, _ in variable}

    @property
    def version(self) -> int:
        return self._version

    @property
    def flag_keys(self) -> tuple[str, ...]:
        """The keys of every flag that is not archived, in document order."""
        return self._flag_keys

    @property
    def fixed_answers(self) -> Mapping[str, EvaluationResult]:
        """The answer of each flag (not archived) whose answer is the same for every context
        `evaluate_all` does not refuse, in document order: a disabled or broken flag, or
        one with no target, rule, prerequisite or rollout to read. The same result objects
        at every call, and in every answer of `evaluate_all` that is not a refusal; the
        other flags are those `evaluate_dependent` evaluates."""
        return self._fixed_answers

    @property
    def document(self) -> dict[str, Any]:
        return self._document

    @property
    def compiled_flags(self) -> int:
        """How many of its flags compiling this snapshot compiled; the others it reused
        from the previous snapshot (see `compile_document`)."""
        return self._origin.compiled_flags

    def evaluate(
        self, flag_key: str, context: Context | object, expected_type: str | None = None
    ) -> EvaluationResult:
        """Evaluate one flag for one context; never raises."""
        # The steps of `_refusal` are written out here: one call fewer on the hottest path.
        try:
            flags = self._flags
            try:  # a subscript is cheaper than get(); a miss is the rare case
                flag = flags[flag_key]
            except KeyError:
                return error_result(
                    flag_key, ErrorCode.FLAG_NOT_FOUND, f"flag {flag_key!r} does not exist"
                )
            if flag.error is not None:
                return flag.error
            if expected_type is not None and expected_type != flag.type:
                mismatch = _type_mismatch(flag, expected_type)
                if mismatch is not None:
                    return mismatch
            if context.__class__ is not dict and not isinstance(context, Mapping):
                return error_result(flag_key, ErrorCode.INVALID_CONTEXT, _NOT_AN_OBJECT)
            targeting_key = context.get("targetingKey")
            if targeting_key is not None:
                if targeting_key.__class__ is not str:
                    return error_result(flag_key, ErrorCode.INVALID_CONTEXT, _KEY_NOT_A_STRING)
                if not targeting_key.isascii():
                    targeting_key.encode()  # a lone surrogate raises: INVALID_CONTEXT
            if flag.fixed is not None:  # disabled, or no rule, target or rollout to read
                return flag.fixed
            run = flag.run
            if run is None:
                run = flag.specialise()
            return run(context, targeting_key, flags, ())
        except UnicodeEncodeError:  # a string read from the context is not valid Unicode
            return error_result(flag_key, ErrorCode.INVALID_CONTEXT, _INVALID_CONTEXT_TEXT)
        except Exception as exc:  # noqa: BLE001 - evaluation must answer, whatever happens
            return error_result(flag_key, ErrorCode.GENERAL, f"{type(exc).__name__}: {exc}")

    def evaluate_all(self, context: Context | object) -> dict[str, EvaluationResult]:
        """Evaluate every flag that is not archived for one context; never raises."""
        try:
            refusal = _refusal(context)  # the context is checked once, not once per flag
            targeting_key = None if refusal else context.get("targetingKey")  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - a mapping whose get() fails
            failure = f"{type(exc).__name__}: {exc}"
            return {
                key: flag.error or error_result(key, ErrorCode.GENERAL, failure)
                for key, flag in self._live
            }
        if refusal is not None:
            return {
                key: flag.error or error_result(key, ErrorCode.INVALID_CONTEXT, refusal)
                for key, flag in self._live
            }
        # The fixed answers are copied in one step, every key in document order; only the
        # flags whose answer depends on the context are evaluated.
        return self._evaluate_dependent(context, targeting_key, self._fixed.copy())  # type: ignore[arg-type]

    def evaluate_dependent(self, context: Context | object) -> dict[str, EvaluationResult] | None:
        """The answers of the flags (not archived) that are not in `fixed_answers`, for one
        context, in document order: with `fixed_answers`, what `evaluate_all` answers. None
        when `evaluate_all` answers every flag with an error about the context (not an
        object, a targetingKey that is not a string or not valid Unicode). Never raises."""
        try:
            if _refusal(context) is not None:
                return None
            targeting_key = context.get("targetingKey")  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - a mapping whose get() fails: evaluate_all says so
            return None
        pending = self._pending.copy()
        return self._evaluate_dependent(context, targeting_key, pending)  # type: ignore[arg-type]

    def _evaluate_dependent(
        self,
        context: Mapping[str, Any],
        targeting_key: str | None,
        answers: dict[str, EvaluationResult],
    ) -> dict[str, EvaluationResult]:
        """Adds to `answers` those of the flags whose answer depends on the context."""
        flags = self._flags
        plan = self._plan
        if plan is None:
            plan = self._plan = _BulkPlan(self._variable)
        # A dict context (as every door decodes one) is evaluated as a SharedContext: each
        # segment is matched once for all the flags that read it, and the flags of one
        # group (`_BulkPlan`) are evaluated in one call. Another mapping is read as it is, flag
        # by flag, whose answers might not be the same at every read.
        if context.__class__ is dict:
            context = SharedContext(context)
            for run_group, members, attributes in plan.groups:
                run_group(context, targeting_key, answers, members, attributes, _failed)
            runs = plan.singles
        else:
            runs = plan.runs
        for key, run in runs:
            try:
                answers[key] = run(context, targeting_key, flags, ())
            except UnicodeEncodeError:
                answers[key] = error_result(key, ErrorCode.INVALID_CONTEXT, _INVALID_CONTEXT_TEXT)
            except Exception as exc:  # noqa: BLE001
                answers[key] = error_result(key, ErrorCode.GENERAL, f"{type(exc).__name__}: {exc}")
        return answers


def _failed(key: str, exc: Exception) -> EvaluationResult:
    """The answer of a flag whose evaluation raised, as `_evaluate_dependent` gives it."""
    if isinstance(exc, UnicodeEncodeError):
        return error_result(key, ErrorCode.INVALID_CONTEXT, _INVALID_CONTEXT_TEXT)
    return error_result(key, ErrorCode.GENERAL, f"{type(exc).__name__}: {exc}")


class _BulkPlan:
    """How `evaluate_all` evaluates the flags whose answer depends on the context, made at
    its first call: `runs`, each flag's evaluation function in document order (for a
    context that is not a dict); and for a dict context, `groups`, the flags of one
    groupable shape that read the same attributes (`specialise.group_of`), at least two,
    each evaluated in one call, then `singles`, the others one by one in document order.

    A group's flags never draw `$random`, so the flags that do draw in the same order as
    flag by flag; the answers are stored by key, in the order the answers dict has.
    """

    __slots__ = ("groups", "runs", "singles")

    def __init__(self, variable: Sequence[tuple[str, CompiledFlag]]) -> None:
        self.runs = tuple([(key, flag.run or flag.specialise()) for key, flag in variable])
        alike: dict[tuple[Shape, tuple[str, ...]], list[tuple[Any, ...]]] = {}
        for _, flag in variable:
            grouped = flag.grouped()
            if grouped is not None:
                shape, attributes, member = grouped
                alike.setdefault((shape, attributes), []).append(member)
        groups = []
        grouped_keys: set[str] = set()
        for (shape, attributes), members in alike.items():
            run_group = group_of(shape) if len(members) > 1 else None
            if run_group is None:
                continue
            groups.append((run_group, tuple(members), attributes))
            grouped_keys.update([member[0] for member in members])
        self.groups = tuple(groups)
        self.singles = tuple([run for run in self.runs if run[0] not in grouped_keys])


def _constant(flag: CompiledFlag) -> EvaluationResult | None:
    """The flag's answer if no context changes it (a valid context: see `_refusal`)."""
    if flag.error is not None:
        return None
    if not flag.enabled:
        return flag.off
    if flag.prerequisites or flag.targets or len(flag.servings) > 1:
        return None
    _, default = flag.servings[0]
    return default if default.__class__ is EvaluationResult else None


_NOT_AN_OBJECT = "the context must be a JSON object"
_KEY_NOT_A_STRING = "targetingKey must be a string"


def _type_mismatch(flag: CompiledFlag, expected_type: str) -> EvaluationResult | None:
    if _TYPE_ALIASES.get(expected_type) == flag.type:
        return None
    return error_result(
        flag.key,
        ErrorCode.TYPE_MISMATCH,
        f"flag {flag.key!r} is a {flag.type} flag, not {expected_type}",
    )


def _refusal(context: object) -> str | None:
    """Why no flag can be evaluated for `context` (INVALID_CONTEXT), or None."""
    if context.__class__ is not dict and not isinstance(context, Mapping):
        return _NOT_AN_OBJECT
    targeting_key = context.get("targetingKey")
    if targeting_key is None:
        return None
    if targeting_key.__class__ is not str:
        return _KEY_NOT_A_STRING
    if not is_text(targeting_key):
        return f"targetingKey {INVALID_TEXT}"
    return None


def compile_document(
    document: dict[str, Any],
    *,
    generator: random.Random | None = None,
    previous: Snapshot | None = None,
) -> Snapshot:
    """Compile a flag document into a snapshot.

    `generator` is where the snapshot draws the value of the `$random` attribute, anew at
    every read (see docs/evaluation.md): by default a `random.Random` of the snapshot's own
    (or the `previous` snapshot's); pass a seeded one for answers that repeat.

    With `previous`, the snapshot of an earlier version, every flag and segment whose part
    of the document is unchanged (the same JSON, types included) is reused instead of
    compiled again, so the cost is that of the flags that changed (`compiled_flags` counts
    them). The answers are those of a compile from scratch. A document must not be edited
    once compiled: its parts are what the next compile compares with.

    A broken flag does not stop the others: it evaluates to an error with PARSE_ERROR and
    details naming the field. Only a document that is not an object with a `flags` object
    (or has a non-integer `version`, or a `segments` that is not an object) raises
    DocumentError.
    """
    if not isinstance(document, Mapping):
        raise DocumentError("", "a flag document must be a JSON object")
    flags = document.get("flags")
    if not isinstance(flags, Mapping):
        raise DocumentError("flags", "a flag document needs a flags object")
    version = document.get("version")
    if version is None:  # absent or null: the default, like every optional field
        version = 0
    if version.__class__ is not int:
        raise DocumentError("version", f"must be an integer, got {version!r}")
    raw_segments = document.get("segments")
    if raw_segments is None:
        raw_segments = {}
    if not isinstance(raw_segments, Mapping):
        raise DocumentError("segments", "must be an object")
    base = _reusable(previous, generator)
    if generator is None:
        generator = base.generator if base is not None else random.Random()
    draw = base.draw if base is not None else _drawing(generator)
    origin = Origin(flags, raw_segments, generator, draw)
    segments = _compile_segments(raw_segments, draw, base, origin)
    compilation = _Compilation(segments, draw)
    reused = {} if base is None else reused_flags(flags, base, origin, segments)
    compiled = {}
    for key, flag in flags.items():
        kept = reused.get(key)
        if kept is None:
            kept = _compiled(key, flag, compilation)
            origin.compiled_flags += 1
        compiled[key] = kept
    return Snapshot(document, version, compiled, origin)


def _compile_segments(
    raw_segments: Mapping[str, Any], draw: Draw, base: Origin | None, origin: Origin
) -> dict[str, Predicate | DocumentError]:
    segments: dict[str, Predicate | DocumentError] = {}
    for segment_key, segment in raw_segments.items():
        if base is not None and unchanged(
            base.raw_segments,
            base.segment_marks,
            segment_key,
            segment,
            origin.segment_marks,
            raw_segments,
        ):
            segments[segment_key] = base.segments[segment_key]
            continue
        try:
            if segment_key.__class__ is str and not is_text(segment_key):
                raise DocumentError("", f"the segment key {INVALID_TEXT}")
            segments[segment_key] = _compile_segment(segment, draw)
        except DocumentError as exc:
            segments[segment_key] = exc
    origin.segments = segments
    return segments


def _reusable(previous: Snapshot | None, generator: random.Random | None) -> Origin | None:
    """What of `previous` a compile may reuse: nothing for another generator, whose draws
    the compiled `$random` conditions and rollouts could not take."""
    if previous is None:
        return None
    base = previous._origin  # noqa: SLF001 - snapshots of one module
    if generator is not None and generator is not base.generator:
        return None
    return base


class _Compilation:
    """What the flags of one document are compiled against: its segments, the `$random`
    draw, and what its conditions, servings and bucket tables compiled to so far (alike ones,
    as marked by `mark_of`, share one)."""

    __slots__ = ("_indexes", "_servings", "draw", "rule_tests", "segments", "tests")

    def __init__(self, segments: Mapping[str, Predicate | DocumentError], draw: Draw) -> None:
        self.segments = segments
        self.draw = draw
        self.tests: dict[bytes, tuple[Test, tuple[str, ...]]] = {}
        # a rule's conditions -> (their tests, the segments they read)
        self.rule_tests: dict[bytes, tuple[tuple[Test, ...], frozenset[str]]] = {}
        self._indexes: dict[tuple[int, ...], tuple[int, ...]] = {}
        self._servings: dict[tuple[Any, ...], Any] = {}

    def parsed_serving(self, serving: object, variants: Mapping[str, Any]) -> _Plan:
        """`_parse_serving` of `serving` over `variants`, with the rollout's weights alone
        and their total, once for alike servings."""
        # A list, not the dict: `in` must not hash an unhashable variant (an unknown one).
        variant_keys = list(variants)
        mark = mark_of(serving)
        if mark is None:
            return _plan(serving, variant_keys)
        key = (mark, *variant_keys)
        parsed = self._servings.get(key)
        if parsed is None:
            parsed = self._servings[key] = _plan(serving, variant_keys)
        return parsed

    def bucket_indexes(self, weights: tuple[int, ...]) -> tuple[int, ...]:
        """The index of the entry of each flagd bucket, one table for alike weights."""
        indexes = self._indexes.get(weights)
        if indexes is None:
            indexes = self._indexes[weights] = bucket_indexes(weights)
        return indexes


# A parsed serving (see `_parse_serving`), then its weights alone and their total.
_Plan = tuple[str | None, str, tuple[tuple[str, int], ...], str | None, tuple[int, ...], int]


def _plan(serving: object, variant_keys: Sequence[str]) -> _Plan:
    variant, bucket_by, weights, salt = _parse_serving(serving, variant_keys)
    weights_only = tuple([weight for _, weight in weights])
    return variant, bucket_by, weights, salt, weights_only, sum(weights_only)


def _drawing(generator: random.Random) -> Draw:
    """A fresh bucket value at every call: 64 random bits, as a string like any value."""
    getrandbits = generator.getrandbits
    return lambda: str(getrandbits(64))


def _compiled(key: str, flag: object, compilation: _Compilation) -> CompiledFlag:
    compiled = _compile_or_error(key, flag, compilation)
    compiled.fixed = compiled.error or _constant(compiled)
    return compiled


def _compile_or_error(key: str, flag: object, compilation: _Compilation) -> CompiledFlag:
    entry = flag if flag.__class__ is dict or isinstance(flag, Mapping) else None
    if entry is not None and entry.get("archived") is True:
        archived = CompiledFlag(key)
        archived.error = error_result(key, ErrorCode.FLAG_NOT_FOUND, f"flag {key!r} is archived")
        archived.archived = True
        return archived
    try:
        if key.__class__ is str and not is_text(key):
            raise DocumentError("", f"the flag key {INVALID_TEXT}")
        if entry is None:
            raise DocumentError("", "a flag must be an object")
        archived_field = entry.get("archived", False)
        if archived_field is not None and archived_field.__class__ is not bool:
            raise DocumentError("archived", "must be true or false")
        return _compile_flag(key, entry, compilation)
    except DocumentError as exc:
        broken = CompiledFlag(key)
        broken.error = error_result(key, ErrorCode.PARSE_ERROR, f"flag {key!r}: {exc}")
        return broken
    except Exception as exc:  # noqa: BLE001 - one odd flag must not break the others
        broken = CompiledFlag(key)
        broken.error = error_result(
            key, ErrorCode.PARSE_ERROR, f"flag {key!r}: {type(exc).__name__}: {exc}"
        )
        return broken
