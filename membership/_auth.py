"""Cluster-key authentication: a mutual HMAC challenge-response, with no I/O.

Both ends of a new connection send `Hello` at once (their `Peer`, a fresh 32-byte nonce,
whether they have a key, the protocol version), then answer the other's challenge with
`Proof`::

    mac = HMAC-SHA256(key, label | prover id | prover address | verifier nonce | prover nonce)

Each end checks the other's proof against the nonce it generated itself, so a recorded proof
cannot be replayed on another connection, and a proof names its prover, so a node's own
proof reflected back at it (the peer claiming to be that same node is refused anyway) does not
pass for another's. No key on both ends means an open cluster (empty proofs); a key on one end
only is refused by both.

Key rotation: a node proves with its own key and also accepts proofs made with the keys in
``accepted`` (the old key while a cluster moves to a new one, or the new one before), so a
cluster can change keys one node at a time without a split.

This authenticates, it does not encrypt: frames after the handshake carry no MAC, so the key
keeps strangers out of the overlay but does not protect a link against an active
man-in-the-middle. Run peers on a private network (or under TLS) where that matters.
"""

from __future__ import annotations

import hashlib
import hmac

from ._errors import AuthenticationError
from ._messages import Hello, Peer, Proof

__all__ = ["NONCE_SIZE", "PROTOCOL_VERSION", "Handshake"]

PROTOCOL_VERSION = 1
NONCE_SIZE = 32
_LABEL = b"assemblex-membership-v1\x00"


def _mac(key: bytes, prover: Peer, verifier_nonce: bytes, prover_nonce: bytes) -> bytes:
    message = b"\x00".join(
        (_LABEL, prover.id.encode(), prover.address.encode(), verifier_nonce, prover_nonce)
    )
    return hmac.new(key, message, hashlib.sha256).digest()


class Handshake:
    """One end of one connection's handshake.

    Use: send `hello()`; feed the peer's Hello to `on_hello` and send the `Proof` it returns;
    feed the peer's Proof to `on_proof`, which returns the authenticated peer.

    Args:
        me: this node.
        key: the cluster key, or None for an open cluster.
        nonce: `NONCE_SIZE` fresh random bytes (``secrets.token_bytes``).
        accepted: other keys a peer may prove (a key rotation); only with ``key``.
    """

    def __init__(
        self, me: Peer, key: bytes | None, nonce: bytes, accepted: tuple[bytes, ...] = ()
    ) -> None:
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce must be {NONCE_SIZE} bytes")
        if accepted and key is None:
            raise ValueError("accepted keys need a key of this node's own")
        self.me = me
        self._key = key
        self._keys = () if key is None else (key, *accepted)
        self._nonce = nonce
        self._peer: Hello | None = None

    def hello(self) -> Hello:
        """This end's first frame."""
        return Hello(self.me, self._nonce, self._key is not None, PROTOCOL_VERSION)

    def on_hello(self, hello: Hello) -> Proof:
        """Check the peer's Hello and answer its challenge.

        Raises:
            AuthenticationError: version or key-presence mismatch, a bad nonce, or a peer
                that claims this node's own id.
        """
        if hello.version != PROTOCOL_VERSION:
            raise AuthenticationError(
                f"peer speaks protocol {hello.version}, not {PROTOCOL_VERSION}"
            )
        if hello.keyed != (self._key is not None):
            raise AuthenticationError(
                "cluster key mismatch: "
                + ("the peer has no key" if self._key is not None else "this node has no key")
            )
        if hello.peer.id == self.me.id:
            raise AuthenticationError(f"peer claims this node's own id {self.me.id!r}")
        if len(hello.nonce) != NONCE_SIZE:
            raise AuthenticationError("bad nonce length")
        self._peer = hello
        if self._key is None:
            return Proof(b"")
        return Proof(_mac(self._key, self.me, hello.nonce, self._nonce))

    def on_proof(self, proof: Proof) -> Peer:
        """Verify the peer's answer to our challenge; returns the authenticated peer.

        Raises:
            AuthenticationError: a wrong proof, or no Hello seen first.
        """
        hello = self._peer
        if hello is None:
            raise AuthenticationError("proof before hello")
        if self._key is None:
            if proof.mac:
                raise AuthenticationError("unexpected proof in an open cluster")
            return hello.peer
        # Every key is tried (no early exit): the time taken says nothing about which matched.
        matched = False
        for key in self._keys:
            expected = _mac(key, hello.peer, self._nonce, hello.nonce)
            matched |= hmac.compare_digest(expected, proof.mac)
        if not matched:
            raise AuthenticationError(f"{hello.peer} failed the cluster-key challenge")
        return hello.peer
