"""README.md's snippets run: the Python client example against a stub relay, and the four signature verifiers
(Python with relay.verify, Python with standardwebhooks, Node.js, Go) against requests signed by relay's own
signing code, the headers and body exactly as a delivery sends them."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.models import Event, SignatureScheme
from relay.render import envelope_bytes
from relay.signing import new_secret, signature_headers
from tests.support.readme_snippets import DRIVERS, ensure_tool, snippet
from tests.support.stub_relay import StubRelay

SECRET = new_secret()  # the receiver's: standard signatures use its key, hmac-sha256 ones its text
OTHER = new_secret()
EVENT = Event(
    id="evt_01hx4k0s6y2c8f3q9w7e5r1t0z",
    type="consent.created",
    created_at="2024-01-15T10:35:00Z",
    data=orjson.dumps({"subject_email": "zoë@example.com", "purposes": [{"id": "marketing", "granted": True}]}),
    ingested_at=0.0,
)
BODY = envelope_bytes(EVENT)


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    scheme: str
    secret: str
    headers: dict[str, str]
    body: bytes
    authentic: bool

    def line(self) -> str:
        body = base64.b64encode(self.body).decode()
        return json.dumps({"scheme": self.scheme, "secret": self.secret, "headers": self.headers, "body": body})


def delivery(scheme: SignatureScheme, secrets: list[str], *, body: bytes = BODY, age: int = 0) -> dict[str, str]:
    """The headers of a delivery attempt, signed as relay's delivery code signs them."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "relay/0.1.0",
        "X-Event-ID": EVENT.id,
        "X-Event-Type": EVENT.type,
        "X-Delivery-Attempt": "1",
        **signature_headers(
            scheme, secrets, event_id=EVENT.id, webhook_id="whk_crm", timestamp=int(time.time()) - age, body=body
        ),
    }


def cases() -> list[Case]:
    standard, hmac_sha256 = SignatureScheme.STANDARD, SignatureScheme.HMAC_SHA256
    signed = delivery(standard, [SECRET])
    hmac_signed = delivery(hmac_sha256, [SECRET])
    return [
        Case("standard", "standard", SECRET, signed, BODY, True),
        Case("standard, rotating", "standard", SECRET, delivery(standard, [OTHER, SECRET]), BODY, True),
        Case("standard, bare base64 secret", "standard", SECRET.removeprefix("whsec_"), signed, BODY, True),
        Case("standard, tampered", "standard", SECRET, signed, BODY.replace(b"true", b"false"), False),
        Case("standard, another secret", "standard", SECRET, delivery(standard, [OTHER]), BODY, False),
        Case("standard, 10 minutes old", "standard", SECRET, delivery(standard, [SECRET], age=600), BODY, False),
        Case("standard, 10 minutes ahead", "standard", SECRET, delivery(standard, [SECRET], age=-600), BODY, False),
        Case(
            "standard, unsigned",
            "standard",
            SECRET,
            {k: v for k, v in signed.items() if k != "webhook-signature"},
            BODY,
            False,
        ),
        Case("hmac-sha256", "hmac-sha256", SECRET, hmac_signed, BODY, True),
        Case("hmac-sha256, tampered", "hmac-sha256", SECRET, hmac_signed, BODY + b" ", False),
        Case("hmac-sha256, another secret", "hmac-sha256", OTHER, hmac_signed, BODY, False),
        Case(
            "hmac-sha256, 10 minutes old",
            "hmac-sha256",
            SECRET,
            delivery(hmac_sha256, [SECRET], age=600),
            BODY,
            False,
        ),
        Case(
            "hmac-sha256, no timestamp",
            "hmac-sha256",
            SECRET,
            {k: v for k, v in hmac_signed.items() if k != "X-Timestamp"},
            BODY,
            False,
        ),
    ]


def check(verdicts: list[str], given: list[Case]) -> None:
    assert len(verdicts) == len(given), verdicts
    wrong = [
        f"{case.name}: {verdict!r}, expected {case.authentic}"
        for case, verdict in zip(given, verdicts, strict=True)
        if (verdict == "true") is not case.authentic or verdict.startswith("error")
    ]
    assert not wrong, wrong


def load_python(name: str, tmp_path: Path) -> Any:
    path = tmp_path / f"{name.replace('-', '_')}.py"
    path.write_text(snippet(name), encoding="utf-8")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(command: list[str], cwd: Path, given: list[Case], *, timeout: float = 60) -> list[str]:
    proc = subprocess.run(
        command,
        cwd=cwd,
        input="".join(case.line() + "\n" for case in given),
        capture_output=True,
        encoding="utf-8",
        timeout=timeout,
        check=False,
        env={**os.environ, "GOTOOLCHAIN": "local", "GOPROXY": "off"},  # go: the standard library only
    )
    assert proc.returncode == 0, f"{' '.join(command)} exited {proc.returncode}: {proc.stderr}"
    return proc.stdout.splitlines()


@pytest.mark.parametrize("name", ["verify-python", "verify-python-standardwebhooks"])
def test_python_verifiers(name: str, tmp_path: Path) -> None:
    module = load_python(name, tmp_path)
    given = cases()
    verdicts = [str(module.from_relay(c.secret, c.headers, c.body, c.scheme)).lower() for c in given]
    check(verdicts, given)


def test_node_verifier(tmp_path: Path) -> None:
    node = ensure_tool("node", "nodejs")
    script = tmp_path / "verify.cjs"
    script.write_text(snippet("verify-node") + (DRIVERS / "driver.cjs").read_text(), encoding="utf-8")
    given = cases()
    check(run([node, str(script)], tmp_path, given), given)


def test_go_verifier(tmp_path: Path) -> None:
    go = ensure_tool("go", "golang-go")
    (tmp_path / "verify.go").write_text(snippet("verify-go"), encoding="utf-8")
    shutil.copy(DRIVERS / "driver.go", tmp_path / "driver.go")
    gofmt = shutil.which("gofmt") or str(Path(go).resolve().with_name("gofmt"))
    unformatted = subprocess.run([gofmt, "-l", "verify.go"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert unformatted.stdout == "" and unformatted.returncode == 0, "README's Go snippet is not gofmt-formatted"
    given = cases()
    verdicts = run([go, "run", "verify.go", "driver.go"], tmp_path, given, timeout=600)
    check([verdict.partition(":")[0] for verdict in verdicts], given)


async def test_python_client_example() -> None:
    code = snippet("client-python")
    assert 'Client("http://127.0.0.1:8080", "dev-key")' in code
    async with StubRelay() as stub:
        await asyncio.to_thread(exec, code.replace("http://127.0.0.1:8080", stub.url), {"__name__": "example"})
    assert len(stub.stored) == 2501
    assert [len(posted.events) for posted in stub.posted] == [1, 1000, 1000, 500]
