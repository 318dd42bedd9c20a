"""Mutation testing of the pure cores and of the daemon's guards (run it as scripts/mutation).

Two parts, one report:

* **cores**: mutmut (configured in pyproject.toml's ``[tool.mutmut]``) mutates crdt/_state.py,
  crdt/_sync.py, membership/_hyparview.py, membership/_plumtree.py and membership/_overlay.py
  and runs, for each mutant, the fast unit tests that call the mutated function. The score is
  killed (or timed out) over all mutants; the goal is ``CORE_GOAL``. Every survivor is printed
  with its file:line and its change; those in ``EQUIVALENT`` (mutants no test can tell from the
  original, with the reason) are marked so.
* **guards**: each row of ``GUARDS`` takes out or weakens one limit or check of the daemon
  (the limits of docs/operations.md's table, the module hash check, the tokens, the cluster
  key), in a temporary copy of the tree, and runs the tests named with it: at least one must
  fail. A row whose original text is no longer in its file is reported as stale (a failure).

Exits 1 when the core score is under the goal or a guard mutation survives.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE_GOAL = 0.85
# Statuses that count as killed (mutmut's names); everything else counts as surviving.
KILLED = {"killed", "timeout", "caught by type check"}


@dataclass(frozen=True)
class Guard:
    """One targeted mutation of a guard: ``old`` (exact, once in ``file``) becomes ``new``."""

    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    # Why no test here kills it yet, when the test belongs to work in flight elsewhere.
    pending: str = ""


API, OPS = "assemblexd/api.py", "assemblexd/ops.py"
POOL, SCHED = "assemblexd/runtime/pool.py", "assemblexd/runtime/scheduler.py"
HOST = "assemblexd/runtime/hostfuncs.py"
T_API = "tests/assemblexd/test_api.py"
T_HTTP = "tests/assemblexd/test_http_limits.py"
T_CL = f"{T_HTTP}::test_a_content_length_over_the_limit_is_refused_before_the_body"
T_CHUNK = f"{T_HTTP}::test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit"
T_FETCH = "tests/assemblexd/test_fetch.py"
T_SEC = "tests/assemblexd/test_security.py"
T_RUN = "tests/assemblexd/test_runtime.py"
T_ATT = "tests/assemblexd/test_attacks.py"
T_LIM = "tests/assemblexd/test_node_limits.py"
T_REG = "tests/assemblexd/test_registry.py"
ACT = "assemblexd/actors/core.py"
T_ACT = "tests/assemblexd/test_actors_core.py"

GUARDS: tuple[Guard, ...] = (
    # -- HTTP bodies ------------------------------------------------------------------------
    Guard(
        "upload: Content-Length checked before reading",
        API,
        '_check_length(request, limit + slack, "module")',
        "pass",
        (T_CL,),
    ),
    Guard(
        "upload: checked while streaming",
        API,
        "wasm = await _read_limited(request.content.read, limit, ",
        "wasm = await _read_limited(request.content.read, 1 << 62, ",
        (T_CHUNK,),
    ),
    Guard(
        "upload: module size (node)",
        OPS,
        "if len(wasm) > config.max_upload_mib * MIB:",
        "if False:",
        (f"{T_RUN}::test_upload_limit",),
    ),
    Guard(
        "payload: Content-Length checked before reading",
        API,
        '_check_length(request, limit, "payload")',
        "pass",
        (T_CL,),
    ),
    Guard(
        "payload: checked while streaming",
        API,
        'return await _read_limited(request.content.read, limit, "payload")',
        'return await _read_limited(request.content.read, 1 << 62, "payload")',
        (T_CHUNK,),
    ),
    Guard(
        "payload: size (node)",
        OPS,
        "if len(payload) > limit * MIB:",
        "if False:",
        (f"{T_RUN}::test_payload_limit",),
    ),
    Guard(
        "payload: a guest's response",
        OPS,
        "if len(response) > config.max_payload_mib * MIB:",
        "if False:",
        (f"{T_ATT}::test_huge_response",),
    ),
    Guard(
        "deploy form fields (name, capabilities)",
        API,
        "raw = await _read_limited(part.read_chunk, _MAX_FIELD, ",
        "raw = await _read_limited(part.read_chunk, 1 << 62, ",
        ("tests/assemblexd/test_api_guards.py::test_small_limits_are_stated_in_bytes",),
    ),
    Guard(
        "time to send a body",
        API,
        "async with asyncio.timeout(timeout if timeout > 0 else None):",
        "async with asyncio.timeout(None):",
        ("tests/assemblexd/test_api_guards.py::test_body_timeout",),
    ),
    Guard(
        "time to send a request's head",
        "assemblexd/conns.py",
        "self._timer = loop.call_later(self._guard.header_timeout, self._expired)",
        "pass",
        ("tests/e2e/test_slow_clients.py::test_a_silent_connection_is_cut_off",),
    ),
    Guard(
        "open connections per client address",
        "assemblexd/conns.py",
        "and guard.max_per_client > 0",
        "and False",
        ("tests/e2e/test_slow_clients.py::test_connections_per_client_address_are_capped",),
    ),
    # -- module fetches ---------------------------------------------------------------------
    Guard(
        "fetch: sha256 of a fetched module",
        "assemblexd/modules.py",
        "if hashlib.sha256(wasm).hexdigest() != record.sha256:",
        "if False:",
        (
            f"{T_FETCH}::test_a_fetched_module_that_does_not_match_its_sha256_is_neither_stored_nor_run",
        ),
    ),
    Guard(
        "fetch: size of a fetched module",
        "assemblexd/cluster.py",
        "if len(data) > limit:",
        "if False:",
        (f"{T_FETCH}::test_a_fetched_module_over_the_upload_limit_is_refused",),
    ),
    # -- tokens -----------------------------------------------------------------------------
    Guard(
        "token: compared",
        API,
        "if not hmac.compare_digest(given.encode(), token.encode()):",
        "if False:",
        (f"{T_API}::test_token_required_for_deploy_and_delete",),
    ),
    Guard(
        "token: asked by deploy",
        API,
        "_check_token(request)\n    node = _node(request)\n    limit = ",
        "node = _node(request)\n    limit = ",
        (f"{T_API}::test_token_required_for_deploy_and_delete",),
    ),
    Guard(
        "call token: asked by calls",
        API,
        "    if call_token:\n        _check_token(request, call_token)",
        "    if False:\n        _check_token(request, call_token)",
        (f"{T_SEC}::test_calls_need_the_call_token",),
    ),
    # -- cluster key ------------------------------------------------------------------------
    Guard(
        "cluster key: link proof verified",
        "membership/_auth.py",
        "if matched is None:\n            raise AuthenticationError(",
        "if False:\n            raise AuthenticationError(",
        ("tests/membership/test_membership_auth.py",),
    ),
    Guard(
        "cluster key: frame tags verified",
        "membership/_auth.py",
        "if not hmac.compare_digest(expected[:TAG_SIZE], tag):",
        "if False:",
        ("tests/membership/test_membership_auth.py",),
    ),
    Guard(
        "cluster key: blob proof's MAC (BlobGuard.check)",
        "assemblexd/auth.py",
        "if not matched or nonce in self._seen:",
        "if nonce in self._seen:",
        (T_SEC,),
    ),
    Guard(
        "cluster key: blob proof spent once (BlobGuard.check)",
        "assemblexd/auth.py",
        "if not matched or nonce in self._seen:",
        "if not matched:",
        (T_SEC,),
    ),
    Guard(
        "cluster key: blob proof's time window (BlobGuard.check)",
        "assemblexd/auth.py",
        "if abs(now - ts) > self.window or not 16 <= len(nonce) <= 64:",
        "if not 16 <= len(nonce) <= 64:",
        (T_SEC,),
    ),
    # -- actors' rules ----------------------------------------------------------------------
    Guard(
        "actors: a lapsed session is refused",
        ACT,
        "    if not sessions.heartbeat(node, session, now):",
        "    if not sessions.heartbeat(node, session, now) and False:",
        (T_ACT,),
    ),
    Guard(
        "actors: a session whose actor was granted away lapses",
        ACT,
        "            sessions.lapse(record.holder, record.holder_session)",
        "            pass",
        (T_ACT,),
    ),
    Guard(
        "actors: an actor held by a live lease is refused",
        ACT,
        "if sessions.live(record.holder, record.holder_session, now):",
        "if False:",
        (T_ACT,),
    ),
    Guard(
        "actors: a restarted acceptor grants nothing held for a lease",
        ACT,
        "        if sessions.starting(now):",
        "        if False:",
        (T_ACT,),
    ),
    Guard(
        "actors: a generation not above the promise is refused",
        ACT,
        "if gen < record.promised or (gen == record.promised and held_by_other):",
        "if gen < record.promised:",
        (T_ACT,),
    ),
    Guard(
        "actors: a store of an older generation is refused",
        ACT,
        "    if state.gen < record.promised:",
        "    if False:",
        (T_ACT,),
    ),
    Guard(
        "actors: a release is bounded by generation",
        ACT,
        "record.released or record.promised > up_to:",
        "record.released:",
        (T_ACT,),
    ),
    Guard(
        "actors: an actor is served only while its grantors answer",
        ACT,
        "len(ok.intersection(granted)) >= needed",
        "len(ok) >= needed",
        (T_ACT,),
    ),
    Guard(
        "actors: a node stops short of its lease",
        ACT,
        "end = self._lease * (1 - DRIFT)",
        "end = self._lease * 1.5",
        (T_ACT,),
    ),
    # -- membership links -------------------------------------------------------------------
    Guard(
        "membership: a full link queue drops the peer",
        "membership/_node.py",
        "self._spawn(link.channel.aclose())",
        "pass",
        (
            "tests/membership/test_membership_node.py"
            "::test_a_peer_whose_send_queue_overflows_is_dropped",
        ),
    ),
    Guard(
        "membership: frame size read",
        "membership/_codec.py",
        "if length > self.max_frame:",
        "if False:",
        ("tests/membership/test_membership_codec.py::test_oversized_frames_are_refused_both_ways",),
    ),
    Guard(
        "membership: frame size written",
        "membership/_codec.py",
        "if len(body) > max_frame:",
        "if False:",
        ("tests/membership/test_membership_codec.py::test_oversized_frames_are_refused_both_ways",),
    ),
    Guard(
        "membership: frames read from a peer paced",
        "membership/_node.py",
        "if link.tokens < 0:",
        "if False:",
        (
            "tests/membership/test_membership_node.py::test_a_fast_peer_is_paced_to_the_rate_and_loses_nothing",
        ),
    ),
    Guard(
        "membership: sync messages waiting for the sync thread",
        "membership/_node.py",
        "return any(s.direct_pending(peer) >= limit for s in self._subscriptions)",
        "return False",
        (
            "tests/membership/test_membership_node.py"
            "::test_a_peer_is_not_read_past_a_subscriber_backlog",
        ),
    ),
    # -- crdt -------------------------------------------------------------------------------
    Guard(
        "crdt: delta size from a peer",
        "crdt/_codec.py",
        "if len(data) > limits.max_delta_bytes:",
        "if False:",
        ("tests/crdt/test_crdt_codec.py::test_limits_are_enforced_on_input",),
    ),
    Guard(
        "crdt: digest size from a peer",
        "crdt/_codec.py",
        "if len(data) > limits.max_digest_bytes:",
        "if False:",
        ("tests/crdt/test_crdt_codec.py::test_limits_are_enforced_on_input",),
    ),
    Guard(
        "crdt: writers in a delta",
        "crdt/_codec.py",
        "n_nodes = r.count(_MIN_NODE, limits.max_nodes)",
        "n_nodes = r.count(_MIN_NODE, _MAX_VARINT)",
        ("tests/crdt/test_crdt_codec.py::test_a_delta_may_name_at_most_max_nodes_writers",),
    ),
    Guard(
        "crdt: register key size from a peer",
        "crdt/_codec.py",
        "key = r.text(limits.max_key_bytes)\n        i, ts, tag = r.unpack(_REG)",
        "key = r.text(_MAX_VARINT)\n        i, ts, tag = r.unpack(_REG)",
        ("tests/crdt/test_crdt_codec.py::test_limits_are_enforced_on_input",),
    ),
    Guard(
        "crdt: counter key size from a peer",
        "crdt/_codec.py",
        "key = r.text(limits.max_key_bytes)\n        i, count, ts = r.unpack(_CTR)",
        "key = r.text(_MAX_VARINT)\n        i, count, ts = r.unpack(_CTR)",
        ("tests/crdt/test_crdt_codec.py::test_limits_are_enforced_on_input",),
    ),
    Guard(
        "crdt: value size from a peer",
        "crdt/_codec.py",
        "value = r.take(r.varint(limits.max_value_bytes))",
        "value = r.take(r.varint(_MAX_VARINT))",
        ("tests/crdt/test_crdt_codec.py::test_limits_are_enforced_on_input",),
    ),
    Guard(
        "crdt: key size of a local write",
        "crdt/_types.py",
        "if len(raw) > self.max_key_bytes:",
        "if False:",
        ("tests/crdt/test_crdt_replica.py::test_local_misuse_raises_local_error",),
    ),
    Guard(
        "crdt: value size of a local write",
        "crdt/_types.py",
        "if len(value) > self.max_value_bytes:",
        "if False:",
        ("tests/crdt/test_crdt_replica.py::test_local_misuse_raises_local_error",),
    ),
    # -- apps, instances, calls -------------------------------------------------------------
    Guard(
        "max-apps: a deploy's new app",
        OPS,
        "len(registry.records()) >= config.max_apps:",
        "len(registry.records()) > config.max_apps:",
        (f"{T_RUN}::test_apps_per_node_limit",),
    ),
    Guard(
        "max-apps: apps a node runs",
        "assemblexd/apps.py",
        "if name in self.loaded or len(self.loaded) < self._config.max_apps:",
        "if name in self.loaded or len(self.loaded) <= self._config.max_apps:",
        (f"{T_REG}::test_a_node_runs_no_more_apps_than_its_limit_whatever_peers_send",),
    ),
    Guard(
        "max-instances: refused with every instance busy",
        POOL,
        "if self.live >= self.limit:\n            raise Overloaded",
        "if self.live > self.limit:\n            raise Overloaded",
        (f"{T_LIM}::test_the_cap_still_refuses_when_every_instance_is_busy",),
    ),
    Guard(
        "max-instances: an idle instance gives way",
        POOL,
        "if self.live >= self.limit and evict and self._idle:",
        "if False:",
        (f"{T_LIM}::test_idle_instances_of_other_apps_give_way_at_the_cap",),
    ),
    Guard(
        "idle-timeout: idle instances expire",
        POOL,
        "if since > cutoff:",
        "if True:",
        (f"{T_LIM}::test_idle_instances_expire",),
    ),
    Guard(
        "host calls per guest call",
        SCHED,
        "if host_calls > self.max_host_calls:",
        "if False:",
        (f"{T_ATT}::test_flood_of_host_calls",),
    ),
    Guard(
        "call depth",
        HOST,
        "if depth + 1 > self._max_depth:",
        "if depth > self._max_depth:",
        (f"{T_RUN}::test_recursion_to_the_depth_limit", f"{T_ATT}::test_call_chain_that_loops"),
    ),
    Guard(
        "guest CPU time per call",
        SCHED,
        "if fut.guest_time > budget:\n                raise CallTimeout",
        "if False:\n                raise CallTimeout",
        (f"{T_RUN}::test_infinite_loop_times_out_and_node_keeps_serving",),
    ),
    Guard(
        "wall clock per call",
        SCHED,
        "async with asyncio.timeout_at(deadline):",
        "if True:",
        (f"{T_RUN}::test_wall_clock_limit",),
    ),
    Guard(
        "linear memory per instance",
        "assemblexd/runtime/_wasm.py",
        "memory_size=limits.memory_bytes,",
        "memory_size=1 << 40,",
        (f"{T_RUN}::test_memory_limit",),
    ),
    Guard(
        "table elements per instance",
        "assemblexd/runtime/_wasm.py",
        "table_elements=limits.table_elements,",
        "table_elements=1 << 40,",
        (f"{T_RUN}::test_table_growth_is_bounded_by_max_memory",),
    ),
    Guard(
        "subscriptions in one WASI poll_oneoff",
        "assemblexd/runtime/_wasm.py",
        "if n > _MAX_SUBSCRIPTIONS:",
        "if False:",
        (f"{T_RUN}::test_wasi_poll_oneoff_answers",),
    ),
    Guard(
        "kv: keys per app",
        HOST,
        "if new.keys > old.keys and keys + more_keys > self.max_keys:",
        "if False:",
        (f"{T_LIM}::test_kv_keys_quota",),
    ),
    Guard(
        "kv: bytes per app",
        HOST,
        "if new.bytes > old.bytes and size + more_bytes > self.max_bytes:",
        "if False:",
        (f"{T_LIM}::test_kv_bytes_quota_and_writes_in_flight",),
    ),
    Guard(
        "guest console line cut",
        "assemblexd/logs.py",
        "cut = len(line) > max_bytes\n    text = line[:max_bytes]",
        "cut = False\n    text = line",
        (f"{T_LIM}::test_a_long_console_line_is_cut",),
    ),
    Guard(
        "guest console lines per app",
        "assemblexd/logs.py",
        "if tokens < 1:",
        "if False:",
        (f"{T_LIM}::test_console_lines_are_rate_limited_per_app",),
    ),
    Guard(
        "op labels per app",
        "assemblexd/metrics.py",
        "if len(op) > MAX_OP_LABEL or len(ops) >= MAX_OPS_PER_APP:",
        "if False:",
        (f"{T_LIM}::test_operation_names_chosen_by_callers_do_not_grow_the_metrics",),
    ),
)

# Core survivors that no test can tell from the original: (file, original line, mutated line,
# why), the lines as regular expressions matched in full against the stripped lines.
_SET = "the dict is an ordered set: its values are never read"
_NOW = "the method called does not use `now`"
EQUIVALENT: tuple[tuple[str, str, str, str], ...] = (
    ("*", r"(.+\]) = None", r'(.+\]) = ""', _SET),
    ("membership/_hyparview.py", r"self\.join\(contact, now\)", r".*None\)", _NOW),
    ("membership/_hyparview.py", r"self\.join\(_pick\(.*now\)", r".*None\)", _NOW),
    ("membership/_hyparview.py", r"self\._on_shuffle\(src, msg, now\)", r".*None\)", _NOW),
    ("membership/_overlay.py", r"self\.membership\.join\(contact, now\)", r".*None\)", _NOW),
    (
        "membership/_plumtree.py",
        r"self\._cache and .*\[1\] <= now",
        r".*\[1\] < now",
        "an entry expiring exactly now is never served (a GRAFT needs expiry > now):"
        " dropping it now or at the next message changes only memory",
    ),
    (
        "crdt/_sync.py",
        r'self\._last_push = float\("-inf"\)',
        r'.*"-INF"\)',
        "float() reads infinity in any case",
    ),
    (
        "crdt/_sync.py",
        r"self\._next_round = now \+ config\.interval \+ .*",
        r"self\._next_round = now \+ config\.interval - .*",
        "the jitter is drawn from a range symmetric around 0: subtracting it draws the same",
    ),
    (
        "crdt/_state.py",
        r"if not items or item > items\[-1\]:",
        r".*item >= items\[-1\]:",
        "an item equal to the last goes after it either way (bisect.insort inserts right)",
    ),
    (
        "crdt/_state.py",
        r'def (counter_)?keys\(self, prefix: str = ""\).*',
        r'.*"XXXX".*',
        "the replica always passes the prefix: the default of the state's own is never used",
    ),
    (
        "crdt/_state.py",
        r"slot = self\.ctrs\.get\(key, \{\}\)\.get\(node\)",
        r".*",
        "a counter's item exists only once the counter does, and counters are never removed",
    ),
    (
        "crdt/_state.py",
        r"if have <= since:",
        r"if have < since:",
        "with have == since nothing is stamped after since: (None, since) either way",
    ),
    (
        "crdt/_state.py",
        r"claims = \[\(me, since, upto\)\] if upto > since else \[\]",
        r".*",
        "upto > since always holds here: have > since, and a cut keeps at least the first"
        " entry, stamped after since",
    ),
    (
        "crdt/_state.py",
        r"return \(None if delta\.is_empty\(\) else delta\), upto",
        r".*and False.*",
        "the delta carries a claim here (upto > since): it is never empty",
    ),
    (
        "crdt/_state.py",
        r"n = len\(key\) if key\.isascii\(\) else .*",
        r".*and False.*",
        "an ASCII key has as many UTF-8 bytes as characters: only slower",
    ),
    (
        "crdt/_state.py",
        r"prev: _Item \| None = None",
        r".*",
        'no item equals None or "": the first item is never skipped either way',
    ),
    ("crdt/_state.py", r"break", r"return", "the loop is followed by `return None`"),
    (
        "membership/_hyparview.py",
        r"known: tuple\[Peer, \.\.\.\] = \(\)",
        r".*= None",
        "(in _on_join) read only by `if known:`, where None and () are both false",
    ),
    (
        "membership/_hyparview.py",
        r"self\._rejections = 0",
        r"self\._rejections = 1",
        "(in _settled) the count matters only in a repair, and a full active view needs one"
        " only after _remove_active, which sets it to 0 again",
    ),
    (
        "crdt/_state.py",
        r"prev = item",
        r"prev = None",
        "an origin's dots never hold an item twice (an entry is added when it wins, and no"
        " entry wins twice): the duplicate check is defensive",
    ),
)


def _equivalent(file: str, old: str, new: str) -> str:
    for pattern, old_re, new_re, why in EQUIVALENT:
        if (
            fnmatch.fnmatch(file, pattern)
            and re.fullmatch(old_re, old)
            and re.fullmatch(new_re, new)
        ):
            return why
    return ""


# -- cores ---------------------------------------------------------------------------------


@dataclass
class Survivor:
    name: str
    status: str
    file: str
    line: int
    old: str
    new: str
    why: str = ""


@dataclass
class CoreResult:
    total: int = 0
    killed: int = 0
    survivors: list[Survivor] = field(default_factory=list)


def run_mutmut(workers: int, resume: bool) -> None:
    """Run mutmut in ROOT (results in mutants/).

    A fresh run unless ``resume``: then the results of the mutants the last run did not kill
    are cleared, and mutmut tries those again with the tests as they are now (the killed ones
    stay killed: mutmut redoes everything itself when a mutated file changed).
    """
    if resume:
        from mutmut.mutation.data import SourceFileMutationData
        from mutmut.stats import status_by_exit_code
        from mutmut.utils.file_utils import walk_mutatable_files

        again = 0
        for path in walk_mutatable_files():
            data = SourceFileMutationData(path=path)
            data.load()
            for name, code in data.exit_code_by_key.items():
                if status_by_exit_code[code] not in KILLED:
                    data.exit_code_by_key[name] = None
                    again += 1
            data.save()
        what = f"the {again} mutants not killed before"
    else:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
        what = "all mutants"
    log = ROOT / "mutants.log"
    print(
        f"cores: mutmut run --max-children {workers}: {what} (progress in {log.name})", flush=True
    )
    started = time.monotonic()
    with log.open("wb") as out:
        rc = subprocess.run(
            [str(ROOT / ".venv/bin/mutmut"), "run", "--max-children", str(workers)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        ).returncode
    print(f"cores: mutmut finished in {time.monotonic() - started:.0f} s (status {rc})")
    if rc != 0:
        tail = log.read_bytes()[-3000:].decode("utf-8", "replace")
        sys.exit(f"cores: mutmut failed; the end of {log}:\n{tail}")


def _function_lines(path: Path) -> dict[tuple[str | None, str], tuple[int, int]]:
    """(class, function) -> (first line with decorators, last line) of each def in ``path``."""
    spans: dict[tuple[str | None, str], tuple[int, int]] = {}
    tree = ast.parse(path.read_text())
    for node in tree.body:
        defs: list[tuple[str | None, ast.AST]] = []
        if isinstance(node, ast.ClassDef):
            defs = [(node.name, n) for n in node.body]
        else:
            defs = [(None, node)]
        for cls, d in defs:
            if isinstance(d, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([d.lineno, *(x.lineno for x in d.decorator_list)])
                spans[(cls, d.name)] = (first, d.end_lineno or d.lineno)
    return spans


def _locate(name: str, path: Path, diff: str) -> tuple[int, str, str]:
    """The line in ``path`` a mutant changes, with the original and mutated lines."""
    from mutmut.utils.format_utils import orig_function_and_class_names_from_key

    removed = [
        ln[1:] for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")
    ]
    added = [ln[1:] for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    old = " / ".join(s.strip() for s in removed)
    new = " / ".join(s.strip() for s in added)
    func, cls = orig_function_and_class_names_from_key(name)
    span = _function_lines(path).get((cls, func.rpartition(".")[-1]))
    if span is None or not removed:
        return 0, old, new
    lines = path.read_text().splitlines()
    # The diff is of the function's text (dedented, and not always line for line the file's):
    # its hunk header, counted from the function's start, says roughly where; of the lines
    # of the function that read as the removed one, the nearest to that is taken.
    guess = span[0]
    hunk = re.search(r"^@@ -(\d+)", diff, re.M)
    if hunk:
        offset = int(hunk.group(1))
        for ln in diff[hunk.end() :].splitlines()[1:]:
            if ln.startswith("-"):
                break
            offset += 1
        guess = span[0] + offset - 1
    same = [i for i in range(span[0], span[1] + 1) if lines[i - 1].strip() == removed[0].strip()]
    return (min(same, key=lambda i: abs(i - guess)) if same else span[0]), old, new


def core_results() -> CoreResult:
    """Read mutants/ (from the current directory, which must be ROOT)."""
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code
    from mutmut.utils.file_utils import walk_mutatable_files

    result = CoreResult()
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        for name, code in sorted(data.exit_code_by_key.items()):
            status = status_by_exit_code[code]
            result.total += 1
            if status in KILLED:
                result.killed += 1
                continue
            diff = get_diff_for_mutant(name, path=path)
            line, old, new = _locate(name, ROOT / path, diff)
            why = _equivalent(str(path), old, new)
            result.survivors.append(Survivor(name, status, str(path), line, old, new, why))
    result.survivors.sort(key=lambda s: (s.file, s.line, s.name))
    return result


def report_cores(result: CoreResult) -> bool:
    score = result.killed / result.total if result.total else 0.0
    equivalent = sum(1 for s in result.survivors if s.why)
    print(f"\ncore survivors ({len(result.survivors)}, {equivalent} marked equivalent):")
    for s in result.survivors:
        tag = "" if s.status == "survived" else f" [{s.status}]"
        print(f"  {s.file}:{s.line}{tag}: {s.old}  ->  {s.new}")
        if s.why:
            print(f"      equivalent: {s.why}")
    ok = score >= CORE_GOAL
    print(
        f"\ncore score: {result.killed}/{result.total} killed = {score:.1%}"
        f" (goal {CORE_GOAL:.0%}: {'met' if ok else 'NOT met'})"
    )
    if result.total:
        print(
            f"core score counting the {equivalent} equivalent survivors as killed:"
            f" {(result.killed + equivalent) / result.total:.1%}"
        )
    return ok


# -- guards --------------------------------------------------------------------------------

_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "mutants",
    "mutants.log",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "data",
    "bench-results",
)


def _pytest(tree: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    """Run ``tests`` in ``tree`` (its packages first on the path); the status and output."""
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    try:
        proc = subprocess.run(
            cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return -1, "timed out"
    return proc.returncode, proc.stdout + proc.stderr


def run_guards(only: str | None) -> bool:
    guards = [g for g in GUARDS if only is None or only.lower() in g.name.lower()]
    ok = True
    with tempfile.TemporaryDirectory(prefix="assemblex-mutation-") as tmp:
        tree = Path(tmp) / "tree"
        shutil.copytree(ROOT, tree, ignore=_IGNORE, symlinks=True)
        # The unmutated tests must pass first, or a failure would say nothing of a mutation.
        selection = tuple(dict.fromkeys(t for g in guards for t in g.tests))
        print(f"\nguards: clean run of their {len(selection)} test selections", flush=True)
        rc, out = _pytest(tree, selection, timeout=900)
        if rc != 0:
            print(out[-4000:])
            print("guards: the unmutated tests fail; no guard result can be trusted")
            return False
        print("guard mutations:")
        killed = pending = 0
        for g in guards:
            target = tree / g.file
            original = target.read_text()
            found = original.count(g.old)
            if found != 1:
                print(f"  STALE     {g.name}: {g.file} has the original text {found} times")
                ok = False
                continue
            target.write_text(original.replace(g.old, g.new))
            try:
                started = time.monotonic()
                rc, out = _pytest(tree, g.tests, timeout=300)
            finally:
                target.write_text(original)
            took = time.monotonic() - started
            if rc in (0, 5):
                verdict = "SURVIVED" if rc == 0 else "SURVIVED (no test ran)"
                note = f" ({g.pending})" if g.pending else ""
                print(f"  {verdict:9} {g.name} [{g.file}]{note}")
                pending += bool(g.pending)
                ok = False
            else:
                failed = re.search(r"^(FAILED|ERROR) (\S+)", out, re.M)
                by = failed.group(2) if failed else ("timeout" if rc == -1 else f"status {rc}")
                print(f"  killed    {g.name} [{g.file}] by {by} ({took:.0f} s)", flush=True)
                killed += 1
        print(
            f"\nguards: {killed}/{len(guards)} mutations killed"
            + (f" ({pending} of the others wait for tests in flight elsewhere)" if pending else "")
        )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="mutmut workers (default 2)")
    part = parser.add_mutually_exclusive_group()
    part.add_argument("--cores-only", action="store_true", help="skip the guard mutations")
    part.add_argument("--guards-only", action="store_true", help="skip mutmut")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep mutants/ and try again only the mutants the last run did not kill",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="report the last mutmut run, run nothing"
    )
    parser.add_argument("--guard", help="only the guards whose name contains this")
    args = parser.parse_args()
    os.chdir(ROOT)
    # Stopped with SIGTERM: unwind, so that the temporary tree of the guards is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    ok = True
    if not args.guards_only:
        if not args.report_only:
            run_mutmut(args.workers, args.resume)
        ok &= report_cores(core_results())
    if not args.cores_only and not args.report_only:
        ok &= run_guards(args.guard)
    print("\nmutation: " + ("goals met" if ok else "goals NOT met"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
