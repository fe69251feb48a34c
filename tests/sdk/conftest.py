"""The SDK's tests import `flagclient` from sdk/src, as it would be installed."""

import sys
from pathlib import Path

SDK_SOURCE = Path(__file__).resolve().parents[2] / "sdk" / "src"
if str(SDK_SOURCE) not in sys.path:
    sys.path.insert(0, str(SDK_SOURCE))


import pytest  # noqa: E402

from tests.servers import Cluster  # noqa: E402


@pytest.fixture(scope="package")
def cluster():
    """One server process for every SDK test that needs one (exposures flushed each second)."""
    with Cluster(instances=1, extra_env={"EXPOSURE_FLUSH_SECONDS": "1"}) as running:
        yield running
