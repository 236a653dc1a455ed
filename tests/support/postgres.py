"""A private PostgreSQL server for the test process: its own data directory, port and superuser password.

    server = PostgresServer()
    server.start()                       # initdb on first use, then pg_ctl start
    url = await server.create_database() # postgresql://postgres:PASSWORD@127.0.0.1:PORT/test_...
    ...
    await server.stop_async()            # an outage: connections fail ...
    await server.start_async()           # ... and the same URL works again (same data directory and port)
    await server.drop_database(name)
    server.cleanup()                     # fast shutdown, then the directory is removed

The server binaries come from Debian's packages (/usr/lib/postgresql/<newest>/bin): ``make tools`` installs
``postgresql`` when they are missing. A test that asks for PostgreSQL without them fails with that advice; it is
never skipped.

PostgreSQL refuses to run as root. As root (as on the project's machines and in CI), initdb and pg_ctl run as the
``postgres`` OS user, which Debian's package creates, in a fresh directory under the system temporary directory
that the user owns; otherwise they run as the current user.

The cluster authenticates every connection, local ones included, with a password (scram-sha-256), listens on
127.0.0.1 only, on a free port picked per process, and keeps its Unix socket inside its own directory. fsync and
synchronous_commit stay at their defaults (on). The server writes its log to ``server.log`` in the directory; a
start that fails raises ``PostgresError`` with the log's tail.

Fixtures (``pytest_plugins = ["tests.support.postgres"]`` in the root ``tests/conftest.py``):

- ``postgres_server``: one server per test process (so one per pytest-xdist worker), started by the first test
  that asks for it and stopped and removed at the end of the session.
- ``postgres_url``: the URL of a fresh database on it, dropped after the test. It starts the server again first
  if an earlier test left it stopped.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import quote, unquote, urlsplit

import asyncpg  # type: ignore[import-untyped]  # no stubs or py.typed (asyncpg-stubs exists)
import pytest
import pytest_asyncio

from relay.store.postgres import PostgresStore

__all__ = [
    "PostgresError",
    "PostgresServer",
    "database_name",
    "find_bindir",
    "postgres_server",
    "postgres_url",
    "reap_stale_servers",
]

SERVER_ROOT = Path("/usr/lib/postgresql")
INSTALL_HINT = "run `make tools` (it installs Debian's postgresql package) or `apt-get install postgresql`"
SUPERUSER = "postgres"
OS_USER_WHEN_ROOT = "postgres"  # Debian's postgresql package creates it
HOST = "127.0.0.1"
START_TIMEOUT = 60  # seconds; pg_ctl waits this long for the server to accept connections
BIND_RETRIES = 3  # a freshly picked free port can be taken by another process before the server binds it
LOG_TAIL_LINES = 40
DIR_PREFIX = "relay-pg"  # each server's directory: <tmp>/relay-pg[-name]-<xdist worker or main>-<pid>-<random>
_DIR_NAME = re.compile(rf"{DIR_PREFIX}(?:-[\w-]+)?-(?P<pid>\d+)-\w+")

# Appended to the cluster's postgresql.conf once, after initdb; the port is given to each pg_ctl start instead.
_SETTINGS = {
    "listen_addresses": HOST,
    "shared_buffers": "32MB",
    "max_connections": "100",
    "logging_collector": "off",
    "log_line_prefix": "%m [%p] ",
    "log_timezone": "UTC",
    "timezone": "UTC",
}


class PostgresError(RuntimeError):
    """The server could not be found, set up, started or stopped; the message says why."""


def find_bindir(root: Path = SERVER_ROOT) -> Path:
    """The bin directory of the newest PostgreSQL server installed under ``root`` (Debian's layout)."""
    candidates = [pg_ctl.parent for pg_ctl in root.glob("*/bin/pg_ctl")]
    if not candidates:
        raise PostgresError(
            f"no PostgreSQL server found (no {root}/*/bin/pg_ctl; a psql client alone is not enough): " + INSTALL_HINT
        )

    def version(bindir: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name)) or (0,)

    return max(candidates, key=version)


def reap_stale_servers(parent: Path | None = None) -> list[Path]:
    """Stop and remove the servers of earlier test processes that died before their teardown (kill -9, a timeout).

    A directory is stale when the process named in it (``relay-pg-<worker>-<pid>-...``) no longer exists; its
    postmaster, if it still runs on that directory, gets an immediate shutdown. Returns the directories removed.
    """
    removed = []
    for directory in (parent or Path(tempfile.gettempdir())).glob(f"{DIR_PREFIX}-*"):
        match = _DIR_NAME.fullmatch(directory.name)
        if match is None or not directory.is_dir() or _alive(int(match["pid"])):
            continue
        _kill_postmaster(directory / "data")
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _kill_postmaster(data_dir: Path) -> None:
    """An immediate shutdown of the postmaster running on ``data_dir``, if one does (and is ours to signal)."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if os.fsencode(str(data_dir)) not in _cmdline(pid):  # gone, or the pid now belongs to something else
        return
    try:
        os.kill(pid, signal.SIGQUIT)
    except OSError:
        return
    deadline = time.monotonic() + 10
    while _cmdline(pid) and time.monotonic() < deadline:  # an exited one (a zombie until reaped) has none
        time.sleep(0.05)


def _cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    except OSError:
        return []


def database_name(url: str) -> str:
    """The database a ``postgresql://`` URL names."""
    return unquote(urlsplit(url).path.lstrip("/"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _conf_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory of its own; see the module docstring.

    ``start``/``stop``/``restart`` block (pg_ctl waits for the server); async tests use ``start_async`` and
    ``stop_async``, which run them in a thread so the event loop (and a relay in it) keeps running meanwhile.
    """

    def __init__(self, *, bindir: Path | None = None, name: str = DIR_PREFIX) -> None:
        self.bindir = bindir if bindir is not None else find_bindir()
        self.user = SUPERUSER
        self.password = secrets.token_urlsafe(24)
        self.port = _free_port()
        self._name = name
        self._run_as = self._os_user()
        self._dir: Path | None = None
        self._port_settled = False  # once a start has bound the port, later starts must keep it (same URLs)
        self.running = False

    # -- paths ------------------------------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise PostgresError("the server has no directory yet: start() makes it")
        return self._dir

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def socket_dir(self) -> Path:
        return self.directory / "socket"

    @property
    def log_file(self) -> Path:
        return self.directory / "server.log"

    # -- URLs ---------------------------------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        """``postgresql://USER:PASSWORD@127.0.0.1:PORT/DATABASE`` for this server."""
        user, password = quote(self.user, safe=""), quote(self.password, safe="")
        return f"postgresql://{user}:{password}@{HOST}:{self.port}/{quote(database, safe='')}"

    # -- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server (making the cluster on first use); returns once it accepts connections."""
        if self.running:
            return
        if self._dir is None:
            self._init_cluster()
        attempts = 1 if self._port_settled else BIND_RETRIES
        for attempt in range(1, attempts + 1):
            log_start = self._log_size()
            try:
                self._pg_ctl("start", "-w", "-t", str(START_TIMEOUT), "-l", str(self.log_file), "-o", f"-p {self.port}")
            except PostgresError:
                self._stop_quietly()  # pg_ctl may have given up on a server that is still starting
                if attempt < attempts and self._bind_failed(since=log_start):
                    self.port = _free_port()
                    continue
                raise
            break
        self._port_settled = True
        self.running = True

    def stop(self) -> None:
        """Fast shutdown: open sessions are disconnected, nothing is lost. The data directory and port stay."""
        if not self.running:
            return
        try:
            self._pg_ctl("stop", "-w", "-t", str(START_TIMEOUT), "-m", "fast")
        except PostgresError:
            if self._is_running():
                raise
            # it had already gone (crashed or killed): stopped is what was asked for
        self.running = False

    def restart(self) -> None:
        self.stop()
        self.start()

    async def start_async(self) -> None:
        await asyncio.to_thread(self.start)

    async def stop_async(self) -> None:
        await asyncio.to_thread(self.stop)

    async def restart_async(self) -> None:
        await asyncio.to_thread(self.restart)

    def cleanup(self) -> None:
        """Stop the server if it runs and remove its directory. Safe to call more than once."""
        try:
            if self.running:
                self.stop()
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None
                self._port_settled = False

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    # -- databases ----------------------------------------------------------------------------------------------

    async def create_database(self, prefix: str = "test") -> str:
        """Create a fresh, uniquely named database and return its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        await self._maintenance(f'CREATE DATABASE "{name}"')
        return self.url(name)

    async def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whatever is still connected to it; a missing one is fine."""
        await self._maintenance(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def _maintenance(self, statement: str) -> None:
        conn = await asyncpg.connect(self.url("postgres"), timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    # -- internals ----------------------------------------------------------------------------------------------

    @staticmethod
    def _os_user() -> str | None:
        """The OS user to run the server as: ``postgres`` when we are root, else ``None`` (ourselves)."""
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(OS_USER_WHEN_ROOT)
        except KeyError:
            raise PostgresError(
                f"running as root, and PostgreSQL refuses to run as root, but there is no {OS_USER_WHEN_ROOT!r} "
                f"OS user to run it as: {INSTALL_HINT} (the package creates the user)"
            ) from None
        return OS_USER_WHEN_ROOT

    def _init_cluster(self) -> None:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        directory = Path(tempfile.mkdtemp(prefix=f"{self._name}-{worker}-{os.getpid()}-"))
        self._dir = directory
        pwfile = directory / "pwfile"
        pwfile.write_text(self.password + "\n")
        self.socket_dir.mkdir()
        if self._run_as is not None:
            for path in (directory, pwfile, self.socket_dir):
                shutil.chown(path, user=self._run_as, group=self._run_as)
        try:
            self._run(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    f"--username={self.user}",
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                ],
                "initdb",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        settings = {**_SETTINGS, "unix_socket_directories": str(self.socket_dir)}
        lines = "".join(f"{key} = {_conf_value(value)}\n" for key, value in settings.items())
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/support/postgres.py\n" + lines)

    def _is_running(self) -> bool:
        try:
            self._pg_ctl("status")
        except PostgresError:
            return False  # pg_ctl status exits 3 when no server runs on the data directory
        return True

    def _stop_quietly(self) -> None:
        with contextlib.suppress(PostgresError):
            self._pg_ctl("stop", "-w", "-t", str(START_TIMEOUT), "-m", "immediate")

    def _pg_ctl(self, action: str, *args: str) -> None:
        self._run([str(self.bindir / "pg_ctl"), action, "-D", str(self.data_dir), *args], f"pg_ctl {action}")

    def _run(self, argv: Sequence[str], what: str) -> None:
        if self._run_as is not None:
            argv = ["runuser", "-u", self._run_as, "--", *argv]
        # PG* variables (PGDATA, PGPORT, ...) from the caller's environment would steer the tools elsewhere;
        # the C locale keeps the server's messages in English.
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env["LC_ALL"] = "C"
        started = time.monotonic()
        try:
            result = subprocess.run(
                argv,
                cwd=self.directory,  # the postgres user may not be able to enter ours
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=START_TIMEOUT + 30,
                start_new_session=True,  # a Ctrl-C or a test's signal to our process group does not reach it
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PostgresError(self._failure(what, argv, str(exc), time.monotonic() - started)) from exc
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            detail = f"exit code {result.returncode}" + (f":\n{output}" if output else "")
            raise PostgresError(self._failure(what, argv, detail, time.monotonic() - started))

    def _failure(self, what: str, argv: Sequence[str], detail: str, elapsed: float) -> str:
        message = f"PostgreSQL {what} failed after {elapsed:.1f}s ({shlex.join(argv)}): {detail}"
        tail = self._log_tail()
        if tail:
            message += f"\n--- last lines of {self.log_file} ---\n{tail}"
        return message

    def _log_size(self) -> int:
        try:
            return self.log_file.stat().st_size
        except OSError:
            return 0

    def _log_text(self, since: int = 0) -> str:
        if self._dir is None:
            return ""
        try:
            with self.log_file.open("rb") as log:
                log.seek(since)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def _log_tail(self) -> str:
        return "\n".join(self._log_text().splitlines()[-LOG_TAIL_LINES:])

    def _bind_failed(self, *, since: int) -> bool:
        """Whether the server's log, from byte ``since`` on, says its port was taken."""
        text = self._log_text(since)
        return "could not bind" in text or "Address already in use" in text


# -- pytest fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One running PostgreSQL server for this test process; stopped and removed at the end of the session.

    A test that stops it starts it again before it ends (``postgres_url`` does so for the next test anyway).
    """
    try:
        server = PostgresServer()
    except PostgresError as exc:
        pytest.fail(str(exc), pytrace=False)
    reap_stale_servers()
    atexit.register(server.cleanup)  # should the session end without its teardown
    try:
        server.start()
    except PostgresError as exc:
        server.cleanup()
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.cleanup()
        atexit.unregister(server.cleanup)


@pytest_asyncio.fixture
async def postgres_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """The URL of a fresh database on ``postgres_server``, dropped after the test."""
    await postgres_server.start_async()  # an earlier test may have left it stopped
    url = await postgres_server.create_database()
    try:
        yield url
    finally:
        await postgres_server.start_async()  # this test may have stopped it
        await postgres_server.drop_database(database_name(url))


@pytest_asyncio.fixture
async def store_pair(postgres_url: str) -> AsyncIterator[list[PostgresStore]]:
    """Two relays' stores on one fresh database (each its own pool and owner), opened at once; closed after."""
    opened = [PostgresStore(postgres_url, pool_size=4) for _ in range(2)]
    await asyncio.gather(*(store.open() for store in opened))
    try:
        yield opened
    finally:
        for store in opened:
            await store.close()
