"""A fault-injecting HTTP/1.1 proxy on 127.0.0.1, between the relay and a receiver.

Each request the relay sends is read whole (headers and ``Content-Length`` body), then met with the next fault
of the script (or ``default``):

    async with FaultProxy(receiver.port) as proxy:
        proxy.script([Fault.blackhole(), Fault.answer(429, {"Retry-After": "30"}), Fault.passthrough()])
        ...  # point the relay at proxy.url("/hook")

- ``passthrough()``: forward to the receiver, relay its answer;
- ``latency(s)``: wait ``s`` seconds, then forward;
- ``reset_request()``: reset the connection (RST) before answering, the request unanswered;
- ``reset_response()``: forward, send the answer's head and half its body, then reset;
- ``blackhole()``: never answer, keep the connection open until the relay gives up on it;
- ``trickle(delay, chunk)``: forward, then send the answer ``chunk`` bytes at a time, ``delay`` seconds apart;
- ``answer(status, headers, body)``: answer by itself (a 3xx, 429 or 5xx), the receiver never sees the request.

The proxy counts what a leak would show: connections open now (``open_connections``), connections it accepted,
upstream connections open now, and its own handler tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ["Fault", "FaultProxy", "Proxied"]


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    delay: float = 0.0
    chunk: int = 1
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def passthrough(cls) -> Fault:
        return cls("pass")

    @classmethod
    def latency(cls, seconds: float) -> Fault:
        return cls("latency", delay=seconds)

    @classmethod
    def reset_request(cls) -> Fault:
        return cls("reset_request")

    @classmethod
    def reset_response(cls) -> Fault:
        return cls("reset_response")

    @classmethod
    def blackhole(cls) -> Fault:
        return cls("blackhole")

    @classmethod
    def trickle(cls, delay: float, chunk: int = 1) -> Fault:
        return cls("trickle", delay=delay, chunk=chunk)

    @classmethod
    def answer(cls, status: int, headers: Mapping[str, str] | None = None, body: bytes = b"") -> Fault:
        return cls("answer", status=status, headers=dict(headers or {}), body=body)


@dataclass(slots=True)
class Proxied:
    """One request the proxy read, the fault it met, and whether its connection has closed since."""

    fault: Fault
    head: bytes
    body: bytes
    connection: int
    closed: bool = False


_REASONS = {200: "OK", 301: "Moved Permanently", 302: "Found", 307: "Temporary Redirect", 429: "Too Many Requests"}


class FaultProxy:
    def __init__(self, upstream_port: int, *, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.default = Fault.passthrough()
        self.requests: list[Proxied] = []
        self.accepted = 0
        self.upstream_open = 0
        self._script: list[Fault] = []
        self._writers: dict[int, asyncio.StreamWriter] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._stopping = asyncio.Event()
        self._arrived = asyncio.Condition()

    # lifecycle

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers.values()):
            writer.transport.abort()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # what tests use

    def url(self, path: str = "/hook") -> str:
        assert self._port is not None, "proxy not started"
        return f"http://127.0.0.1:{self._port}{path}"

    def script(self, faults: Sequence[Fault]) -> None:
        """Meet the next requests with ``faults`` in turn, then ``default``."""
        self._script = list(faults)

    @property
    def open_connections(self) -> int:
        return len(self._writers)

    @property
    def handler_tasks(self) -> int:
        return sum(1 for task in self._handlers if not task.done())

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Proxied]:
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return list(self.requests)

    async def wait_idle(self, timeout: float = 5.0, *, keep_alive: int = 0) -> None:
        """Wait until at most ``keep_alive`` connections are open and every upstream one is closed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.open_connections > keep_alive or self.upstream_open:
            if loop.time() > deadline:
                raise AssertionError(
                    f"{self.open_connections} connection(s) and {self.upstream_open} upstream still open"
                )
            await asyncio.sleep(0.01)

    # serving

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.accepted += 1
        number = self.accepted
        self._writers[number] = writer
        mine: list[Proxied] = []
        try:
            while not self._stopping.is_set():
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                    body = await reader.readexactly(_content_length(head))
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                    return  # the relay closed the connection (between requests, or giving up on one)
                fault = self._script.pop(0) if self._script else self.default
                proxied = Proxied(fault, head, body, number)
                mine.append(proxied)
                async with self._arrived:
                    self.requests.append(proxied)
                    self._arrived.notify_all()
                if not await self._meet(fault, head + body, reader, writer):
                    return
        except (ConnectionError, OSError):
            return
        finally:
            for proxied in mine:
                proxied.closed = True
            self._writers.pop(number, None)
            writer.transport.abort()
            self._handlers.discard(task)

    async def _meet(
        self, fault: Fault, request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request as ``fault`` says; False when the connection is done."""
        if fault.kind == "blackhole":
            with contextlib.suppress(ConnectionError):
                await reader.read()  # until the relay closes its end (or the proxy stops)
            return False
        if fault.kind == "reset_request":
            _reset(writer)
            return False
        if fault.kind == "answer":
            reason = _REASONS.get(fault.status, "Fault")
            lines = [f"HTTP/1.1 {fault.status} {reason}", f"Content-Length: {len(fault.body)}"]
            lines += [f"{name}: {value}" for name, value in fault.headers.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + fault.body)
            await writer.drain()
            return True
        if fault.kind == "latency":
            await asyncio.sleep(fault.delay)
        head, body = await self._forward(request)
        if fault.kind == "reset_response":
            writer.write(head + body[: len(body) // 2])
            await writer.drain()
            await asyncio.sleep(0.05)
            _reset(writer)
            return False
        answer = head + body
        if fault.kind == "trickle":
            for start in range(0, len(answer), fault.chunk):
                writer.write(answer[start : start + fault.chunk])
                await writer.drain()
                await asyncio.sleep(fault.delay)
            return True
        writer.write(answer)
        await writer.drain()
        return True

    async def _forward(self, request: bytes) -> tuple[bytes, bytes]:
        reader, writer = await asyncio.open_connection(*self.upstream)
        self.upstream_open += 1
        try:
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            body = await reader.readexactly(_content_length(head))
            return head, body
        finally:
            self.upstream_open -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
