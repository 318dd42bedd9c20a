"""Proofs between peers outside the membership channel: module fetches (``GET /blobs``) and
the actors' messages (``POST /peer/actors``).

Membership links prove the cluster key with their own handshake (membership/_auth.py). A blob
fetch is a plain HTTP request, so it carries
``Authorization: Assemblex ts=<unix>,nonce=<hex>,mac=<hex>``, an HMAC-SHA256 under the cluster
key of the request line, the *serving* node's id, the time and a fresh nonce. The serving node
(`BlobGuard`) accepts a proof once, within ``WINDOW`` seconds of its own clock, and only when it
names this node:

* relayed to another node, a proof fails (it names the node it was made for);
* replayed to the same node, it fails (its nonce was seen within the window; older proofs
  fail on their time);
* for another module, it fails (the hash is in the MAC).

The answer itself needs no proof: the fetching node checks the bytes against the sha256 of
the record (which came over an authenticated link) before it stores or runs them.

An actor message is proven the same way, with the request line ``POST /peer/actors`` and the
sha256 of its body in place of the module's: a proof is good for one body, at one node, once.
Its answer carries ``Assemblex-Reply: <hex>`` (:func:`reply_mac`), an HMAC of the request's
nonce and the answer's body, so a party without the key can neither forge an answer nor
replay one to another request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["ACTORS", "BLOBS", "WINDOW", "BlobGuard", "blob_proof", "proof_nonce", "reply_mac"]

WINDOW = 300.0
"""How far a proof's time may be from the serving node's clock, in seconds."""

MAX_REMEMBERED = 100_000
"""Nonces a node remembers at most; past it (with none expired) it refuses proofs until some
expire, rather than forget one that could then be replayed."""


BLOBS = "GET /blobs"
ACTORS = "POST /peer/actors"
"""The request lines a proof may be for."""


def _mac(key: str, node_id: str, sha256: str, ts: int, nonce: str, purpose: str) -> str:
    fields = (purpose.encode(), sha256.encode(), node_id.encode(), str(ts).encode(), nonce.encode())
    message = b"".join(len(f).to_bytes(4, "big") + f for f in fields)
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def blob_proof(
    key: str,
    node_id: str,
    sha256: str,
    now: float,
    nonce: str | None = None,
    purpose: str = BLOBS,
) -> str:
    """The ``Authorization`` header value for fetching ``sha256`` from node ``node_id`` (or,
    with ``purpose`` ACTORS, for sending it an actor message whose body has that sha256).

    Args:
        key: this node's cluster key.
        node_id: the id of the node asked (the proof is good there only).
        sha256: the module asked for, or the message body's hash.
        now: the time, in seconds since the epoch.
        nonce: fresh by default; given only by tests.
        purpose: the request line the proof is for.
    """
    ts = int(now)
    nonce = secrets.token_hex(16) if nonce is None else nonce
    mac = _mac(key, node_id, sha256, ts, nonce, purpose)
    return f"Assemblex ts={ts},nonce={nonce},mac={mac}"


def proof_nonce(header: str) -> str:
    """The nonce of a proof header ("" when it has none)."""
    params = header.partition(" ")[2]
    return dict(p.partition("=")[::2] for p in params.split(",")).get("nonce", "")


def reply_mac(key: str, nonce: str, body: bytes) -> str:
    """The MAC of an answer ``body`` to the request whose proof had ``nonce``."""
    message = b"reply\0" + nonce.encode() + b"\0" + hashlib.sha256(body).digest()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


class BlobGuard:
    """The serving side: checks blob proofs, each good once.

    Args:
        node_id: this node's id (a proof must name it).
        key: this node's cluster key.
        accepted: other keys a peer may prove (a key rotation).
        max_remembered: how many nonces it keeps at most.
        window: how far a proof's time may be from this node's clock, in seconds.
    """

    def __init__(
        self,
        node_id: str,
        key: str,
        accepted: tuple[str, ...] = (),
        max_remembered: int = MAX_REMEMBERED,
        window: float = WINDOW,
    ) -> None:
        self.node_id = node_id
        self.window = window
        self._keys = (key, *accepted)
        self._max = max_remembered
        self._seen: dict[str, float] = {}  # nonce -> when it may be forgotten

    def check(self, sha256: str, header: str, now: float, purpose: str = BLOBS) -> bool:
        """Whether ``header`` proves one of the keys, for ``sha256`` on this node, with a time
        within ``WINDOW`` of ``now`` and a nonce not seen before. A proof that passes is spent.
        """
        scheme, _, params = header.partition(" ")
        if scheme != "Assemblex":
            return False
        fields = dict(p.partition("=")[::2] for p in params.split(","))
        try:
            ts = int(fields.get("ts", ""))
        except ValueError:
            return False
        nonce = fields.get("nonce", "")
        if abs(now - ts) > self.window or not 16 <= len(nonce) <= 64:
            return False
        given = fields.get("mac", "")
        matched = False
        for key in self._keys:  # every key tried: the time says nothing about which matched
            matched |= hmac.compare_digest(
                given, _mac(key, self.node_id, sha256, ts, nonce, purpose)
            )
        if not matched or nonce in self._seen:
            return False
        if len(self._seen) >= self._max:
            self._seen = {n: t for n, t in self._seen.items() if t > now}
            if len(self._seen) >= self._max:
                return False
        self._seen[nonce] = ts + self.window
        return True
