"""`pip install ./sdk` really works: build the wheel, install it in a fresh venv, use it."""

from __future__ import annotations

import filecmp
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.sdk.documents import document

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "sdk"

USE = """
import json, sys
from importlib import metadata
import flagclient
from flagclient import FlagClient

client = FlagClient(offline=True, bootstrap_path=sys.argv[1])
print(json.dumps({
    "value": client.value("new-checkout", {"country": "US"}, default=False),
    "reason": client.details("new-checkout", {"country": "FR"}).reason,
    "requires": sorted(metadata.requires("flagclient")),
    "location": flagclient.__file__,
}))
for absent in ("django", "evaluation", "openfeature"):
    try:
        __import__(absent)
        print("importable:", absent)
    except ImportError:
        pass
"""


def run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def built_wheel(tmp_path):
    """Built from sdk/ in place, as `pip install ./sdk` does; build leftovers removed."""
    leftovers = [SDK / "build", SDK / "src" / "flagclient.egg-info"]
    existed = {path for path in leftovers if path.exists()}
    try:
        run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(SDK), "-w", str(tmp_path))
    finally:
        for path in leftovers:
            if path not in existed:
                shutil.rmtree(path, ignore_errors=True)
    (wheel,) = tmp_path.glob("flagclient-*.whl")
    return wheel


def test_the_wheel_ships_the_servers_engine_unchanged(built_wheel, tmp_path):
    with zipfile.ZipFile(built_wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "unpacked")
    engine = ROOT / "evaluation" / "engine"
    shipped = tmp_path / "unpacked" / "flagclient" / "engine"
    sources = sorted(path.name for path in engine.glob("*.py"))
    assert {f"flagclient/engine/{name}" for name in sources} <= names
    assert filecmp.cmpfiles(engine, shipped, sources, shallow=False)[0] == sources
    assert "flagclient/django/templatetags/flagclient.py" in names
    assert not any(name.startswith(("evaluation/", "flags/", "tests/")) for name in names)


def test_the_wheel_installs_and_evaluates_in_a_fresh_venv(built_wheel, tmp_path):
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    python = str(venv / "bin" / "python")
    run(python, "-m", "pip", "install", "-q", str(built_wheel))
    bootstrap = tmp_path / "flags.json"
    bootstrap.write_text(json.dumps(document()))
    script = tmp_path / "use.py"
    script.write_text(USE)
    output = run(python, str(script), str(bootstrap)).splitlines()
    answer = json.loads(output[0])
    assert answer["value"] is True
    assert answer["reason"] == "DEFAULT"
    assert answer["location"].startswith(str(venv))
    assert [
        req.split(">")[0].split("<")[0] for req in answer["requires"] if "extra" not in req
    ] == [
        "google-re2",
        "httpcore",
        "httpx",
        "mmh3",
    ]
    assert output[1:] == []  # neither Django, nor the server, nor OpenFeature came along
