"""Convergence: random operations and syncs over a lossy network, and the anti-entropy core."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt import (
    AntiEntropy,
    Limits,
    LWWRegister,
    Push,
    RemoteError,
    Replica,
    SyncConfig,
    SyncRequest,
    SyncResponse,
)
from crdt.testing import FakeClock, SimNet, canonical, full_exchange

KEYS = ["k1", "k2", "k3"]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_random_ops_and_lossy_syncs_converge(data: st.DataObject) -> None:
    clock = FakeClock()
    replicas = [Replica(n, clock=clock) for n in ("a", "b", "c", "d")]
    n = len(replicas)
    in_flight: list[bytes] = []
    targets: list[int] = []
    increments = dict.fromkeys(KEYS, 0)
    writes: dict[str, list[LWWRegister]] = {k: [] for k in KEYS}
    pushed = [0] * n
    steps = data.draw(st.lists(st.integers(0, 9), min_size=1, max_size=40))
    for step in steps:
        i = data.draw(st.integers(0, n - 1))
        r = replicas[i]
        key = data.draw(st.sampled_from(KEYS))
        clock.now += data.draw(st.sampled_from([0, 0, 0.001, -0.5]))
        if step <= 1:
            r.set(key, data.draw(st.binary(max_size=2)))
            writes[key].append(r._state.regs[key])
        elif step == 2:
            r.delete(key)
            writes[key].append(r._state.regs[key])
        elif step == 3:
            k = data.draw(st.integers(0, 3))
            r.incr(key, k)
            increments[key] += k
        elif step in (4, 5):  # a delta for j, against j's digest of now (stale on arrival)
            j = data.draw(st.integers(0, n - 1))
            chunk = r.delta_chunk(replicas[j].digest())
            if chunk.delta is not None:
                in_flight.append(chunk.delta)
                targets.append(j)
        elif step == 6:  # an eager push
            delta, pushed[i] = r.local_delta(pushed[i])
            if delta is not None:
                in_flight.append(delta)
                targets.append(data.draw(st.integers(0, n - 1)))
        elif in_flight:  # deliver one, in any order; maybe keep a duplicate, maybe drop it
            m = data.draw(st.integers(0, len(in_flight) - 1))
            fate = data.draw(st.sampled_from(["deliver", "duplicate", "drop"]))
            if fate != "drop":
                replicas[targets[m]].merge(in_flight[m])
            if fate != "duplicate":
                del in_flight[m], targets[m]
    full_exchange(replicas)
    states = [canonical(r) for r in replicas]
    assert all(s == states[0] for s in states)
    for key in KEYS:
        assert all(r.value(key) == increments[key] for r in replicas)
        if writes[key]:
            winner = max(writes[key], key=lambda w: (w.ts, w.node))
            assert all(r._state.regs[key] == winner for r in replicas)
    # Nothing left to send anywhere.
    for a in replicas:
        for b in replicas:
            assert a.delta_chunk(b.digest()).delta is None


def mesh(net: SimNet, names: list[str], degree: int, rng: random.Random) -> None:
    for i, name in enumerate(names):  # a ring, so it is connected, plus random chords
        net.connect(name, names[(i + 1) % len(names)])
        for other in rng.sample(names, degree - 2):
            if other != name:
                net.connect(name, other)


@pytest.mark.parametrize("seed", [1, 2])
def test_anti_entropy_converges_over_a_lossy_network(seed: int) -> None:
    rng = random.Random(seed)
    net = SimNet(rng, drop=0.2, dup=0.1)
    names = [f"n{i:02}" for i in range(20)]
    config = SyncConfig(interval=1.0, fanout=2, push=True)
    for name in names:
        net.add(name, config)
    mesh(net, names, 4, rng)
    net.deliver()
    for _ in range(100):
        replica = net.nodes[rng.choice(names)][0]
        if rng.random() < 0.5:
            replica.set(f"app/{rng.randrange(30)}", rng.randbytes(8))
        else:
            replica.incr(f"v/{rng.randrange(5)}")
    rounds = 0
    while not net.converged():
        net.tick(1.0)
        net.deliver()
        rounds += 1
        assert rounds < 30
    assert sum(r.value(f"v/{i}") for r in net.replicas()[:1] for i in range(5)) > 0


def test_a_seed_replays_a_run() -> None:
    def run() -> tuple[int, int, Any]:
        rng = random.Random(7)
        net = SimNet(rng, drop=0.1, dup=0.1)
        names = [f"n{i}" for i in range(8)]
        for name in names:
            net.add(name)
        mesh(net, names, 3, rng)
        for i in range(30):
            net.nodes[names[i % 8]][0].set(f"k{i % 5}", b"%d" % i)
            net.tick(0.3)
            net.deliver()
        return net.sent, net.sent_bytes, canonical(net.replicas()[0])

    assert run() == run()


def test_pushes_flood_without_rounds() -> None:
    net = SimNet(random.Random(3), reorder=False)
    names = [f"n{i}" for i in range(6)]
    config = SyncConfig(interval=1e9)  # no anti-entropy round in this test
    for name in names:
        net.add(name, config)
    for a, b in itertools.pairwise(names):  # a line: n0 - n1 - ... - n5
        net.connect(a, b)
    net.deliver()
    net.nodes["n0"][0].set("app/x", b"v1")
    net.nodes["n0"][0].incr("app/x/version")
    net.tick(0.001)
    net.deliver()
    assert all(r.get("app/x") == b"v1" and r.value("app/x/version") == 1 for r in net.replicas())
    before = net.sent
    net.deliver()
    assert net.sent == before  # forwarding stopped where there was nothing new


def test_a_new_peer_catches_up_in_chunks() -> None:
    limits = Limits(chunk_bytes=2048)
    net = SimNet(random.Random(5))
    old = net.add("old", SyncConfig(interval=1e9), limits)
    for i in range(200):
        old.set(f"k{i}", b"x" * 64)
    new = net.add("new", SyncConfig(interval=1e9), limits)
    new.set("mine", b"only here")
    net.connect("old", "new")
    net.deliver()
    assert canonical(old) == canonical(new)
    assert net.sent > 10  # the store came over in many chunks


def test_bad_input_raises_and_changes_nothing() -> None:
    r = Replica("r")
    core = AntiEntropy(r, random.Random(1))
    core.add_peer("p", 0)
    core.take_outbox()
    r.set("k", b"v")
    peer = Replica("p")
    peer.set("x", b"1")
    good_delta = peer.delta(r.digest())
    before = canonical(r)
    for msg in (
        SyncRequest(b"junk"),
        SyncResponse(b"junk"),
        SyncResponse(good_delta, digest=b"junk"),  # the digest is checked before merging
        Push(good_delta[:-1]),
    ):
        with pytest.raises(RemoteError):
            core.on_message("p", msg, 1.0)
        assert core.take_outbox() == []
        assert canonical(r) == before


def test_rounds_pushes_and_deadlines() -> None:
    clock = FakeClock()
    r = Replica("r", clock=clock)
    core = AntiEntropy(r, random.Random(1), SyncConfig(interval=10, push_interval=0.5))
    assert core.next_deadline() is None
    core.tick(0.0)
    first = core.next_deadline()
    assert first is not None
    assert 0 <= first <= 10
    core.tick(first)
    assert core.take_outbox() == []  # no peers: nothing to send
    core.add_peer("p", first)
    core.add_peer("p", first)
    core.add_peer("r", first)  # itself: ignored
    assert core.peers == ("p",)
    assert [type(m) for _, m in core.take_outbox()] == [SyncRequest]
    r.set("k", b"v")
    assert core.next_deadline() == float("-inf")  # a push is due at once
    core.tick(first + 0.1)
    out = core.take_outbox()
    assert [(dst, type(m)) for dst, m in out] == [("p", Push)]
    r.set("k", b"w")
    deadline = core.next_deadline()
    assert deadline == pytest.approx(first + 0.6)  # batched behind push_interval
    core.tick(first + 0.2)
    assert core.take_outbox() == []
    core.tick(deadline)
    assert [type(m) for _, m in core.take_outbox()] == [Push]
    nxt = core.next_deadline()
    assert nxt is not None
    core.tick(nxt)
    assert [type(m) for _, m in core.take_outbox()] == [SyncRequest]
    core.remove_peer("p")
    r.set("k", b"x")
    core.tick(nxt + 100)
    assert core.take_outbox() == []


def test_a_request_from_a_peer_ahead_is_answered_with_our_digest_and_it_answers_back() -> None:
    """Anti-entropy in one exchange each way: the responder sends its digest when the asker
    holds writes it lacks, and the asker answers that digest with what it holds (cut: more)."""
    limits = Limits(chunk_bytes=1024)
    r, p = Replica("r", limits=limits), Replica("p", limits=limits)
    r.set("k", b"v")
    for i in range(40):
        p.set(f"x{i:02}", b"y" * 32)
    r_core = AntiEntropy(r, random.Random(1))
    p_core = AntiEntropy(p, random.Random(2))

    r_core.on_message("p", SyncRequest(p.digest()), 1.0)
    [(dst, response)] = r_core.take_outbox()
    assert dst == "p"
    assert isinstance(response, SyncResponse)
    assert response.delta is not None
    assert response.digest == r.digest()  # p holds writes r lacks

    p_core.on_message("r", response, 1.0)
    [(dst, answer)] = p_core.take_outbox()
    assert dst == "r"
    chunk = p.delta_chunk(r.digest())
    assert chunk.more is True
    assert answer == SyncResponse(chunk.delta, True)

    # A peer that holds nothing new gets no digest: it has nothing to send back.
    r_core.on_message("p", SyncRequest(Replica("e").digest()), 1.0)
    [(_, response)] = r_core.take_outbox()
    assert isinstance(response, SyncResponse)
    assert response.digest is None


def test_a_message_of_another_kind_is_a_type_error() -> None:
    core = AntiEntropy(Replica("r"), random.Random(1))
    with pytest.raises(TypeError, match=r"^not a crdt message: 'hello'$"):
        core.on_message("p", "hello", 1.0)  # type: ignore[arg-type]


def test_rounds_come_within_the_jitter_of_the_interval_and_the_first_within_one() -> None:
    firsts = []
    gaps = []
    for seed in range(40):
        core = AntiEntropy(Replica("r"), random.Random(seed), SyncConfig(interval=10, jitter=0.2))
        core.tick(0.0)
        first = core.next_deadline()
        assert first is not None
        firsts.append(first)
        core.tick(first)
        nxt = core.next_deadline()
        assert nxt is not None
        gaps.append(nxt - first)
    assert all(0 <= f <= 10 for f in firsts)
    assert min(firsts) < 1  # anywhere in the first interval: nodes started together spread out
    assert all(8 <= g <= 12 for g in gaps)
    assert min(gaps) < 9.5  # jittered both ways, not a fixed period
    assert max(gaps) > 10.5


def test_the_next_deadline_is_the_earlier_of_the_round_and_a_due_push() -> None:
    r = Replica("r", clock=FakeClock())
    core = AntiEntropy(r, random.Random(1), SyncConfig(interval=10, push_interval=100))
    r.set("k", b"v")
    assert core.next_deadline() == float("-inf")  # before the first tick: the push is due
    core.tick(0.0)  # the push goes now; the first round is within 10 s
    r.set("k", b"w")
    round_at = core._next_round
    assert round_at is not None
    assert core.next_deadline() == round_at  # the round, not the push due at 100
