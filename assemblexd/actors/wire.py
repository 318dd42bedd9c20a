"""Actor messages between nodes: msgpack maps in ``POST /peer/actors``, proven by the cluster key.

A request carries ``Authorization: Assemblex ts=..,nonce=..,mac=..`` (``auth.blob_proof`` with
the request line ``POST /peer/actors`` and the sha256 of the body), made for the node asked;
its answer carries ``Assemblex-Reply``, a MAC of the nonce and the answer's body, which the
sender checks before it believes a word of it. A cluster without a key sends neither.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
import time
from typing import Any

import aiohttp
import msgpack

from ..auth import ACTORS, blob_proof, proof_nonce, reply_mac

__all__ = ["PATH", "REPLY_HEADER", "NotSent", "PeerClient", "decode", "encode"]

PATH = "/peer/actors"
REPLY_HEADER = "Assemblex-Reply"
PEER_CONNECTIONS = 16
"""Connections a node opens to one peer at most (open and kept alive); more messages wait for
one. Well under a peer's ``--max-client-conns`` (default 128), which refuses connections past
it from one address: a burst (hundreds of actors passivated at once, each released at every
member) would otherwise open, and then keep alive, hundreds of connections to each peer.
Heartbeats have connections of their own (``HEARTBEAT_CONNECTIONS`` per peer), so that they
never wait behind such a burst: a heartbeat late by a lease lapses the sender's session."""
HEARTBEAT_CONNECTIONS = 2


class NotSent(Exception):
    """The message did not reach the peer (no connection could be made): nothing ran there."""


def encode(message: dict[str, Any]) -> bytes:
    return bytes(msgpack.packb(message, use_bin_type=True))


def decode(data: bytes) -> dict[str, Any]:
    """Raises ValueError for anything but a msgpack map with string keys."""
    try:
        message = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:
        raise ValueError(f"not a msgpack message: {exc}") from None
    if not isinstance(message, dict) or not all(isinstance(k, str) for k in message):
        raise ValueError("an actor message is a map with string keys")
    return message


class PeerClient:
    """Sends actor messages to peers over HTTP(S), keeping connections open.

    Args:
        key: the cluster key (None: an open cluster, nothing is proven).
        accepted: other keys a peer's answer may be proven with (a key rotation).
        ssl: the client context of a TLS cluster; None for a plain one.
    """

    def __init__(
        self, key: str | None, accepted: tuple[str, ...] = (), ssl: ssl.SSLContext | None = None
    ) -> None:
        self._key = key
        self._keys = (key, *accepted) if key else ()
        self._ssl = ssl
        self._sessions: dict[bool, aiohttp.ClientSession] = {}
        """The session for heartbeats (True) and the one for every other message (False)."""

    async def close(self) -> None:
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            await session.close()

    def _open(self, heartbeat: bool) -> aiohttp.ClientSession:
        session = self._sessions.get(heartbeat)
        if session is None:
            session = self._sessions[heartbeat] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    ssl=self._ssl if self._ssl is not None else True,
                    limit=0,
                    limit_per_host=HEARTBEAT_CONNECTIONS if heartbeat else PEER_CONNECTIONS,
                ),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=2),
            )
        return session

    async def send(
        self, node_id: str, url: str, message: dict[str, Any], *, limit: float | None
    ) -> dict[str, Any]:
        """The peer's answer to ``message``, within ``limit`` seconds (None: no limit).
        Raises NotSent (connection refused), OSError,
        TimeoutError, aiohttp.ClientError, ValueError (an answer that is not proven or not a
        message)."""
        body = encode(message)
        headers = {"Content-Type": "application/msgpack"}
        nonce = ""
        if self._key:
            proof = blob_proof(
                self._key, node_id, hashlib.sha256(body).hexdigest(), time.time(), purpose=ACTORS
            )
            headers["Authorization"] = proof
            nonce = proof_nonce(proof)
        try:
            async with self._open(message.get("t") == "hb").post(
                url.rstrip("/") + PATH,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=limit, sock_connect=2),
            ) as resp:
                data = await resp.read()
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}: {data[:200]!r}")
                if self._keys:
                    given = resp.headers.get(REPLY_HEADER, "")
                    if not any(
                        hmac.compare_digest(given, reply_mac(k, nonce, data)) for k in self._keys
                    ):
                        raise ValueError("the answer is not proven by the cluster key")
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise NotSent(str(exc) or type(exc).__name__) from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise OSError(f"disconnected: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise OSError(str(exc)) from exc
        return decode(data)
