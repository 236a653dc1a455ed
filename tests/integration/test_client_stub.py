"""``relay.client``: ``Client`` and ``AsyncClient`` against a stub relay on 127.0.0.1 that refuses, drops, stalls
and fails on cue. Every test runs with both clients; backoff is shrunk to milliseconds."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from relay import __version__
from relay.client import (
    Accepted,
    AsyncClient,
    Client,
    PartialBatchError,
    RejectedError,
    RelayClientError,
    RetryPolicy,
    ServerError,
    UnavailableError,
)
from relay.models import EVENT_TOKEN
from tests.support.clients import KINDS, Either
from tests.support.stub_relay import Step, StubRelay

KEY = "stub-key-0123456789"


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture
async def stub() -> AsyncIterator[StubRelay]:
    async with StubRelay() as started:
        yield started


@pytest_asyncio.fixture
async def client(kind: str, stub: StubRelay) -> AsyncIterator[Either]:
    either = Either(kind, stub.url, KEY)
    yield either
    await either.close()


def events(count: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"type": "consent.created", "data": {"n": n}, **extra} for n in range(count)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- one event ----------------------------------------------------------------------------------------------------


async def test_send_posts_one_event_with_an_id_made_by_the_client(client: Either, stub: StubRelay) -> None:
    accepted = await client.send("consent.created", {"subject_id": "u1"})
    assert EVENT_TOKEN.fullmatch(accepted.id) and accepted.id.startswith("evt_") and len(accepted.id) == 30
    assert accepted == Accepted(accepted.id, 1)
    [posted] = stub.posted
    assert posted.body == {"type": "consent.created", "data": {"subject_id": "u1"}, "id": accepted.id}
    assert posted.headers["authorization"] == f"Bearer {KEY}"
    assert posted.headers["content-type"] == "application/json"
    assert posted.headers["user-agent"] == f"relay-client/{__version__}"


async def test_send_passes_every_field_it_is_given(client: Either, stub: StubRelay) -> None:
    created = datetime(2024, 1, 15, 11, 35, tzinfo=timezone(timedelta(hours=1)))
    accepted = await client.send(
        "consent.updated", [1, 2], id="ord-1", tenant="acme", ordering_key="user:1", created_at=created
    )
    assert accepted.id == "ord-1"
    assert stub.posted[0].body == {
        "type": "consent.updated",
        "data": [1, 2],
        "id": "ord-1",
        "tenant": "acme",
        "ordering_key": "user:1",
        "created_at": "2024-01-15T10:35:00Z",
    }
    await client.send("consent.updated", {}, created_at="2024-01-15T10:35:00+01:00")
    assert stub.posted[1].body["created_at"] == "2024-01-15T10:35:00+01:00"


async def test_a_naive_datetime_or_unencodable_data_is_refused_before_anything_is_sent(
    client: Either, stub: StubRelay
) -> None:
    with pytest.raises(ValueError, match="no timezone"):
        await client.send("a", {}, created_at=datetime(2024, 1, 1))
    with pytest.raises(TypeError, match="cannot be sent as JSON"):
        await client.send_batch([{"type": "a", "data": {}}, {"type": "a", "data": {"x": object()}}])
    with pytest.raises(TypeError, match="mapping"):
        await client.send_batch(["consent.created"])
    assert stub.posted == []


async def test_refused_connection_then_success_stores_the_event_once(kind: str) -> None:
    port = free_port()
    either = Either(kind, f"http://127.0.0.1:{port}", KEY)
    try:
        sending = asyncio.create_task(either.send("consent.created", {"n": 1}))
        await asyncio.sleep(0.15)  # a few refused tries
        assert not sending.done()
        async with StubRelay(port=port) as stub:
            accepted = await asyncio.wait_for(sending, 5)
    finally:
        await either.close()
    assert list(stub.stored) == [accepted.id]
    assert [posted.ids for posted in stub.posted] == [[accepted.id]]


async def test_an_answer_lost_after_the_event_was_stored_is_retried_with_the_same_id(
    client: Either, stub: StubRelay
) -> None:
    stub.script([Step.accept(drop=True), Step.accept(drop=True), Step.accept()])
    accepted = await client.send("consent.created", {"n": 1})
    assert [posted.ids for posted in stub.posted] == [[accepted.id]] * 3
    assert list(stub.stored) == [accepted.id]


async def test_503_twice_then_202(client: Either, stub: StubRelay) -> None:
    stub.script([Step.refuse(503), Step.refuse(503)])
    accepted = await client.send("consent.created", {"n": 1})
    assert [posted.ids for posted in stub.posted] == [[accepted.id]] * 3
    assert list(stub.stored) == [accepted.id]


async def test_retry_after_is_waited(client: Either, stub: StubRelay) -> None:
    stub.script([Step.refuse(503, headers={"Retry-After": "0.3"})])
    started = time.monotonic()
    await client.send("consent.created", {"n": 1})
    assert time.monotonic() - started >= 0.3
    assert len(stub.posted) == 2


async def test_a_timeout_is_retried_with_the_same_id(kind: str, stub: StubRelay) -> None:
    stub.script([Step.accept(delay=2.0)])
    either = Either(kind, stub.url, KEY, timeout=0.2)
    try:
        accepted = await either.send("consent.created", {"n": 1})
    finally:
        await either.close()
    assert [posted.ids for posted in stub.posted] == [[accepted.id]] * 2
    assert list(stub.stored) == [accepted.id]


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_it_gives_up_after_the_budget_with_unavailable_error(kind: str, stub: StubRelay, status: int) -> None:
    stub.script([Step.refuse(status, message="relay is shutting down")] * 100)
    either = Either(kind, stub.url, KEY, retry=RetryPolicy(total=0.3, initial=0.01, maximum=0.05))
    started = time.monotonic()
    try:
        with pytest.raises(UnavailableError) as caught:
            await either.send("consent.created", {"n": 1})
    finally:
        await either.close()
    assert time.monotonic() - started < 1.0
    error = caught.value
    assert error.status == status and error.attempts == len(stub.posted) > 2
    assert str(error).startswith(f"gave up after {error.attempts} tries in 0.")
    assert f"HTTP {status} unavailable: relay is shutting down" in str(error)
    assert error.event_ids == tuple(stub.posted[0].ids)
    assert stub.stored == {}


async def test_a_relay_that_never_comes_up_is_unavailable(kind: str) -> None:
    either = Either(kind, f"http://127.0.0.1:{free_port()}", KEY, retry=RetryPolicy(total=0.2, initial=0.01))
    try:
        with pytest.raises(UnavailableError, match="connection refused") as caught:
            await either.send("consent.created", {"n": 1})
    finally:
        await either.close()
    assert caught.value.status is None and caught.value.attempts > 1


async def test_no_retries_with_a_zero_budget(kind: str, stub: StubRelay) -> None:
    stub.script([Step.refuse(503)])
    either = Either(kind, stub.url, KEY, retry=RetryPolicy(total=0))
    try:
        with pytest.raises(UnavailableError, match="gave up after 1 try"):
            await either.send("consent.created", {"n": 1})
    finally:
        await either.close()
    assert len(stub.posted) == 1


async def test_a_400_is_a_rejected_error_with_the_details_and_not_retried(client: Either, stub: StubRelay) -> None:
    details = [{"path": "type", "message": "must be 1-128 characters of [A-Za-z0-9_.:-]"}]
    stub.script([Step.refuse(400, "validation_error", "type: must be 1-128 characters", details)])
    with pytest.raises(RejectedError) as caught:
        await client.send("not a type", {"n": 1})
    error = caught.value
    assert (error.status, error.code, error.details) == (400, "validation_error", details)
    assert error.message == "type: must be 1-128 characters"
    assert str(error) == "400 validation_error: type: must be 1-128 characters"
    assert error.event_ids == tuple(stub.posted[0].ids)
    assert len(stub.posted) == 1


@pytest.mark.parametrize(
    ("step", "status", "code"),
    [
        (Step.refuse(401, "unauthorized", "a valid API key is required"), 401, "unauthorized"),
        (Step.refuse(413, "payload_too_large", "too large"), 413, "payload_too_large"),
        (Step.refuse(429, "too_many_requests", "slow down", headers={"Retry-After": "1"}), 429, "too_many_requests"),
        (Step.raw(404, b"<html>not here</html>"), 404, "http_error"),
    ],
    ids=["401", "413", "429", "404-not-relay"],
)
async def test_every_4xx_is_a_rejected_error(
    client: Either, stub: StubRelay, step: Step, status: int, code: str
) -> None:
    stub.script([step])
    with pytest.raises(RejectedError) as caught:
        await client.send("consent.created", {"n": 1})
    assert (caught.value.status, caught.value.code) == (status, code)
    assert len(stub.posted) == 1


async def test_a_500_or_an_answer_unlike_relays_is_a_server_error(client: Either, stub: StubRelay) -> None:
    stub.script([Step.refuse(500, "internal_error", "an internal error occurred"), Step.raw(202, b"ok")])
    with pytest.raises(ServerError, match="500 internal_error"):
        await client.send("consent.created", {"n": 1})
    with pytest.raises(ServerError, match="did not answer like a relay"):
        await client.send("consent.created", {"n": 2})
    assert len(stub.posted) == 2


def test_every_error_is_a_relay_client_error() -> None:
    for error in (RejectedError, UnavailableError, ServerError, PartialBatchError):
        assert issubclass(error, RelayClientError)


@pytest.mark.parametrize("url", ["ftp://x", "localhost:8080", "http://", "http://h:99999", "unix:"])
def test_a_url_that_is_not_a_relays_is_refused_at_once(url: str) -> None:
    for make in (Client, AsyncClient):
        with pytest.raises(ValueError):
            make(url, KEY)


# -- batches ------------------------------------------------------------------------------------------------------


async def test_a_batch_is_split_by_max_batch(kind: str, stub: StubRelay) -> None:
    either = Either(kind, stub.url, KEY, max_batch=2)
    given = events(5)
    given[3]["id"] = "mine-3"
    try:
        accepted = await either.send_batch(given)
    finally:
        await either.close()
    assert [len(posted.events) for posted in stub.posted] == [2, 2, 1]
    ids = [a.id for a in accepted]
    assert ids == [i for posted in stub.posted for i in posted.ids] == list(stub.stored)
    assert ids[3] == "mine-3" and len(set(ids)) == 5
    assert [stub.stored[i]["data"] for i in ids] == [{"n": n} for n in range(5)]
    assert "id" not in given[0]  # the caller's events are not changed


async def test_a_batch_is_split_by_max_body_size(kind: str, stub: StubRelay) -> None:
    given = events(10, padding="x" * 100)
    either = Either(kind, stub.url, KEY, max_body_size=600)
    try:
        accepted = await either.send_batch(given)
    finally:
        await either.close()
    assert len(accepted) == 10 and len(stub.posted) > 2
    assert all(len(posted.events) >= 1 for posted in stub.posted)
    assert sum(len(posted.events) for posted in stub.posted) == 10


async def test_an_empty_batch_sends_nothing(client: Either, stub: StubRelay) -> None:
    assert await client.send_batch([]) == []
    assert stub.posted == []


async def test_a_batch_whose_second_request_is_refused_names_the_accepted_events(kind: str, stub: StubRelay) -> None:
    details = [{"path": "[1].type", "message": "required"}]
    stub.script([Step.accept(), Step.refuse(400, "validation_error", "[1].type: required", details)])
    either = Either(kind, stub.url, KEY, max_batch=2)
    try:
        with pytest.raises(PartialBatchError) as caught:
            await either.send_batch(events(5))
    finally:
        await either.close()
    error = caught.value
    first, second = stub.posted
    assert error.accepted_ids == tuple(first.ids) == tuple(stub.stored)
    assert error.event_ids == (*second.ids, *error.event_ids[2:]) and len(error.event_ids) == 3
    assert isinstance(error.error, RejectedError) and error.__cause__ is error.error
    assert error.error.details == [{"path": "[3].type", "message": "required"}]  # counted in the whole batch
    assert error.status == 400
    assert str(error).startswith(f"2 of 5 events were accepted ({first.ids[0]} … {first.ids[1]}), then")
    assert "[3].type: required" in str(error)
    assert len(stub.posted) == 2  # nothing after the failed request


async def test_a_batch_whose_later_request_stays_unavailable_names_the_accepted_events(
    kind: str, stub: StubRelay
) -> None:
    stub.script([Step.accept(), Step.accept(), *[Step.refuse(503)] * 100])
    either = Either(kind, stub.url, KEY, max_batch=1, retry=RetryPolicy(total=0.2, initial=0.01, maximum=0.02))
    try:
        with pytest.raises(PartialBatchError) as caught:
            await either.send_batch(events(4))
    finally:
        await either.close()
    error = caught.value
    assert len(error.accepted) == 2 and error.accepted_ids == tuple(stub.stored)
    assert isinstance(error.error, UnavailableError) and len(error.event_ids) == 2
    assert error.event_ids[0] == stub.posted[2].ids[0]


async def test_a_batch_whose_first_request_fails_raises_that_error(client: Either, stub: StubRelay) -> None:
    stub.script([Step.refuse(413, "payload_too_large", "a batch holds at most 1 events")])
    with pytest.raises(RejectedError) as caught:
        await client.send_batch(events(3))
    assert caught.value.status == 413
    assert caught.value.event_ids == tuple(stub.posted[0].ids)


async def test_a_retried_batch_request_keeps_its_ids(client: Either, stub: StubRelay) -> None:
    stub.script([Step.accept(drop=True), Step.refuse(503)])
    accepted = await client.send_batch(events(3))
    assert [posted.ids for posted in stub.posted] == [[a.id for a in accepted]] * 3
    assert list(stub.stored) == [a.id for a in accepted]


# -- unix sockets and call ----------------------------------------------------------------------------------------


async def test_unix_socket_urls_work_for_send_and_call(kind: str, tmp_path: Path) -> None:
    async with StubRelay(unix_path=tmp_path / "relay.sock") as stub:
        either = Either(kind, stub.url, KEY)
        try:
            accepted = await either.send_batch(events(2))
            answer = await either.call("GET", "/v1/webhooks", query={"limit": 5, "cursor": None})
        finally:
            await either.close()
    assert [a.id for a in accepted] == list(stub.stored)
    assert answer == {"success": True, "data": {"method": "GET", "path": "/v1/webhooks", "query": {"limit": "5"}}}


async def test_a_missing_unix_socket_is_retried_until_the_budget_ends(kind: str, tmp_path: Path) -> None:
    either = Either(kind, f"unix:{tmp_path / 'none.sock'}", KEY, retry=RetryPolicy(total=0.1, initial=0.01))
    try:
        with pytest.raises(UnavailableError, match="no such socket"):
            await either.send("consent.created", {})
    finally:
        await either.close()


async def test_call_sends_json_and_is_not_retried(client: Either, stub: StubRelay) -> None:
    answer = await client.call("PATCH", "/v1/webhooks/a%2Fb", {"is_active": False})
    assert answer is not None and answer["data"]["body"] == {"is_active": False}
    assert await client.call("DELETE", "/v1/webhooks/x") is None
    stub.script([Step.refuse(503, message="relay is shutting down")])
    with pytest.raises(UnavailableError, match="503 unavailable: relay is shutting down"):
        await client.call("POST", "/v1/events", {"type": "a", "data": {}})
    assert len(stub.posted) == 1


async def test_call_to_a_relay_that_is_not_there(kind: str) -> None:
    either = Either(kind, f"http://127.0.0.1:{free_port()}", KEY)
    try:
        with pytest.raises(UnavailableError) as caught:
            await either.call("GET", "/v1/webhooks")
    finally:
        await either.close()
    assert str(caught.value).endswith("connection refused (is `relay serve` running?)")


async def test_async_client_as_a_context_manager_closes_its_session(stub: StubRelay) -> None:
    async with AsyncClient(stub.url, KEY) as client:
        await client.send("consent.created", {})
        session = client._session
        assert session is not None and not session.closed
    assert session.closed
