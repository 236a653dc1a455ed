"""The ordering commands as a subprocess against a running ``relay serve`` (CONTRACT §2, §11): ``--ordering`` on
``relay webhooks add|update``, ``--ordering-key`` on ``relay events send``, and ``relay deliveries cancel ID``
releasing a key whose head is parked."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from tests.acceptance.test_cli_manage import KEY, cli, cli_json, config_text
from tests.support.process import RelayProcess, serving, write_config
from tests.support.receiver import Receiver
from tests.support.relay_harness import poll_until


@pytest_asyncio.fixture
async def relay(tmp_path: Path, receiver: Receiver) -> AsyncIterator[RelayProcess]:
    async with serving(
        write_config(tmp_path / "relay.toml", config_text(tmp_path, receiver)), {"CLI_TEST_KEY": KEY}
    ) as r:
        yield r


async def _statuses(relay: RelayProcess, event_id: str) -> list[str]:
    answer = await cli_json(relay, "events", "show", event_id)
    return [d["status"] for d in answer["data"]["deliveries"]]


async def test_ordering_on_webhooks_keys_on_events_and_cancel(relay: RelayProcess, receiver: Receiver) -> None:
    receiver.script("/fifo", [503, 200])  # the first attempt fails, and with one step in the schedule it parks
    url = receiver.url("/fifo")
    added = await cli_json(
        relay, "webhooks", "add", url, "--event", "order.*", "--ordering", "latest", "--retry-schedule", "0s"
    )
    webhook_id = added["data"]["id"]
    assert added["data"]["ordering"] == "latest"
    code, out, err = await cli(relay, "webhooks", "update", webhook_id, "--ordering", "fifo")
    assert code == 0, err
    assert ["ordering:", "fifo"] in [line.split() for line in out.splitlines()]
    code, _, err = await cli(relay, "webhooks", "add", url, "--ordering", "sometimes")
    assert code == 2 and "--ordering" in err

    first = await cli_json(relay, "events", "send", "order.placed", "--data", '{"n": 1}', "--ordering-key", "o-1")
    await poll_until(lambda: _parked(relay, first["data"]["id"]), timeout=10)
    code, out, err = await cli(relay, "events", "send", "order.placed", "--data", '{"n": 2}', "--ordering-key", "o-1")
    assert code == 0 and out.startswith("accepted "), err
    second = out.split()[1].rstrip(":")
    code, out, _ = await cli(relay, "events", "show", second)
    assert ["ordering_key:", "o-1"] in [line.split() for line in out.splitlines()]
    assert await _statuses(relay, second) == ["pending"]  # behind the parked head of its key
    assert len(receiver.requests_to("/fifo")) == 1

    head = (await cli_json(relay, "events", "show", first["data"]["id"]))["data"]["deliveries"][0]["id"]
    code, out, err = await cli(relay, "deliveries", "cancel", head)
    assert code == 0, err
    assert out.strip() == f"cancelled delivery {head} of event {first['data']['id']} to {webhook_id}"
    await receiver.wait_for(2, timeout=10)  # the key moved on
    assert receiver.requests_to("/fifo")[1].json["data"] == {"n": 2}
    await poll_until(lambda: _succeeded(relay, second), timeout=10)

    code, out, err = await cli(relay, "deliveries", "cancel", head)  # it has ended: 409
    assert code == 1 and "already ended" in err, (out, err)
    code, out, _ = await cli(relay, "deliveries", "cancel", head, "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "conflict"
    code, _, err = await cli(relay, "deliveries", "cancel", "dlv_nope")
    assert code == 1 and "dlv_nope" in err


async def _parked(relay: RelayProcess, event_id: str) -> bool:
    return await _statuses(relay, event_id) == ["failed"]


async def _succeeded(relay: RelayProcess, event_id: str) -> bool:
    return await _statuses(relay, event_id) == ["succeeded"]
