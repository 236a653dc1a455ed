"""The management commands and Standard Webhooks v1a, as subprocesses against a running ``relay serve``: ``webhooks
add --signature standard-ed25519`` prints the ``whsk_`` key once and the ``whpk_`` public key, ``show`` the public
key only, and ``rotate-secret --signature standard-ed25519`` moves a ``whsec_`` webhook over, its test send then
carrying a ``v1a,`` and a ``v1,`` entry that each verify."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks.webhooks import Webhook as StandardVerifier

from tests.acceptance.test_cli_manage import cli, relay
from tests.support.process import RelayProcess
from tests.support.receiver import Receiver

__all__ = ["relay"]  # the running relay serve, a fixture of test_cli_manage


def fields(out: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)}


def verify_v1a(public_key: str, headers: dict[str, str], body: bytes) -> None:
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key.removeprefix("whpk_"), validate=True))
    [entry] = [e for e in headers["webhook-signature"].split(" ") if e.startswith("v1a,")]
    message = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    key.verify(base64.b64decode(entry.removeprefix("v1a,")), message)


async def test_ed25519_webhooks_and_a_migration_from_the_command_line(relay: RelayProcess, receiver: Receiver) -> None:
    code, out, err = await cli(relay, "webhooks", "add", receiver.url("/ed"), "--signature", "standard-ed25519")
    assert code == 0, err
    added = fields(out)
    assert added["signature"] == "standard-ed25519" and added["secret"].startswith("whsk_")
    assert added["public_key"].startswith("whpk_")
    code, out, err = await cli(relay, "webhooks", "show", added["id"])
    assert code == 0 and fields(out)["public_key"] == added["public_key"] and added["secret"] not in out

    code, out, err = await cli(relay, "webhooks", "add", receiver.url("/moving"))
    assert code == 0, err
    old = fields(out)["secret"]
    webhook_id = fields(out)["id"]
    code, out, err = await cli(
        relay, "webhooks", "rotate-secret", webhook_id, "--signature", "standard-ed25519", "--overlap", "1h"
    )
    assert code == 0, err
    new, public = fields(out)["secret"], fields(out)["public key (for receivers)"]
    assert new.startswith("whsk_") and public.startswith("whpk_") and "previous secret also signs" in out

    code, out, err = await cli(relay, "webhooks", "test", webhook_id)
    assert code == 0, err
    [request] = receiver.requests_to("/moving")
    headers = dict(request.headers)
    assert [e.split(",")[0] for e in headers["webhook-signature"].split(" ")] == ["v1a", "v1"]
    StandardVerifier(old).verify(request.body, headers)
    verify_v1a(public, headers, request.body)
