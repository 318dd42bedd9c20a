from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from assemblexd.logs import setup_logging


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root")
def test_json_lines_carry_extras() -> None:
    out = io.StringIO()
    setup_logging("json", stream=out)
    logging.getLogger("assemblexd.guest").info(
        "[echo v3] hello", extra={"app": "echo", "version": 3}
    )
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("assemblexd.api").exception("failed")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["level"] == "INFO"
    assert first["logger"] == "assemblexd.guest"
    assert first["msg"] == "[echo v3] hello"
    assert (first["app"], first["version"]) == ("echo", 3)
    assert first["ts"].endswith("Z")
    assert second["level"] == "ERROR"
    assert "ValueError: boom" in second["exc"]


@pytest.mark.usefixtures("restore_root")
def test_text_lines_are_readable() -> None:
    out = io.StringIO()
    setup_logging("text", stream=out)
    logging.getLogger("assemblexd.guest").warning("hi", extra={"app": "echo", "version": 1})
    logging.getLogger("assemblexd").debug("hidden at INFO")
    (line,) = out.getvalue().splitlines()
    assert line.endswith(" WARNING assemblexd.guest: hi app=echo version=1")


@pytest.mark.usefixtures("restore_root")
def test_setup_replaces_handlers_and_rejects_unknown_format() -> None:
    setup_logging("text")
    setup_logging("json")
    assert len(logging.getLogger().handlers) == 1
    with pytest.raises(ValueError, match="text, json"):
        setup_logging("xml")
