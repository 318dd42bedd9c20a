"""TLS of a node's port and of the links it dials: the two ``ssl.SSLContext`` it needs.

A node given ``--tls-cert`` and ``--tls-key`` serves its one port (the HTTP API, ``GET /peer``
and ``GET /blobs``) over TLS and advertises an ``https://`` URL. It dials its peers at
``wss://host:port/peer`` and fetches modules over ``https://``, and checks their certificates,
host name included, against ``--tls-ca`` (a private cluster CA) or, without it, the system's
trust store. Verification is never turned off: a peer whose certificate does not verify is a
peer that cannot be reached.

TLS encrypts links and tells a node it reached the host it dialled; it does not say who dials
in (no client certificates). Peers still prove the cluster key on every link and module fetch.

Every file is read and checked when the node starts, and a bad one is a ``TLSError`` naming
the flag and the file (an ``ssl`` error alone says "PEM lib" and names nothing).
"""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path

__all__ = ["MIN_VERSION", "NodeTLS", "TLSError", "client_context", "server_context"]

MIN_VERSION = ssl.TLSVersion.TLSv1_2
"""Oldest protocol version offered or accepted, both as server and as client."""


class TLSError(ValueError):
    """A certificate, key or CA bundle that cannot be used; the message names flag and file."""


@dataclasses.dataclass(frozen=True)
class NodeTLS:
    """The contexts of a node that runs TLS."""

    server: ssl.SSLContext
    """Serves the node's port with its certificate."""
    client: ssl.SSLContext
    """Dials peers (websocket and module fetches), verifying their certificates."""

    @classmethod
    def load(cls, cert: Path, key: Path, ca: Path | None) -> NodeTLS:
        """Both contexts of a node. Raises TLSError on a file that cannot be used."""
        return cls(server=server_context(cert, key), client=client_context(ca))

    def reload(self, cert: Path, key: Path, ca: Path | None) -> None:
        """Read the files again, in place (the daemon does it on SIGHUP): connections made
        from now on present the new certificate, open ones keep theirs, and the CAs of ``ca``
        are trusted besides those already loaded (removing a CA takes a restart).

        Every file is checked first, in fresh contexts: a file that cannot be used raises
        TLSError and changes nothing.
        """
        server_context(cert, key)
        client_context(ca)
        self.server.load_cert_chain(cert, key, password=_no_password)
        if ca is not None:
            self.client.load_verify_locations(cafile=str(ca))


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context holding ``cert`` (PEM, the chain) and its private ``key`` (PEM).

    Raises:
        TLSError: a file is missing or unreadable, holds no PEM certificate or key, the key is
            encrypted, or it is not the key of the certificate.
    """
    cert_text = _read(cert, "--tls-cert")
    key_text = _read(key, "--tls-key")
    if "-----BEGIN CERTIFICATE-----" not in cert_text:
        raise TLSError(f"--tls-cert {cert} holds no PEM certificate")
    if "PRIVATE KEY-----" not in key_text:
        raise TLSError(f"--tls-key {key} holds no PEM private key")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = MIN_VERSION
    try:
        ctx.load_cert_chain(cert, key, password=_no_password)
    except _Encrypted:
        raise TLSError(f"--tls-key {key} is encrypted: give the node an unencrypted key") from None
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            raise TLSError(f"--tls-key {key} is not the key of --tls-cert {cert}") from None
        raise TLSError(f"cannot use --tls-cert {cert} with --tls-key {key}: {e}") from None
    except OSError as e:
        raise TLSError(f"cannot use --tls-cert {cert} with --tls-key {key}: {e}") from None
    return ctx


def client_context(ca: Path | None = None) -> ssl.SSLContext:
    """A client context that verifies servers (host name included) against ``ca``, a PEM
    bundle of CA certificates, or the system's trust store when ``ca`` is None.

    Raises:
        TLSError: ``ca`` is missing or unreadable, or holds no PEM certificate.
    """
    if ca is None:
        ctx = ssl.create_default_context()
    else:
        if "-----BEGIN CERTIFICATE-----" not in _read(ca, "--tls-ca"):
            raise TLSError(f"--tls-ca {ca} holds no PEM certificate")
        try:
            ctx = ssl.create_default_context(cafile=str(ca))
        except (ssl.SSLError, OSError) as e:
            raise TLSError(f"cannot use --tls-ca {ca}: {e}") from None
    ctx.minimum_version = MIN_VERSION
    # create_default_context already asks for both; said again so no edit loses them quietly.
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _read(path: Path, flag: str) -> str:
    try:
        return Path(path).read_text("ascii", errors="replace")
    except OSError as e:
        raise TLSError(f"{flag} {path}: {e.strerror or e}") from None


class _Encrypted(Exception):
    pass


def _no_password() -> str:
    # Called by ssl for an encrypted key only. Without it, ssl would prompt for a passphrase
    # on the terminal, and a daemon has nobody to ask.
    raise _Encrypted
