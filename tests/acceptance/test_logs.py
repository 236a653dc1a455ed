"""The log stream as systemd's journal sees it: one JSON object per line, the libraries' ``logging`` records and
Python's warnings included, each line prefixed with its priority when stdout is the journal's stream."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from tests.support.process import PRIORITY_PREFIX, RelayProcess, minimal_config, post_events, write_config
from tests.support.relay_harness import poll_until

KEY = "logs-test-key"

# What a relay process logs through each path: relay's own events (structlog), the libraries' records (logging),
# a warning, and the debug records a library writes about what it handles (never logged).
EMIT = """
import asyncio, logging, sys, warnings
import structlog
from relay.logs import configure_logging

configure_logging(sys.argv[1])
log = structlog.get_logger()
log.debug("relay_debugged", n=1)
log.info("relay_informed", n=2)
logging.getLogger("aiohttp.server").warning("Error handling request from %s", "127.0.0.1")
logging.getLogger("aiosqlite").debug("executing %s", "INSERT ... ('whsec_do-not-log')")
try:
    raise ValueError("boom")
except ValueError:
    logging.getLogger("asyncio").error("Task exception was never retrieved", exc_info=True)
warnings.warn("a library's warning", DeprecationWarning)
log.error("relay_failed", n=3)
"""


def emit(level: str, *, journal: str | None) -> tuple[list[bytes], bytes]:
    """Run EMIT with stdout and stderr on one pipe; ``journal``: "match" names that pipe in JOURNAL_STREAM,
    another value is set as it is. Its lines and what it wrote to stderr separately (nothing, it should be)."""
    read_end, write_end = os.pipe()
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    env["PYTHONWARNINGS"] = "default"
    if journal is not None:
        stat = os.fstat(write_end)
        env["JOURNAL_STREAM"] = f"{stat.st_dev}:{stat.st_ino}" if journal == "match" else journal
    try:
        done = subprocess.run(
            [sys.executable, "-c", EMIT, level], stdout=write_end, stderr=subprocess.PIPE, env=env, timeout=30
        )
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        out = pipe.read()
    assert done.returncode == 0, done.stderr
    return out.splitlines(), done.stderr


def parse(line: bytes) -> tuple[int | None, dict[str, Any]]:
    prefix = PRIORITY_PREFIX.match(line)
    entry = orjson.loads(line[prefix.end() :] if prefix else line)
    assert isinstance(entry, dict)
    return (int(prefix.group(1)) if prefix else None), entry


def test_library_records_and_warnings_are_json_lines_like_relays_own() -> None:
    lines, stderr = emit("info", journal=None)
    assert stderr == b""
    entries = [parse(line) for line in lines]
    assert all(priority is None for priority, _ in entries)
    assert [(e["level"], e.get("logger"), e["event"].partition(":")[0]) for _, e in entries] == [
        ("info", None, "relay_informed"),
        ("warning", "aiohttp.server", "Error handling request from 127.0.0.1"),
        ("error", "asyncio", "Task exception was never retrieved"),
        ("warning", "py.warnings", "<string>"),
        ("error", None, "relay_failed"),
    ]
    assert all(e["timestamp"].endswith("Z") for _, e in entries)
    assert "ValueError: boom" in entries[2][1]["exception"]
    assert "DeprecationWarning: a library's warning" in entries[3][1]["event"]


def test_a_librarys_debug_records_are_never_logged_even_at_debug() -> None:
    lines, _ = emit("debug", journal=None)
    assert [parse(line)[1]["event"] for line in lines][:2] == ["relay_debugged", "relay_informed"]
    assert b"executing" not in b"".join(lines) and b"whsec_do-not-log" not in b"".join(lines)


def test_lines_carry_their_priority_when_stdout_is_the_journals_stream() -> None:
    lines, _ = emit("debug", journal="match")
    assert [(priority, entry["level"]) for priority, entry in map(parse, lines)] == [
        (7, "debug"),
        (6, "info"),
        (4, "warning"),  # aiohttp.server
        (3, "error"),  # asyncio
        (4, "warning"),  # py.warnings
        (3, "error"),
    ]


def test_a_journal_stream_that_is_not_stdout_adds_no_prefix() -> None:
    for value in ("1:1", "garbage", ""):
        lines, _ = emit("info", journal=value)
        assert lines and all(not PRIORITY_PREFIX.match(line) for line in lines), value


async def test_relay_serve_under_the_journal(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on: every attempt is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    text = (
        minimal_config(KEY, tmp_path / "relay.db")
        + f"""
[delivery]
allow_http = true
allow_private_networks = true
retry_schedule = ["0s"]

[[webhooks]]
id = "refused"
url = "http://127.0.0.1:{port}/hook"
"""
    )
    relay = await RelayProcess(write_config(tmp_path / "relay.toml", text), journal=True).start()
    try:
        status, _ = await post_events(relay.url, KEY, {"type": "t", "data": {}})
        assert status == 202
        await poll_until(lambda: relay.events("delivery_parked"))
    finally:
        assert await relay.stop() == 0
    raw = relay.log_path.read_bytes().splitlines()
    assert raw and all(PRIORITY_PREFIX.match(line) for line in raw), "every line is prefixed, none is plain text"
    priority = dict(zip((line["event"] for line in relay.lines), relay.priorities, strict=True))
    assert priority["relay_started"] == 6
    assert priority["delivery_parked"] == 4
    assert priority["relay_stopped"] == 6
