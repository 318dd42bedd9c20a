"""The cluster-key handshake, end to end in memory: who gets in and who does not."""

from __future__ import annotations

import secrets

import pytest
from membership_cluster import peer

from membership import AuthenticationError, Peer
from membership._auth import Handshake
from membership._messages import Hello, Proof

A, B = peer("a"), peer("b")


def shake(a_key: bytes | None, b_key: bytes | None, a: Peer = A, b: Peer = B) -> tuple[Peer, Peer]:
    """Run both ends; returns what each end authenticated."""
    left = Handshake(a, a_key, secrets.token_bytes(32))
    right = Handshake(b, b_key, secrets.token_bytes(32))
    left_proof = left.on_hello(right.hello())
    right_proof = right.on_hello(left.hello())
    return left.on_proof(right_proof), right.on_proof(left_proof)


def test_same_key_authenticates_both_ends() -> None:
    assert shake(b"k", b"k") == (B, A)


def test_no_key_on_both_ends_is_an_open_cluster() -> None:
    assert shake(None, None) == (B, A)


@pytest.mark.parametrize(("a_key", "b_key"), [(b"k", b"other"), (b"k", None), (None, b"k")])
def test_mismatched_keys_are_refused(a_key: bytes | None, b_key: bytes | None) -> None:
    with pytest.raises(AuthenticationError):
        shake(a_key, b_key)


def test_a_peer_claiming_our_own_id_is_refused() -> None:
    with pytest.raises(AuthenticationError):
        shake(b"k", b"k", A, A._replace(address="mem://elsewhere"))


def test_a_recorded_proof_does_not_open_another_connection() -> None:
    victim = Handshake(A, b"k", secrets.token_bytes(32))
    honest = Handshake(B, b"k", secrets.token_bytes(32))
    recorded = honest.on_hello(victim.hello())  # B's proof for the first connection
    victim.on_hello(honest.hello())
    assert victim.on_proof(recorded) == B
    second = Handshake(A, b"k", secrets.token_bytes(32))  # a new connection, a new nonce
    second.on_hello(Hello(B, secrets.token_bytes(32), True, 1))
    with pytest.raises(AuthenticationError):
        second.on_proof(recorded)


def test_a_reflected_proof_does_not_pass_for_another_node() -> None:
    victim = Handshake(A, b"k", secrets.token_bytes(32))
    mirror_hello = victim.hello()
    reflected = victim.on_hello(Hello(B, mirror_hello.nonce, True, 1))  # A's own answer
    with pytest.raises(AuthenticationError):
        victim.on_proof(reflected)  # sent back as if it were B's


def test_proof_before_hello_and_bad_nonces_are_refused() -> None:
    end = Handshake(A, b"k", secrets.token_bytes(32))
    with pytest.raises(AuthenticationError):
        end.on_proof(Proof(b"x" * 32))
    with pytest.raises(AuthenticationError):
        end.on_hello(Hello(B, b"short", True, 1))
    with pytest.raises(AuthenticationError):
        end.on_hello(Hello(B, secrets.token_bytes(32), True, 99))
    with pytest.raises(ValueError, match="nonce"):
        Handshake(A, None, b"short")


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
    left = Handshake(A, a_key, secrets.token_bytes(32), a_accepts)
    right = Handshake(B, b_key, secrets.token_bytes(32), b_accepts)
    left_proof = left.on_hello(right.hello())
    right_proof = right.on_hello(left.hello())
    return left.on_proof(right_proof), right.on_proof(left_proof)


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
    left = Handshake(A, NEW, secrets.token_bytes(32), (OLD,))
    right = Handshake(B, b"a-third-key", secrets.token_bytes(32))
    left.on_hello(right.hello())
    right_proof = right.on_hello(left.hello())
    with pytest.raises(AuthenticationError, match="failed the cluster-key challenge"):
        left.on_proof(right_proof)
    with pytest.raises(ValueError, match="need a key"):
        Handshake(A, None, secrets.token_bytes(32), (OLD,))
