"""Cluster-key authentication of a link, and of every frame on it, with no I/O.

The handshake (protocol version 2). The end that dialled is the *initiator* (I), the end that
accepted is the *responder* (R)::

    I -> R  Hello(I, nonce_I)          R -> I  Hello(R, nonce_R)      (both at once)
    I -> R  Proof(mac_I)               R checks mac_I, then:
                                       R -> I  Proof(mac_R)           I checks mac_R

    transcript = SHA-256(label | Hello_I | Hello_R)       (every field length-prefixed)
    mac_I      = HMAC-SHA256(key_I, "initiator" | transcript)
    mac_R      = HMAC-SHA256(key_R, "responder" | transcript)

A proof covers the whole exchange it was made for: both ids and addresses, both nonces, the
versions, and the direction. Why this holds against the attacks on a challenge-response:

* **Relay.** An outsider that talks to two nodes at once cannot make either vouch for it. The
  responder proves nothing until the initiator has proved the key, so connecting to a node
  yields no proof at all. The one proof anybody can obtain without the key is an initiator's,
  from a node that dialled it; that proof covers the responder's nonce and the direction, so
  it opens only the connection that nonce came from, with the initiator's own id: passing it
  on makes the outsider a wire between the two real nodes, never one of them.
* **Reflection.** A node's proof sent back to it fails: the other direction's proof has
  another label, and its nonce is fresh on every connection.
* **Replay.** Each end's nonce is fresh, so a proof recorded on one connection fails on every
  other.

Frames on the link. Once both proofs check, each end derives two keys from the cluster keys
and the transcript, one for each direction::

    secret = SHA-256(HMAC(key_I, "link" | transcript) | HMAC(key_R, "link" | transcript))
    key_dir = HMAC-SHA256(secret, "initiator->responder")   (and "responder->initiator")

and `LinkAuth` seals every later frame with ``HMAC-SHA256(key_dir, seq | frame)`` cut to
`TAG_SIZE` bytes, where ``seq`` counts the frames sent that way from 0 and is not sent. A frame
that was changed, injected, dropped ahead of another, reordered or replayed fails its check
(its sequence number differs), and the reader drops the link. Only holders of a cluster key
can derive these keys, so a wire in the middle (above) can pass frames on faithfully or stop,
nothing else. Frames are authenticated, not encrypted: run peers under TLS where what they say
must stay private.

No key on both ends is an open cluster: empty proofs and unsealed frames. A key on one end
only is refused by both.

Key rotation: a node proves with its own key and also accepts proofs made with the keys in
``accepted`` (the old key while a cluster moves to a new one, or the new one before), so a
cluster can change keys one node at a time without a split. Each end proves its own key, so
two nodes link when each accepts the other's key.
"""

from __future__ import annotations

import hashlib
import hmac

from ._errors import AuthenticationError
from ._messages import Hello, Peer, Proof

__all__ = ["NONCE_SIZE", "PROTOCOL_VERSION", "TAG_SIZE", "Handshake", "LinkAuth"]

PROTOCOL_VERSION = 2
NONCE_SIZE = 32
TAG_SIZE = 16
_LABEL = b"assemblex-membership-v2\x00"
_INITIATOR = b"initiator"
_RESPONDER = b"responder"


def _field(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


def _hello_bytes(hello: Hello) -> bytes:
    return b"".join(
        (
            _field(hello.peer.id.encode()),
            _field(hello.peer.address.encode()),
            _field(hello.nonce),
            b"\x01" if hello.keyed else b"\x00",
            hello.version.to_bytes(2, "big"),
        )
    )


def _transcript(initiator: Hello, responder: Hello) -> bytes:
    return hashlib.sha256(_LABEL + _hello_bytes(initiator) + _hello_bytes(responder)).digest()


def _mac(key: bytes, role: bytes, transcript: bytes) -> bytes:
    return hmac.digest(key, _field(role) + transcript, "sha256")


class LinkAuth:
    """Seals the frames this end sends on one link and checks the ones it receives.

    Made by `Handshake` once both ends have proved a key; `None` there on an open cluster.
    `seal` and `open` keep their own sequence numbers: call them for every frame, in the
    order the frames are sent and received.
    """

    __slots__ = ("_open_key", "_received", "_seal_key", "_sent")

    def __init__(self, seal_key: bytes, open_key: bytes) -> None:
        self._seal_key = seal_key
        self._open_key = open_key
        self._sent = 0
        self._received = 0

    def seal(self, frame: bytes) -> bytes:
        """`frame` followed by its tag."""
        tag = hmac.digest(self._seal_key, self._sent.to_bytes(8, "big") + frame, "sha256")
        self._sent += 1
        return frame + tag[:TAG_SIZE]

    def open(self, sealed: bytes) -> bytes:
        """The frame inside `sealed`, once its tag checks.

        Raises:
            AuthenticationError: a changed, injected, reordered or replayed frame.
        """
        if len(sealed) < TAG_SIZE:
            raise AuthenticationError(f"frame {self._received} on the link has no tag")
        frame, tag = sealed[:-TAG_SIZE], sealed[-TAG_SIZE:]
        expected = hmac.digest(self._open_key, self._received.to_bytes(8, "big") + frame, "sha256")
        if not hmac.compare_digest(expected[:TAG_SIZE], tag):
            raise AuthenticationError(f"frame {self._received} on the link failed its check")
        self._received += 1
        return frame


class Handshake:
    """One end of one connection's handshake.

    Use: send `hello()`; feed the peer's Hello to `on_hello` and send the `Proof` it returns,
    if any (the initiator's); feed the peer's Proof to `on_proof` and send the `Proof` it
    returns, if any (the responder's). Then `peer` is the authenticated peer and `link` seals
    and opens the frames that follow (None in an open cluster).

    Args:
        me: this node.
        key: the cluster key, or None for an open cluster.
        nonce: `NONCE_SIZE` fresh random bytes (``secrets.token_bytes``).
        accepted: other keys a peer may prove (a key rotation); only with ``key``.
        initiator: True on the end that dialled the connection, False on the end that
            accepted it.
    """

    def __init__(
        self,
        me: Peer,
        key: bytes | None,
        nonce: bytes,
        accepted: tuple[bytes, ...] = (),
        *,
        initiator: bool,
    ) -> None:
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce must be {NONCE_SIZE} bytes")
        if accepted and key is None:
            raise ValueError("accepted keys need a key of this node's own")
        self.me = me
        self.initiator = initiator
        self._key = key
        self._keys = () if key is None else (key, *accepted)
        self._nonce = nonce
        self._hello = Hello(me, nonce, key is not None, PROTOCOL_VERSION)
        self._theirs: Hello | None = None
        self._transcript = b""
        self._peer: Peer | None = None
        self._link: LinkAuth | None = None

    def hello(self) -> Hello:
        """This end's first frame."""
        return self._hello

    @property
    def peer(self) -> Peer:
        """The authenticated peer.

        Raises:
            AuthenticationError: the handshake has not succeeded.
        """
        if self._peer is None:
            raise AuthenticationError("the peer has not been authenticated")
        return self._peer

    @property
    def link(self) -> LinkAuth | None:
        """Seals and opens this link's frames once the peer is authenticated; None when the
        cluster is open."""
        if self._peer is None:
            raise AuthenticationError("the peer has not been authenticated")
        return self._link

    def on_hello(self, hello: Hello) -> Proof | None:
        """Check the peer's Hello; the initiator answers with its proof, the responder with
        nothing yet (it proves only after the initiator has).

        Raises:
            AuthenticationError: version or key-presence mismatch, a bad nonce, a peer that
                claims this node's own id, or a second Hello.
        """
        if self._theirs is not None:
            raise AuthenticationError("a second hello")
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
        if hello.nonce == self._nonce:
            raise AuthenticationError("peer sent this end's own nonce")
        self._theirs = hello
        pair = (self._hello, hello) if self.initiator else (hello, self._hello)
        self._transcript = _transcript(*pair)
        if not self.initiator:
            return None
        if self._key is None:
            return Proof(b"")
        return Proof(_mac(self._key, _INITIATOR, self._transcript))

    def on_proof(self, proof: Proof) -> Proof | None:
        """Verify the peer's proof; the responder then answers with its own.

        Raises:
            AuthenticationError: a wrong proof, no Hello seen first, or a second proof.
        """
        theirs = self._theirs
        if theirs is None:
            raise AuthenticationError("proof before hello")
        if self._peer is not None:
            raise AuthenticationError("a second proof")
        if self._key is None:
            if proof.mac:
                raise AuthenticationError("unexpected proof in an open cluster")
            self._peer = theirs.peer
            return None if self.initiator else Proof(b"")
        their_role = _RESPONDER if self.initiator else _INITIATOR
        # Every key is tried (no early exit): the time taken says nothing about which matched.
        matched: bytes | None = None
        for key in self._keys:
            ok = hmac.compare_digest(_mac(key, their_role, self._transcript), proof.mac)
            if ok and matched is None:
                matched = key
        if matched is None:
            raise AuthenticationError(f"{theirs.peer} failed the cluster-key challenge")
        self._peer = theirs.peer
        mine = self._key
        if self.initiator:
            self._link = _link_auth(mine, matched, self._transcript, initiator=True)
            return None
        self._link = _link_auth(matched, mine, self._transcript, initiator=False)
        return Proof(_mac(mine, _RESPONDER, self._transcript))


def _link_auth(
    initiator_key: bytes, responder_key: bytes, transcript: bytes, *, initiator: bool
) -> LinkAuth:
    secret = hashlib.sha256(
        _mac(initiator_key, b"link", transcript) + _mac(responder_key, b"link", transcript)
    ).digest()
    to_responder = hmac.digest(secret, b"initiator->responder", "sha256")
    to_initiator = hmac.digest(secret, b"responder->initiator", "sha256")
    if initiator:
        return LinkAuth(to_responder, to_initiator)
    return LinkAuth(to_initiator, to_responder)
