"""``relay.client`` against a real relay in-process: what it sends is stored and delivered, batches split to the
relay's limits, the relay's refusals become typed errors, and an answer lost on the way back (a proxy resets
it, or answers 503) is retried without storing an event twice. Both clients, over TCP and a unix socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from relay.client import PartialBatchError, RejectedError
from relay.config import Listen
from tests.support.clients import KINDS, Either
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.receiver import Receiver
from tests.support.relay_harness import API_KEY, RunningRelay, make_config, running_relay, webhook


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture
async def relay(tmp_path: Path, receiver: Receiver) -> AsyncIterator[RunningRelay]:
    config = make_config(tmp_path, [webhook(receiver.url("/hook"), id="crm", events=("consent.*",))])
    config = replace(config, server=replace(config.server, max_batch=3))
    async with running_relay(tmp_path, [], config=config) as running:
        yield running


async def stored_ids(relay: RunningRelay) -> list[str]:
    return [row[0] for row in relay.sql("SELECT id FROM events ORDER BY id")]


async def test_send_is_stored_and_delivered(kind: str, relay: RunningRelay, receiver: Receiver) -> None:
    client = Either(kind, relay.url, API_KEY)
    try:
        accepted = await client.send("consent.created", {"subject_id": "u1"}, created_at="2024-01-15T10:35:00Z")
        again = await client.send("consent.created", {"subject_id": "u1"}, id=accepted.id)
    finally:
        await client.close()
    assert accepted.id.startswith("evt_") and accepted.deliveries == 1
    assert again == accepted  # an id the relay has is a no-op that answers as the first time did
    event = await relay.event(accepted.id)
    assert (event["type"], event["created_at"], event["data"]) == (
        "consent.created",
        "2024-01-15T10:35:00Z",
        {"subject_id": "u1"},
    )
    [delivered] = await receiver.wait_for(1)
    assert delivered.headers["x-event-id"] == accepted.id
    assert await stored_ids(relay) == [accepted.id]


async def test_send_batch_is_split_to_the_relays_max_batch(kind: str, relay: RunningRelay) -> None:
    client = Either(kind, relay.url, API_KEY, max_batch=3)
    given = [{"type": "consent.created" if n % 2 else "other.event", "data": {"n": n}} for n in range(7)]
    try:
        accepted = await client.send_batch(given)
    finally:
        await client.close()
    assert [a.deliveries for a in accepted] == [0, 1, 0, 1, 0, 1, 0]
    assert sorted(await stored_ids(relay)) == sorted(a.id for a in accepted)
    for n, item in enumerate(accepted):
        assert (await relay.event(item.id))["data"] == {"n": n}


async def test_a_batch_over_the_relays_max_batch_is_rejected_as_too_large(kind: str, relay: RunningRelay) -> None:
    client = Either(kind, relay.url, API_KEY, max_batch=4)  # the relay takes 3
    try:
        with pytest.raises(RejectedError) as caught:
            await client.send_batch({"type": "consent.created", "data": {"n": n}} for n in range(4))
    finally:
        await client.close()
    assert (caught.value.status, caught.value.code) == (413, "payload_too_large")
    assert len(caught.value.event_ids) == 4
    assert await stored_ids(relay) == []


async def test_the_relays_validation_error_in_a_later_request_names_what_was_accepted(
    kind: str, relay: RunningRelay
) -> None:
    given: list[dict[str, Any]] = [{"type": "consent.created", "data": {"n": n}} for n in range(7)]
    given[4]["type"] = "not a type"
    client = Either(kind, relay.url, API_KEY, max_batch=3)
    try:
        with pytest.raises(PartialBatchError) as caught:
            await client.send_batch(given)
    finally:
        await client.close()
    error = caught.value
    assert isinstance(error.error, RejectedError) and error.error.code == "validation_error"
    assert [d["path"] for d in error.error.details] == ["[4].type"]
    assert sorted(await stored_ids(relay)) == sorted(error.accepted_ids) and len(error.accepted_ids) == 3
    assert len(error.event_ids) == 4
    for missing in error.event_ids:
        status, _ = await relay.get(f"/v1/events/{missing}")
        assert status == 404
    # Sending the rest again, fixed, with the same ids: nothing is stored twice.
    given[4]["type"] = "consent.created"
    retry = [dict(event, id=event_id) for event, event_id in zip(given[3:], error.event_ids, strict=True)]
    client = Either(kind, relay.url, API_KEY, max_batch=3)
    try:
        rest = await client.send_batch([dict(given[0], id=error.accepted_ids[0]), *retry])
    finally:
        await client.close()
    assert [a.id for a in rest] == [error.accepted_ids[0], *error.event_ids]
    assert len(await stored_ids(relay)) == 7


async def test_an_answer_lost_on_the_way_back_is_retried_without_storing_twice(
    kind: str, relay: RunningRelay, receiver: Receiver
) -> None:
    port = int(relay.url.rsplit(":", 1)[1])
    async with FaultProxy(port) as proxy:
        proxy.script([Fault.reset_response(), Fault.answer(503, body=b"upstream busy"), Fault.reset_response()])
        client = Either(kind, proxy.url("").rstrip("/"), API_KEY, max_batch=3)
        try:
            accepted = await client.send("consent.created", {"subject_id": "u1"})
            batch = await client.send_batch({"type": "consent.created", "data": {"n": n}} for n in range(2))
        finally:
            await client.close()
        requests = await proxy.wait_for(5)
    assert len(requests) == 5  # reset, 503, passed: the event; reset, passed: the batch
    assert accepted.deliveries == 1 and [a.deliveries for a in batch] == [1, 1]
    assert sorted(await stored_ids(relay)) == sorted([accepted.id, *(a.id for a in batch)])
    await receiver.wait_for(3)
    await asyncio.sleep(0.2)
    assert sorted(r.headers["x-event-id"] for r in receiver.requests) == sorted(await stored_ids(relay))


async def test_over_a_unix_socket(kind: str, tmp_path: Path) -> None:
    socket_path = tmp_path / "relay.sock"
    config = make_config(tmp_path, [])
    config = replace(config, server=replace(config.server, listen=Listen(path=str(socket_path))))
    async with running_relay(tmp_path, [], config=config) as running:
        client = Either(kind, f"unix:{socket_path}", API_KEY)
        try:
            one = await client.send("consent.created", {"n": 0})
            more = await client.send_batch([{"type": "consent.created", "data": {"n": 1}}])
        finally:
            await client.close()
        assert sorted(await stored_ids(running)) == sorted([one.id, more[0].id])
