"""The composed core: routing, direct messages, and neighbour events feeding the tree."""

from __future__ import annotations

import random

import pytest
from membership_cluster import peer

from membership import (
    BroadcastReceived,
    DirectReceived,
    HyParViewConfig,
    NeighborDown,
    NeighborUp,
    NotNeighborError,
    Overlay,
    Peer,
)
from membership._messages import Direct, Disconnect, Gossip, Graft, IHave, Join, Neighbor

A, B = peer("a"), peer("b")


@pytest.fixture
def overlay(me: Peer) -> Overlay:
    return Overlay(me, random.Random(1))


def test_direct_messages_go_to_neighbours_only(overlay: Overlay) -> None:
    overlay.on_message(A, Join(), 0.0)
    overlay.take_outbox()
    overlay.send_direct(A, b"digest")
    assert overlay.take_outbox() == [(A, Direct(b"digest"))]
    with pytest.raises(NotNeighborError):
        overlay.send_direct(B, b"digest")


def test_direct_messages_are_reported_with_their_sender(overlay: Overlay) -> None:
    overlay.on_message(A, Direct(b"delta"), 0.0)
    assert overlay.take_events() == [DirectReceived(A, b"delta")]


def test_new_neighbours_are_eager_at_once(overlay: Overlay) -> None:
    overlay.on_message(A, Neighbor(high_priority=True), 0.0)
    assert overlay.take_events() == [NeighborUp(A)]
    overlay.take_outbox()
    msg_id = overlay.broadcast(b"x", 0.0)
    assert overlay.take_outbox() == [(A, Gossip(msg_id, 0, "me", b"x"))]


def test_departed_neighbours_get_no_broadcast(overlay: Overlay) -> None:
    overlay.on_message(A, Neighbor(high_priority=True), 0.0)
    overlay.on_message(B, Neighbor(high_priority=True), 0.0)
    overlay.on_message(B, Disconnect(), 0.0)
    assert overlay.take_events()[-1] == NeighborDown(B)
    overlay.take_outbox()
    overlay.broadcast(b"x", 0.0)
    assert [dst for dst, _ in overlay.take_outbox()] == [A]


def test_frozen_membership_runs_only_broadcast_timers(overlay: Overlay) -> None:
    overlay.on_message(A, Neighbor(high_priority=True), 0.0)
    overlay.take_outbox()
    assert overlay.next_deadline(membership=False) is None
    overlay.on_message(A, IHave(((3, 1),)), 0.0)
    graft_at = overlay.next_deadline(membership=False)
    assert graft_at is not None
    overlay.tick(1e9, membership=False)  # no shuffle, even long after one was due
    assert [type(m).__name__ for _, m in overlay.take_outbox()] == ["Graft"]


def test_messages_from_this_node_itself_are_ignored(overlay: Overlay, me: Peer) -> None:
    """Found by the fuzzer: a GRAFT "from" this node, for a message in the cache, was answered
    to this node itself. No message from oneself counts, in any layer."""
    overlay.on_message(A, Join(), 0.0)
    msg_id = overlay.broadcast(b"payload", 0.0)
    overlay.take_outbox()
    overlay.take_events()
    for msg in (Graft(msg_id, 0), Direct(b"x"), IHave(((msg_id, 0),)), Join(), Neighbor(True)):
        overlay.on_message(me, msg, 0.1)
    assert overlay.take_outbox() == []
    assert overlay.take_events() == []
    assert overlay.active_view() == (A,)


def test_views_and_contacts_are_those_of_the_membership_core(me: Peer) -> None:
    slow = HyParViewConfig(shuffle_interval=1e9)  # no shuffle in the way of the deadline
    overlay = Overlay(me, random.Random(1), hyparview=slow)
    assert overlay.passive_view() == ()
    overlay.add_contact(A, 0.0)  # isolated: joined through at once
    assert overlay.is_neighbor(A)
    assert not overlay.is_neighbor(B)
    assert overlay.take_outbox() == [(A, Join())]
    overlay.add_contact(B, 2.0)  # not isolated: a passive peer, asked to fill a free slot
    assert overlay.passive_view() == (B,)
    assert overlay.membership.pending == (B,)
    assert overlay.next_deadline() == 2.0 + slow.neighbor_timeout
    # With one neighbour the node is one failure from isolation: it asks with high priority.
    assert overlay.take_outbox() == [(B, Neighbor(high_priority=True))]


def test_not_a_neighbour_says_who(overlay: Overlay) -> None:
    with pytest.raises(NotNeighborError, match=r"^b@mem://b is not a neighbour of me@mem://me$"):
        overlay.send_direct(B, b"x")


def test_the_clock_starts_at_the_given_time(me: Peer) -> None:
    at_zero = Overlay(me, random.Random(1), 0.0).next_deadline()
    assert at_zero is not None
    assert Overlay(me, random.Random(1)).next_deadline() == at_zero
    assert Overlay(me, random.Random(1), 100.0).next_deadline() == at_zero + 100.0


def test_timers_of_both_layers_run_by_default(overlay: Overlay) -> None:
    overlay.on_message(A, Join(), 0.0)
    overlay.on_message(A, IHave(((7, 0),)), 0.0)  # missing: a graft is due at graft_timeout
    overlay.take_outbox()
    graft_at = overlay.broadcaster.next_deadline()
    shuffle_at = overlay.membership.next_deadline()
    assert graft_at is not None
    assert overlay.next_deadline() == min(graft_at, shuffle_at)
    assert overlay.next_deadline(membership=False) == graft_at
    overlay.tick(max(graft_at, shuffle_at))
    kinds = {type(m) for _, m in overlay.take_outbox()}
    assert Graft in kinds  # the broadcast layer's timer
    assert overlay.membership.next_deadline() > shuffle_at  # and the membership's ran too


def test_joins_failures_and_broadcasts_reach_the_layers(overlay: Overlay) -> None:
    overlay.join(A, 0.0)
    assert overlay.take_outbox() == [(A, Join())]
    assert overlay.take_events() == [NeighborUp(A)]
    overlay.on_message(A, Gossip(7, 0, "o", b"p"), 0.0)
    assert overlay.take_events() == [BroadcastReceived(7, "o", b"p")]
    overlay.on_unreachable(A, 0.0)
    assert overlay.take_events() == [NeighborDown(A)]
    assert not overlay.is_neighbor(A)
    assert A not in overlay.broadcaster.eager
