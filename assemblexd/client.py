"""A small async client of a node's HTTP API, used by the CLI.

Every failure, from the server or from the connection, is a ``ClientError`` whose ``message``
is the server's own ``message`` when it sent one.
"""

from __future__ import annotations

import asyncio
import json
import ssl as _ssl
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

__all__ = ["DEFAULT_URL", "Client", "ClientError"]

DEFAULT_URL = "http://127.0.0.1:4000"

# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH.
_NAME_MISMATCH = (62, 64)


class ClientError(Exception):
    """A request failed.

    Attributes:
        status: HTTP status, or None when the node could not be reached.
        code: the server's error code (``unknown_app``, ...), or a local one.
        message: the server's message, or a description of the local failure.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str = "error") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class Client:
    """Talks to one node. Use as ``async with Client(url) as client:``.

    Args:
        url: base URL of the node, such as ``http://127.0.0.1:4000``.
        timeout: total seconds per request.
        ssl: the context that verifies an ``https://`` node (``tls.client_context(ca)``);
            None verifies against the system's trust store. Verification is never off.
    """

    def __init__(
        self, url: str = DEFAULT_URL, *, timeout: float = 300.0, ssl: _ssl.SSLContext | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl = ssl
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        self._session = aiohttp.ClientSession(
            timeout=self._timeout,
            connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        data: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[bytes, str]:
        """Body and content type of a successful response; raises ClientError otherwise."""
        if self._session is None:
            raise RuntimeError("use the client as 'async with Client(url) as client:'")
        try:
            async with self._session.request(
                method, self.url + path, data=data, headers=headers
            ) as resp:
                body = await resp.read()
                if resp.status >= 400:
                    raise _error_from(resp.status, resp.reason, body)
                return body, resp.content_type
        except aiohttp.ClientConnectorCertificateError as e:
            err = e.certificate_error
            if getattr(err, "verify_code", None) in _NAME_MISMATCH:
                hint = "the node's certificate does not name the host of the URL"
            else:
                hint = "give --tls-ca with the CA that signed the node's certificate"
            raise ClientError(f"cannot reach {self.url}: {err} ({hint})", code="unreachable") from e
        except aiohttp.ClientConnectorError as e:
            reason = e.os_error.strerror or str(e.os_error)
            raise ClientError(f"cannot reach {self.url}: {reason}", code="unreachable") from e
        except aiohttp.ClientError as e:
            raise ClientError(f"request to {self.url} failed: {e}", code="unreachable") from e
        except TimeoutError as e:
            raise ClientError(f"no answer from {self.url} in time", code="timeout") from e

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        body, _ = await self._request(method, path, **kwargs)
        try:
            return json.loads(body)
        except ValueError as e:
            raise ClientError(f"{self.url}{path} did not answer JSON", code="bad_response") from e

    async def deploy(
        self,
        file: Path,
        *,
        name: str | None = None,
        capabilities: Sequence[str] | str | None = None,
        token: str | None = None,
    ) -> dict[str, Any]:
        """Upload a module; returns ``{name, version, sha256, size}``.

        Args:
            file: the ``.wasm`` file; the app is named after it unless ``name`` is given.
            name: the app name.
            capabilities: namespaces to grant (a list or a comma-separated string);
                None grants the node's default set.
            token: bearer token, where the node requires one.
        """
        file = Path(file)
        try:
            wasm = await asyncio.to_thread(file.read_bytes)
        except OSError as e:
            raise ClientError(f"cannot read {file}: {e.strerror or e}", code="local") from e
        form = aiohttp.FormData()
        form.add_field("wasm", wasm, filename=file.name, content_type="application/wasm")
        if name is not None:
            form.add_field("name", name)
        if capabilities is not None:
            caps = capabilities if isinstance(capabilities, str) else ",".join(capabilities)
            form.add_field("capabilities", caps)
        result: dict[str, Any] = await self._json(
            "POST", "/deploy", data=form, headers=_auth(token)
        )
        return result

    async def call(
        self, app: str, op: str = "main", data: bytes = b"", *, token: str | None = None
    ) -> bytes:
        """Run ``op`` of ``app`` with ``data`` as the payload; returns the response bytes.
        ``token``: the call token, where the node requires one."""
        body, _ = await self._request(
            "POST", f"/call/{_seg(app)}/{_seg(op)}", data=data, headers=_auth(token)
        )
        return body

    async def actor_call(
        self, app: str, key: str, op: str, data: bytes = b"", *, token: str | None = None
    ) -> bytes:
        """Run ``op`` on the actor ``key`` of ``app`` with ``data`` as the payload; returns the
        response bytes. ``token``: the call token, where the node requires one."""
        body, _ = await self._request(
            "POST",
            f"/actors/{_seg(app)}/{_seg(key)}/{_seg(op)}",
            data=data,
            headers=_auth(token),
        )
        return body

    async def actor(self, app: str, key: str, *, token: str | None = None) -> dict[str, Any]:
        """Where the actor ``key`` of ``app`` lives: ``{owner, generation, active, alarm_at}``.
        ``token``: the call token, where the node requires one."""
        result: dict[str, Any] = await self._json(
            "GET", f"/actors/{_seg(app)}/{_seg(key)}", headers=_auth(token)
        )
        return result

    async def apps(self, *, token: str | None = None) -> list[dict[str, Any]]:
        """Records of every deployed app. ``token``: the read token, where the node requires
        one."""
        result: list[dict[str, Any]] = await self._json("GET", "/apps", headers=_auth(token))
        return result

    async def app(self, name: str, *, token: str | None = None) -> dict[str, Any]:
        """Record of one app. ``token``: the read token, where the node requires one."""
        result: dict[str, Any] = await self._json(
            "GET", f"/apps/{_seg(name)}", headers=_auth(token)
        )
        return result

    async def undeploy(self, name: str, *, token: str | None = None) -> None:
        """Remove an app from the cluster."""
        await self._request("DELETE", f"/apps/{_seg(name)}", headers=_auth(token))

    async def rollback(self, name: str, *, token: str | None = None) -> dict[str, Any]:
        """Make the previous version of an app current again; returns the new record."""
        result: dict[str, Any] = await self._json(
            "POST", f"/apps/{_seg(name)}/rollback", headers=_auth(token)
        )
        return result

    async def status(self, *, token: str | None = None) -> dict[str, Any]:
        """The node's ``/status`` JSON. ``token``: the read (or deploy) token; without it the
        node may refuse, or answer its anonymous view (no peer ids or addresses)."""
        result: dict[str, Any] = await self._json(
            "GET", "/status", headers={"Accept": "application/json", **_auth(token)}
        )
        return result


def _seg(s: str) -> str:
    return quote(s, safe="")


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _error_from(status: int, reason: str | None, body: bytes) -> ClientError:
    try:
        obj = json.loads(body)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and "message" in obj:
        return ClientError(str(obj["message"]), status=status, code=str(obj.get("error", "error")))
    text = body.decode("utf-8", "replace").strip() or (reason or "")
    return ClientError(f"HTTP {status}: {text}", status=status, code=f"http_{status}")
