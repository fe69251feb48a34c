"""Hypothesis strategies for hostile input: lone surrogates, NUL, huge and deep values.

Shared by the engine's adversarial run (`hostile_engine.py`, in a subprocess of its own)
and the endpoints' (`test_adversarial_http.py`, against a real server process), so that a
crash of the process is a failure the tests see, not the end of the test run.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from evaluation.engine import OPERATORS

# The characters that broke things: a lone surrogate of each half, NUL, a tab.
surrogates = st.integers(0xD800, 0xDFFF).map(chr)
odd_characters = st.sampled_from(["\ud800", "\udfff", "\udc00", "\x00", "\t", "\u2028", "😀"])
# A string that is certainly not valid Unicode: text around a lone surrogate.
broken_text = st.tuples(st.text(max_size=3), surrogates, st.text(max_size=3)).map("".join)
hostile_text = st.one_of(
    st.text(max_size=8),
    broken_text,
    st.lists(st.one_of(st.text(max_size=3), surrogates, odd_characters), max_size=6).map("".join),
    st.sampled_from(
        [
            "a" * 10_000 + "!",  # the pathological regex's prey
            "9" * 5_000 + ".0.0",  # a version past int()'s 4,300 digits
            "2025-01-01X00:00:00Z",
            "2025-01-01T00:00:00+01:00:30",
            "::ffff:10.0.0.1",
            "10.0.0.1\x00",
            "user-1",
        ]
    ),
)
huge_numbers = st.one_of(
    st.integers(),
    st.sampled_from([10**400, -(10**4000), 2**63, 1e308, -1e308, 5e-324]),
    st.floats(allow_nan=False),
)


def nested(depth: int, leaf: Any = "x") -> Any:
    """A value nested `depth` lists and objects deep (built without recursion)."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"a": value}
    return value


def nested_json(depth: int) -> bytes:
    """`nested(depth)` as JSON text, written without recursion (json.dumps would recurse)."""
    opening = b"".join(b"[" if level % 2 else b'{"a":' for level in reversed(range(depth)))
    closing = b"".join(b"]" if level % 2 else b"}" for level in range(depth))
    return opening + b'"x"' + closing


deep_values = st.integers(1, 10_000).map(nested)
scalars = st.one_of(st.none(), st.booleans(), huge_numbers, hostile_text)
hostile_values = st.one_of(
    scalars,
    deep_values,
    st.lists(scalars, max_size=4),
    st.dictionaries(hostile_text, scalars, max_size=3),
)
attributes = st.one_of(
    st.sampled_from(["targetingKey", "email", "plan", "at", "ip", "app", "a.b", "companyId"]),
    hostile_text,
)
# JSON-shaped contexts (no NaN), as a request body can carry; the attributes the documents
# read are there often, and a broken targetingKey often enough to be found every run.
contexts = st.builds(
    lambda known, others: {**others, **known},
    st.fixed_dictionaries(
        {},
        optional={
            "targetingKey": st.one_of(broken_text, hostile_text, st.none()),
            "email": st.one_of(broken_text, hostile_values),
            "plan": hostile_values,
            "at": hostile_values,
            "companyId": st.one_of(broken_text, hostile_values),
            "a": st.one_of(hostile_values, st.fixed_dictionaries({"b": hostile_values})),
        },
    ),
    st.dictionaries(hostile_text, hostile_values, max_size=2),
)
operators = st.sampled_from(sorted(OPERATORS))


# Values each operator takes, so that most drawn flags compile and are evaluated.
_PLAUSIBLE = {
    "contains": st.text(min_size=1, max_size=3),
    "starts_with": st.text(min_size=1, max_size=3),
    "ends_with": st.text(min_size=1, max_size=3),
    "matches": st.sampled_from(["(a+)+$", "^[a-z]+@", "(?i)x", "\\x00", "."]),
    "lt": huge_numbers,
    "semver_gt": st.sampled_from(["1.0.0", "2.0.0-rc.1"]),
    "before": st.sampled_from(["2025-01-01", "2025-01-01T00:00:00Z", 0]),
    "in_cidr": st.sampled_from(["10.0.0.0/8", "::/0"]),
}


def _plausible(operator: str) -> st.SearchStrategy[Any]:
    for prefix, values in _PLAUSIBLE.items():
        if operator.startswith(prefix.split("_")[0]):
            return values
    if operator in ("lte", "gt", "gte"):
        return huge_numbers
    if operator == "after":
        return _PLAUSIBLE["before"]
    return st.one_of(st.text(max_size=3), st.integers(), st.booleans())


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    operator = draw(operators)
    values = st.one_of(_plausible(operator), scalars, st.just("(a+)+$"))
    condition: dict[str, Any] = {
        "attribute": draw(st.one_of(st.sampled_from(["email", "plan", "at", "a.b"]), attributes)),
        "operator": operator,
        "values": draw(st.lists(values, min_size=1, max_size=3)),
        "negate": draw(st.booleans()),
    }
    if operator in ("exists", "not_exists"):
        condition["values"] = []
    if operator == "in_segment":
        condition["attribute"] = None
        condition["values"] = draw(st.lists(st.sampled_from(["beta", "\ud800"]), max_size=2))
    return condition


@st.composite
def flags(draw: st.DrawFn) -> dict[str, Any]:
    serving = draw(
        st.one_of(
            st.just({"variant": "on"}),
            st.builds(
                lambda bucket_by: {
                    "rollout": {
                        "bucketBy": bucket_by,
                        "variants": [
                            {"variant": "on", "weight": 50},
                            {"variant": "off", "weight": 50},
                        ],
                    }
                },
                st.one_of(st.sampled_from(["targetingKey", "companyId", "a.b"]), attributes),
            ),
        )
    )
    return {
        "type": "boolean",
        "enabled": draw(st.booleans()),
        "salt": draw(st.one_of(st.none(), st.text(max_size=4), hostile_text)),
        "variants": [{"key": "on", "value": True}, {"key": "off", "value": False}],
        "offVariant": "off",
        "targets": [
            {
                "variant": "on",
                "values": draw(st.lists(st.one_of(st.text(), hostile_text), max_size=3)),
            }
        ],
        "rules": [
            {
                "id": draw(hostile_text),
                "conditions": draw(st.lists(conditions(), max_size=3)),
                "serve": serving,
            }
        ],
        "defaultServe": serving,
        "metadata": {"name": draw(hostile_text), "tags": draw(st.lists(hostile_text, max_size=2))},
    }


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(
        st.lists(
            st.one_of(st.sampled_from(["f1", "f2"]), hostile_text),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    served = draw(st.dictionaries(hostile_text, hostile_values, max_size=3))
    every_flag = {key: draw(flags()) for key in keys}
    every_flag["served-json"] = {
        "type": "json",
        "enabled": True,
        "variants": [{"key": "v", "value": served}],
        "offVariant": "v",
        "defaultServe": {"variant": "v"},
    }
    return {
        "version": draw(st.one_of(st.none(), st.integers(0, 2**40))),
        "flags": every_flag,
        "segments": {
            "beta": {
                "conditions": draw(
                    st.lists(
                        conditions().filter(lambda c: c["operator"] != "in_segment"), max_size=2
                    )
                ),
                "included": draw(st.lists(hostile_text, max_size=2)),
            }
        },
    }


def _flag(conditions: list[dict[str, Any]], serve: dict[str, Any] | None = None) -> dict[str, Any]:
    serve = serve or {"variant": "on"}
    return {
        "type": "boolean",
        "enabled": True,
        "variants": [{"key": "on", "value": True}, {"key": "off", "value": False}],
        "offVariant": "off",
        "rules": [{"id": "1", "conditions": conditions, "serve": serve}],
        "defaultServe": {"variant": "off"},
    }


def _rollout(bucket_by: str) -> dict[str, Any]:
    variants = [{"variant": "on", "weight": 50}, {"variant": "off", "weight": 50}]
    return {"rollout": {"bucketBy": bucket_by, "variants": variants}}


_OPERATOR_VALUES = {
    "equals": ["pro"],
    "not_equals": ["pro"],
    "in": ["pro", 1, True],
    "not_in": ["free"],
    "contains": ["@"],
    "starts_with": ["a"],
    "ends_with": ["!"],
    "matches": ["(a+)+$", "^[a-z]+@"],
    "lt": [10],
    "lte": [10],
    "gt": [10],
    "gte": [10],
    "semver_eq": ["1.0.0"],
    "semver_lt": ["2.0.0"],
    "semver_lte": ["2.0.0"],
    "semver_gt": ["1.0.0"],
    "semver_gte": ["1.0.0"],
    "before": ["2025-01-01T00:00:00Z"],
    "after": [0],
    "exists": [],
    "not_exists": [],
    "in_cidr": ["10.0.0.0/8", "::/0"],
}


def every_operator_document() -> dict[str, Any]:
    """A valid document: a flag per operator on `email` and on `a.b`, and rollouts."""
    flags: dict[str, Any] = {}
    for operator, values in _OPERATOR_VALUES.items():
        for attribute in ("email", "a.b"):
            condition = {"attribute": attribute, "operator": operator, "values": values}
            flags[f"{operator}-{attribute}"] = _flag([condition])
            flags[f"{operator}-{attribute}-negated"] = _flag([{**condition, "negate": True}])
    for bucket_by in ("targetingKey", "companyId", "a.b"):
        flags[f"rollout-{bucket_by.lower()}"] = _flag([], _rollout(bucket_by))
    flags["in-segment"] = _flag([{"operator": "in_segment", "values": ["beta"]}])
    segment_condition = {"attribute": "email", "operator": "ends_with", "values": ["@example.com"]}
    segments = {"beta": {"conditions": [segment_condition], "included": ["user-1"]}}
    return {"version": 1, "flags": flags, "segments": segments}
