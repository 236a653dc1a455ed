"""``make bench``: relay's throughput and latency against bare aiohttp baselines, measured in one run.

``python -m tests.bench`` runs every scenario (``scenarios.py``), prints a table (figure, baseline, relay, ratio,
goal) and writes ``var/bench/results.json``. The load generators (``loadgen.py``: ``wrk`` when on PATH, else an
aiohttp client) and the receivers / baseline servers (``receiver.py``) each run in a process of their own.

``--profile`` adds runs with py-spy attached to relay (end-to-end, ingest, steady 1,000/s): flame graphs in
var/bench/profile-*.svg and per-thread, per-function summaries in var/bench/profile-*-summary.txt.
``BENCH_LOADGEN=aiohttp`` forces the fallback load generator. A warning says when other processes were busy
during a scenario.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from relay.config import event_loop_factory

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a bench process's main on the loop relay itself picks (``server.event_loop = "auto"``: uvloop when
    installed), so that the baselines and the receivers are measured on the same footing as relay."""
    with asyncio.Runner(loop_factory=event_loop_factory("auto")) as runner:
        return runner.run(main)
