#!/usr/bin/env python3
"""HTTP throughput: POST /call/echo/echo on the daemon against a bare aiohttp echo server.

Both servers run as subprocesses on 127.0.0.1 for the whole run: the daemon
(`python -m assemblexd run --pool-size 16`, guests/wat/echo.wat deployed as `echo`) and a bare
aiohttp app whose only handler returns the request body (this script, `--bare-server PORT`).
The same load generator, wrk (Debian package `wrk`, installed with apt-get when missing), with
one thread, a fixed number of connections and a fixed duration, POSTs b"hello" to each in turn,
alternating for several rounds. Printed: requests/s of each run, non-2xx counts and socket
errors (must be 0), and the ratio daemon/bare per round and its median. Goal: >= 0.5.

This module also holds the small daemon helpers bench_sleep.py and bench_spin.py import
(`Daemon`, `wat`, `free_port`).

Run: .venv/bin/python scripts/bench_http.py [-d SECONDS] [-r ROUNDS] [-c CONNECTIONS]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = (
    str(ROOT / ".venv" / "bin" / "python")
    if (ROOT / ".venv/bin/python").exists()
    else sys.executable
)
WAT_DIR = ROOT / "guests" / "wat"

PAYLOAD = b"hello"
NOFILE = 65536


# -- helpers shared with the other HTTP benchmarks ------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wat(name: str) -> bytes:
    """The wasm bytes of guests/wat/<name>.wat."""
    import wasmtime

    return bytes(wasmtime.wat2wasm((WAT_DIR / f"{name}.wat").read_text()))


def raise_nofile(limit: int = NOFILE) -> int:
    """Raise this process's open-file limit to `limit` (the hard one too when allowed, as root);
    short of that, to the hard limit. Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= limit:
        return soft
    try:
        new_hard = hard if hard == resource.RLIM_INFINITY or hard >= limit else limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, new_hard))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _preexec() -> None:
    """In a server child, before exec: raise its open-file limit (as `prlimit -n` would), and
    have the kernel send it SIGTERM if this script dies without cleaning up (PR_SET_PDEATHSIG)."""
    raise_nofile(NOFILE)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def exit_on_sigterm() -> None:
    """SIGTERM (e.g. from `timeout`) raises SystemExit, so that finally blocks stop the servers."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float, log: Path | None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(
                f"server exited with code {proc.returncode} before answering:\n{tail}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout} s")
        time.sleep(0.1)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Daemon:
    """`python -m assemblexd run` as a subprocess, on a free port with a throwaway data dir.

    Use as a context manager; the process is terminated on exit (SIGTERM, then SIGKILL).
    Its stderr goes to `log` (kept in the temporary directory; printed when it fails to start).
    """

    def __init__(self, *args: str, startup_timeout: float = 30.0) -> None:
        self.args = list(args)
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.log: Path | None = None

    def __enter__(self) -> Daemon:
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-daemon-")
        data = Path(self._tmp.name) / "data"
        self.log = Path(self._tmp.name) / "daemon.log"
        cmd = [
            PYTHON,
            "-m",
            "assemblexd",
            "run",
            "--port",
            str(self.port),
            "--data-dir",
            str(data),
            "--no-mdns",
            *self.args,
        ]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_preexec,
            )
        try:
            wait_healthy(self.url + "/healthz", self.proc, self.startup_timeout, self.log)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def deploy(self, name: str, wasm: bytes) -> dict[str, object]:
        req = urllib.request.Request(
            f"{self.url}/deploy?name={name}",
            data=wasm,
            method="POST",
            headers={"Content-Type": "application/wasm"},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            if resp.status != 201:
                raise RuntimeError(f"deploy {name}: HTTP {resp.status}")
            return json.loads(resp.read())  # type: ignore[no-any-return]

    def call(self, app: str, op: str, payload: bytes, timeout: float = 60) -> bytes:
        req = urllib.request.Request(f"{self.url}/call/{app}/{op}", data=payload, method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read()  # type: ignore[no-any-return]

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log and self.log.exists() else ""


def threads_of(pid: int) -> int:
    """`Threads:` of /proc/<pid>/status (0 when the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Profiler:
    """`py-spy record` on a process while the block runs; prints the hottest frames after.

    py-spy is installed into the venv with pip when missing (it is not a project dependency).
    The raw collapsed stacks are written to `out` (open them with speedscope or flamegraph.pl).
    """

    def __init__(self, pid: int, out: Path, rate: int = 250) -> None:
        self.pid, self.out, self.rate = pid, out, rate
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        exe = Path(PYTHON).parent / "py-spy"
        if not exe.exists():
            print("installing py-spy into the venv (pip install py-spy)", flush=True)
            subprocess.run(
                [PYTHON, "-m", "pip", "install", "-q", "py-spy"], check=True, timeout=600
            )
        self.proc = subprocess.Popen(
            [
                str(exe),
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                str(self.rate),
                "--format",
                "raw",
                "--threads",
                "--nonblocking",
                "-o",
                str(self.out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if exc[0] is None:
            print_profile(self.out)


def print_profile(path: Path, top: int = 25) -> None:
    """The frames with the most samples, self and inclusive, from py-spy's raw output."""
    import collections

    if not path.exists():
        print(f"(no profile written to {path})")
        return
    self_n: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        self_n[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        print("(empty profile)")
        return
    print(f"profile: {total} samples (CPU only, all threads), raw stacks in {path}")
    print("  hottest frames (self):")
    for f, n in self_n.most_common(top):
        print(f"  {n / total * 100:5.1f}%  {f}")
    print("  inclusive (skipping frames in >90% of samples):")
    shown = 0
    for f, n in incl.most_common():
        if n / total > 0.9:
            continue
        print(f"  {n / total * 100:5.1f}%  {f}")
        shown += 1
        if shown >= top:
            break


# -- the bare server ------------------------------------------------------------------------------


def bare_server(port: int) -> None:
    """An aiohttp app whose handler returns the request body (same response type as ours);
    POST /call/sleep/main waits <body> milliseconds first (for bench_sleep.py)."""
    import asyncio

    from aiohttp import web

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read(), content_type="application/octet-stream")

    async def sleep(request: web.Request) -> web.Response:
        # The bare counterpart of guests/wat/host_sleep.wat: wait <body> ms, answer the body.
        body = await request.read()
        await asyncio.sleep(int(body or b"0") / 1000)
        return web.Response(body=body, content_type="application/octet-stream")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/call/sleep/main", sleep)
    app.router.add_post("/call/{app}/{op}", echo)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


@dataclasses.dataclass
class Server:
    url: str
    pid: int


@contextlib.contextmanager
def run_bare_server() -> Iterator[Server]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-bare-") as tmp:
        log = Path(tmp) / "bare.log"
        with log.open("wb") as f:
            proc = subprocess.Popen(
                [PYTHON, __file__, "--bare-server", str(port)],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                preexec_fn=_preexec,
            )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url + "/healthz", proc, 20, log)
            yield Server(url, proc.pid)
        finally:
            stop_process(proc)


# -- wrk ------------------------------------------------------------------------------------------


LUA = """wrk.method = "POST"
wrk.body = "hello"
wrk.headers["Content-Type"] = "application/octet-stream"
"""


def ensure_wrk() -> str:
    exe = shutil.which("wrk")
    if exe:
        return exe
    print("wrk is missing: installing the Debian package (apt-get install -y wrk)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    # Other installs may hold the dpkg lock for a while: wait for it rather than fail.
    lock = ["-o", "DPkg::Lock::Timeout=300"]
    install = [*sudo, "apt-get", *lock, "install", "-y", "-qq", "wrk"]
    if subprocess.run(install, env=env, stdout=subprocess.DEVNULL, timeout=300).returncode != 0:
        subprocess.run([*sudo, "apt-get", *lock, "update", "-qq"], env=env, check=True, timeout=600)
        subprocess.run(install, env=env, stdout=subprocess.DEVNULL, check=True, timeout=600)
    exe = shutil.which("wrk")
    if not exe:
        raise SystemExit("wrk is still missing after apt-get install")
    return exe


def run_wrk(exe: str, lua: Path, url: str, duration: float, connections: int) -> dict[str, float]:
    cmd = [
        exe,
        "-t1",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--timeout",
        "10s",
        "-s",
        str(lua),
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    text = out.stdout + out.stderr
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{text}")
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not m:
        raise RuntimeError(f"no Requests/sec in wrk output:\n{text}")
    total = re.search(r"(\d+) requests in", text)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "rps": float(m.group(1)),
        "requests": float(total.group(1)) if total else 0.0,
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "sockerr": float(sum(int(g) for g in sock.groups())) if sock else 0.0,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "-d", "--duration", type=float, default=5.0, help="seconds per wrk run (default 5)"
    )
    p.add_argument(
        "-r", "--rounds", type=int, default=3, help="rounds, each server once per round (default 3)"
    )
    p.add_argument("-c", "--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument(
        "-p", "--pool-size", type=int, default=16, help="daemon --pool-size (default 16)"
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="after the rounds, one more run on the daemon under py-spy; stacks in "
        "bench-results/profile-http.txt",
    )
    p.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main() -> int:
    args = parse_args()
    if args.bare_server is not None:
        bare_server(args.bare_server)
        return 0
    exit_on_sigterm()
    exe = ensure_wrk()
    raise_nofile()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-http-")))
        lua = tmp / "post.lua"
        lua.write_text(LUA)
        daemon = stack.enter_context(Daemon("--pool-size", str(args.pool_size)))
        daemon.deploy("echo", wat("echo"))
        assert daemon.call("echo", "echo", PAYLOAD) == PAYLOAD
        bare = stack.enter_context(run_bare_server())
        targets = {"daemon": f"{daemon.url}/call/echo/echo", "bare": f"{bare.url}/call/echo/echo"}
        req = urllib.request.Request(targets["bare"], data=PAYLOAD, method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.read() == PAYLOAD
        print(
            f"wrk -t1 -c{args.connections} -d{args.duration:g}s, POST {len(PAYLOAD)} bytes; "
            f"daemon --pool-size {args.pool_size}; {args.rounds} rounds, alternating"
        )
        # warm-up (not counted): fills the daemon's pool and both servers' code paths
        for url in targets.values():
            run_wrk(exe, lua, url, 1, args.connections)
        rows: dict[str, list[dict[str, float]]] = {k: [] for k in targets}
        ratios: list[float] = []
        for r in range(args.rounds):
            order = list(targets) if r % 2 == 0 else list(reversed(targets))
            got: dict[str, dict[str, float]] = {}
            for name in order:
                got[name] = run_wrk(exe, lua, targets[name], args.duration, args.connections)
                rows[name].append(got[name])
            ratio = got["daemon"]["rps"] / got["bare"]["rps"]
            ratios.append(ratio)
            print(
                f"round {r + 1}: "
                + "  ".join(
                    f"{n} {got[n]['rps']:8.0f} req/s (non-2xx {got[n]['non2xx']:.0f}, "
                    f"socket errors {got[n]['sockerr']:.0f})"
                    for n in targets
                )
                + f"  ratio {ratio:.2f}"
            )
        if daemon.proc is not None and daemon.proc.poll() is not None:
            print("daemon died during the run:\n" + daemon.log_tail())
            return 1
        if args.profile:
            (ROOT / "bench-results").mkdir(exist_ok=True)
            print(f"\nprofiling the daemon during one more {args.duration:g} s run (not counted)")
            with Profiler(daemon.pid, ROOT / "bench-results" / "profile-http.txt"):
                got1 = run_wrk(exe, lua, targets["daemon"], args.duration, args.connections)
            print(f"  (that run: {got1['rps']:.0f} req/s under the profiler)")
    print()
    med = {n: statistics.median(x["rps"] for x in rows[n]) for n in rows}
    bad = {n: sum(x["non2xx"] + x["sockerr"] for x in rows[n]) for n in rows}
    print(f"median req/s: daemon {med['daemon']:.0f}, bare aiohttp {med['bare']:.0f}")
    print(
        f"ratio daemon/bare: median {statistics.median(ratios):.2f} "
        f"(min {min(ratios):.2f}, max {max(ratios):.2f})"
    )
    print(f"non-2xx + socket errors: daemon {bad['daemon']:.0f}, bare {bad['bare']:.0f}")
    ok = statistics.median(ratios) >= 0.5
    print(
        f"goal ratio >= 0.5: {'met' if ok else 'MISSED'}; errors == 0: "
        f"{'met' if not any(bad.values()) else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
