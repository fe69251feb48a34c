"""Secure mode: the hash your server hands a browser so it may evaluate as one user.

With secure mode on for an environment, the flag server answers a client key only for a
context whose `targetingKeyHash` is the HMAC-SHA256 of its `targetingKey`, keyed with the
environment's secure mode secret. Compute it on your server, where the secret lives, and
render it into the page with the targetingKey. See docs/sdk.md and docs/security.md.
"""

from __future__ import annotations

import hashlib
import hmac


def secure_mode_hash(secret: str, targeting_key: str) -> str:
    """The lowercase hex HMAC-SHA256 of `targeting_key` (UTF-8) keyed with `secret` (UTF-8).

    Raises TypeError for anything but strings, and ValueError for an empty secret: a hash
    that could not verify is better refused here than in every browser.
    """
    if not isinstance(secret, str) or not isinstance(targeting_key, str):
        raise TypeError("secure_mode_hash takes the secret and the targetingKey as strings")
    if not secret:
        raise ValueError("the secure mode secret is empty")
    message = targeting_key.encode("utf-8", "surrogatepass")
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
