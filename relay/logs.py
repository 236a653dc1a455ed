"""Structured logs: one JSON object per line on stdout (or a console rendering for humans).

relay's own events go through structlog; the records of the libraries under it (aiohttp, asyncio, aiosqlite) and
Python's warnings go through the standard ``logging`` module, whose root handler renders them the same way, so
that no plain-text line ever reaches stdout. Under systemd, when stdout is the journal's stream, every line starts
with its syslog priority (``<3>`` error, ``<4>`` warning, ``<6>`` info, ``<7>`` debug: sd-daemon(3)) so that the
journal records it at that priority.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

import orjson
import structlog
from structlog.types import EventDict, Processor, WrappedLogger

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# syslog priorities by level; a level without one (a library's own) is logged as a notice.
PRIORITIES = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}
NOTICE = 5
# The libraries' debug records quote what they handle (aiosqlite: each statement with its parameters, event bodies
# and webhook secrets included): they are never logged, whatever --log-level says.
LIBRARY_LEVEL = logging.INFO


def _orjson_dumps(value: object, default: object = None) -> str:
    return orjson.dumps(value, default=str).decode()


def journal_stream(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` is connected to the journal: systemd sets ``JOURNAL_STREAM=<device>:<inode>`` for the
    stream it gives a service's stdout and stderr, and a process checks its own descriptor against it (the variable
    is inherited by children whose output may go elsewhere)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdecimal() and inode.isdecimal()):
        return False
    try:
        stat = os.fstat(stream.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return False
    return (stat.st_dev, stat.st_ino) == (int(device), int(inode))


class PriorityPrefix:
    """A renderer's line with the sd-daemon priority prefix of its level in front: ``<6>{"event": …}``."""

    def __init__(self, renderer: Processor) -> None:
        self.renderer = renderer

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        priority = PRIORITIES.get(str(event_dict.get("level", "")), NOTICE)
        rendered = self.renderer(logger, name, event_dict)
        return f"<{priority}>{rendered.decode() if isinstance(rendered, bytes) else rendered}"


def configure_logging(
    level: str = "info",
    fmt: str = "json",
    stream: TextIO | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> None:
    stream = stream or sys.stdout
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    )
    if journal_stream(stream, environ):
        renderer = PriorityPrefix(renderer)
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    # The standard library's records: the same fields, plus the logger's name ("aiohttp.server", "asyncio").
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.processors.add_log_level, timestamper],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(LEVELS[level], LIBRARY_LEVEL))
    logging.captureWarnings(True)  # warnings.warn(...) as a "py.warnings" record, not a bare line on stderr
