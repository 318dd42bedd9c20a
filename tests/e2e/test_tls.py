"""Native TLS on real daemons and real sockets on 127.0.0.1, with certificates from trustme.

* One node serves its API over https: the CLI deploys and calls with ``--tls-ca`` (or
  ``$ASSEMBLEX_TLS_CA``); a client that does not trust the CA, one that dials a name the
  certificate does not hold, and a plain-http client are all refused.
* Three nodes with certificates of one private CA and a cluster key, joined through
  ``--join https://``: a deploy on one is served by all, the module fetched over https and the
  records synced over wss.
* A node that trusts another CA never becomes a neighbour of that cluster.
* Bad TLS flags and files stop the daemon at start with a message naming them.
* The membership transport on its own: wss with a context, refused without trust, and never
  ``ws://`` from a TLS transport.
"""

from __future__ import annotations

import hashlib
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from cluster import READ_TOKEN, Daemon, LocalCluster, http, tagged_guest, whole_cluster
from helpers import run_cli

import membership
from assemblexd.tls import client_context, server_context

pytestmark = pytest.mark.e2e

CLI_TIMEOUT = 30.0
KEY = "tls-test-cluster-key"


class Pki:
    """A throwaway CA and a certificate for 127.0.0.1, as PEM files under ``root``."""

    def __init__(self, root: Path, name: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA(organization_name=f"assemblex test {name}")
        self.ca_file = root / f"{name}-ca.pem"
        self.cert = root / f"{name}-cert.pem"
        self.key = root / f"{name}-key.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        leaf = self.ca.issue_cert("127.0.0.1")
        leaf.private_key_pem.write_to_path(str(self.key))
        for i, pem in enumerate(leaf.cert_chain_pems):
            pem.write_to_path(str(self.cert), append=i > 0)

    def context(self) -> ssl.SSLContext:
        """A client context that trusts this CA only."""
        return client_context(self.ca_file)

    def serve_args(self) -> list[str]:
        """The ``run`` flags of a node with this certificate that trusts this CA."""
        return [
            "--tls-cert",
            str(self.cert),
            "--tls-key",
            str(self.key),
            "--tls-ca",
            str(self.ca_file),
        ]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"), "cluster")


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki-other"), "other")


def assemblexd(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m assemblexd ARGV`` to its end (the CLI, or a ``run`` that refuses to start)."""
    return run_cli(*argv, env=env, timeout=CLI_TIMEOUT)


# -- one node: the API and the CLI over https -----------------------------------------------------


def served_cert(port: int, context: ssl.SSLContext) -> bytes:
    """The certificate (DER) a new TLS connection to 127.0.0.1:``port`` is shown."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


@pytest.mark.timeout(120)
def test_sighup_reloads_a_renewed_certificate(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki", "renewed")
    daemon = Daemon(
        "tls-reload", tmp_path / "data", tmp_path / "tls-reload.log",
        args=["--tls-cert", str(pki.cert), "--tls-key", str(pki.key)], tls=pki.context(),
    )  # fmt: skip
    daemon.start()
    try:
        daemon.wait_listening()
        first = served_cert(daemon.port, pki.context())
        assert first == ssl.PEM_cert_to_DER_cert(pki.cert.read_text())
        # A renewed certificate (same CA, new key) written over the files, then SIGHUP.
        leaf = pki.ca.issue_cert("127.0.0.1")
        leaf.private_key_pem.write_to_path(str(pki.key))
        for i, pem in enumerate(leaf.cert_chain_pems):
            pem.write_to_path(str(pki.cert), append=i > 0)
        renewed = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
        assert renewed != first
        mark = daemon.mark()
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log(lambda r: "reloaded the TLS certificate" in r.get("msg", ""), mark)
        assert served_cert(daemon.port, pki.context()) == renewed
        assert http("GET", f"{daemon.url}/healthz", context=pki.context())[0] == 200
        # A broken file is refused and changes nothing: the renewed certificate stays.
        pki.cert.write_text("not a certificate")
        mark = daemon.mark()
        daemon.proc.send_signal(signal.SIGHUP)
        record = daemon.wait_log(lambda r: "kept the certificate" in r.get("msg", ""), mark)
        assert record["level"] == "ERROR"
        assert served_cert(daemon.port, pki.context()) == renewed
        assert daemon.stop() == 0
    finally:
        daemon.kill()


@pytest.fixture
def node(tmp_path: Path, pki: Pki) -> Iterator[Daemon]:
    daemon = Daemon(
        "tls-node",
        tmp_path / "data",
        tmp_path / "tls-node.log",
        args=["--tls-cert", str(pki.cert), "--tls-key", str(pki.key)],
        tls=pki.context(),
    )
    daemon.start()
    try:
        daemon.wait_listening()  # announces https://127.0.0.1:<port>
        yield daemon
    finally:
        daemon.kill()


@pytest.mark.timeout(120)  # a dozen CLI processes on a shared machine
def test_api_and_cli_over_https(node: Daemon, pki: Pki, other_pki: Pki, tmp_path: Path) -> None:
    assert node.url.startswith("https://")
    assert http("GET", f"{node.url}/healthz", context=pki.context()) == (200, b'{"ok": true}')

    wasm_file = tmp_path / "hello.wasm"
    wasm_file.write_bytes(tagged_guest("over-tls"))
    done = assemblexd("deploy", str(wasm_file), "--url", node.url, "--tls-ca", str(pki.ca_file))
    assert done.returncode == 0, done.stderr
    assert "deployed hello version 1" in done.stdout

    done = assemblexd("call", "hello", "--url", node.url, "--tls-ca", str(pki.ca_file))
    assert (done.returncode, done.stdout) == (0, "over-tls"), done.stderr

    # The CA from the environment, as the URL and the token.
    done = assemblexd("apps", "--url", node.url, env={"ASSEMBLEX_TLS_CA": str(pki.ca_file)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1].split()[0] == "hello"

    # Without the CA (the system's store), or with another CA: the certificate does not verify.
    for extra in ([], ["--tls-ca", str(other_pki.ca_file)]):
        done = assemblexd("call", "hello", "--url", node.url, *extra)
        assert done.returncode == 1, done.stdout
        assert "certificate verify failed" in done.stderr
        assert "--tls-ca" in done.stderr  # the hint
        assert done.stdout == ""

    # The right CA, a name the certificate does not hold (it names 127.0.0.1 only).
    done = assemblexd(
        "call", "hello", "--url", f"https://localhost:{node.port}", "--tls-ca", str(pki.ca_file)
    )
    assert done.returncode == 1, done.stdout
    assert "certificate verify failed" in done.stderr
    assert "does not name the host of the URL" in done.stderr

    # Plain HTTP to the TLS port gets no answer, from the CLI or from urllib.
    plain = f"http://127.0.0.1:{node.port}"
    done = assemblexd("call", "hello", "--url", plain)
    assert done.returncode == 1, done.stdout
    assert f"request to {plain} failed" in done.stderr
    with pytest.raises(ConnectionResetError):  # the server drops the connection
        http("GET", f"{plain}/healthz", timeout=10)

    # And nothing of that stopped the node.
    assert node.call("hello") == (200, b"over-tls")


# -- a cluster: sync over wss, modules over https ---------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[LocalCluster]:
    local = LocalCluster(
        tmp_path_factory.mktemp("tls-cluster"),
        args=[*pki.serve_args(), "--cluster-key", KEY, "--read-token", READ_TOKEN],
        tls=pki.context(),
    )
    try:
        local.start(3)  # node1 and node2 join through --join https://127.0.0.1:<node0>
        yield local
    finally:
        local.close()


@pytest.fixture
def _whole_cluster(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[None]:
    yield from whole_cluster(cluster, request)


@pytest.mark.timeout(180)  # includes starting the cluster
@pytest.mark.usefixtures("_whole_cluster")
def test_cluster_over_tls(cluster: LocalCluster) -> None:
    nodes = cluster.up
    assert [d.join for d in nodes] == [[], [nodes[0].url], [nodes[0].url]]
    assert all(d.url.startswith("https://") for d in nodes)

    # Members advertise https URLs; the links between them are wss.
    for d in nodes:
        status = d.status()
        assert {m["url"] for m in status["members"]} == {n.url for n in nodes}, d.name
        assert status["active"], d.name
        for peer in status["active"]:
            assert peer["address"].startswith("wss://127.0.0.1:"), peer

    wasm = tagged_guest("tls-cluster-1")
    marks = cluster.marks()
    answer = nodes[1].deploy("tlsapp", wasm)
    assert answer["sha256"] == hashlib.sha256(wasm).hexdigest()
    versions = cluster.wait_running("tlsapp", answer["sha256"], marks)
    assert versions == {d.name: 1 for d in nodes}
    assert {d.name: d.call("tlsapp") for d in nodes} == {
        d.name: (200, b"tls-cluster-1") for d in nodes
    }

    # The other two nodes got the module by GET /blobs over https (bytes never ride the sync).
    for d in nodes:
        status, body = http("GET", f"{d.url}/metrics", headers=d.read_headers, context=d.tls)
        assert status == 200
        fetched = [
            float(line.rpartition(" ")[2])
            for line in body.decode().splitlines()
            if line.startswith("assemblex_blob_fetches_total ")
        ]
        assert fetched == [0.0 if d is nodes[1] else 1.0], d.name


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("_whole_cluster")
def test_a_node_that_trusts_another_ca_stays_apart(
    cluster: LocalCluster, other_pki: Pki, tmp_path: Path
) -> None:
    """Same cluster key, its own CA: it cannot verify the seed, so it never links to anyone
    (and nobody in the cluster ever hears of it)."""
    seed = cluster.nodes[0]
    outsider = Daemon(
        "outsider",
        tmp_path / "outsider",
        tmp_path / "outsider.log",
        join=[seed.url],
        args=[*other_pki.serve_args(), "--cluster-key", KEY, "--read-token", READ_TOKEN],
        tls=other_pki.context(),
    )
    outsider.start()
    try:
        outsider.wait_listening()
        seed_address = f"wss://127.0.0.1:{seed.port}/peer"

        def failed_seed(record: dict[str, object]) -> bool:
            msg = str(record.get("msg", ""))
            return msg.startswith(f"seed {seed_address}:") and "certificate verify failed" in msg

        # Two failed attempts: it keeps trying, and keeps failing.
        outsider.wait_log(failed_seed, since=0)
        outsider.wait_log(failed_seed, since=outsider.mark())

        status = outsider.status()
        assert status["active"] == []
        assert status["passive"] == []
        assert [m["name"] for m in status["members"]] == ["outsider"]
        for d in cluster.up:
            s = d.status()
            assert "outsider" not in {m["name"] for m in s["members"]}, d.name
            ids = {p["id"] for p in s["active"]} | {p["id"] for p in s["passive"]}
            assert status["node"]["id"] not in ids, d.name
    finally:
        outsider.kill()


# -- start-up errors ----------------------------------------------------------------------------


@pytest.mark.timeout(120)  # a dozen CLI processes on a shared machine
def test_bad_tls_setups_stop_the_daemon_at_start(tmp_path: Path, pki: Pki, other_pki: Pki) -> None:
    data = str(tmp_path / "data")
    cert, key, ca = str(pki.cert), str(pki.key), str(pki.ca_file)
    missing = str(tmp_path / "missing.pem")
    cases = [
        (["--tls-cert", cert], "--tls-cert needs --tls-key"),
        (["--tls-key", key], "--tls-key needs --tls-cert"),
        (["--tls-cert", missing, "--tls-key", key], f"--tls-cert {missing}: No such file"),
        (["--tls-cert", cert, "--tls-key", str(tmp_path)], "Is a directory"),
        (["--tls-cert", cert, "--tls-key", str(other_pki.key)], "is not the key of --tls-cert"),
        (["--tls-cert", key, "--tls-key", key], "holds no PEM certificate"),
        (["--tls-cert", cert, "--tls-key", key, "--tls-ca", key], "holds no PEM certificate"),
        (["--tls-ca", ca], "--tls-ca is for a node that serves TLS"),
        (
            ["--tls-cert", cert, "--tls-key", key, "--join", "http://127.0.0.1:9"],
            "joins through https://",
        ),
        (["--join", "https://127.0.0.1:9"], "needs --tls-cert and --tls-key"),
    ]
    for args, message in cases:
        done = assemblexd("run", "--port", "0", "--data-dir", data, "--no-mdns", *args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("assemblexd run: error: "), (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()  # refused before the node touched its data dir


# -- the membership transport on its own ----------------------------------------------------------


async def test_websocket_transport_over_tls(pki: Pki, other_pki: Pki) -> None:
    server = server_context(pki.cert, pki.key)
    transport = membership.WebSocketTransport(ssl=pki.context(), server_ssl=server)
    got: list[bytes] = []

    async def echo(channel: membership.Channel) -> None:
        frame = await channel.receive()
        got.append(frame)
        await channel.send(frame[::-1])

    async with transport.serve("wss://127.0.0.1:0", echo) as address:
        assert address.startswith("wss://127.0.0.1:")
        channel = await transport.connect(address)
        try:
            await channel.send(b"over tls")
            assert await channel.receive() == b"slt revo"
        finally:
            await channel.aclose()
        assert got == [b"over tls"]

        # A client that does not trust the server's CA cannot connect.
        stranger = membership.WebSocketTransport(ssl=other_pki.context())
        with pytest.raises(membership.ConnectError, match="certificate verify failed"):
            await stranger.connect(address)

        # A TLS transport never dials plain text, and a plain one never dials TLS.
        plain_address = "ws://" + address.removeprefix("wss://")
        with pytest.raises(membership.LocalProtocolError, match="wss://"):
            await transport.connect(plain_address)
        with pytest.raises(membership.LocalProtocolError, match="ws://"):
            await membership.WebSocketTransport().connect(address)
    assert got == [b"over tls"]
