"""``make bench``: relay's throughput and latency against bare aiohttp baselines, measured in one run.

``python -m tests.bench`` runs every scenario (``scenarios.py``), prints a table (figure, baseline, relay, ratio,
goal) and writes ``var/bench/results.json``. The load generators (``loadgen.py``: ``wrk`` when on PATH, else an
aiohttp client) and the receivers / baseline servers (``receiver.py``) each run in a process of their own.

``--profile`` adds runs with py-spy attached to relay (end-to-end, ingest, steady 1,000/s): flame graphs in
var/bench/profile-*.svg and per-thread, per-function summaries in var/bench/profile-*-summary.txt.
``BENCH_LOADGEN=aiohttp`` forces the fallback load generator; ``--event-loop asyncio`` (``BENCH_EVENT_LOOP``) runs
relay and every bench process on asyncio's own loop instead of uvloop. A warning says when other processes were busy
during a scenario.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

from relay.config import event_loop_factory, uvloop_installed

T = TypeVar("T")


def event_loop() -> str:
    """The ``server.event_loop`` of the run: relay and every bench process use the same one."""
    return os.environ.get("BENCH_EVENT_LOOP", "auto")


def event_loop_name() -> str:
    return "uvloop" if event_loop() == "uvloop" or (event_loop() == "auto" and uvloop_installed()) else "asyncio"


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a bench process's main on the loop relay runs on, so that the baselines and the receivers are
    measured on the same footing as relay."""
    with asyncio.Runner(loop_factory=event_loop_factory(event_loop())) as runner:
        return runner.run(main)
