"""Parsing of the config file's human units: durations, sizes and rates."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")
_RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """``"250ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"7d"`` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError('must be a duration such as "30s" or a number of seconds')
    if isinstance(value, int | float):
        seconds = _as_float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ValueError(f'must be a duration such as "30s" or a number of seconds, not {value!r}')
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("must be a finite, non-negative duration")
    return seconds


def parse_size(value: object) -> int:
    """A number of bytes, or ``"512KiB"``, ``"1MiB"``, ``"10MB"``."""
    if isinstance(value, bool):
        raise ValueError('must be a size such as "1MiB" or a number of bytes')
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        scaled = float(match.group(1)) * _SIZE_UNITS[match.group(2)]
        if not math.isfinite(scaled):
            raise ValueError("must be a finite size")
        size = int(scaled)
    else:
        raise ValueError(f'must be a size such as "1MiB" or a number of bytes, not {value!r}')
    if size <= 0:
        raise ValueError("must be a positive size")
    return size


def parse_rate(value: object) -> float:
    """``"50/s"``, ``"600/m"``, ``"1000/h"`` or a number per second -> attempts per second."""
    if isinstance(value, bool):
        raise ValueError('must be a rate such as "50/s"')
    if isinstance(value, int | float):
        rate = _as_float(value)
    elif isinstance(value, str) and (match := _RATE.match(value)):
        rate = float(match.group(1)) / _RATE_UNITS[match.group(2)]
    else:
        raise ValueError(f'must be a rate such as "50/s", "600/m" or "1000/h", not {value!r}')
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError("must be a positive rate")
    return rate


def _as_float(value: int | float) -> float:
    """A number as a float; an integer too large for one (TOML integers have no bound) is infinite."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf
