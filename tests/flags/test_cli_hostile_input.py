"""Hostile input on `manage.py flags`: one line on stderr and exit code 2, never a traceback.

The same checks as the API's (flags.validation): NUL characters and lone surrogates in
arguments, in the JSON they carry and in the files they name; JSON or YAML nested too
deep. Run with DB_URL set too: only PostgreSQL refuses such text, with a traceback.
"""

import json

import pytest

from flags.models import AuditEntry, Flag
from tests import factories
from tests.flags.command_line import fails
from tests.flags.test_cli_process import manage  # noqa: F401 - fixture
from tests.hostile import DEEP

pytestmark = pytest.mark.django_db


@pytest.fixture
def project():
    project = factories.project("shop")
    factories.flag(project, "checkout")
    return project


def test_nul_in_variants_json_names_where(project):
    variants = json.dumps([{"key": "a", "value": "x\u0000y"}])
    message = fails("create", "shop/banner", "--type", "string", "--variants", variants)
    assert (
        message
        == "--variants: [0].value: contains a NUL character (\\u0000), which cannot be stored"
    )
    assert not Flag.objects.filter(key="banner").exists()


@pytest.mark.parametrize(
    "arguments, words",
    [
        (("create", "shop/banner", "--name", "a\ud800"), "name: contains a lone surrogate"),
        (("create", "shop/banner", "--tag", "ui", "--tag", "x\udcff"), "tags: contains a lone"),
        (("create", "shop/ban\udcffner"), "flag: contains a lone surrogate"),
        (("toggle", "shop/checkout", "prod\udcffuction", "on"), "environment: contains a lone"),
        (("create", "shop/banner", "--variants", DEEP), "--variants: nested more than 64"),
        (("evaluate", "shop/checkout", "staging", "--context", DEEP), "--context: nested more"),
        (("evaluate", "shop/checkout", "staging", "plan:=" + DEEP), "attribute 'plan': nested"),
    ],
)
def test_bad_text_in_arguments_exits_2(project, arguments, words):
    assert words in fails(*arguments)
    assert not AuditEntry.objects.filter(source="cli").exists()


def document(value: str) -> str:
    flag = {
        "type": "string",
        "enabled": True,
        "variants": [{"key": "a", "value": value}],
        "offVariant": "a",
        "defaultServe": {"variant": "a"},
    }
    body = {"schemaVersion": 1, "project": "shop", "environment": "staging", "flags": {"x": flag}}
    return json.dumps(body)


def test_an_import_file_with_nul_names_the_file_and_the_place(project, tmp_path):
    path = tmp_path / "flags.json"
    path.write_text(document("a\u0000b"))
    message = fails("import", str(path))
    assert message == (
        f"{path}: flags.x.variants[0].value: contains a NUL character (\\u0000), "
        "which cannot be stored"
    )
    assert not Flag.objects.filter(key="x").exists()


def test_a_yaml_import_with_nul_or_nested_too_deep_is_refused(project, tmp_path):
    nul = tmp_path / "nul.yaml"
    nul.write_text('schemaVersion: 1\nproject: shop\nflags: {"x\\0": {}}\n')
    assert (
        fails("import", str(nul))
        == f"{nul}: flags: a key contains a NUL character (\\u0000), which cannot be stored"
    )
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 3000 + "]" * 3000)
    assert fails("import", str(deep)) == f"invalid YAML in {deep}: nested more than 64 levels deep"


def test_an_import_that_is_not_utf8_is_refused(project, tmp_path):
    path = tmp_path / "latin1.json"
    raw = document("cafe").encode().replace(b"cafe", b"caf\xe9")  # Latin-1, not UTF-8
    path.write_bytes(raw)
    assert fails("import", str(path)) == f"cannot read {path}: not UTF-8 (byte {raw.index(233)})"


def test_an_import_from_stdin_with_a_surrogate_is_refused(project):
    message = fails("import", "-", stdin=document("a\ud800"))
    assert "-: flags.x.variants[0].value: contains a lone surrogate (\\ud800)" in message


def test_undecodable_bytes_in_argv_exit_2_in_a_real_process(manage):  # noqa: F811
    result = manage("flags", "create", b"demo/caf\xe9")  # Python decodes it as "\udce9"
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "CommandError: flag: contains a lone surrogate (\\udce9), which is not valid Unicode"
    )
