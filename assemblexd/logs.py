"""Logging setup for the daemon: readable text or one JSON object per line, on stderr.

Fields passed with ``extra=`` (for example ``app`` and ``version`` on the guest console logger
``assemblexd.guest``) are kept: as ``key=value`` after the message in text, as top-level keys
in JSON.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = [
    "FORMATS",
    "JsonFormatter",
    "LineLimiter",
    "TextFormatter",
    "guest_line",
    "setup_logging",
]

FORMATS = ("text", "json")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RESERVED = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    ts = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``2024-01-01T12:00:00.000Z INFO assemblexd.node: message key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, then the extras."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in _extras(record).items():
            obj.setdefault(k, v)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            obj["stack"] = self.formatStack(record.stack_info)
        return json.dumps(obj, default=str, ensure_ascii=False)


def setup_logging(
    fmt: str = "text", level: int | str = logging.INFO, stream: TextIO | None = None
) -> None:
    """Send all logging to ``stream`` (stderr by default) in ``fmt``; replaces earlier handlers.

    Args:
        fmt: ``text`` or ``json``.
        level: level of the root logger.
        stream: where to write; stderr when None.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


# Control characters of a guest's line, shown escaped: a guest must not start a line of the
# node's log of its own (a forged "deployed ..." line) nor move the terminal's cursor.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F) if c != 0x09} | {
    0x0A: "\\n",
    0x0D: "\\r",
}


def guest_line(line: bytes, max_bytes: int) -> tuple[str, bool]:
    """The text logged for a guest's console line, and whether it was cut.

    At most ``max_bytes`` of the line are kept (then `` [cut: N bytes]`` tells its length);
    invalid UTF-8 is replaced and control characters but tab are escaped (``\\n``,
    ``\\x1b``), so one console line is one line of the node's log.
    """
    cut = len(line) > max_bytes
    text = line[:max_bytes].decode("utf-8", "replace").translate(_ESCAPES)
    if cut:
        text += f" [cut: {len(line)} bytes]"
    return text, cut


class LineLimiter:
    """How many console lines each app may log: a token bucket per app (``rate`` lines a
    second, ``burst`` at once). Thread-safe: guests log from the scheduler's worker threads."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, list[float]] = {}
        """Per app: [tokens, time of the last refill, lines dropped since the last logged]."""

    def admit(self, app: str) -> tuple[bool, int]:
        """Whether ``app`` may log a line now; with True, how many of its lines were dropped
        since the last one it logged (to report them), with False 0."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(app)
            if bucket is None:
                bucket = self._buckets[app] = [self.burst, now, 0]
            tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
            if tokens < 1:
                bucket[0] = tokens
                bucket[2] += 1
                return False, 0
            bucket[0] = tokens - 1
            dropped = int(bucket[2])
            bucket[2] = 0
            return True, dropped

    def forget(self, app: str) -> None:
        """Drop the bucket of an app no longer run."""
        with self._lock:
            self._buckets.pop(app, None)
