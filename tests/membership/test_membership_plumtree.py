"""Plumtree: eager/lazy push, PRUNE on duplicates, GRAFT on missing ids, and its bounds."""

from __future__ import annotations

import random

from membership_cluster import peer

from membership import BroadcastReceived, Peer, Plumtree, PlumtreeConfig
from membership._messages import Gossip, Graft, IHave, Prune

A, B, C, D = (peer(x) for x in "abcd")


def tree(me: Peer, eager: tuple[Peer, ...], lazy: tuple[Peer, ...] = ()) -> Plumtree:
    core = Plumtree(me, PlumtreeConfig(graft_timeout=1.0, graft_retry=0.5), random.Random(3))
    for p in eager + lazy:
        core.neighbor_up(p)
    for p in lazy:
        core.on_message(p, Prune(), 0.0)
    return core


def test_broadcast_pushes_payload_to_eager_and_ids_to_lazy_peers(me: Peer) -> None:
    core = tree(me, (A, B), (C,))
    msg_id = core.broadcast(b"x", 0.0)
    gossip = Gossip(msg_id, 0, "me", b"x")
    assert core.take_outbox() == [(A, gossip), (B, gossip), (C, IHave(((msg_id, 0),)))]
    assert core.take_events() == []  # not delivered to the sender itself


def test_new_gossip_is_delivered_once_and_pushed_on(me: Peer) -> None:
    core = tree(me, (A, B), (C, D))
    core.on_message(A, Gossip(7, 2, "o", b"p"), 0.0)
    assert core.take_events() == [BroadcastReceived(7, "o", b"p")]
    assert core.take_outbox() == [
        (B, Gossip(7, 3, "o", b"p")),
        (C, IHave(((7, 3),))),
        (D, IHave(((7, 3),))),
    ]


def test_duplicate_gossip_prunes_the_link(me: Peer) -> None:
    core = tree(me, (A, B))
    core.on_message(A, Gossip(7, 0, "o", b"p"), 0.0)
    core.take_outbox()
    core.on_message(B, Gossip(7, 1, "o", b"p"), 0.0)
    assert core.take_outbox() == [(B, Prune())]
    assert core.take_events() == [BroadcastReceived(7, "o", b"p")]  # still only once
    assert B in core.lazy
    assert B not in core.eager


def test_prune_makes_the_sender_lazy(me: Peer) -> None:
    core = tree(me, (A, B))
    core.on_message(A, Prune(), 0.0)
    assert A in core.lazy
    assert A not in core.eager


def test_gossip_from_a_lazy_peer_puts_it_back_on_the_tree(me: Peer) -> None:
    core = tree(me, (A,), (B,))
    core.on_message(B, Gossip(9, 0, "o", b""), 0.0)
    assert B in core.eager


def test_missing_message_is_grafted_after_the_timeout(me: Peer) -> None:
    core = tree(me, (A,), (B, C))
    core.on_message(B, IHave(((5, 4),)), 10.0)
    core.on_message(C, IHave(((5, 5),)), 10.2)
    assert core.next_deadline() == 11.0
    core.tick(10.9)
    assert core.take_outbox() == []
    core.tick(11.0)
    assert core.take_outbox() == [(B, Graft(5, 4))]
    assert B in core.eager
    core.tick(11.5)  # B did not deliver in time: the next announcer
    assert core.take_outbox() == [(C, Graft(5, 5))]
    core.on_message(C, Gossip(5, 5, "o", b"late"), 11.6)
    assert core.next_deadline() is None
    core.tick(20.0)
    assert [m for _, m in core.take_outbox() if isinstance(m, Graft)] == []


def test_ihave_for_a_known_message_is_ignored(me: Peer) -> None:
    core = tree(me, (A,), (B,))
    core.on_message(A, Gossip(5, 0, "o", b""), 0.0)
    core.take_outbox()
    core.on_message(B, IHave(((5, 1),)), 0.0)
    assert core.next_deadline() is None


def test_ihave_from_a_non_neighbour_is_ignored(me: Peer) -> None:
    core = tree(me, (A,))
    core.on_message(D, IHave(((5, 1),)), 0.0)
    assert core.next_deadline() is None


def test_graft_answers_from_the_cache_and_makes_the_link_eager(me: Peer) -> None:
    core = tree(me, (A,), (B,))
    core.on_message(A, Gossip(5, 1, "o", b"p"), 0.0)
    core.take_outbox()
    core.on_message(B, Graft(5, 2), 1.0)
    assert core.take_outbox() == [(B, Gossip(5, 2, "o", b"p"))]
    assert B in core.eager


def test_graft_for_an_expired_message_sends_nothing(me: Peer) -> None:
    core = Plumtree(me, PlumtreeConfig(cache_ttl=5.0), random.Random(1))
    core.neighbor_up(A)
    core.on_message(A, Gossip(5, 1, "o", b"p"), 0.0)
    core.take_outbox()
    core.on_message(A, Graft(5, 2), 6.0)
    assert core.take_outbox() == []


def test_departed_announcers_are_not_grafted(me: Peer) -> None:
    core = tree(me, (A,), (B, C))
    core.on_message(B, IHave(((5, 1),)), 0.0)
    core.on_message(C, IHave(((5, 1),)), 0.0)
    core.neighbor_down(B)
    core.tick(1.0)
    assert core.take_outbox() == [(C, Graft(5, 1))]


def test_seen_cache_and_missing_tables_are_bounded(me: Peer) -> None:
    config = PlumtreeConfig(seen_size=10, cache_size=5, missing_size=3)
    core = Plumtree(me, config, random.Random(1))
    core.neighbor_up(A)
    for i in range(50):
        core.on_message(A, Gossip(i, 0, "o", b"p"), float(i))
        core.on_message(A, IHave(((1000 + i, 0),)), float(i))
    assert len(core._seen) == 10
    assert len(core._cache) == 5
    assert len(core._missing) == 3
    core.on_message(A, Gossip(49, 0, "o", b"p"), 60.0)  # remembered: a duplicate
    assert core.take_events()[-1] == BroadcastReceived(49, "o", b"p")
    core.take_events()
    core.on_message(A, Gossip(0, 0, "o", b"p"), 60.0)  # forgotten long ago: delivered again
    assert core.take_events() == [BroadcastReceived(0, "o", b"p")]


def test_a_lazy_peer_that_comes_up_again_is_eager(me: Peer) -> None:
    core = tree(me, (A,), (B,))
    core.neighbor_up(B)
    assert B in core.eager
    assert B not in core.lazy


class _Bits(random.Random):
    """A generator whose ids are given, checking they are asked for as 64-bit numbers."""

    def __init__(self, ids: list[int]) -> None:
        super().__init__(0)
        self.ids = ids

    def getrandbits(self, k: int) -> int:
        assert k == 64
        return self.ids.pop(0)


def test_broadcast_ids_are_64_bit_and_never_reused(me: Peer) -> None:
    core = Plumtree(me, PlumtreeConfig(), _Bits([5, 5, 5, 9]))
    assert core.broadcast(b"x", 0.0) == 5
    assert core.broadcast(b"y", 0.0) == 9  # 5 is taken: drawn again
    ids = [tree(me, (A,)).broadcast(b"z", 0.0)] + [
        Plumtree(me, PlumtreeConfig(), random.Random(s)).broadcast(b"z", 0.0) for s in range(32)
    ]
    assert all(isinstance(i, int) and 0 <= i < 1 << 64 for i in ids)


def test_graft_from_a_lazy_peer_makes_it_eager_and_from_a_stranger_nothing(me: Peer) -> None:
    core = tree(me, (A,), (B,))
    core.on_message(B, Graft(1, 0), 0.0)
    assert B in core.eager
    assert B not in core.lazy
    core.on_message(C, Graft(1, 0), 0.0)  # not a neighbour: it does not join the tree
    assert C not in core.eager
    assert C not in core.lazy


def test_a_graft_is_answered_only_while_the_message_is_cached(me: Peer) -> None:
    core = Plumtree(me, PlumtreeConfig(cache_ttl=10.0), random.Random(3))
    core.neighbor_up(A)
    msg_id = core.broadcast(b"x", 0.0)
    core.take_outbox()
    core.on_message(A, Graft(msg_id, 0), 9.9)
    assert core.take_outbox() == [(A, Gossip(msg_id, 0, "me", b"x"))]
    core.on_message(A, Graft(msg_id, 0), 10.0)  # expired at cache_ttl exactly
    assert core.take_outbox() == []


def test_ihave_records_the_unseen_ids_after_a_seen_one(me: Peer) -> None:
    core = tree(me, (A,), (B,))
    core.on_message(A, Gossip(7, 0, "o", b"p"), 0.0)
    core.take_outbox()
    core.on_message(B, IHave(((7, 0), (8, 1))), 0.0)
    core.tick(1.0)
    assert core.take_outbox() == [(B, Graft(8, 1))]


def test_timers_after_a_received_or_unreachable_message_still_fire(me: Peer) -> None:
    core = tree(me, (A,), (B, C))
    core.on_message(B, IHave(((1, 0),)), 0.0)  # arrives meanwhile: its timer is stale
    core.on_message(C, IHave(((2, 0),)), 0.0)  # C goes away: nobody to graft
    core.on_message(B, IHave(((3, 0),)), 0.0)  # still missing at 1.0
    core.on_message(A, Gossip(1, 0, "o", b"p"), 0.5)
    core.neighbor_down(C)
    core.take_outbox()
    core.tick(1.0)
    assert core.take_outbox() == [(B, Graft(3, 0))]
    assert B in core.eager  # grafted: part of the tree now
    assert B not in core.lazy
