"""Run ConsentProof's Node.js ``verifyWebhookSignature`` (verbatim in verify-webhook.mjs) from Python.

The guide's Express handler passes ``req.body.toString()``: the raw body as a UTF-8 string. Each case is sent
the same way, so a ``True`` here means a ConsentProof receiver accepts relay's ``X-Signature`` as it is.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("verify-webhook.mjs")
NODE_MISSING = (
    "node is not on PATH: the ConsentProof verifier (seed 001) is Node.js code "
    "(Debian/Ubuntu: `apt-get install -y nodejs`)"
)


def node_verify_raw(cases: list[tuple[bytes, str, str]]) -> list[str]:
    """Each case is (body, X-Signature value, secret); answers "true", "false" or "error: …" per case."""
    node = shutil.which("node")
    if node is None:
        pytest.skip(NODE_MISSING)
    lines = [
        json.dumps({"payload": body.decode("utf-8"), "signature": signature, "secret": secret})
        for body, signature, secret in cases
    ]
    proc = subprocess.run(
        [node, str(SCRIPT)],
        input="".join(line + "\n" for line in lines),
        capture_output=True,
        encoding="utf-8",
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"node {SCRIPT.name} exited {proc.returncode}: {proc.stderr.strip()}")
    verdicts = proc.stdout.splitlines()
    if len(verdicts) != len(cases):
        raise RuntimeError(f"node answered {len(verdicts)} lines for {len(cases)} cases: {proc.stdout!r}")
    return verdicts


def node_verify(cases: list[tuple[bytes, str, str]]) -> list[bool]:
    """True where the seed's function returns true; a thrown error (e.g. length mismatch) counts as False."""
    return [verdict == "true" for verdict in node_verify_raw(cases)]
