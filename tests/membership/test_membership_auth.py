"""The cluster-key handshake, end to end in memory: who gets in and who does not."""

from __future__ import annotations

import secrets

import pytest
from membership_cluster import peer

from membership import AuthenticationError, Peer
from membership._auth import PROTOCOL_VERSION, Handshake, LinkAuth
from membership._messages import Hello, Proof

A, B = peer("a"), peer("b")


def nonce() -> bytes:
    return secrets.token_bytes(32)


def shake(
    a_key: bytes | None,
    b_key: bytes | None,
    a: Peer = A,
    b: Peer = B,
    a_accepts: tuple[bytes, ...] = (),
    b_accepts: tuple[bytes, ...] = (),
) -> tuple[Handshake, Handshake]:
    """`a` dials `b`: run both ends in the order the frames go; returns both ends, done."""
    left = Handshake(a, a_key, nonce(), a_accepts, initiator=True)
    right = Handshake(b, b_key, nonce(), b_accepts, initiator=False)
    assert right.on_hello(left.hello()) is None  # the responder proves nothing yet
    initiator_proof = left.on_hello(right.hello())
    assert initiator_proof is not None
    responder_proof = right.on_proof(initiator_proof)
    assert responder_proof is not None
    assert left.on_proof(responder_proof) is None
    return left, right


def test_same_key_authenticates_both_ends() -> None:
    left, right = shake(b"k", b"k")
    assert (left.peer, right.peer) == (B, A)
    assert left.link is not None
    assert right.link is not None


def test_no_key_on_both_ends_is_an_open_cluster() -> None:
    left, right = shake(None, None)
    assert (left.peer, right.peer) == (B, A)
    assert left.link is None
    assert right.link is None


@pytest.mark.parametrize(("a_key", "b_key"), [(b"k", b"other"), (b"k", None), (None, b"k")])
def test_mismatched_keys_are_refused(a_key: bytes | None, b_key: bytes | None) -> None:
    with pytest.raises(AuthenticationError):
        shake(a_key, b_key)
    with pytest.raises(AuthenticationError):
        shake(b_key, a_key)


def test_a_peer_claiming_our_own_id_is_refused() -> None:
    with pytest.raises(AuthenticationError):
        shake(b"k", b"k", A, A._replace(address="mem://elsewhere"))


def test_the_responder_proves_nothing_before_the_initiator_has() -> None:
    """What an outsider gets by connecting to a node: a Hello, and nothing that proves the
    key, whatever it sends as its own Hello and proof."""
    node = Handshake(B, b"k", nonce(), initiator=False)
    assert node.on_hello(Hello(A, nonce(), True, PROTOCOL_VERSION)) is None
    with pytest.raises(AuthenticationError):
        node.on_proof(Proof(b"\x00" * 32))
    with pytest.raises(AuthenticationError):
        node.link  # noqa: B018


def test_a_recorded_proof_does_not_open_another_connection() -> None:
    honest = Handshake(A, b"k", nonce(), initiator=True)
    victim = Handshake(B, b"k", nonce(), initiator=False)
    victim.on_hello(honest.hello())
    proof = honest.on_hello(victim.hello())
    assert proof is not None
    assert victim.on_proof(proof) is not None
    again = Handshake(B, b"k", nonce(), initiator=False)  # a new connection, a new nonce
    again.on_hello(honest.hello())  # the same Hello, even the same nonce, replayed
    with pytest.raises(AuthenticationError):
        again.on_proof(proof)


def test_a_proof_relayed_between_two_nodes_opens_neither() -> None:
    """The relay: an outsider connects to A and B, gives each the other's nonce as its own,
    and tries to pass one node's proof to the other. Neither responder proves anything, so
    there is nothing to pass; forged proofs fail on both."""
    a_end = Handshake(A, b"k", nonce(), initiator=False)
    b_end = Handshake(B, b"k", nonce(), initiator=False)
    n_a, n_b = a_end.hello().nonce, b_end.hello().nonce
    assert b_end.on_hello(Hello(A, n_a, True, PROTOCOL_VERSION)) is None
    assert a_end.on_hello(Hello(B, n_b, True, PROTOCOL_VERSION)) is None
    for end in (a_end, b_end):
        with pytest.raises(AuthenticationError):
            end.on_proof(Proof(b"\x00" * 32))


def test_an_initiator_proof_relayed_makes_the_relay_a_wire_only() -> None:
    """The one proof an outsider can get without the key: A dialled it. Passed on to B with
    A's own Hello, it opens a link between A and B that the outsider can carry but not
    write to: a frame it makes, changes or replays fails the link's check."""
    a_end = Handshake(A, b"k", nonce(), initiator=True)
    b_end = Handshake(B, b"k", nonce(), initiator=False)
    b_end.on_hello(a_end.hello())  # the outsider passes A's Hello on as its own
    proof = a_end.on_hello(b_end.hello())  # and B's back to A
    assert proof is not None
    answer = b_end.on_proof(proof)
    assert answer is not None
    a_end.on_proof(answer)
    assert (a_end.peer, b_end.peer) == (B, A)  # the two real nodes, nobody else
    a_link, b_link = a_end.link, b_end.link
    assert a_link is not None
    assert b_link is not None
    sealed = a_link.seal(b"join")
    assert b_link.open(sealed) == b"join"  # carried faithfully: fine
    forged = LinkAuth(b"x" * 32, b"x" * 32).seal(b"evil")
    with pytest.raises(AuthenticationError):
        b_link.open(forged)  # made without the link's keys
    with pytest.raises(AuthenticationError):
        b_link.open(sealed)  # replayed


def test_a_reflected_proof_does_not_pass() -> None:
    """A node's proof sent back to it on another connection, even with its own nonce."""
    a_dials = Handshake(A, b"k", nonce(), initiator=True)
    mine = a_dials.on_hello(Hello(B, nonce(), True, PROTOCOL_VERSION))
    assert mine is not None
    a_accepts = Handshake(A, b"k", nonce(), initiator=False)
    a_accepts.on_hello(Hello(B, a_dials.hello().nonce, True, PROTOCOL_VERSION))
    with pytest.raises(AuthenticationError):
        a_accepts.on_proof(mine)
    # Its own Hello back at it is refused at once.
    with pytest.raises(AuthenticationError):
        Handshake(A, b"k", nonce(), initiator=False).on_hello(a_dials.hello())


def test_a_responders_proof_does_not_pass_for_an_initiators() -> None:
    """The direction is in the proof: the same transcript, the other role, fails."""
    a_end = Handshake(A, b"k", nonce(), initiator=True)
    b_end = Handshake(B, b"k", nonce(), initiator=False)
    b_end.on_hello(a_end.hello())
    proof = a_end.on_hello(b_end.hello())
    assert proof is not None
    with pytest.raises(AuthenticationError):
        a_end.on_proof(proof)  # A's own proof sent back as B's answer


def test_proof_before_hello_bad_nonces_and_repeats_are_refused() -> None:
    end = Handshake(A, b"k", nonce(), initiator=False)
    with pytest.raises(AuthenticationError):
        end.on_proof(Proof(b"x" * 32))
    with pytest.raises(AuthenticationError):
        end.on_hello(Hello(B, b"short", True, PROTOCOL_VERSION))
    with pytest.raises(AuthenticationError):
        end.on_hello(Hello(B, nonce(), True, 1))  # the old protocol
    with pytest.raises(AuthenticationError):
        end.on_hello(Hello(B, end.hello().nonce, True, PROTOCOL_VERSION))  # our own nonce
    with pytest.raises(ValueError, match="nonce"):
        Handshake(A, None, b"short", initiator=True)
    left, right = shake(b"k", b"k")
    with pytest.raises(AuthenticationError):
        right.on_hello(left.hello())
    with pytest.raises(AuthenticationError):
        left.on_proof(Proof(b""))


def test_link_frames_are_checked_in_order_both_ways() -> None:
    left, right = shake(b"k", b"k")
    out, back = left.link, right.link
    assert out is not None
    assert back is not None
    frames = [out.seal(f"frame {i}".encode()) for i in range(3)]
    assert back.open(frames[0]) == b"frame 0"
    with pytest.raises(AuthenticationError):
        back.open(frames[2])  # reordered: frame 1 is missing
    assert back.open(frames[1]) == b"frame 1"
    tampered = bytearray(frames[2])
    tampered[0] ^= 1
    with pytest.raises(AuthenticationError):
        back.open(bytes(tampered))
    with pytest.raises(AuthenticationError):
        back.open(b"short")
    assert back.open(frames[2]) == b"frame 2"
    # Each direction has its own key: a frame reflected to its sender fails.
    reply = back.seal(b"reply")
    with pytest.raises(AuthenticationError):
        back.open(reply)
    assert out.open(reply) == b"reply"
    # Another link between the same two nodes, with the same keys, has other link keys.
    _, other_right = shake(b"k", b"k")
    assert other_right.link is not None
    with pytest.raises(AuthenticationError):
        other_right.link.open(out.seal(b"frame 3"))


# A key rotation, one node at a time: every node goes through these phases in order, and the
# whole cluster finishes a phase before any node starts the next.
OLD, NEW = b"old-key", b"new-key"
PHASES = {
    "old": (OLD, ()),
    "old+accept-new": (OLD, (NEW,)),
    "new+accept-old": (NEW, (OLD,)),
    "new": (NEW, ()),
}


def shake_phases(a_phase: str, b_phase: str) -> tuple[Peer, Peer]:
    (a_key, a_accepts), (b_key, b_accepts) = PHASES[a_phase], PHASES[b_phase]
    left, right = shake(a_key, b_key, a_accepts=a_accepts, b_accepts=b_accepts)
    assert left.link is not None
    assert right.link is not None
    assert right.link.open(left.link.seal(b"frame")) == b"frame"  # both derived the same keys
    return left.peer, right.peer


@pytest.mark.parametrize(
    ("a_phase", "b_phase"),
    [("old", "old+accept-new"), ("old+accept-new", "new+accept-old"), ("new+accept-old", "new")],
)
def test_nodes_in_neighbouring_phases_of_a_key_rotation_connect(a_phase: str, b_phase: str) -> None:
    assert shake_phases(a_phase, b_phase) == (B, A)
    assert shake_phases(b_phase, a_phase) == (B, A)


@pytest.mark.parametrize(
    ("a_phase", "b_phase"),
    [("old", "new+accept-old"), ("old", "new"), ("old+accept-new", "new")],
)
def test_nodes_two_phases_apart_do_not(a_phase: str, b_phase: str) -> None:
    """Why a phase must be finished everywhere first: the node behind refuses the new key."""
    for left, right in ((a_phase, b_phase), (b_phase, a_phase)):
        with pytest.raises(AuthenticationError):
            shake_phases(left, right)


def test_an_accepted_key_lets_in_only_peers_that_prove_one_of_the_keys() -> None:
    with pytest.raises(AuthenticationError, match="failed the cluster-key challenge"):
        shake(NEW, b"a-third-key", a_accepts=(OLD,))  # A dials
    with pytest.raises(AuthenticationError, match="failed the cluster-key challenge"):
        shake(b"a-third-key", NEW, b_accepts=(OLD,))  # A is dialled
    with pytest.raises(ValueError, match="need a key"):
        Handshake(A, None, nonce(), (OLD,), initiator=True)
