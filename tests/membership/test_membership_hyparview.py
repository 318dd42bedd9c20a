"""HyParView: one test per message rule of the paper, plus repair, bounds and replay."""

from __future__ import annotations

import random
import zlib
from collections import Counter

from membership_cluster import peer

from membership import HyParView, HyParViewConfig, NeighborDown, NeighborUp, Peer
from membership._hyparview import _pick, _sample
from membership._messages import (
    CoreMessage,
    Disconnect,
    ForwardJoin,
    Join,
    Neighbor,
    NeighborReply,
    Shuffle,
    ShuffleReply,
)

A, B, C, D, E, F = (peer(x) for x in "abcdef")


def sent(core: HyParView) -> list[tuple[Peer, CoreMessage]]:
    return core.take_outbox()


def fill_active(core: HyParView, *peers: Peer) -> None:
    for p in peers:
        core.on_message(p, Neighbor(high_priority=True), 0.0)
    core.take_outbox()
    core.take_events()


def test_join_puts_the_contact_in_the_active_view_and_sends_join(hyparview: HyParView) -> None:
    hyparview.join(A, 0.0)
    assert hyparview.active == {A: None}
    assert sent(hyparview) == [(A, Join())]
    assert hyparview.take_events() == [NeighborUp(A)]
    assert A in hyparview.contacts


def test_contact_accepts_join_and_forwards_it_to_its_other_neighbours(
    hyparview: HyParView,
) -> None:
    fill_active(hyparview, A, B)
    hyparview.on_message(C, Join(), 0.0)
    assert C in hyparview.active
    arwl = hyparview.config.arwl
    out = sent(hyparview)
    assert out[:2] == [(A, ForwardJoin(C, arwl)), (B, ForwardJoin(C, arwl))]
    assert [dst for dst, _ in out[2:]] == [C]  # and the views' sample below


def test_a_join_is_answered_with_a_sample_of_the_contacts_views(hyparview: HyParView) -> None:
    fill_active(hyparview, A, B)
    hyparview.passive.update({D: None, E: None})
    hyparview.on_message(C, Join(), 0.0)
    (reply,) = [msg for dst, msg in sent(hyparview) if dst == C]
    assert isinstance(reply, ShuffleReply)
    assert set(reply.nodes) == {A, B, D, E}  # never the joiner itself
    # The joiner keeps them as candidates: with its contact gone, it has others to ask.
    joiner = HyParView(C, hyparview.config, random.Random(1))
    joiner.join(hyparview.me, 0.0)
    joiner.on_message(hyparview.me, reply, 0.0)
    assert set(joiner.passive) == {A, B, D, E}


def test_join_to_a_full_node_drops_a_random_neighbour_into_the_passive_view(
    hyparview: HyParView,
) -> None:
    fill_active(hyparview, A, B, C)
    hyparview.on_message(D, Join(), 0.0)
    out = sent(hyparview)
    dropped = [dst for dst, msg in out if msg == Disconnect()]
    assert len(dropped) == 1
    assert dropped[0] in (A, B, C)
    assert dropped[0] in hyparview.passive
    assert set(hyparview.active) == {A, B, C, D} - {dropped[0]}
    assert NeighborDown(dropped[0]) in hyparview.take_events()


def test_forward_join_walk_ends_at_ttl_zero_with_a_high_priority_neighbor(
    hyparview: HyParView,
) -> None:
    fill_active(hyparview, A, B)
    hyparview.on_message(A, ForwardJoin(E, 0), 0.0)
    assert sent(hyparview) == [(E, Neighbor(high_priority=True))]
    assert hyparview.pending == (E,)


def test_forward_join_ends_at_a_node_with_a_single_neighbour(hyparview: HyParView) -> None:
    fill_active(hyparview, A)
    hyparview.on_message(A, ForwardJoin(E, 3), 0.0)
    assert sent(hyparview) == [(E, Neighbor(high_priority=True))]


def test_forward_join_at_prwl_adds_the_joiner_to_the_passive_view_and_walks_on(
    hyparview: HyParView,
) -> None:
    fill_active(hyparview, A, B)
    prwl = hyparview.config.prwl
    hyparview.on_message(A, ForwardJoin(E, prwl), 0.0)
    assert E in hyparview.passive
    assert sent(hyparview) == [(B, ForwardJoin(E, prwl - 1))]  # never back to the sender


def test_forward_join_above_prwl_only_walks_on(hyparview: HyParView) -> None:
    fill_active(hyparview, A, B)
    hyparview.on_message(A, ForwardJoin(E, hyparview.config.prwl + 1), 0.0)
    assert E not in hyparview.passive
    assert sent(hyparview) == [(B, ForwardJoin(E, hyparview.config.prwl))]


def test_high_priority_neighbor_is_accepted_even_when_full(hyparview: HyParView) -> None:
    fill_active(hyparview, A, B, C)
    hyparview.on_message(D, Neighbor(high_priority=True), 0.0)
    out = sent(hyparview)
    assert (D, NeighborReply(accepted=True)) in out
    assert D in hyparview.active
    assert len(hyparview.active) == 3
    assert sum(msg == Disconnect() for _, msg in out) == 1


def test_low_priority_neighbor_is_accepted_only_with_room(hyparview: HyParView) -> None:
    fill_active(hyparview, A, B)
    hyparview.on_message(C, Neighbor(high_priority=False), 0.0)
    assert sent(hyparview) == [(C, NeighborReply(accepted=True))]
    hyparview.on_message(D, Neighbor(high_priority=False), 0.0)
    assert sent(hyparview) == [(D, NeighborReply(accepted=False))]
    assert D not in hyparview.active


def test_disconnect_moves_the_sender_to_the_passive_view(hyparview: HyParView) -> None:
    fill_active(hyparview, A, B, C)
    hyparview.on_message(B, Disconnect(), 0.0)
    assert B not in hyparview.active
    assert B in hyparview.passive
    assert hyparview.take_events() == [NeighborDown(B)]


def test_failed_neighbour_is_replaced_from_the_passive_view(hyparview: HyParView) -> None:
    fill_active(hyparview, A, B, C)
    hyparview.passive.update({D: None})
    hyparview.on_unreachable(B, 1.0)
    assert hyparview.take_events() == [NeighborDown(B)]
    assert B not in hyparview.passive  # failed: forgotten, not kept in reserve
    assert sent(hyparview) == [(D, Neighbor(high_priority=False))]
    hyparview.on_message(D, NeighborReply(accepted=True), 1.1)
    assert set(hyparview.active) == {A, C, D}
    assert D not in hyparview.passive


def test_isolated_node_asks_with_high_priority_one_at_a_time(hyparview: HyParView) -> None:
    fill_active(hyparview, A)
    hyparview.passive.update({D: None, E: None})
    hyparview.on_unreachable(A, 1.0)
    out = sent(hyparview)
    assert len(out) == 1
    assert out[0][1] == Neighbor(high_priority=True)


def test_rejected_candidate_stays_passive_and_the_next_is_asked(hyparview: HyParView) -> None:
    fill_active(hyparview, A, B, C)
    hyparview.passive.update({D: None, E: None})
    hyparview.on_unreachable(C, 1.0)
    ((first, _),) = sent(hyparview)
    hyparview.on_message(first, NeighborReply(accepted=False), 1.1)
    assert first in hyparview.passive
    ((second, msg),) = sent(hyparview)
    assert second != first
    assert msg == Neighbor(high_priority=False)


def test_unreachable_candidate_is_forgotten_and_the_next_is_asked(hyparview: HyParView) -> None:
    fill_active(hyparview, A, B, C)
    hyparview.passive.update({D: None, E: None})
    hyparview.on_unreachable(C, 1.0)
    ((first, _),) = sent(hyparview)
    hyparview.on_unreachable(first, 1.1)
    assert first not in hyparview.passive
    assert [dst for dst, _ in sent(hyparview)] == [({D, E} - {first}).pop()]


def test_repair_backs_off_exponentially_when_every_candidate_refuses(me: Peer) -> None:
    config = HyParViewConfig(
        active_size=3,
        passive_size=4,
        repair_backoff=1.0,
        repair_backoff_max=4.0,
        shuffle_interval=1000.0,
    )
    core = HyParView(me, config, random.Random(1), now=1000.0)
    fill_active(core, A, B, C)
    core.passive.update({D: None})
    core.on_unreachable(C, 10.0)
    ((dst, _),) = sent(core)
    core.on_message(dst, NeighborReply(accepted=False), 10.0)
    assert sent(core) == []  # round over: wait for the backoff
    assert core.next_deadline() == 11.0
    core.tick(11.0)
    assert sent(core) == [(D, Neighbor(high_priority=False))]
    core.on_message(D, NeighborReply(accepted=False), 11.0)
    assert core.next_deadline() == 13.0  # doubled
    core.tick(13.0)
    core.on_message(D, NeighborReply(accepted=False), 13.0)
    assert core.next_deadline() == 17.0  # capped at 4


def test_isolated_node_with_no_candidate_rejoins_through_a_contact(me: Peer) -> None:
    config = HyParViewConfig(
        active_size=3, passive_size=4, repair_backoff=1.0, shuffle_interval=1000.0
    )
    core = HyParView(me, config, random.Random(1), now=1000.0)
    core.join(A, 0.0)
    core.take_outbox()
    core.on_unreachable(A, 1.0)  # the only neighbour and contact failed: nothing to ask
    assert sent(core) == []
    core.tick(2.0)  # after the backoff: rejoin through the remembered contact
    assert sent(core) == [(A, Join())]


def test_unanswered_neighbor_request_times_out(hyparview: HyParView) -> None:
    fill_active(hyparview, A, B)
    hyparview.on_message(A, ForwardJoin(E, 0), 0.0)
    sent(hyparview)
    hyparview.passive.update({E: None})
    hyparview.tick(hyparview.config.neighbor_timeout + 0.1)
    assert E not in hyparview.pending
    assert E not in hyparview.passive


def test_repair_goes_on_after_a_request_times_out(me: Peer) -> None:
    # Found with eight processes: a NEIGHBOR lost with a link closing at the other end left
    # a node short of neighbours, with candidates, and no timer to ask them.
    config = HyParViewConfig(active_size=3, passive_size=4, shuffle_interval=1000.0)
    core = HyParView(me, config, random.Random(2), now=1000.0)
    fill_active(core, A, B, C)
    core.passive.update({D: None, E: None})
    core.on_unreachable(C, 1.0)
    ((first, _),) = sent(core)
    core.tick(1.0 + config.neighbor_timeout)  # never answered
    assert [dst for dst, _ in sent(core)] == [({D, E} - {first}).pop()]


def test_shuffle_sends_itself_and_samples_of_both_views_to_a_neighbour(
    hyparview: HyParView, me: Peer
) -> None:
    fill_active(hyparview, A, B)
    hyparview.passive.update({D: None, E: None, F: None})
    hyparview.tick(hyparview.next_deadline())
    ((dst, msg),) = sent(hyparview)
    assert dst in (A, B)
    assert isinstance(msg, Shuffle)
    assert msg.origin == me
    assert msg.ttl == hyparview.config.arwl
    assert msg.nodes[0] == me
    assert len(msg.nodes) == 1 + 2 + 3  # itself, min(ka, 2) active, min(kp, 3) passive
    assert set(msg.nodes[1:3]) == {A, B}


def test_shuffle_walks_on_while_ttl_lasts(hyparview: HyParView) -> None:
    fill_active(hyparview, A, B)
    hyparview.on_message(A, Shuffle(F, (F, D), 3), 0.0)
    assert sent(hyparview) == [(B, Shuffle(F, (F, D), 2))]


def test_shuffle_end_replies_to_the_origin_and_merges(hyparview: HyParView) -> None:
    fill_active(hyparview, A, B)
    hyparview.passive.update({C: None})
    hyparview.on_message(A, Shuffle(F, (F, D), 1), 0.0)
    assert sent(hyparview) == [(F, ShuffleReply((C,)))]
    assert {D, F} <= set(hyparview.passive)


def test_shuffle_reply_evicts_what_was_sent_first(me: Peer) -> None:
    config = HyParViewConfig(active_size=2, passive_size=3, shuffle_active=0, shuffle_passive=3)
    core = HyParView(me, config, random.Random(3))
    fill_active(core, A)
    core.passive.update({C: None, D: None, E: None})
    core.tick(core.next_deadline())
    ((_, shuffle),) = sent(core)
    assert isinstance(shuffle, Shuffle)
    core.on_message(A, ShuffleReply((F, peer("g"))), 1.0)
    kept_from_before = set(core.passive) & {C, D, E}
    assert len(kept_from_before) == 1  # two of the entries sent made room
    assert {F, peer("g")} <= set(core.passive)


def test_views_stay_bounded_and_disjoint(hyparview: HyParView, me: Peer) -> None:
    rng = random.Random(5)
    others = [peer(f"p{i}") for i in range(20)]
    for step in range(400):
        p = rng.choice(others)
        msg = rng.choice(
            [
                Join(),
                Neighbor(rng.random() < 0.5),
                NeighborReply(rng.random() < 0.5),
                Disconnect(),
                ForwardJoin(rng.choice(others), rng.randrange(5)),
                Shuffle(p, tuple(rng.sample(others, 5)), rng.randrange(5)),
                ShuffleReply(tuple(rng.sample(others, 4))),
            ]
        )
        hyparview.on_message(p, msg, float(step))
        if step % 7 == 0:
            hyparview.on_unreachable(rng.choice(others), float(step))
        hyparview.tick(float(step))
        hyparview.take_outbox()
        assert len(hyparview.active) <= hyparview.config.active_size
        assert len(hyparview.passive) <= hyparview.config.passive_size
        assert not set(hyparview.active) & set(hyparview.passive)
        assert me not in hyparview.active
        assert me not in hyparview.passive


def test_same_seed_same_behaviour(me: Peer) -> None:
    def run(seed: int) -> list[tuple[Peer, CoreMessage]]:
        core = HyParView(me, HyParViewConfig(active_size=3, passive_size=5), random.Random(seed))
        fill_active(core, A, B, C)
        core.passive.update({D: None, E: None, F: None})
        core.on_message(A, Join(), 0.0)
        core.on_unreachable(B, 1.0)
        core.tick(100.0)
        return core.take_outbox()

    assert run(11) == run(11)


def test_a_node_left_with_one_neighbour_asks_with_high_priority(hyparview: HyParView) -> None:
    # Two nodes left with each other alone, beside a part where every view is full, would
    # never get back with low-priority requests.
    fill_active(hyparview, A, B)
    hyparview.passive.update({D: None, E: None})
    hyparview.on_unreachable(B, 1.0)
    out = sent(hyparview)
    assert len(out) == 1  # one at a time
    assert out[0][1] == Neighbor(high_priority=True)


def test_crossed_requests_then_a_drop_leave_no_half_link(me: Peer) -> None:
    # Found at 10,000 simulated nodes (one link in 50,000 known at one end only): we ask E,
    # E asks us at the same time, we take E, then drop it for someone else; E's yes to our
    # own request must not bring it back on our side only.
    core = HyParView(me, HyParViewConfig(active_size=1, passive_size=4), random.Random(1))
    fill_active(core, A)
    core.passive.update({E: None})
    core.on_unreachable(A, 1.0)
    assert sent(core) == [(E, Neighbor(high_priority=True))]
    core.on_message(E, Neighbor(high_priority=True), 1.1)  # E asks too: taken at once
    assert sent(core) == [(E, NeighborReply(accepted=True))]
    core.on_message(D, Neighbor(high_priority=True), 1.2)  # full: E is dropped for D
    assert (E, Disconnect()) in sent(core)
    core.on_message(E, NeighborReply(accepted=True), 1.3)  # the old yes arrives
    assert E not in core.active
    assert sent(core) == [(E, Disconnect())]  # and is undone at E's end too


# --- rules pinned by the mutation run -------------------------------------------------------

P = tuple(peer(f"p{i}") for i in range(8))


def test_a_contact_is_joined_only_by_an_isolated_node_and_never_oneself(
    hyparview: HyParView, me: Peer
) -> None:
    hyparview.add_contact(me, 0.0)
    assert hyparview.contacts == {}
    assert sent(hyparview) == []
    hyparview.add_contact(A, 0.0)  # isolated: joined through
    assert list(hyparview.active) == [A]
    assert A in hyparview.contacts
    assert sent(hyparview) == [(A, Join())]
    lonely = HyParView(me, hyparview.config, random.Random(1))
    lonely._pending[B] = 9.0  # asked B, no answer yet: not isolated for long
    lonely.add_contact(C, 0.0)
    assert Join() not in [m for _, m in sent(lonely)]
    assert C in lonely.passive


def test_contacts_are_kept_most_recent_last_up_to_max_contacts(me: Peer) -> None:
    core = HyParView(me, HyParViewConfig(max_contacts=2), random.Random(1))
    core.add_contact(A, 0.0)
    core.add_contact(B, 0.0)
    assert list(core.contacts) == [A, B]
    core.add_contact(A, 0.0)  # seen again: the most recent
    core.add_contact(C, 0.0)  # over the limit: the least recent (B) goes
    assert list(core.contacts) == [A, C]


def test_the_next_deadline_includes_a_pending_request(me: Peer) -> None:
    core = HyParView(me, HyParViewConfig(shuffle_interval=1e9), random.Random(1))
    core.add_contact(A, 0.0)
    core.add_contact(B, 1.0)  # one neighbour: B is asked, answer due by 1 + neighbor_timeout
    assert core.pending == (B,)
    assert core.next_deadline() == 1.0 + core.config.neighbor_timeout


def test_a_forward_join_with_ttl_left_goes_on_and_at_zero_is_taken(hyparview: HyParView) -> None:
    fill_active(hyparview, A, B)
    hyparview.on_message(A, ForwardJoin(E, 1), 0.0)  # ttl 1: one more hop
    assert sent(hyparview) == [(B, ForwardJoin(E, 0))]
    hyparview.on_message(A, ForwardJoin(F, 0), 0.0)  # ttl 0: taken here
    assert sent(hyparview) == [(F, Neighbor(high_priority=True))]


def test_a_forward_join_is_taken_by_a_node_with_one_neighbour(hyparview: HyParView) -> None:
    fill_active(hyparview, A)
    hyparview.on_message(B, ForwardJoin(E, 3), 0.0)  # B has gone from our view meanwhile
    assert sent(hyparview) == [(E, Neighbor(high_priority=True))]


def test_a_shuffle_with_ttl_left_goes_on_and_at_the_end_is_answered(hyparview: HyParView) -> None:
    fill_active(hyparview, A, B)
    hyparview.on_message(A, Shuffle(C, (D,), 2), 0.0)  # one hop left after this one
    assert sent(hyparview) == [(B, Shuffle(C, (D,), 1))]
    hyparview.on_message(A, Shuffle(C, (D,), 1), 0.0)  # last hop: answered to the origin
    [(dst, reply)] = sent(hyparview)
    assert dst == C
    assert isinstance(reply, ShuffleReply)


def test_a_shuffle_is_answered_by_a_node_with_one_neighbour(hyparview: HyParView) -> None:
    fill_active(hyparview, A)
    hyparview.on_message(B, Shuffle(C, (D,), 4), 0.0)
    [(dst, reply)] = sent(hyparview)
    assert dst == C
    assert isinstance(reply, ShuffleReply)


def test_a_yes_nobody_asked_for_is_undone(hyparview: HyParView) -> None:
    hyparview.on_message(A, NeighborReply(accepted=True), 0.0)
    assert (A, Disconnect()) in sent(hyparview)
    assert A not in hyparview.active
    assert A in hyparview.passive


def test_a_shuffle_reply_replaces_the_entries_sent_away_first(me: Peer) -> None:
    core = HyParView(me, HyParViewConfig(passive_size=4), random.Random(1))
    core.passive = dict.fromkeys(P[:4])
    core._last_sample = (P[1], P[2])  # what our last shuffle sent
    core.on_message(A, ShuffleReply((P[0], P[5], P[6])), 0.0)  # P0 known: skipped, not a stop
    assert set(core.passive) == {P[0], P[3], P[5], P[6]}


def _refuse_all(core: HyParView) -> list[Peer]:
    """Refuse every NEIGHBOR request the core sends; the peers asked, in order."""
    asked: list[Peer] = []
    for _ in range(10):
        requests = [dst for dst, m in sent(core) if isinstance(m, Neighbor)]
        if not requests:
            return asked
        [peer_asked] = requests  # not fragile: one request at a time
        asked.append(peer_asked)
        core.on_message(peer_asked, NeighborReply(accepted=False), 0.0)
    raise AssertionError("asked without end")


def test_a_repair_round_stops_after_repair_rejections_refusals(me: Peer) -> None:
    config = HyParViewConfig(active_size=3, shuffle_interval=1e9)
    core = HyParView(me, config, random.Random(7))
    fill_active(core, A, B)  # one free slot, two neighbours: not fragile
    core.passive = dict.fromkeys(P[:4])
    core.add_contact(P[4], 0.0)  # a passive peer more, and a repair round
    assert len(_refuse_all(core)) == config.repair_rejections  # then it backs off
    assert core.next_deadline() == config.repair_backoff
    core.tick(config.repair_backoff)  # a new round, counted from zero
    assert len(_refuse_all(core)) == config.repair_rejections


def test_with_the_passive_view_dry_a_repair_asks_a_remembered_contact(me: Peer) -> None:
    config = HyParViewConfig(active_size=3, shuffle_interval=1e9)
    core = HyParView(me, config, random.Random(7))
    fill_active(core, A, B)
    core.contacts = dict.fromkeys([A, C])
    core.on_unreachable(B, 0.0)  # nothing passive to ask: back off
    assert [m for _, m in sent(core) if isinstance(m, Neighbor)] == []
    core.tick(config.repair_backoff)
    # The contact that is not a neighbour, at normal priority: maybe across a healed partition.
    assert sent(core) == [(C, Neighbor(high_priority=False))]


def test_failed_peers_are_probed_at_the_node_phase_then_every_interval(me: Peer) -> None:
    config = HyParViewConfig(
        lost_size=2,
        probe_interval=10.0,
        shuffle_interval=1e9,
        repair_backoff=1e6,  # no repair or answer deadline in the way
        repair_backoff_max=1e6,
        neighbor_timeout=1e6,
    )
    core = HyParView(me, config, random.Random(7))
    fill_active(core, A, B, C, D)
    for p in (B, C, B, D):  # B failed again: the newest; C the oldest goes at the cap
        core.on_unreachable(p, 0.0)
        sent(core)
    assert list(core._lost) == [B, D]
    first = (0.5 + zlib.crc32(me.id.encode()) / 2**32) * 10.0
    assert core.next_deadline() == first
    core.tick(first)  # at the deadline exactly
    [(dst, msg)] = [(d, m) for d, m in sent(core) if isinstance(m, Neighbor)]
    assert dst in (B, D)
    assert msg == Neighbor(high_priority=True)
    assert core.next_deadline() == first + 10.0
    core.tick(first + 13.0)  # a late tick: the phase is kept
    assert core._next_probe == first + 20.0
    core.tick(first + 30.0)  # a whole interval late: the next a whole interval on
    assert core._next_probe == first + 40.0
    core.tick(first + 100.0)  # long overdue: one probe, no burst of catch-up probes
    assert core._next_probe == first + 110.0


def test_no_failed_peer_is_kept_with_lost_size_zero(me: Peer) -> None:
    for size, kept in ((0, []), (1, [C])):
        core = HyParView(me, HyParViewConfig(lost_size=size), random.Random(7))
        fill_active(core, A, B, C)
        core.on_unreachable(B, 0.0)
        core.on_unreachable(C, 0.0)
        assert list(core._lost) == kept


def test_the_default_start_time_is_zero(me: Peer) -> None:
    config = HyParViewConfig()
    at_zero = HyParView(me, config, random.Random(1), 0.0).next_deadline()
    assert HyParView(me, config, random.Random(1)).next_deadline() == at_zero


def test_picks_and_samples_are_uniform_and_distinct() -> None:
    rng = random.Random(5)
    items = list(P)
    assert {_pick(rng, items) for _ in range(200)} == set(P)
    samples = [_sample(rng, list(P), 3) for _ in range(200)]
    assert all(len(set(s)) == 3 for s in samples)
    assert {s[0] for s in samples} == set(P)
    assert len(set(samples)) > 100
    # Each of 8 peers is in a sample of 3 with probability 3/8: 1,500 times in 4,000 draws
    # (standard deviation about 31). A biased shuffle favours some peers by hundreds.
    counts = Counter(p for _ in range(4000) for p in _sample(rng, list(P), 3))
    assert all(1350 < counts[p] < 1650 for p in P), counts


def test_an_unanswered_request_counts_as_a_failure_to_probe_later(hyparview: HyParView) -> None:
    fill_active(hyparview, A)
    hyparview._pending[C] = 5.0  # asked at 0, no answer
    hyparview.tick(5.0)
    assert C in hyparview._lost
    assert C not in hyparview.pending


def test_a_probe_skips_failed_peers_already_asked(me: Peer) -> None:
    config = HyParViewConfig(probe_interval=10.0, shuffle_interval=1e9)
    core = HyParView(me, config, random.Random(7))
    fill_active(core, A)
    core._lost = dict.fromkeys([B])
    core._pending[B] = 1e9  # asked already (by a repair)
    core.tick(core._next_probe)
    assert [m for _, m in sent(core) if isinstance(m, Neighbor)] == []


def test_a_forward_join_for_a_peer_already_asked_asks_nothing(hyparview: HyParView) -> None:
    fill_active(hyparview, A)
    hyparview._pending[E] = 9.0
    hyparview.on_message(A, ForwardJoin(E, 0), 0.0)
    assert sent(hyparview) == []


def test_a_neighbour_asking_again_is_not_added_twice(hyparview: HyParView) -> None:
    fill_active(hyparview, A, B, C)  # full
    hyparview.on_message(A, Neighbor(high_priority=True), 0.0)
    assert sent(hyparview) == [(A, NeighborReply(accepted=True))]
    assert hyparview.take_events() == []
    assert list(hyparview.active) == [A, B, C]


def test_a_full_active_view_drops_one_for_a_high_priority_newcomer(hyparview: HyParView) -> None:
    fill_active(hyparview, A, B, C)
    hyparview.on_message(D, Neighbor(high_priority=True), 0.0)
    assert len(hyparview.active) == 3
    assert D in hyparview.active
    [victim] = [dst for dst, m in sent(hyparview) if isinstance(m, Disconnect)]
    assert victim in (A, B, C)
    assert victim in hyparview.passive


def test_a_failed_peer_that_comes_back_is_no_longer_probed(hyparview: HyParView) -> None:
    fill_active(hyparview, A, B)
    hyparview.on_unreachable(B, 0.0)
    assert B in hyparview._lost
    hyparview.on_message(B, Join(), 1.0)
    assert B in hyparview.active
    assert B not in hyparview._lost


def test_this_node_is_never_remembered_as_failed(hyparview: HyParView, me: Peer) -> None:
    fill_active(hyparview, A)
    hyparview.on_unreachable(me, 0.0)
    assert me not in hyparview._lost


def test_a_full_active_view_ends_the_repair_backoff(me: Peer) -> None:
    config = HyParViewConfig(active_size=3, shuffle_interval=1e9)
    core = HyParView(me, config, random.Random(7))
    fill_active(core, A, B)
    core.on_unreachable(B, 0.0)  # nothing passive to ask: a repair is due after the backoff
    assert core.next_deadline() == config.repair_backoff
    fill_active(core, C, D)  # full again before it: nothing left to repair, no wakeup for it
    assert core.next_deadline() > config.repair_backoff


def test_a_join_reply_holds_at_most_ka_plus_kp_peers_and_only_in_a_small_cluster(
    me: Peer,
) -> None:
    config = HyParViewConfig(active_size=6, passive_size=10, shuffle_active=1, shuffle_passive=2)
    want = config.shuffle_active + config.shuffle_passive
    core = HyParView(me, config, random.Random(7))
    fill_active(core, A, B, C, D)
    core.passive = dict.fromkeys(P[:1])
    core.on_message(E, Join(), 0.0)
    [reply] = [m for dst, m in sent(core) if dst == E and isinstance(m, ShuffleReply)]
    assert len(reply.nodes) == want  # the passive peer, and active ones to make up the rest
    assert P[0] in reply.nodes
    core.passive = dict.fromkeys(P[:want])  # as many as a shuffle would tell: not small
    core.on_message(F, Join(), 0.0)
    assert [m for dst, m in sent(core) if dst == F and isinstance(m, ShuffleReply)] == []
