"""Run Python in a fresh interpreter where Django cannot be imported: for the pure modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BLOCK_DJANGO = """
import sys

class BlockDjango:
    def find_spec(self, name, path=None, target=None):
        if name == "django" or name.startswith("django."):
            raise ImportError("django is blocked in this test")
        return None

sys.meta_path.insert(0, BlockDjango())
try:
    import django
except ImportError:
    pass
else:
    raise SystemExit("the blocker did not block django")
"""


def run_without_django(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` run from the repository's root after the blocker; output captured as text."""
    return subprocess.run(
        [sys.executable, "-c", BLOCK_DJANGO + code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
