"""Straight-line evaluation functions generated per flag shape.

`CompiledFlag.resolve` is a general interpreter: it loops over the rules, over each rule's
tests, and asks of each test and serving what kind it is. For the flags most documents
hold (enabled, no prerequisites, a few rules of a few conditions) this module writes, once
per *shape*, the Python source of a function that does the same steps unrolled:

- each rule is one `if` whose tests are joined by `and` (so they short-circuit in the same
  order as the interpreter's loop); a string-set condition (`in`, `not_in`, `equals`, ...)
  is written inline as `value in strings` for a string in the set or an ASCII string, and
  calls the condition's full predicate for any other value (which checks that a string
  outside the set is valid Unicode), exactly as the interpreter answers;
- a segment read (`in_segment` of one segment) takes the segment's answer kept by the
  context of a bulk evaluation (a SharedContext) when there is one, and calls the segment's
  predicate otherwise, which makes and keeps it;
- what a rule or the default serves is written for its kind: a prebuilt result is returned
  as is; the flagd rollout by the targeting key hashes salt + key inline, with the salt,
  bucket table and results held in closure cells; any other serving is called;
- nothing is allocated: no loop, no tuple unpacking, no bound method.

A shape is the sequence of those kinds (and whether the flag has targets): the attribute
names, sets, predicates and results are not in the source but bound as closure cells by a
factory, so every flag of one shape shares one compiled code object, and making a flag's
function is one call of its shape's factory. The number of shapes generated is bounded
(`MAX_SHAPES`), and so is a shape's size (`MAX_TESTS`, `MAX_RULES`): a flag beyond them, or
with prerequisites, keeps the interpreter, which gives the same answers. A flag gets its
function at its first evaluation (`CompiledFlag.specialise`), so compiling costs nothing more.

`evaluate_all` goes further for a dict context: the flags of one shape made only of
string-set tests, segment reads, results and rollouts by the targeting key, whose tests
read the same attributes, are evaluated by one generated function (`group_of`) that reads
each attribute once for the whole group and loops over the flags' cells, with no call per
flag; its rollouts compare the hash with precomputed cuts instead of scaling it. The
answers are those of each flag's own function.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Any

from .bucketing import murmur3

# Kinds of test and serving, as written into a shape.
TEST_IN = "in"  # a string set that passes when the value is in it
TEST_NOT_IN = "out"  # a string set that passes when the value is not in it
TEST_CALL = "call"  # any other predicate
# A segment's predicate that keeps its answers in a SharedContext (`snapshot._compile_segment`):
# its kept answer is read inline, and only a context without one calls the predicate.
TEST_SEGMENT = "segment"
SERVE_RESULT = "result"
SERVE_KEY_TABLE = "table"
# A group's rollout of two entries by the targeting key: one comparison with the cut.
SERVE_KEY_SPLIT = "split"
SERVE_CALL = "call"

# Bounds on what is generated: beyond them a flag is evaluated by the interpreter.
MAX_SHAPES = 512
MAX_RULES = 32
MAX_TESTS = 64

Shape = tuple[bool, tuple[tuple[tuple[str, ...], str], ...]]
Factory = Callable[..., Callable[..., Any]]

_factories: dict[Shape, Factory] = {}
_lock = threading.Lock()


def factory_of(shape: Shape) -> Factory | None:
    """The factory of `shape`'s evaluation function (generated at its first use), or None
    when the shape is too large or too many shapes were generated already."""
    made = _factories.get(shape)
    if made is not None:
        return made
    has_targets, rules = shape
    if len(rules) > MAX_RULES or sum(len(tests) for tests, _ in rules) > MAX_TESTS:
        return None
    with _lock:
        made = _factories.get(shape)
        if made is None:
            if len(_factories) >= MAX_SHAPES:
                return None
            made = _factories[shape] = _generate(has_targets, rules)
    return made


def _generate(has_targets: bool, rules: Sequence[tuple[tuple[str, ...], str]]) -> Factory:
    """Generate, compile and return the factory of one shape (see the module docstring).

    The factory takes the flag's targets, the hash function, the SharedContext class, then
    the cells of each rule in order: per string-set test (attribute, strings, predicate), per
    other test, a segment read included (predicate),
    then per serving (result), (missing-key result, salt, the result of each bucket, bucket
    count) for a key table, or (serve function).
    """
    cells: list[str] = []

    def cell() -> str:
        name = f"c{len(cells)}"
        cells.append(name)
        return name

    body: list[str] = []
    if any(TEST_SEGMENT in tests for tests, _ in rules):
        # The answers a SharedContext keeps; another context has none (an empty dict).
        body.append("    answers = context.segments if context.__class__ is shared else none")
    if has_targets:
        body += [
            "    if targeting_key is not None:",
            "        target = targets.get(targeting_key)",
            "        if target is not None:",
            "            return target",
        ]
    for tests, serving in rules:
        parts = []
        for kind in tests:
            if kind == TEST_CALL:
                parts.append(f"{cell()}(context)")
                continue
            if kind == TEST_SEGMENT:
                predicate = cell()
                parts.append(
                    f"(kept if (kept := answers.get({predicate})) is not None"
                    f" else {predicate}(context))"
                )
                continue
            attribute, strings, predicate = cell(), cell(), cell()
            # The predicate answers a string in the set as the set does, and an ASCII
            # string outside it as the set does: only another string (which it must
            # check is valid Unicode) or value reaches it.
            if kind == TEST_IN:
                string_case = f"value in {strings} or not value.isascii() and {predicate}(context)"
            else:
                string_case = (
                    f"value not in {strings} and (value.isascii() or {predicate}(context))"
                )
            parts.append(
                f"(({string_case}) if (value := context.get({attribute})).__class__ is str"
                f" else {predicate}(context))"
            )
        indent = "    "
        if parts:
            body.append(f"    if {' and '.join(parts)}:")
            indent = "        "
        if serving == SERVE_RESULT:
            body.append(f"{indent}return {cell()}")
        elif serving == SERVE_KEY_TABLE:
            missing, salt, buckets, total = cell(), cell(), cell(), cell()
            # bucketing.bucket(), inlined. The hash is given the string itself: it is valid
            # text, whose UTF-8 the hash takes as bucket() encodes it, because the salt was
            # checked at compile time and the targeting key by each caller of `run`
            # (Snapshot.evaluate and evaluate_all refuse a key that is not valid Unicode
            # before any flag is evaluated): no lone surrogate reaches the hash's C code.
            body += [
                f"{indent}if targeting_key is None:",
                f"{indent}    return {missing}",
                f"{indent}return {buckets}[",
                f"{indent}    (murmur3({salt} + targeting_key, 0, False) * {total}) >> 32",
                f"{indent}]",
            ]
        else:
            body.append(f"{indent}return {cell()}(context)")
        if not parts:
            break  # a rule without conditions always matches: nothing after it is read
    else:
        body.append("    raise AssertionError('the last serving has conditions')")
    source = "\n".join(
        [
            f"def factory(targets, murmur3, shared, {', '.join(cells)}):",
            "  none = NONE",
            "  def run(context, targeting_key, flags, chain):",
            *["  " + line for line in body],
            "  return run",
        ]
    )
    namespace: dict[str, Any] = {"NONE": MappingProxyType({})}
    exec(compile(source, "<evaluation.engine.specialise>", "exec"), namespace)  # noqa: S102
    return namespace["factory"]  # type: ignore[no-any-return]


# --- groups: many flags of one shape in one call -------------------------------------------

# The kinds a group evaluates: none of them draws `$random` (a string-set test never reads
# it, a segment that keeps its answers never draws), so a group's flags may be evaluated
# apart from the others, whose draws keep their order.
_GROUPED_TESTS = frozenset({TEST_IN, TEST_NOT_IN, TEST_SEGMENT})
_GROUPED_SERVINGS = frozenset({SERVE_RESULT, SERVE_KEY_TABLE, SERVE_KEY_SPLIT})

GroupRun = Callable[..., None]
_group_factories: dict[Shape, GroupRun] = {}


def groupable(shape: Shape) -> bool:
    """Whether flags of `shape` can be evaluated together by `group_of`."""
    _, rules = shape
    return all(
        serving in _GROUPED_SERVINGS and _GROUPED_TESTS.issuperset(tests)
        for tests, serving in rules
    )


def group_of(shape: Shape) -> GroupRun | None:
    """The function that evaluates every flag of one group of `shape` for one context
    (generated at its first use), or None when the shape is not groupable, too large, or
    too many shapes were generated already.

    It is called as `run(context, targeting_key, answers, members, attributes, failed)`:
    `context` a SharedContext, `members` a sequence of (flag key, the flag's cells as
    `_generate` binds them but without the attribute of each string-set test), `attributes`
    the attribute each string-set test reads (the same for every member: the group's), and
    `failed(key, exception)` the answer of a flag whose evaluation raised. It stores each
    member's answer in `answers[key]`.

    The steps are those of `_generate`'s function for each member, with each attribute read
    once for the whole group instead of once per flag (a SharedContext is a dict that no
    condition changes, so every read gives the same value) and no call per flag.
    """
    made = _group_factories.get(shape)
    if made is not None:
        return made
    has_targets, rules = shape
    if not groupable(shape):
        return None
    if len(rules) > MAX_RULES or sum(len(tests) for tests, _ in rules) > MAX_TESTS:
        return None
    with _lock:
        made = _group_factories.get(shape)
        if made is None:
            if len(_group_factories) >= MAX_SHAPES:
                return None
            made = _group_factories[shape] = _generate_group(has_targets, rules)
    return made


def _generate_group(has_targets: bool, rules: Sequence[tuple[tuple[str, ...], str]]) -> GroupRun:
    """Generate and compile the group function of one shape (see `group_of`)."""
    fields: list[str] = []  # the names a member unpacks to, after its key

    def field() -> str:
        name = f"c{len(fields)}"
        fields.append(name)
        return name

    attributes: list[str] = []
    head: list[str] = []
    if any(TEST_SEGMENT in tests for tests, _ in rules):
        head.append("    kept_answers = context.segments")
    body: list[str] = []
    if has_targets:
        targets = field()
        body += [
            "            if targeting_key is not None:",
            f"                target = {targets}.get(targeting_key)",
            "                if target is not None:",
            "                    answers[key] = target",
            "                    continue",
        ]
    for tests, serving in rules:
        parts = []
        for kind in tests:
            if kind == TEST_SEGMENT:
                predicate = field()
                parts.append(
                    f"(kept if (kept := kept_answers.get({predicate})) is not None"
                    f" else {predicate}(context))"
                )
                continue
            # A string-set test: its value, whether it is a string, and (for a string) its
            # ASCII-ness are read once per group; the expression is `_generate`'s.
            index = len(attributes)
            attributes.append(f"a{index}")
            value, is_str, other = f"v{index}", f"s{index}", f"o{index}"
            head += [
                f"    {value} = context.get(a{index})",
                f"    {is_str} = {value}.__class__ is str",
            ]
            strings, predicate = field(), field()
            if kind == TEST_IN:
                head.append(f"    {other} = {is_str} and not {value}.isascii()")
                string_case = f"{value} in {strings} or {other} and {predicate}(context)"
            else:
                head.append(f"    {other} = {is_str} and {value}.isascii()")
                string_case = f"{value} not in {strings} and ({other} or {predicate}(context))"
            parts.append(f"(({string_case}) if {is_str} else {predicate}(context))")
        indent = "            "
        if parts:
            body.append(f"            if {' and '.join(parts)}:")
            indent = "                "
        if serving == SERVE_RESULT:
            body += [f"{indent}answers[key] = {field()}", f"{indent}continue"]
        else:
            # A rollout by the targeting key: `_generate`'s hash, then the entry found by
            # comparing the hash with the cuts (see `snapshot._KeyTable.cuts`), the same
            # entry as through the bucket table.
            missing, salt, cuts, entries = field(), field(), field(), field()
            if serving == SERVE_KEY_SPLIT:
                choose = f"{entries}[murmur3({salt} + targeting_key, 0, False) >= {cuts}]"
            else:
                choose = f"{entries}[bisect({cuts}, murmur3({salt} + targeting_key, 0, False))]"
            body += [
                f"{indent}if targeting_key is None:",
                f"{indent}    answers[key] = {missing}",
                f"{indent}else:",
                f"{indent}    answers[key] = {choose}",
                f"{indent}continue",
            ]
        if not parts:
            break
    else:
        body.append("            raise AssertionError('the last serving has conditions')")
    unpack = ", ".join(["key", *fields])
    source = "\n".join(
        [
            "def run(context, targeting_key, answers, members, attributes, failed):",
            f"    ({''.join(name + ', ' for name in attributes)}) = attributes",
            *head,
            f"    for {unpack} in members:",
            "        try:",
            *body,
            "        except Exception as exc:",
            "            answers[key] = failed(key, exc)",
        ]
    )
    namespace: dict[str, Any] = {"murmur3": murmur3, "bisect": bisect_right}
    exec(compile(source, "<evaluation.engine.specialise group>", "exec"), namespace)  # noqa: S102
    return namespace["run"]  # type: ignore[no-any-return]
