"""The management commands as a subprocess (``python -m relay.cli …``) against a running ``relay serve``: tables
and ``--json``, where the URL and key come from, exit codes, an unreachable daemon and a wrong key."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from standardwebhooks.webhooks import Webhook as StandardVerifier

from tests.support.process import RelayProcess, post_events, run_cli, run_cli_json, run_relay, serving, write_config
from tests.support.receiver import Receiver

KEY = "cli-test-key"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def config_text(tmp_path: Path, receiver: Receiver, listen: str = "127.0.0.1:0") -> str:
    return f"""
[server]
listen = "{listen}"
api_keys = ["env:CLI_TEST_KEY"]

[storage]
path = "{tmp_path / "relay.db"}"

[delivery]
allow_http = true
allow_private_networks = true
retry_schedule = ["0s", "1h"]

[[webhooks]]
id = "cfg"
url = "{receiver.url("/cfg")}"
events = ["consent.*"]
secret = "{SECRET}"
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


async def post_event(relay: RelayProcess, body: object) -> str:
    status, answer = await post_events(relay.url, KEY, body)
    assert status == 202
    event_id: str = answer["data"]["id"]
    return event_id


async def test_webhooks_add_list_show_test_rotate_rm(relay: RelayProcess, receiver: Receiver) -> None:
    code, out, err = await cli(
        relay, "webhooks", "add", receiver.url("/api"), "--event", "consent.created", "--description", "CRM"
    )
    assert code == 0, err
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line and not line.startswith("Save"))
    webhook_id, secret = fields["id"].strip(), fields["secret"].strip()
    assert webhook_id.startswith("whk_") and secret.startswith("whsec_")
    assert "Save the webhook secret now - it will not be shown again." in out

    code, out, err = await cli(relay, "webhooks", "list")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "SOURCE", "ACTIVE", "EVENTS", "URL"]
    assert [row.split()[:3] for row in rows] == [[webhook_id, "api", "yes"], ["cfg", "config", "yes"]]
    assert secret not in out

    code, out, err = await cli(relay, "webhooks", "show", webhook_id)
    assert code == 0 and "description: CRM" in out and "consent.created" in out and secret not in out

    code, out, err = await cli(relay, "webhooks", "test", webhook_id)
    assert code == 0, err
    assert f"to {webhook_id}: HTTP 200" in out
    [request] = receiver.requests_to("/api")
    assert request.headers["x-event-type"] == "webhook.test"
    StandardVerifier(secret).verify(request.body, dict(request.headers))

    code, out, err = await cli(relay, "webhooks", "rotate-secret", webhook_id, "--overlap", "1h")
    assert code == 0, err
    new_secret = out.splitlines()[0].removeprefix("secret: ")
    assert new_secret.startswith("whsec_") and new_secret != secret and "previous secret also signs" in out

    code, out, err = await cli(relay, "webhooks", "update", webhook_id, "--inactive")
    assert code == 0 and "active:" in out and "no" in out.split("active:")[1].splitlines()[0]

    code, out, err = await cli(relay, "webhooks", "rm", webhook_id)
    assert code == 0 and f"deleted webhook {webhook_id}" in out
    code, out, err = await cli(relay, "webhooks", "show", webhook_id)
    assert code == 1 and out == "" and err.strip() == f"relay: 404 not_found: no webhook with id '{webhook_id}'"


async def test_json_output_is_the_api_answer(relay: RelayProcess, receiver: Receiver) -> None:
    created = await cli_json(relay, "webhooks", "add", receiver.url("/api"), "--body", '{"format": "data"}')
    assert created["success"] is True and created["data"]["format"] == "data"
    assert created["data"]["secret"].startswith("whsec_") and created["meta"]["message"].startswith("Save")
    listed = await cli_json(relay, "webhooks", "list")
    assert {w["id"] for w in listed["data"]} == {created["data"]["id"], "cfg"}
    assert all("secret" not in w for w in listed["data"])
    tested = await cli_json(relay, "webhooks", "test", "cfg")
    assert tested["data"]["status_code"] == 200 and tested["data"]["succeeded"] is True
    stats_free = await cli_json(relay, "redrive", "--include-dead")
    assert stats_free["data"] == {"redriven": 0}


async def test_events_deliveries_replay_and_redrive(relay: RelayProcess, receiver: Receiver) -> None:
    receiver.script("/cfg", [500, 200])
    event_id = await post_event(relay, {"type": "consent.created", "data": {"user": "u_1"}})
    await receiver.wait_for(1)

    async def first_attempt_recorded() -> bool:
        answer = await cli_json(relay, "deliveries", "list", "--webhook", "cfg")
        return bool(answer["data"] and answer["data"][0]["attempts"])

    for _ in range(100):
        if await first_attempt_recorded():
            break
    code, out, err = await cli(relay, "events", "show", event_id)
    assert code == 0, err
    assert f"id:          {event_id}" in out and '{"user":"u_1"}' in out
    assert "WEBHOOK" in out and "pending" in out and "500 http_error" in out

    code, out, err = await cli(relay, "deliveries", "list", "--webhook", "cfg", "--status", "pending")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["ID", "EVENT", "STATUS"] and event_id in out
    code, out, err = await cli(relay, "deliveries", "list", "--webhook", "cfg", "--status", "succeeded")
    assert code == 0 and out.strip() == "no deliveries"

    code, out, err = await cli(relay, "replay", event_id, "--webhook", "cfg")
    assert code == 0, err
    assert out.startswith(f"replaying event {event_id}: 1 new delivery\n")
    await receiver.wait_for(2)  # the replay, sent at once; the first delivery waits for its retry in an hour

    code, out, err = await cli(relay, "redrive", "--webhook", "cfg")
    assert code == 0 and out.strip() == "re-driven: 0 deliveries"  # pending is not parked


async def test_events_send_and_list(relay: RelayProcess, receiver: Receiver, tmp_path: Path) -> None:
    code, out, err = await cli(relay, "events", "send", "consent.created", "--data", '{"user": "u_1"}', "--id", "ord-1")
    assert (code, out, err) == (0, "accepted ord-1: 1 delivery\n", "")
    payload = tmp_path / "event.json"
    payload.write_text('{"user": "u_2", "note": "from a file"}')
    sent = await cli_json(relay, "events", "send", "order.paid", "--data", f"@{payload}")
    assert sent["data"]["deliveries"] == 0 and sent["data"]["id"].startswith("evt_")
    event = await cli_json(relay, "events", "show", sent["data"]["id"])
    assert event["data"]["data"] == {"user": "u_2", "note": "from a file"}
    code, out, err = await run_relay(
        "events", "send", "order.paid", "--data", "@-", "--url", relay.url, "--api-key", KEY, stdin=b"[1, 2]"
    )
    assert code == 0 and out.startswith("accepted evt_"), err
    from_stdin = out.split()[1].rstrip(":")
    await post_event(relay, {"id": "old", "type": "consent.created", "data": {}, "created_at": "2024-01-15T10:35:00Z"})
    await receiver.wait_for(2)

    code, out, err = await cli(relay, "events", "list")
    assert code == 0 and err == ""
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "TYPE", "CREATED", "INGESTED", "DELIVERIES"]
    assert [row.split()[0] for row in rows] == ["old", from_stdin, sent["data"]["id"], "ord-1"]  # newest first
    assert rows[0].split()[:3] == ["old", "consent.created", "2024-01-15T10:35:00Z"] and rows[0].split()[-1] == "1"
    assert rows[1].split()[1] == "order.paid" and rows[1].split()[-1] == "0"

    listed = await cli_json(relay, "events", "list", "--type", "consent.created", "--until", "2025-01-01T00:00:00Z")
    assert [e["id"] for e in listed["data"]] == ["old"] and listed["meta"] == {"next_cursor": None}
    code, out, err = await cli(relay, "events", "list", "--since", "2024-01-15T10:35:00Z", "--limit", "1")
    assert code == 0 and len(out.splitlines()) == 2
    more = err.strip().removeprefix("more: relay ").split()
    assert more[:7] == ["events", "list", "--since", "2024-01-15T10:35:00Z", "--limit", "1", "--cursor"]
    code, out, err = await cli(relay, *more)
    assert code == 0 and len(out.splitlines()) == 2 and err.startswith("more: relay events list --since")
    code, out, err = await cli(relay, "events", "list", "--type", "nothing.yet")
    assert (code, out, err) == (0, "no events\n", "")

    code, out, err = await cli(relay, "events", "send", "t", "--data", "{bad")
    assert code == 2 and out == "" and err.startswith("relay: --data is not JSON: ") and len(err.splitlines()) == 1
    code, out, err = await cli(relay, "events", "send", "t", "--data", f"@{tmp_path / 'missing.json'}")
    assert code == 2 and "cannot read it: No such file or directory" in err and len(err.splitlines()) == 1
    code, out, err = await cli(relay, "events", "send", "t", "--data", '"text"')
    assert code == 1 and err.strip() == "relay: 400 validation_error: data: must be a JSON object or array"
    code, out, err = await cli(relay, "events", "list", "--since", "yesterday")
    assert code == 1 and err.startswith("relay: 400 validation_error: since: must be an RFC 3339 timestamp")


async def test_deliveries_of_every_webhook_filtered_and_paged(relay: RelayProcess, receiver: Receiver) -> None:
    created = await cli_json(relay, "webhooks", "add", receiver.url("/api"), "--event", "consent.*")
    api_id = created["data"]["id"]
    receiver.script("/api", [500, 200])  # one of the two fails once: pending, its retry an hour away
    for n in range(2):
        await post_event(relay, {"id": f"e{n}", "type": "consent.created", "data": {"n": n}})
    await receiver.wait_for(4)

    async def settled() -> bool:
        answer = await cli_json(relay, "deliveries", "list")
        return all(d["attempts"] for d in answer["data"]) and len(answer["data"]) == 4

    for _ in range(100):
        if await settled():
            break
    code, out, err = await cli(relay, "deliveries", "list")
    assert code == 0 and err == ""
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["ID", "EVENT", "WEBHOOK", "STATUS"]
    assert sorted((row.split()[1], row.split()[2]) for row in rows) == [
        ("e0", "cfg"),
        ("e0", api_id),
        ("e1", "cfg"),
        ("e1", api_id),
    ]
    assert [row.split()[1] for row in rows] == ["e1", "e1", "e0", "e0"]  # newest first

    code, out, err = await cli(relay, "deliveries", "list", "--status", "succeeded", "--limit", "2")
    assert code == 0 and len(out.splitlines()) == 3
    assert err.startswith("more: relay deliveries list --status succeeded --limit 2 --cursor ")
    code, out, err = await cli(relay, *err.split()[2:])
    assert code == 0 and err == "" and len(out.splitlines()) == 2  # the third succeeded, and the last
    code, out, err = await cli(relay, "deliveries", "list", "--status", "pending", "--webhook", api_id)
    assert code == 0 and out.splitlines()[0].split()[:3] == ["ID", "EVENT", "STATUS"]  # one webhook: no column
    [pending] = out.splitlines()[1:]
    assert pending.split()[1] in ("e0", "e1") and "500 http_error" in pending
    code, out, err = await cli(relay, "deliveries", "list", "--since", "2999-01-01T00:00:00Z")
    assert (code, out) == (0, "no deliveries\n")
    code, out, err = await cli(relay, "deliveries", "list", "--webhook", "nope")
    assert code == 1 and err.strip() == "relay: 404 not_found: no webhook with id 'nope'"


async def test_url_and_key_from_the_config_file_or_the_environment(tmp_path: Path, receiver: Receiver) -> None:
    with socket.socket() as probe:  # a free port, so that the file's listen address is a real one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = write_config(tmp_path / "relay.toml", config_text(tmp_path, receiver, listen=f"127.0.0.1:{port}"))
    process = RelayProcess(path, env={"CLI_TEST_KEY": KEY})
    await process.start()
    try:
        code, out, err = await run_relay("webhooks", "list", "--config", str(path), env={"CLI_TEST_KEY": KEY})
        assert code == 0 and "cfg" in out, err
        code, out, err = await run_relay("webhooks", "list", env={"RELAY_CONFIG": str(path), "CLI_TEST_KEY": KEY})
        assert code == 0 and "cfg" in out, err
        env = {"RELAY_API_KEY": KEY, "RELAY_CONFIG": ""}
        code, out, err = await run_relay("webhooks", "list", "--url", f"http://127.0.0.1:{port}", env=env)
        assert code == 0 and "cfg" in out, err
        # The file's key is a reference the CLI resolves; unset, it is a usage error that names it.
        code, out, err = await run_relay("webhooks", "list", "--config", str(path), env={"CLI_TEST_KEY": ""})
        assert code == 2 and "CLI_TEST_KEY" in err and "Traceback" not in err
    finally:
        await process.stop()


async def test_exit_codes_and_one_line_errors(relay: RelayProcess, receiver: Receiver) -> None:
    code, out, err = await cli(relay, "webhooks", "list", key="wrong-key")
    assert code == 1 and out == ""
    assert err.strip().startswith("relay: the relay at") and "refused the API key (401" in err
    assert len(err.strip().splitlines()) == 1

    code, _, err = await cli(relay, "webhooks", "rm", "cfg")
    assert code == 1 and "409 conflict" in err and "configuration file" in err

    code, _, err = await cli(relay, "webhooks", "add", "ftp://example.com/hook")
    assert code == 1 and "400 validation_error: url:" in err

    code, out, err = await cli(relay, "webhooks", "test", "cfg")
    assert code == 0
    receiver.script("/cfg", [503])
    code, out, err = await cli(relay, "webhooks", "test", "cfg")
    assert code == 1 and "FAILED http_error" in out  # a failed test send is a failure for scripts

    for args in (["webhooks"], ["webhooks", "add"], ["events", "send"], ["webhooks", "update", "cfg"]):
        code, _, err = await cli(relay, *args)
        assert code == 2, args
        assert "Traceback" not in err
    code, _, err = await cli(relay, "webhooks", "add", receiver.url(), "--body", "[1]")
    assert code == 2 and "--body must be a JSON object" in err


async def test_json_errors_are_the_apis_answer_on_stdout(relay: RelayProcess) -> None:
    code, out, err = await cli(relay, "webhooks", "show", "nope", "--json")
    assert code == 1 and err.strip() == "relay: 404 not_found: no webhook with id 'nope'"
    answer = json.loads(out)
    assert answer["success"] is False and answer["error"]["code"] == "not_found"
    code, out, err = await cli(relay, "webhooks", "list", "--json", key="wrong-key")
    assert code == 1 and json.loads(out)["error"]["code"] == "unauthorized" and "refused the API key" in err


async def test_the_next_page_hint_keeps_the_filters_and_the_limit(relay: RelayProcess, receiver: Receiver) -> None:
    receiver.script("/cfg", [500, 500])
    for n in range(2):
        await post_event(relay, {"type": "consent.created", "data": {"n": n}})
    await receiver.wait_for(2)
    code, out, err = await cli(relay, "deliveries", "list", "--webhook", "cfg", "--status", "pending", "--limit", "1")
    assert code == 0 and len(out.splitlines()) == 2, err  # the header and one delivery
    [hint] = err.splitlines()
    assert hint.startswith("more: relay deliveries list --webhook cfg --status pending --limit 1 --cursor ")
    code, out, err = await cli(relay, *hint.removeprefix("more: relay ").split())
    assert code == 0 and len(out.splitlines()) == 2 and err == ""


async def test_group_help_names_the_options_every_action_takes() -> None:
    for group in ("webhooks", "deliveries", "events"):
        code, out, _ = await run_relay(group, "--help")
        flat = " ".join(out.split())
        assert code == 0 and "--url" in flat and "--api-key" in flat and "--json" in flat, group
    code, out, _ = await run_relay("webhooks", "show", "--help")
    assert "the webhook's id" in out


async def test_an_unreachable_daemon_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    for args in (["webhooks", "list"], ["events", "show", "evt_1"], ["redrive"]):
        code, out, err = await run_relay(*args, "--url", f"http://127.0.0.1:{port}", "--api-key", KEY)
        assert code == 1 and out == ""
        assert err.strip() == (
            f"relay: cannot reach the relay at http://127.0.0.1:{port}: connection refused (is `relay serve` running?)"
        )
    code, _, err = await run_relay("webhooks", "list", "--url", f"unix:{tmp_path / 'none.sock'}", "--api-key", KEY)
    assert code == 1 and "no such socket" in err
    code, _, err = await run_relay("webhooks", "list", "--url", "ftp://127.0.0.1", "--api-key", KEY)
    assert (
        code == 2
        and err.strip() == "relay: 'ftp://127.0.0.1' is not a relay URL (http://host:port, https://… or unix:/path)"
    )
