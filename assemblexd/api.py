"""The HTTP API of a node (README.md, "HTTP API"; the routes and answers in ``openapi.py``).

``create_app(node)`` builds the aiohttp application and does no I/O; the daemon serves it with
``AppRunner``/``TCPSite`` and tests with ``aiohttp_client``. Handlers are thin: they parse the
request, call one ``Node`` method and shape the answer. Every ``AssemblexError`` becomes
``{"error": code, "message": text}`` in ``error_middleware`` and nowhere else.

Bodies are read as streams against their own limit (``max_upload_mib`` for modules,
``max_payload_mib`` for call payloads): a request whose ``Content-Length`` is over the limit is
refused before its body is read, and a chunked one as soon as it passes the limit. A body must
arrive within ``body_timeout`` (408, and the connection is closed); headers have their own
deadline (``conns.py``).

Reads (``/status``, ``/apps``, ``/metrics``) need the read token when the node has one (the
deploy token is accepted too, as a bearer token or as the password of HTTP Basic, which a
browser asks for). Without a token, ``/status`` is the anonymous view: node ids replaced by
aliases, and no URL or address of any node, which is what a client needs to dial a peer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import BodyPartReader

from . import conns
from .actors import wire
from .auth import ACTORS, BlobGuard, proof_nonce, reply_mac
from .config import MIB
from .errors import (
    AssemblexError,
    BadRequest,
    InvalidModule,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
)
from .node import Node
from .openapi import spec

__all__ = ["NAME_RE", "NODE", "connection_middleware", "create_app", "error_middleware"]

log = logging.getLogger(__name__)

NODE = web.AppKey("node", Node)
"""The node an application serves."""

BLOB_GUARD = web.AppKey("blob_guard", BlobGuard)
"""Checks the proofs of module fetches (set when the node has a cluster key)."""
ACTOR_GUARD = web.AppKey("actor_guard", BlobGuard)
"""Checks the proofs of actor messages from peers (set when the node has a cluster key)."""
ACTOR_WINDOW = 30.0
"""Seconds an actor message's proof is good for (they come many times a second: a shorter
window than a module fetch's keeps the nonces to remember few)."""

PeerHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PEER_HANDLER: web.AppKey[PeerHandler] = web.AppKey("peer_handler")
"""Serves ``GET /peer`` (the cluster layer's ``Cluster.handle_peer``); unset for a node alone."""

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""Valid app names (matched in full)."""

_CHUNK = 64 * 1024
_MAX_FIELD = 4096
"""Largest text form field (``name``, ``capabilities``)."""
_MULTIPART_SLACK = 64 * 1024
"""Room for multipart headers and text fields on top of the module itself."""
_WASM_TYPES = frozenset({"application/wasm", "application/octet-stream"})
_WASM_MAGIC = b"\0asm"
_BEARER = 'Bearer realm="assemblex"'
_ALIAS_SALT = b"assemblex status alias\0"
_IDENTITY_ENCODINGS = frozenset({"", "binary", "7bit", "8bit"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- errors -------------------------------------------------------------------------------------

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON error response (and log the unexpected ones)."""
    try:
        return await handler(request)
    except AssemblexError as e:
        headers: dict[str, str] = {}
        if isinstance(e, Overloaded):
            headers["Retry-After"] = str(e.retry_after)
        elif isinstance(e, Unauthorized):
            headers["WWW-Authenticate"] = getattr(e, "challenge", _BEARER)
        resp = _error(e.status, e.code, e.message, headers)
        if isinstance(e, RequestTimeout):
            resp.force_close()  # the rest of the body may still come: do not read it
        return resp
    except web.HTTPException as e:
        if e.status < 400:
            raise
        # Keep headers such as Allow (405); the body and its type are ours.
        kept = {
            k: v
            for k, v in e.headers.items()
            if k.lower() not in ("content-type", "content-length")
        }
        message = e.reason
        if e.status == 404:
            message = f"no route for {request.method} {request.path}"
        return _error(e.status, _HTTP_CODES.get(e.status, f"http_{e.status}"), message, kept)
    except ConnectionResetError:
        raise  # the client went away: nothing to answer, nothing to log
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return _error(500, "internal", "internal server error (see the node's log)")


@web.middleware
async def connection_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection guard (``conns.py``) when a request's headers are in, and when it
    is answered: the header deadline stops and starts again there."""
    conns.request_started(request.transport)
    try:
        return await handler(request)
    finally:
        conns.request_finished(request.transport)


# -- helpers ------------------------------------------------------------------------------------


def _node(request: web.Request) -> Node:
    return request.app[NODE]


def _check_token(request: web.Request, token: str | None = None) -> None:
    token = token if token is not None else _node(request).config.token
    if not token:
        return
    given = _given_token(request, basic=False)
    if given is None:
        raise Unauthorized("this node requires 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise Unauthorized("wrong token")


class _ReadUnauthorized(Unauthorized):
    """A guarded read without the read token; a browser is asked for it (HTTP Basic)."""

    def __init__(self, message: str, *, browser: bool) -> None:
        super().__init__(message)
        basic = 'Basic realm="assemblex", charset="UTF-8"'
        # A browser takes the first scheme it knows: Basic alone, so that it prompts.
        self.challenge = basic if browser else f"{_BEARER}, {basic}"


def _given_token(request: web.Request, *, basic: bool = True) -> str | None:
    """The token a request carries: a bearer token, or (``basic``) the password of HTTP
    Basic; None without one."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    given = given.strip()
    if basic and scheme.lower() == "basic":
        try:
            given = base64.b64decode(given, validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return None
    elif scheme.lower() != "bearer":
        return None
    return given or None


def _check_read(request: web.Request) -> bool:
    """Whether the client proved the read or the deploy token (and may see peers' addresses).

    Raises:
        Unauthorized: the node has a read token and the client did not prove it.
    """
    config = _node(request).config
    given = _given_token(request)
    proved = given is not None and any(
        hmac.compare_digest(given.encode(), t.encode())
        for t in (config.read_token, config.token)
        if t
    )
    if config.read_token and not proved:
        raise _ReadUnauthorized(
            "this node requires its read token: 'Authorization: Bearer <token>'"
            if given is None
            else "wrong token",
            browser=_prefers_html(request.headers.get("Accept", "")),
        )
    return proved


def _anonymous(data: dict[str, Any], cluster_key: str | None) -> dict[str, Any]:
    """``/status`` without what a client needs to dial a peer: every node id is replaced by
    an alias and every URL and address is left out. An alias is an HMAC of the id under the
    cluster key, so every node of a cluster shows the same alias for a node and the graph
    still links up, while nobody without the key can tell the id."""
    key = _ALIAS_SALT + (cluster_key or "").encode()

    def alias(node_id: Any) -> str:
        return "~" + hmac.new(key, str(node_id).encode(), hashlib.sha256).hexdigest()[:16]

    def node(m: Any) -> Any:
        if not isinstance(m, dict):
            return alias(m)
        out = {k: v for k, v in m.items() if k not in ("url", "address")}
        if "id" in m:
            out["id"] = alias(m["id"])
        if isinstance(m.get("active"), list):
            out["active"] = [node(p) for p in m["active"]]
        return out

    return {
        **data,
        "node": node(data.get("node", {})),
        "active": [node(p) for p in data.get("active", [])],
        "passive": [node(p) for p in data.get("passive", [])],
        "members": [node(m) for m in data.get("members", [])],
    }


def _size(limit: int) -> str:
    """A limit as people state it: whole MiB, or bytes below one MiB."""
    return f"{limit // MIB} MiB" if limit >= MIB else f"{limit:,} bytes"


@contextlib.asynccontextmanager
async def _body_deadline(request: web.Request) -> AsyncIterator[None]:
    """Bound the reading of a request's body by ``body_timeout`` (408 past it)."""
    timeout = _node(request).config.body_timeout
    try:
        async with asyncio.timeout(timeout if timeout > 0 else None):
            yield
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout:g} s") from None


def _check_length(request: web.Request, limit: int, what: str) -> None:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"{what} is over the limit of {_size(limit)}")


async def _read_limited(
    read_chunk: Callable[[int], Awaitable[bytes]], limit: int, what: str
) -> bytes:
    """Read a stream to its end, failing as soon as it passes ``limit`` bytes."""
    buf = bytearray()
    while chunk := await read_chunk(_CHUNK):
        buf += chunk
        if len(buf) > limit:
            raise PayloadTooLarge(f"{what} is over the limit of {_size(limit)}")
    return bytes(buf)


def _check_name(name: str | None) -> str:
    if not name:
        raise BadRequest("missing app name: give a 'name' field or ?name=")
    if not NAME_RE.fullmatch(name):
        raise BadRequest(
            f"bad app name {name!r}: 1-64 characters of A-Z a-z 0-9 _ . -,"
            " starting with a letter or digit"
        )
    return name


def _parse_capabilities(text: str | None) -> list[str] | None:
    """None (the default set) when absent; otherwise the comma-separated names, maybe none."""
    if text is None:
        return None
    return [c.strip() for c in text.split(",") if c.strip()]


def _name_from_filename(filename: str | None) -> str | None:
    if not filename:
        return None
    # aiohttp's client percent-encodes file names; browsers and curl send the base name only.
    base = unquote(filename).replace("\\", "/").rsplit("/", 1)[-1]
    return base.removesuffix(".wasm") or None


async def _read_field(part: BodyPartReader) -> str:
    raw = await _read_limited(part.read_chunk, _MAX_FIELD, f"form field {part.name!r}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"form field {part.name!r} is not UTF-8") from None


async def _read_multipart(request: web.Request, limit: int) -> tuple[bytes, str | None, str | None]:
    """The ``wasm`` file, the ``name`` (or file name) and ``capabilities`` of a deploy form."""
    wasm: bytes | None = None
    filename: str | None = None
    fields: dict[str, str] = {}
    reader = await request.multipart()
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise BadRequest("nested multipart bodies are not supported")
        encoding = part.headers.get("Content-Transfer-Encoding", "").lower()
        if encoding not in _IDENTITY_ENCODINGS or part.headers.get("Content-Encoding"):
            raise BadRequest("encoded form fields are not supported: send the bytes as they are")
        if part.name == "wasm":
            if wasm is not None:
                raise BadRequest("more than one 'wasm' field")
            wasm = await _read_limited(part.read_chunk, limit, "module")
            filename = part.filename
        elif part.name in ("name", "capabilities"):
            if part.name in fields:
                raise BadRequest(f"more than one {part.name!r} field")
            fields[part.name] = (await _read_field(part)).strip()
        else:
            raise BadRequest(
                f"unexpected form field {part.name!r} (expected wasm, name, capabilities)"
            )
    if wasm is None:
        raise BadRequest("missing form field 'wasm' (the module file)")
    return wasm, fields.get("name") or _name_from_filename(filename), fields.get("capabilities")


# -- handlers -----------------------------------------------------------------------------------


async def deploy(request: web.Request) -> web.Response:
    _check_token(request)
    node = _node(request)
    limit = node.config.max_upload_mib * MIB
    # Only a form gets room for its part headers and text fields; a raw module is the body.
    slack = _MULTIPART_SLACK if request.content_type == "multipart/form-data" else 0
    _check_length(request, limit + slack, "module")
    if request.content_type == "multipart/form-data":
        try:
            async with _body_deadline(request):
                wasm, name, caps = await _read_multipart(request, limit)
        except (ValueError, AssertionError, RuntimeError, HttpProcessingError) as e:
            # aiohttp's multipart parser reports a malformed body with these.
            detail = (e.message if isinstance(e, HttpProcessingError) else str(e)).strip()
            raise BadRequest(f"malformed multipart body: {detail or type(e).__name__}") from None
    elif request.content_type in _WASM_TYPES:
        async with _body_deadline(request):
            wasm = await _read_limited(request.content.read, limit, "module")
        name = request.query.get("name")
        caps = request.query.get("capabilities")
    else:
        raise BadRequest(
            "send the module as multipart/form-data with a 'wasm' file field"
            " (curl -F wasm=@app.wasm) or as an application/wasm body with ?name="
        )
    if not wasm:
        raise BadRequest("empty upload: the module has no bytes")
    if not wasm.startswith(_WASM_MAGIC):
        # wasmtime would also parse WebAssembly text; deploys take the binary format only.
        raise InvalidModule(
            "not a WebAssembly binary module (it does not start with \\0asm); compile"
            " WebAssembly text to binary first (e.g. wat2wasm)"
        )
    rec = await node.deploy(_check_name(name), wasm, _parse_capabilities(caps))
    return web.json_response(
        {"name": rec.name, "version": rec.version, "sha256": rec.sha256, "size": rec.size},
        status=201,
    )


def _check_call_token(request: web.Request) -> None:
    """Calls (``/call``, ``/actors``) take the call token, when the node has one."""
    call_token = _node(request).config.call_token
    if call_token:
        _check_token(request, call_token)


async def _call_payload(request: web.Request) -> bytes:
    """The payload of a call (``/call``, ``/actors``), once the call token is checked."""
    node = _node(request)
    _check_call_token(request)
    limit = node.config.max_payload_mib * MIB
    _check_length(request, limit, "payload")
    async with _body_deadline(request):
        return await _read_limited(request.content.read, limit, "payload")


async def call(request: web.Request) -> web.Response:
    node = _node(request)
    payload = await _call_payload(request)
    result = await node.call(
        request.match_info["app"], request.match_info.get("op", "main"), payload
    )
    return web.Response(body=result, content_type="application/octet-stream")


async def actor_call(request: web.Request) -> web.Response:
    node = _node(request)
    payload = await _call_payload(request)
    m = request.match_info
    answer = await node.actor_call(m["app"], m["key"], m["op"], payload)
    headers = {
        "Assemblex-Actor-Owner": answer.owner,
        "Assemblex-Actor-Generation": str(answer.generation),
    }
    return web.Response(body=answer.body, content_type="application/octet-stream", headers=headers)


async def actor_info(request: web.Request) -> web.Response:
    node = _node(request)
    _check_call_token(request)
    m = request.match_info
    return web.json_response(await node.actor_info(m["app"], m["key"]))


async def actor_peer(request: web.Request) -> web.Response:
    """``POST /peer/actors``: a message of a peer's actors (``actors/wire.py``)."""
    node = _node(request)
    config = node.config
    limit = config.actor_state_max + config.max_payload_mib * MIB + MIB
    _check_length(request, limit, "actor message")
    async with _body_deadline(request):
        body = await _read_limited(request.content.read, limit, "actor message")
    guard = request.app.get(ACTOR_GUARD)
    header = request.headers.get("Authorization", "")
    if guard is not None and not guard.check(
        hashlib.sha256(body).hexdigest(), header, time.time(), ACTORS
    ):
        raise Unauthorized("actor messages are taken from peers that prove the cluster key")
    try:
        message = wire.decode(body)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    answer = wire.encode(await node.actors.handle(message))
    headers = {"Content-Type": "application/msgpack"}
    if config.cluster_key:
        headers[wire.REPLY_HEADER] = reply_mac(config.cluster_key, proof_nonce(header), answer)
    return web.Response(body=answer, headers=headers)


async def list_apps(request: web.Request) -> web.Response:
    _check_read(request)
    return web.json_response([rec.to_json() for rec in _node(request).apps()])


async def show_app(request: web.Request) -> web.Response:
    _check_read(request)
    return web.json_response(_node(request).app(request.match_info["app"]).to_json())


async def rollback_app(request: web.Request) -> web.Response:
    _check_token(request)
    rec = await _node(request).rollback(request.match_info["app"])
    return web.json_response(
        {"name": rec.name, "version": rec.version, "sha256": rec.sha256, "size": rec.size}
    )


async def delete_app(request: web.Request) -> web.Response:
    _check_token(request)
    await _node(request).undeploy(request.match_info["app"])
    return web.Response(status=204)


def _prefers_html(accept: str) -> bool:
    """Whether an Accept header ranks text/html above application/json (a tie is JSON)."""

    def quality(media: str) -> float:
        best = 0.0
        mtype, msub = media.split("/")
        for item in accept.split(","):
            rng, *params = (p.strip() for p in item.split(";"))
            rtype, _, rsub = rng.lower().partition("/")
            if not ((rtype == mtype or rtype == "*") and (rsub == msub or rsub == "*")):
                continue
            q = 1.0
            for p in params:
                key, _, val = p.partition("=")
                if key.strip() == "q":
                    try:
                        q = float(val)
                    except ValueError:
                        q = 0.0
            best = max(best, q)
        return best

    return quality("text/html") > quality("application/json")


@functools.cache
def _status_page() -> str:
    # A package resource (package-data "static/*"). Found next to this module rather than
    # through importlib.resources, which cannot read from a namespace package.
    return (Path(__file__).parent / "static" / "status.html").read_text("utf-8")


async def status(request: web.Request) -> web.Response:
    node = _node(request)
    data = node.status()
    if not _check_read(request):
        data = _anonymous(data, node.config.cluster_key)
    if not _prefers_html(request.headers.get("Accept", "")):
        return web.json_response(data)
    # No "<" at all inside the <script> element the JSON sits in ("</script>", "<!--").
    embedded = json.dumps(data).replace("<", "\\u003c")
    page = _status_page().replace("/*STATUS_JSON*/null", embedded, 1)
    return web.Response(text=page, content_type="text/html")


async def blob(request: web.Request) -> web.FileResponse:
    node = _node(request)
    sha256 = request.match_info["sha256"]
    guard = request.app.get(BLOB_GUARD)
    if guard is not None and not guard.check(
        sha256, request.headers.get("Authorization", ""), time.time()
    ):
        raise Unauthorized("modules are served to peers that prove the cluster key")
    path = node.blob_path(sha256)
    return web.FileResponse(path, headers={"Content-Type": "application/wasm"})


async def metrics(request: web.Request) -> web.Response:
    _check_read(request)
    return web.Response(
        body=_node(request).metrics_text(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


async def peer(request: web.Request) -> web.StreamResponse:
    handler = request.app.get(PEER_HANDLER)
    if handler is None:
        raise web.HTTPServiceUnavailable(reason="this node's cluster layer is not running")
    return await handler(request)


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(spec())


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def create_app(node: Node, *, peer_handler: PeerHandler | None = None) -> web.Application:
    """The HTTP application serving ``node``. Does no I/O.

    Args:
        node: the node; its ``config`` supplies the token and the size limits.
        peer_handler: serves ``GET /peer``, the membership channel of peers
            (``Cluster.handle_peer``); None for a node alone (``/peer`` answers 503).
    """
    config = node.config
    # aiohttp's own cap applies to bodies read whole; the handlers stream against the
    # precise limits, so this only needs to be at least the largest of them.
    max_body = max(config.max_upload_mib * MIB + _MULTIPART_SLACK, config.max_payload_mib * MIB)
    app = web.Application(
        middlewares=[connection_middleware, error_middleware], client_max_size=max_body
    )
    app[NODE] = node
    if peer_handler is not None:
        app[PEER_HANDLER] = peer_handler
    if config.cluster_key:
        keys = (config.cluster_key, config.accepted_cluster_keys)
        app[BLOB_GUARD] = BlobGuard(node.id, *keys)
        app[ACTOR_GUARD] = BlobGuard(node.id, *keys, window=ACTOR_WINDOW)
    app.router.add_post("/deploy", deploy)
    for path in ("/call/{app}/{op}", "/call/{app}"):
        app.router.add_get(path, call)
        app.router.add_post(path, call)
    app.router.add_get("/actors/{app}/{key}/{op}", actor_call)
    app.router.add_post("/actors/{app}/{key}/{op}", actor_call)
    app.router.add_get("/actors/{app}/{key}", actor_info)
    app.router.add_post(wire.PATH, actor_peer)
    app.router.add_get("/apps", list_apps)
    app.router.add_get("/apps/{app}", show_app)
    app.router.add_delete("/apps/{app}", delete_app)
    app.router.add_post("/apps/{app}/rollback", rollback_app)
    app.router.add_get("/status", status)
    app.router.add_get("/blobs/{sha256}", blob)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/peer", peer)
    app.router.add_get("/openapi.json", openapi)
    return app
