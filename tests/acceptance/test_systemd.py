"""The notify protocol over a real unix datagram socket, and the unit file's required settings."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

from tests.support.process import RelayProcess, write_config

ROOT = Path(__file__).resolve().parents[2]


class NotifySocket:
    """What systemd does: bind a datagram socket and read the daemon's messages from it."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def count(self, line: str) -> int:
        return sum(line in m.splitlines() for m in self.messages)

    async def wait_for(self, line: str, count: int = 1, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.count(line) < count:
            remaining = deadline - loop.time()
            assert remaining > 0, f"no {line!r} in {self.messages}"
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), remaining)
            self.messages.append(data.decode())

    def close(self) -> None:
        self.sock.close()


async def test_ready_watchdog_reloading_and_stopping(tmp_path: Path) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    config = write_config(
        tmp_path / "relay.toml",
        f"""
[server]
listen = "127.0.0.1:0"
api_keys = ["systemd-test-key"]

[storage]
path = "{tmp_path / "relay.db"}"
""",
    )
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "400000"}
    relay = RelayProcess(config, env=env)
    try:
        await relay.start()
        await notify.wait_for("READY=1")
        assert relay.proc is not None
        assert any(f"MAINPID={relay.proc.pid}" in m for m in notify.messages)
        await notify.wait_for("WATCHDOG=1", count=3, timeout=3.0)  # every 0.2 s: half of WATCHDOG_USEC
        notify.messages.clear()
        await relay.signal(signal.SIGHUP)
        await notify.wait_for("RELOADING=1")
        await notify.wait_for("READY=1")
        await relay.signal(signal.SIGTERM)
        await notify.wait_for("STOPPING=1")
        assert await relay.wait() == 0
    finally:
        await relay.kill()
        notify.close()


def test_the_unit_file_has_what_the_operations_issue_asks_for() -> None:
    unit = (ROOT / "systemd" / "relay.service").read_text()
    settings = {line.split("=", 1)[0] for line in unit.splitlines() if "=" in line and not line.startswith("#")}
    for key in (
        "Type",
        "ExecStart",
        "ExecReload",
        "Restart",
        "WatchdogSec",
        "TimeoutStopSec",
        "DynamicUser",
        "StateDirectory",
        "LoadCredential",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "NoNewPrivileges",
        "RestrictAddressFamilies",
        "SystemCallFilter",
    ):
        assert key in settings, key
    assert "Type=notify" in unit and "serve --config /etc/relay/relay.toml" in unit
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
