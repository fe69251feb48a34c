"""The simulation imports `flagclient` from sdk/src, as the SDK's own tests do."""

from tests.sdk.conftest import SDK_SOURCE  # noqa: F401  (puts sdk/src on the path)
