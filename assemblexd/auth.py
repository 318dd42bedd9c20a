"""Proofs between peers outside the membership channel: module fetches (``GET /blobs``).

Membership links prove the cluster key with their own challenge-response (membership/). A blob
fetch is a plain HTTP request, so it carries ``Authorization: Assemblex ts=<unix>,mac=<hex>``,
an HMAC-SHA256 under the cluster key of the request line and the time; the server accepts it
within ``WINDOW`` seconds of its own clock. Module bytes are public within the cluster (their
hash is in every record), so a replayed proof within the window reveals nothing new.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["WINDOW", "blob_proof", "check_blob_proof"]

WINDOW = 300.0


def _mac(key: str, sha256: str, ts: int) -> str:
    message = f"GET /blobs/{sha256} {ts}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def blob_proof(key: str, sha256: str, now: float) -> str:
    """The ``Authorization`` header value for fetching ``sha256`` at time ``now``."""
    ts = int(now)
    return f"Assemblex ts={ts},mac={_mac(key, sha256, ts)}"


def check_blob_proof(
    key: str, sha256: str, header: str, now: float, accepted: tuple[str, ...] = ()
) -> bool:
    """Whether ``header`` proves ``key``, or one of the ``accepted`` keys (a key rotation),
    for ``sha256`` within ``WINDOW`` seconds of ``now``."""
    scheme, _, params = header.partition(" ")
    if scheme != "Assemblex":
        return False
    fields = dict(p.partition("=")[::2] for p in params.split(","))
    try:
        ts = int(fields.get("ts", ""))
    except ValueError:
        return False
    if abs(now - ts) > WINDOW:
        return False
    given = fields.get("mac", "")
    matched = False
    for k in (key, *accepted):  # every key tried: the time says nothing about which matched
        matched |= hmac.compare_digest(given, _mac(k, sha256, ts))
    return matched
