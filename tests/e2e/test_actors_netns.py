"""Actors across a partition: five daemons in network namespaces (test_netns.py's LAN), split
{2} | {3} while one client per actor and side increments a counter actor through the nodes of
its side, then healed.

With the quorum guard (the default) the promise is one owner per actor at any moment: the
minority side answers every actor call 503 ``no_quorum`` from NO_QUORUM_WITHIN seconds after
the split (a node serves only while a strict majority answered one of its heartbeat rounds
sent less than 0.9 lease ago, and a call waits up to one lease for the quorum to come back
before its 503), the majority side takes over every actor whose owner was cut off within
MOVE_WITHIN seconds (that owner's lease lapses at its acceptors 2 s after its last heartbeat
arrived), and after the heal the count continues from the majority's last acknowledged one.
The history of every answer (times, counts, owner and generation headers) is checked by
actor_history.check_actors; "an older generation acknowledged after a newer one began" is
checked as "a call sent after an answer of generation g was acknowledged never runs in a
generation below g" (when a generation begins exactly is not visible to a client).

With ``--no-actor-quorum`` both sides serve every actor, each side with an owner of its own
(a store needs the owner and one other node it sees alive). Healed, every node's session has
lapsed at the other side's acceptors, so every actor is activated anew in a generation above
both sides' and has one owner everywhere; as docs/actors.md says, the state with the higher
(generation, sequence number) wins: the count goes on from the last acknowledged count of
the side with the higher generation, and the other side's increments since the split are
lost. The two sides may run the same generation number (each side's activation needs only
two grants); then the higher sequence number decides, and the test only checks that the
count goes on from one of the two sides.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from actor_history import History, Op, check_actors, failovers, parse_counter, summary
from helpers import REPO_ROOT
from test_netns import PORT, Daemon, Lan, _enter_netns, address, alive_members, wait_until
from test_netns import lan_cluster as lan_cluster  # the fixture

pytestmark = [pytest.mark.e2e, pytest.mark.required("netns")]

COUNTER = REPO_ROOT / "guests" / "build" / "rust-counter.wasm"
KEYS = [f"k{i}" for i in range(20)]
CUT = [3, 4]
"""The minority side (the seed n0 is on the majority side)."""
NO_QUORUM_WITHIN = 3.0
"""Seconds after the split from which every call sent on the minority side answers
``no_quorum``: the guard ends 1.8 s after the last good round was sent (0.5 s apart), and a
call may have been running at that moment."""
MOVE_WITHIN = 6.0
"""Seconds after the split within which every actor answers on the majority side: the cut-off
owner's lease lapses 2 s after its last heartbeat, the others stop counting it alive 2 s after
they last heard it, and the first call then activates the actor (a prepare and an accept)."""
PARTITION_SECONDS = 10.0
HTTP_TIMEOUT = 15.0
ACTOR_ARGS = ["--actor-wait", "5"]


class Clients:
    """Threads inside each daemon's namespace that send requests to it, headers kept."""

    def __init__(self, daemons: list[Daemon], threads: int = 24) -> None:
        self.daemons = daemons
        self.pools = {
            d.name: ThreadPoolExecutor(threads, f"cl-{d.name}", _enter_netns, (d.netns,))
            for d in daemons
        }

    def close(self) -> None:
        for pool in self.pools.values():
            pool.shutdown(wait=False, cancel_futures=True)

    def request(
        self, d: Daemon, method: str, path: str, body: bytes | None = None
    ) -> tuple[int | None, dict[str, str], bytes]:
        def go() -> tuple[int | None, dict[str, str], bytes]:
            req = urllib.request.Request(d.url + path, body, method=method)
            try:
                with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
                    return resp.status, dict(resp.headers), resp.read()
            except urllib.error.HTTPError as e:
                return e.code, dict(e.headers), e.read()
            except ConnectionRefusedError:
                return None, {}, b"refused"
            except OSError:
                return None, {}, b"no answer"

        return self.pools[d.name].submit(go).result()

    def increment(self, history: History, d: Daemon, key: str) -> Op:
        start = time.monotonic()
        status, headers, body = self.request(d, "POST", f"/actors/counter/{key}/increment")
        op = Op("actor", key, d.name, start, time.monotonic(), status)
        if status == 200:
            op.stored, op.memory = parse_counter(body)
            op.owner = headers.get("Assemblex-Actor-Owner", "")
            op.gen = int(headers.get("Assemblex-Actor-Generation", "0"))
        elif status is None:
            op.code = body.decode()
        else:
            try:
                op.code = str(json.loads(body).get("error", ""))
            except ValueError:
                op.code = body[:60].decode(errors="replace")
        history.add(op)
        return op

    def increment_all(self, history: History, pairs: list[tuple[Daemon, str]]) -> list[Op]:
        with ThreadPoolExecutor(len(pairs)) as pool:
            return list(pool.map(lambda p: self.increment(history, *p), pairs))

    def info(self, d: Daemon, key: str) -> dict[str, Any]:
        status, _, body = self.request(d, "GET", f"/actors/counter/{key}")
        assert status == 200, f"{d.name} GET /actors/counter/{key}: {status} {body!r}"
        answer: dict[str, Any] = json.loads(body)
        return answer

    def get(self, d: Daemon, key: str) -> int | None:
        status, _, body = self.request(d, "POST", f"/actors/counter/{key}/get")
        return parse_counter(body)[0] if status == 200 else None


def _start(
    lan_cluster: Callable[..., tuple[Lan, list[Daemon]]], extra: list[str]
) -> tuple[Lan, list[Daemon], Clients]:
    seed = f"http://{address(0)}:{PORT}"
    lan, nodes = lan_cluster(
        5, lambda i: ["--no-mdns", *ACTOR_ARGS, *extra, *(["--join", seed] if i else [])]
    )
    ids = {d.id for d in nodes}
    wait_until(
        "every node knows all five as alive members",
        lambda: all(alive_members(d) == ids for d in nodes),
        nodes,
        90,
    )
    nodes[0].deploy("counter", COUNTER.read_bytes())
    wait_until(
        "every node runs counter",
        lambda: all(
            any(a["name"] == "counter" and a.get("running") for a in d.get("/status")["apps"])
            for d in nodes
        ),
        nodes,
    )
    return lan, nodes, Clients(nodes)


def _owners(clients: Clients, nodes: list[Daemon]) -> dict[str, set[str]]:
    """Key -> the owners the nodes name."""
    return {k: {str(clients.info(d, k)["owner"]) for d in nodes} for k in KEYS}


def _agree(clients: Clients, nodes: list[Daemon], limit: float = 60.0) -> float:
    """Wait until every node names the same owner of every actor; the seconds it took."""
    start = time.monotonic()
    while True:
        views = {k: {d.name: clients.info(d, k) for d in nodes} for k in KEYS}
        split = {
            k: {n: (v["owner"], v["generation"], v["active"]) for n, v in view.items()}
            for k, view in views.items()
            if len({v["owner"] for v in view.values()}) > 1
        }
        if not split:
            return time.monotonic() - start
        if time.monotonic() - start > limit:
            lines = [f"{k}: {v}" for k, v in split.items()]
            pytest.fail(f"owners still differ {limit:.0f}s after the heal:\n" + "\n".join(lines))
        time.sleep(0.25)


def _warm_up(clients: Clients, nodes: list[Daemon], history: History) -> dict[str, str]:
    """Every actor called (through a random node) until each answered once; key -> owner."""
    rng = random.Random(1)

    def all_called() -> bool:
        missing = [k for k in KEYS if not any(o.ok and o.key == k for o in history.ops)]
        if missing:
            clients.increment_all(history, [(rng.choice(nodes), k) for k in missing])
        return not missing

    wait_until("every actor answered once", all_called, nodes, 60)
    last = {}
    for op in sorted(history.ops, key=lambda o: o.end):
        if op.ok:
            last[op.key] = op.owner
    return last


def _hammer(
    clients: Clients,
    sides: list[list[Daemon]],
    history: History,
    seconds: float,
    rng: random.Random,
) -> None:
    """For ``seconds``: one client per actor on each side, incrementing it through a random
    node of its side, one call after the other."""
    until = time.monotonic() + seconds
    seeds = [(side, k, rng.random()) for side in sides for k in KEYS]

    def client(side: list[Daemon], key: str, seed: float) -> None:
        mine = random.Random(seed)
        while time.monotonic() < until:
            clients.increment(history, mine.choice(side), key)

    with ThreadPoolExecutor(len(seeds)) as pool:
        list(pool.map(lambda a: client(*a), seeds))


@pytest.mark.timeout(420)
def test_partition_with_quorum_guard_one_owner(
    lan_cluster: Callable[..., tuple[Lan, list[Daemon]]], tmp_path: Path
) -> None:
    lan, nodes, clients = _start(lan_cluster, [])
    history = History(tmp_path / "history.jsonl")
    try:
        owner_before = _warm_up(clients, nodes, history)
        minority = [nodes[i] for i in CUT]
        majority = [d for i, d in enumerate(nodes) if i not in CUT]
        cut_names = {d.name for d in minority}
        moving = sorted(k for k, o in owner_before.items() if o in cut_names)
        assert moving, f"no actor owned on the minority side: {owner_before}"

        lan.split(CUT)
        split_at = time.monotonic()
        _hammer(clients, [minority, majority], history, PARTITION_SECONDS, random.Random(2))
        ops = [o for o in history.ops if o.start >= split_at]

        # The minority side: nothing acknowledged after the guard ran out, all no_quorum.
        late_minority = [
            o for o in ops if o.node in cut_names and o.start >= split_at + NO_QUORUM_WITHIN
        ]
        assert late_minority
        wrong = [(o.node, o.key, o.status, o.code) for o in late_minority if o.code != "no_quorum"]
        assert not wrong, f"minority calls not answered no_quorum: {wrong[:10]}"
        # A store needs a majority of acceptors: not one call sent on the minority side after
        # the split is acknowledged, even before its guard runs out.
        minority_ok = [(o.key, o.node, o.stored) for o in ops if o.node in cut_names and o.ok]
        assert not minority_ok, f"acknowledged on the minority side: {minority_ok[:10]}"
        first_503 = min(
            (o.end - split_at for o in ops if o.node in cut_names and o.code == "no_quorum"),
            default=float("nan"),
        )

        # The majority side: every actor answered, the moved ones by a majority node.
        moved_at = {}
        for k in KEYS:
            acked = [o for o in ops if o.key == k and o.node not in cut_names and o.ok]
            assert acked, f"{k}: the majority side never served it"
            assert all(o.owner not in cut_names for o in acked), k
            moved_at[k] = min(o.end for o in acked) - split_at
        slowest = max(moved_at.values())
        assert slowest <= MOVE_WITHIN, moved_at
        late_majority = [
            o for o in ops if o.node not in cut_names and o.start >= split_at + MOVE_WITHIN
        ]
        failed = [(o.node, o.key, o.status, o.code) for o in late_majority if not o.ok]
        assert not failed, f"majority calls that failed once every actor moved: {failed[:10]}"
        majority_last = {}  # the minority acknowledged nothing since the split
        for op in sorted(history.ops, key=lambda o: o.end):
            if op.ok:
                majority_last[op.key] = op.stored

        lan.heal()
        took = _agree(clients, nodes)
        rng = random.Random(3)
        after = clients.increment_all(history, [(rng.choice(nodes), k) for k in KEYS])
        for op in after:
            assert op.ok, f"{op.key} via {op.node} after the heal: {op.status} {op.code}"
            doubt = sum(1 for o in history.ops if o.key == op.key and o.in_doubt)
            assert majority_last[op.key] < op.stored <= majority_last[op.key] + 1 + doubt, (
                f"{op.key}: {op.stored} after the heal, the majority had {majority_last[op.key]}"
            )
        final = {k: clients.get(nodes[0], k) for k in KEYS}
        problems = check_actors(history.of("actor"), {k: v for k, v in final.items() if v})
        assert not problems, "\n".join(problems[:30])
        owners = _owners(clients, nodes)
        assert all(len(o) == 1 for o in owners.values()), owners

        print(
            f"\nquorum: {len(history.ops)} calls; minority side: none answered 200 after the"
            f" split, the first no_quorum {first_503:.2f}s after it; {len(moving)} actors"
            f" moved, every actor served on the majority within {slowest:.2f}s (owner changes: gaps"
            f" {summary(failovers(history.of('actor')))}); one owner everywhere"
            f" {took:.1f}s after the heal"
        )
    finally:
        clients.close()
        history.close()


@pytest.mark.timeout(420)
def test_partition_without_quorum_guard_both_sides_serve(
    lan_cluster: Callable[..., tuple[Lan, list[Daemon]]], tmp_path: Path
) -> None:
    lan, nodes, clients = _start(lan_cluster, ["--no-actor-quorum"])
    history = History(tmp_path / "history.jsonl")
    try:
        _warm_up(clients, nodes, history)
        minority = [nodes[i] for i in CUT]
        majority = [d for i, d in enumerate(nodes) if i not in CUT]
        sides = {"minority": {d.name for d in minority}, "majority": {d.name for d in majority}}
        lan.split(CUT)
        split_at = time.monotonic()
        _hammer(clients, [minority, majority], history, PARTITION_SECONDS, random.Random(4))
        ops = [o for o in history.ops if o.start >= split_at]

        # Both sides serve every actor, each in its own generations, its own nodes owning.
        last: dict[str, dict[str, Op]] = {k: {} for k in KEYS}
        for k in KEYS:
            for side, names in sides.items():
                late = [
                    o
                    for o in ops
                    if o.key == k and o.node in names and o.start >= split_at + MOVE_WITHIN
                ]
                assert late, f"{k}: no call on the {side} side"
                failed = [(o.node, o.status, o.code) for o in late if not o.ok]
                assert not failed, f"{k} on the {side} side: {failed[:10]}"
                assert all(o.owner in names for o in late), (k, side)
                last[k][side] = max(late, key=lambda o: o.end)
        # Two owners at once: both sides went on from the count at the split. The checker
        # that passes the guarded run sees it in this history.
        problems = check_actors(history.of("actor"), {})
        assert any("seen twice" in p for p in problems), problems[:10]

        lan.heal()
        took = _agree(clients, nodes)
        rng = random.Random(5)
        after = clients.increment_all(history, [(rng.choice(nodes), k) for k in KEYS])
        kept = {"minority": 0, "majority": 0, "either (same generation)": 0}
        for op in after:
            assert op.ok, f"{op.key} via {op.node} after the heal: {op.status} {op.code}"
            assert op.gen is not None
            assert all(op.gen > (o.gen or 0) for o in last[op.key].values()), op
            # The state of the side with the higher generation goes on, the other's is lost.
            # Both sides may have taken the same generation number (each needs only two
            # grants): then the higher sequence number wins, which a client does not see.
            sides = last[op.key]
            top = max(o.gen or 0 for o in sides.values())
            winners = [s for s, o in sides.items() if o.gen == top]
            doubt = sum(1 for o in history.ops if o.key == op.key and o.in_doubt)
            went_on = [
                s
                for s in winners
                if sides[s].stored is not None
                and sides[s].stored < op.stored <= sides[s].stored + 1 + doubt
            ]
            assert went_on, (
                f"{op.key}: {op.stored} after the heal; the sides' last (count, generation):"
                f" { ({s: (o.stored, o.gen) for s, o in sides.items()}) }"
            )
            kept[went_on[0] if len(winners) == 1 else "either (same generation)"] += 1
        owners = _owners(clients, nodes)
        assert all(len(o) == 1 for o in owners.values()), owners
        print(
            f"\nno quorum: {len(history.ops)} calls, both sides served all {len(KEYS)} actors;"
            f" one owner everywhere {took:.1f}s after the heal; the higher generation's state"
            f" went on for all: {kept}"
        )
    finally:
        clients.close()
        history.close()
