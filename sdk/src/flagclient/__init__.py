"""flagclient: evaluate feature flags in process, kept current by the flag server's stream.

    from flagclient import FlagClient

    client = FlagClient("https://flags.example.com", server_key)
    client.value("new-checkout", {"targetingKey": "user-1"}, default=False)

See docs/sdk.md in the flag server's repository.
"""

from flagclient.client import OVERRIDE_REASON, PROVIDER_NOT_READY, FlagClient
from flagclient.engine import ErrorCode, EvaluationResult, Reason, Snapshot, compile_document
from flagclient.secure_mode import secure_mode_hash

__all__ = [
    "OVERRIDE_REASON",
    "PROVIDER_NOT_READY",
    "ErrorCode",
    "EvaluationResult",
    "FlagClient",
    "Reason",
    "Snapshot",
    "compile_document",
    "secure_mode_hash",
]
