"""The ``relay`` command as a subprocess, for acceptance tests: start, read its logs, signal it, kill it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

RELAY = [sys.executable, "-m", "relay.cli"]
PRIORITY_PREFIX = re.compile(rb"^<([0-7])>")  # sd-daemon(3): what a line says its journal priority is


class RelayProcess:
    """``relay serve --config PATH``; ``start()`` returns once it logged ``relay_started``.

    With ``journal``, its output goes to a pipe that ``JOURNAL_STREAM`` names, as systemd's journal stream would be:
    each line's ``<N>`` priority prefix is taken off before it is parsed and kept in ``priorities``.
    """

    def __init__(
        self,
        config_path: Path,
        *,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        journal: bool = False,
    ) -> None:
        self.config_path = config_path
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path or config_path.with_suffix(".log")
        self.journal = journal
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""
        self.health_url = ""
        self.lines: list[dict[str, Any]] = []
        self.priorities: list[int | None] = []  # each parsed line's priority prefix (None: it had none)
        self._reader: asyncio.Task[None] | None = None
        self._started = asyncio.Event()

    async def spawn(self) -> RelayProcess:
        """Start the process and return at once (``started`` tells when it logged ``relay_started``)."""
        self._started = asyncio.Event()
        args = [*RELAY, "serve", "--config", str(self.config_path)]
        if not self.journal:
            self.proc = await asyncio.create_subprocess_exec(
                *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=self.env
            )
            assert self.proc.stdout is not None
            self._reader = asyncio.create_task(self._read(self.proc.stdout))
            return self
        read_end, write_end = os.pipe()
        stat = os.fstat(write_end)
        env = {**self.env, "JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}
        try:
            self.proc = await asyncio.create_subprocess_exec(*args, stdout=write_end, stderr=write_end, env=env)
        finally:
            os.close(write_end)
        stream = asyncio.StreamReader()
        await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(stream), os.fdopen(read_end, "rb")
        )
        self._reader = asyncio.create_task(self._read(stream))
        return self

    @property
    def started(self) -> bool:
        return self._started.is_set()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 15.0) -> RelayProcess:
        await self.spawn()
        assert self.proc is not None
        waiter = asyncio.create_task(self._started.wait())
        exited = asyncio.create_task(self.proc.wait())
        await asyncio.wait({waiter, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        exited.cancel()
        if not self._started.is_set():
            await self.kill()
            raise AssertionError(f"relay did not start; its output:\n{self.log_path.read_text()}")
        return self

    async def _read(self, stream: asyncio.StreamReader) -> None:
        with self.log_path.open("ab") as log:
            async for raw in stream:
                log.write(raw)
                log.flush()
                prefix = PRIORITY_PREFIX.match(raw)
                try:
                    line = orjson.loads(raw[prefix.end() :] if prefix else raw)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(line, dict):
                    continue
                self.lines.append(line)
                self.priorities.append(int(prefix.group(1)) if prefix else None)
                if line.get("event") == "relay_started":
                    self.url = f"http://{line['listen']}"
                    self.health_url = f"http://{line['health_listen']}"
                    self._started.set()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == name]

    async def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return code

    async def stop(self, timeout: float = 15.0) -> int:
        await self.signal(signal.SIGTERM)
        return await self.wait(timeout)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            await self._reader


async def run_relay(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30.0, stdin: bytes | None = None
) -> tuple[int, str, str]:
    """Run a short ``relay`` command (given ``stdin``, if any); returns (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *RELAY,
        *args,
        stdin=None if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def run_cli(relay: RelayProcess, *args: str, key: str) -> tuple[int, str, str]:
    """A management command (``relay webhooks list``, ``relay tenants …``) against the running ``relay`` with
    ``key``; (exit code, stdout, stderr)."""
    return await run_relay(*args, "--url", relay.url, "--api-key", key)


async def run_cli_json(relay: RelayProcess, *args: str, key: str) -> Any:
    """``run_cli`` with ``--json``, which must succeed: its parsed output."""
    code, out, err = await run_cli(relay, *args, "--json", key=key)
    assert code == 0, err
    return orjson.loads(out)


@contextlib.asynccontextmanager
async def serving(path: Path, env: dict[str, str] | None = None) -> AsyncIterator[RelayProcess]:
    """A relay process on the config at ``path``, started, and stopped at the end."""
    process = RelayProcess(path, env=env)
    await process.start()
    try:
        yield process
    finally:
        await process.stop()


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def minimal_config(key: str, db: Path) -> str:
    """A relay on a free local port with one API key, a store at ``db``, and no webhooks."""
    return f"""
[server]
listen = "127.0.0.1:0"
api_keys = ["{key}"]
shutdown_timeout = "2s"

[storage]
path = "{db}"
"""


async def post_events(url: str, key: str, body: Any) -> tuple[int, Any]:
    """POST /v1/events to a relay at ``url`` with ``key``; returns (status, the JSON answer)."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{url}/v1/events",
            data=orjson.dumps(body),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        ) as response,
    ):
        return response.status, await response.json()
