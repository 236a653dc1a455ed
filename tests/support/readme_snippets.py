"""README.md's code snippets, for the tests that run them, and the tools those need.

A snippet is the fenced block right after an HTML comment that names it:

    <!-- snippet: verify-node -->
    ```js
    …
    ```
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
DRIVERS = Path(__file__).with_name("snippet_drivers")
_SNIPPET = re.compile(r"<!-- snippet: (?P<name>[\w.-]+) -->\n```[\w-]*\n(?P<code>.*?)\n```", re.DOTALL)


def snippet(name: str) -> str:
    """The code of README's snippet ``name``; the test fails when there is none."""
    found = {m["name"]: m["code"] + "\n" for m in _SNIPPET.finditer(README.read_text(encoding="utf-8"))}
    if name not in found:
        pytest.fail(f"README.md has no `<!-- snippet: {name} -->` before a fenced block (it has {sorted(found)})")
    return found[name]


def ensure_tool(command: str, package: str) -> str:
    """The path of ``command``, installing Debian's ``package`` with apt-get when it is missing and we are root.

    Never skips: a tool that cannot be installed fails the test, saying how to install it.
    """
    found = shutil.which(command)
    if found is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", package]
        if subprocess.run(install, env=env, capture_output=True, timeout=900, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=900, check=False)
            subprocess.run(install, env=env, capture_output=True, timeout=900, check=False)
        found = shutil.which(command)
    if found is None:
        pytest.fail(
            f"`{command}` is not on PATH and could not be installed, and README's snippet needs it: "
            f"run `make tools` as root, or `apt-get install -y {package}`",
            pytrace=False,
        )
    return found
