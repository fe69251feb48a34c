"""A rollout's own `salt`: it buckets as a flag salted with it would, in every scheme."""

from __future__ import annotations

from typing import Any

import pytest

from evaluation.engine import DocumentError, ErrorCode, check_serving, compile_document

VARIANTS = [{"key": "a", "value": "a"}, {"key": "b", "value": "b"}, {"key": "c", "value": "c"}]


def rollout(weights: tuple[int, int, int], **fields: Any) -> dict[str, Any]:
    entries = [{"variant": key, "weight": w} for key, w in zip("abc", weights, strict=True)]
    return {"rollout": {"variants": entries, **fields}}


def flag(serve: dict[str, Any], *, salt: str, scheme: str, in_rule: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": "string",
        "enabled": True,
        "salt": salt,
        "bucketing": scheme,
        "variants": VARIANTS,
        "offVariant": "a",
        "defaultServe": {"variant": "a"},
    }
    if in_rule:
        entry["rules"] = [{"id": "r", "conditions": [], "serve": serve}]
    else:
        entry["defaultServe"] = serve
    return entry


@pytest.mark.parametrize("scheme", ["flagd", "unleash", "launchdarkly", "flagsmith"])
@pytest.mark.parametrize("weights", [(20, 30, 50), (20_000, 30_000, 50_000)])
@pytest.mark.parametrize("in_rule", [False, True])
def test_a_rollout_with_its_own_salt_buckets_as_a_flag_with_that_salt(
    scheme: str, weights: tuple[int, int, int], in_rule: bool
) -> None:
    if scheme == "launchdarkly" and sum(weights) == 100:  # its weights are out of 100,000
        weights = (weights[0] * 1000, weights[1] * 1000, weights[2] * 1000)
    own = compile_document(
        {
            "flags": {
                "f": flag(
                    rollout(weights, salt="experiment-7"),
                    salt="f",
                    scheme=scheme,
                    in_rule=in_rule,
                ),
                "g": flag(rollout(weights), salt="experiment-7", scheme=scheme, in_rule=in_rule),
                "h": flag(rollout(weights), salt="f", scheme=scheme, in_rule=in_rule),
            }
        }
    )
    answers = {"f": [], "g": [], "h": []}  # type: dict[str, list[str]]
    for index in range(300):
        context = {"targetingKey": f"user-{index}"}
        for key, found in answers.items():
            result = own.evaluate(key, context)
            assert result.error_code is None, result
            found.append(result.variant)
    if scheme == "launchdarkly":
        # LaunchDarkly hashes the flag key too: "f" and "g" differ by it, so compare with
        # a flag named "f" salted the rollout's way.
        alone = compile_document(
            {
                "flags": {
                    "f": flag(rollout(weights), salt="experiment-7", scheme=scheme, in_rule=in_rule)
                }
            }
        )
        expected = [alone.evaluate("f", {"targetingKey": f"user-{i}"}).variant for i in range(300)]
    else:
        expected = answers["g"]
    assert answers["f"] == expected
    assert answers["f"] != answers["h"]  # the flag's own salt places users otherwise


def test_a_null_rollout_salt_is_the_flags_salt() -> None:
    snapshot = compile_document(
        {
            "flags": {
                "f": flag(rollout((1, 1, 1), salt=None), salt="s", scheme="flagd", in_rule=False),
                "g": flag(rollout((1, 1, 1)), salt="s", scheme="flagd", in_rule=False),
            }
        }
    )
    for index in range(100):
        context = {"targetingKey": f"user-{index}"}
        assert snapshot.evaluate("f", context).variant == snapshot.evaluate("g", context).variant


@pytest.mark.parametrize(
    ("salt", "message"),
    [
        ("", "must be a non-empty string, got ''"),
        (7, "must be a non-empty string, got 7"),
        (["s"], "must be a non-empty string, got ['s']"),
        ("a\ud800", "the salt is not valid Unicode (it holds a lone surrogate): 'a\\ud800'"),
    ],
)
def test_a_rollout_salt_that_is_no_text_is_refused(salt: object, message: str) -> None:
    serving = rollout((1, 1, 1), salt=salt)
    with pytest.raises(DocumentError) as refused:
        check_serving(serving, ["a", "b", "c"])
    assert (refused.value.field, refused.value.message) == ("rollout.salt", message)
    snapshot = compile_document(
        {"flags": {"f": flag(serving, salt="f", scheme="flagd", in_rule=True)}}
    )
    result = snapshot.evaluate("f", {"targetingKey": "u"})
    assert result.error_code == ErrorCode.PARSE_ERROR
    assert "rules[0].serve.rollout.salt" in (result.error_details or "")


def test_a_long_salt_with_nul_characters_is_ordinary_text() -> None:
    salt = "\x00" + "s" * 10_000
    snapshot = compile_document(
        {
            "flags": {
                "f": flag(rollout((1, 1, 1), salt=salt), salt="f", scheme="flagd", in_rule=False)
            }
        }
    )
    assert snapshot.evaluate("f", {"targetingKey": "u"}).error_code is None
