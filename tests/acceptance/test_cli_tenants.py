"""The tenant commands and the ``--tenant`` options (CONTRACT §9) as a subprocess against a running ``relay serve``:
keys shown once and refused once revoked, the admin views, portal links, offboarding, and one error of each."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from tests.support.process import RelayProcess, run_cli, run_cli_json, run_relay, serving, write_config
from tests.support.receiver import Receiver

KEY = "cli-tenants-key"
PUBLIC_URL = "https://relay.example.com"
BAD_TENANT = "relay: 400 validation_error: tenant: must be 1-64 characters of [A-Za-z0-9_.:-]"


def config_text(tmp_path: Path, receiver: Receiver) -> str:
    return f"""
[server]
listen = "127.0.0.1:0"
api_keys = ["env:CLI_TEST_KEY"]

[storage]
path = "{tmp_path / "relay.db"}"

[delivery]
allow_http = true
allow_private_networks = true
retry_schedule = ["0s", "1h"]

[ui]
public_url = "{PUBLIC_URL}"

[[webhooks]]
id = "platform"
url = "{receiver.url("/platform")}"
events = ["consent.*"]

[[webhooks]]
id = "globex-crm"
url = "{receiver.url("/globex")}"
events = ["consent.*"]
tenant = "globex"
"""


@pytest_asyncio.fixture
async def relay(tmp_path: Path, receiver: Receiver) -> AsyncIterator[RelayProcess]:
    async with serving(
        write_config(tmp_path / "relay.toml", config_text(tmp_path, receiver)), {"CLI_TEST_KEY": KEY}
    ) as r:
        yield r


async def cli(relay: RelayProcess, *args: str, key: str = KEY) -> tuple[int, str, str]:
    return await run_cli(relay, *args, key=key)


async def cli_json(relay: RelayProcess, *args: str, key: str = KEY) -> Any:
    return await run_cli_json(relay, *args, key=key)


def pairs(out: str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in out.splitlines()) if v}


async def test_keys_create_list_revoke(relay: RelayProcess) -> None:
    code, out, err = await cli(relay, "tenants", "keys", "create", "acme", "--description", "Acme CRM")
    assert code == 0, err
    assert out.splitlines()[-1] == "Save the key now - it will not be shown again."
    created = pairs(out)
    key_id, key = created["id"], created["key"]
    assert key_id.startswith("key_") and key.startswith("rk_") and created["tenant"] == "acme"
    assert created["description"] == "Acme CRM"

    code, out, err = await cli(relay, "webhooks", "list", key=key)  # the tenant's key works, and sees only its own
    assert (code, out) == (0, "no webhooks\n"), err

    code, out, err = await cli(relay, "tenants", "keys", "list", "acme")
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split() == ["ID", "PREFIX", "CREATED", "LAST_USED", "DESCRIPTION"]
    assert row.split()[:2] == [key_id, key[:11] + "…"] and row.split()[3] != "never" and row.endswith("Acme CRM")
    assert key not in out
    listed = await cli_json(relay, "tenants", "keys", "list", "acme")
    assert [k["id"] for k in listed["data"]] == [key_id] and "key" not in listed["data"][0]

    code, out, err = await cli(relay, "tenants", "keys", "revoke", "acme", key_id)
    assert code == 0 and out.startswith(f"revoked key {key_id} of tenant acme"), err
    code, out, err = await cli(relay, "webhooks", "list", key=key)
    assert code == 1 and "refused the API key (401 unauthorized)" in err
    code, out, err = await cli(relay, "tenants", "keys", "list", "acme")  # no keys, no webhooks: no tenant
    assert code == 1 and err.strip().startswith("relay: 404 not_found: no tenant 'acme'")

    code, out, err = await cli(relay, "tenants", "keys", "create", "bad tenant!")
    assert (code, out, err.strip()) == (1, "", BAD_TENANT)
    code, out, err = await cli(relay, "tenants", "keys", "revoke", "acme", key_id)
    assert code == 1 and err.strip() == f"relay: 404 not_found: tenant 'acme' has no key with id '{key_id}'"


async def test_tenant_keys_cannot_manage_tenants(relay: RelayProcess) -> None:
    key = (await cli_json(relay, "tenants", "keys", "create", "acme"))["data"]["key"]
    code, out, err = await cli(relay, "tenants", "list", key=key)
    assert code == 1 and out == "" and err.startswith("relay: 403 forbidden: this route needs an admin key")
    code, _, err = await cli(relay, "events", "send", "consent.created", "--data", "{}", "--tenant", "globex", key=key)
    assert code == 1 and err.startswith('relay: 400 validation_error: tenant: must be "acme"')
    code, out, err = await cli(relay, "events", "send", "consent.created", "--data", "{}", key=key)
    assert code == 0 and out.endswith(": 1 delivery\n"), err  # its tenant's: the platform-wide webhook only


async def test_tenant_views_portal_and_offboarding(relay: RelayProcess, receiver: Receiver) -> None:
    receiver.script("/acme", [500])  # acme's delivery stays pending, its retry an hour away
    code, out, err = await cli(
        relay, "webhooks", "add", receiver.url("/acme"), "--event", "consent.*", "--tenant", "acme"
    )
    assert code == 0 and pairs(out)["tenant"] == "acme", err
    webhook_id = pairs(out)["id"]

    code, out, err = await cli(relay, "events", "send", "consent.created", "--data", "{}", "--tenant", "acme")
    assert code == 0 and out.endswith(": 2 deliveries\n"), err  # acme's webhook and the platform-wide one
    acme_event = out.split()[1].rstrip(":")
    globex = await cli_json(relay, "events", "send", "consent.created", "--data", "{}", "--tenant", "globex")
    assert globex["data"]["deliveries"] == 2
    untenanted = await cli_json(relay, "events", "send", "consent.created", "--data", "{}")
    assert untenanted["data"]["deliveries"] == 1  # the platform-wide webhook only
    await receiver.wait_for(5)

    code, out, err = await cli(relay, "webhooks", "list", "--tenant", "acme")
    assert code == 0 and [row.split()[0] for row in out.splitlines()[1:]] == [webhook_id], err
    code, out, err = await cli(relay, "webhooks", "show", webhook_id)
    assert code == 0 and pairs(out)["tenant"] == "acme"
    events = await cli_json(relay, "events", "list", "--tenant", "acme")
    assert [(e["id"], e["tenant"]) for e in events["data"]] == [(acme_event, "acme")]
    code, out, err = await cli(relay, "events", "list", "--tenant", "globex")
    assert code == 0 and [row.split()[0] for row in out.splitlines()[1:]] == [globex["data"]["id"]], err
    code, out, err = await cli(relay, "events", "show", acme_event)
    assert code == 0 and pairs(out)["tenant"] == "acme"
    deliveries = await cli_json(relay, "deliveries", "list", "--tenant", "acme")
    assert webhook_id in {d["webhook_id"] for d in deliveries["data"]}
    assert not {d["webhook_id"] for d in deliveries["data"]} & {"globex-crm"}
    code, out, err = await cli(relay, "deliveries", "list", "--tenant", "acme", "--webhook", webhook_id)
    assert code == 0 and [row.split()[1] for row in out.splitlines()[1:]] == [acme_event], err

    code, out, err = await cli(relay, "tenants", "list")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "WEBHOOKS", "KEYS", "DELIVERIES"]
    listed = {row.split()[0]: row.split()[1:] for row in rows}
    assert listed["acme"][:2] == ["1", "0"] and "pending=1" in listed["acme"]
    assert listed["globex"][:2] == ["1", "0"] and "succeeded=1" in listed["globex"]
    code, out, err = await cli(relay, "tenants", "show", "acme")
    assert code == 0 and pairs(out) == {"id": "acme", "webhooks": "1", "keys": "0", "deliveries": "pending=1"}, err

    code, out, err = await cli(relay, "tenants", "portal", "acme", "--ttl", "2h")
    assert code == 0, err
    link = pairs(out)
    assert link["url"].startswith(f"{PUBLIC_URL}/ui/?token=") and link["expires_at"].endswith("Z")
    portal = await cli_json(relay, "tenants", "portal", "acme")
    assert portal["data"]["expires_at"] < link["expires_at"]  # the default, 1h

    code, out, err = await cli(relay, "tenants", "rm", "globex")
    assert code == 1 and err.startswith("relay: 409 conflict:")  # its webhook is declared in the file
    code, out, err = await cli(relay, "tenants", "rm", "acme")
    assert code == 0 and out.startswith("deleted tenant acme: "), err
    event = await cli_json(relay, "events", "show", acme_event)
    assert {d["webhook_id"]: d["status"] for d in event["data"]["deliveries"]}[webhook_id] == "cancelled"
    code, out, err = await cli(relay, "webhooks", "list", "--tenant", "acme")
    assert (code, out) == (0, "no webhooks\n")


async def test_unknown_and_malformed_tenants(relay: RelayProcess, receiver: Receiver) -> None:
    for args in (["show", "nope"], ["rm", "nope"], ["portal", "nope"]):
        code, out, err = await cli(relay, "tenants", *args)
        assert code == 1 and out == "", args
        assert err.strip() == (
            "relay: 404 not_found: no tenant 'nope' (a tenant exists while it has webhooks or keys)"
        ), args
    for args in (
        ["tenants", "show", "bad tenant!"],
        ["tenants", "portal", "bad tenant!"],
        ["webhooks", "list", "--tenant", "bad tenant!"],
        ["events", "list", "--tenant", "bad tenant!"],
        ["deliveries", "list", "--tenant", "bad tenant!"],
    ):
        code, out, err = await cli(relay, *args)
        assert (code, out, err.strip()) == (1, "", BAD_TENANT), args
    code, _, err = await cli(relay, "webhooks", "add", receiver.url(), "--tenant", "bad tenant!")
    assert code == 1 and err.startswith("relay: 400 validation_error: tenant: "), err
    code, _, err = await cli(relay, "events", "send", "t", "--data", "{}", "--tenant", "bad tenant!")
    assert code == 1 and err.startswith("relay: 400 validation_error: tenant: "), err
    code, out, err = await cli(relay, "tenants", "list")  # none of those made a tenant
    assert code == 0 and [row.split() for row in out.splitlines()[1:]] == [["globex", "1", "0", "-"]], err


async def test_tenants_help_names_the_options_every_action_takes() -> None:
    for group in (["tenants"], ["tenants", "keys"]):
        code, out, _ = await run_relay(*group, "--help")
        flat = " ".join(out.split())
        assert code == 0 and "--url" in flat and "--api-key" in flat and "--json" in flat, group
    code, out, _ = await run_relay("tenants", "portal", "--help")
    assert code == 0 and "--ttl" in out
