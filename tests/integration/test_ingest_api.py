"""POST /v1/events over HTTP: every status of CONTRACT §4, idempotency, batches, group commit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson
import pytest

from relay import ingest
from tests.support.relay_harness import API_KEY, running_relay, webhook

NOWHERE = "http://127.0.0.1:9/nowhere"  # nothing listens: deliveries stay queued, which these tests don't need


def _error(body: dict[str, object]) -> dict[str, object]:
    assert body["success"] is False
    error = body["error"]
    assert isinstance(error, dict)
    return error


async def test_keys_are_required_and_both_headers_work(tmp_path: Path) -> None:
    async with running_relay(tmp_path, []) as relay:
        event = orjson.dumps({"type": "t", "data": {}})
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, {"Authorization": API_KEY}):
            async with relay.http.post(
                f"{relay.url}/v1/events", data=event, headers={"Content-Type": "application/json", **headers}
            ) as response:
                assert response.status == 401, headers
                assert _error(await response.json())["code"] == "unauthorized"
        async with relay.http.post(
            f"{relay.url}/v1/events", data=event, headers={"Content-Type": "application/json", "X-API-Key": API_KEY}
        ) as response:
            assert response.status == 202


async def test_idempotent_ids_answer_as_the_first_time(tmp_path: Path) -> None:
    async with running_relay(tmp_path, [webhook(NOWHERE, retry_schedule=(0.0, 3600.0))]) as relay:
        first = await relay.post({"id": "ord-1", "type": "t", "data": {"v": 1}})
        again = await relay.post({"id": "ord-1", "type": "t", "data": {"v": 2}})
        assert first == again == (202, {"success": True, "data": {"id": "ord-1", "deliveries": 1}})
        assert relay.sql("SELECT COUNT(*) FROM events") == [(1,)]
        assert relay.sql("SELECT COUNT(*) FROM deliveries") == [(1,)]
        assert (await relay.event("ord-1"))["data"] == {"v": 1}


async def test_an_event_without_an_id_is_never_taken_for_one_posted_with_its_foreseen_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Generated ids count up and can be foreseen; one a producer posted already does not swallow a new event."""
    async with running_relay(tmp_path, []) as relay:
        assert (await relay.post({"id": "evt_next", "type": "t", "data": {"v": 1}}))[0] == 202
        # Ingest makes up the id the producer foresaw; the store's fresh one comes from its own, unpatched import.
        monkeypatch.setattr(ingest, "new_event_id", lambda now=None: "evt_next")
        status, body = await relay.post({"type": "t", "data": {"v": 2}})
        assert status == 202
        new_id = body["data"]["id"]
        assert new_id != "evt_next" and new_id.startswith("evt_")
        assert (await relay.event(new_id))["data"] == {"v": 2}
        assert (await relay.event("evt_next"))["data"] == {"v": 1}


async def test_a_batch_answers_a_list_and_is_all_or_nothing(tmp_path: Path) -> None:
    async with running_relay(tmp_path, []) as relay:
        status, body = await relay.post([{"type": "a", "data": {}}, {"type": "b", "data": [], "id": "x"}])
        assert status == 202 and [d["deliveries"] for d in body["data"]] == [0, 0]
        assert body["data"][1]["id"] == "x"
        status, body = await relay.post([{"type": "a", "data": {}, "id": "y"}, {"type": "b"}])
        assert status == 400
        error = _error(body)
        assert error["code"] == "validation_error"
        assert error["details"] == [{"path": "[1].data", "message": "required"}]
        assert relay.sql("SELECT COUNT(*) FROM events WHERE id = 'y'") == [(0,)]


async def test_bad_bodies_get_json_errors_and_store_nothing(tmp_path: Path) -> None:
    async with running_relay(tmp_path, []) as relay:
        cases = [
            (b'{"type": "t", "data": {', "invalid_json", 400),
            (b'{"type": "t", "data": "\xff"}', "invalid_json", 400),
            (b"", "invalid_json", 400),
            (b'"just a string"', "validation_error", 400),
            (b'{"type": "t", "data": {}, "created_at": "2024-13-45T99:00:00Z"}', "validation_error", 400),
        ]
        for raw, code, status in cases:
            got_status, body = await relay.post(None, raw=raw)
            assert (got_status, _error(body)["code"]) == (status, code), raw
        assert relay.sql("SELECT COUNT(*) FROM events") == [(0,)]


async def test_content_type_must_be_json(tmp_path: Path) -> None:
    async with running_relay(tmp_path, []) as relay:
        for ctype in ("text/plain", "application/x-www-form-urlencoded"):
            status, body = await relay.post({"type": "t", "data": {}}, headers={"Content-Type": ctype})
            assert status == 415 and _error(body)["code"] == "unsupported_media_type"
        status, _ = await relay.post(
            {"type": "t", "data": {}}, headers={"Content-Type": "application/json; charset=utf-8"}
        )
        assert status == 202


async def test_too_large_bodies_and_batches_get_413(tmp_path: Path) -> None:
    from dataclasses import replace

    from tests.support.relay_harness import make_config

    config = make_config(tmp_path, [])
    config = replace(config, server=replace(config.server, max_body_size=2048, max_batch=3))
    async with running_relay(tmp_path, [], config=config) as relay:
        status, body = await relay.post({"type": "t", "data": {"blob": "x" * 4096}})
        assert status == 413 and _error(body)["code"] == "payload_too_large"
        status, body = await relay.post([{"type": "t", "data": {}}] * 4)
        assert status == 413 and "at most 3" in str(_error(body)["message"])

        async def chunks() -> object:  # no Content-Length: the limit holds on the stream too
            for _ in range(10):
                yield b" " * 512

        async with relay.http.post(
            f"{relay.url}/v1/events",
            data=chunks(),
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        ) as response:
            assert response.status == 413
        assert relay.sql("SELECT COUNT(*) FROM events") == [(0,)]


async def test_unknown_routes_and_methods_are_json_errors(tmp_path: Path) -> None:
    async with running_relay(tmp_path, []) as relay:
        status, body = await relay.get("/v1/nope")
        assert status == 404 and _error(body)["code"] == "not_found"
        status, body = await relay.get("/v1/events/evt_missing")
        assert status == 404 and _error(body)["code"] == "not_found"
        async with relay.http.delete(f"{relay.url}/v1/events", headers={"X-API-Key": API_KEY}) as response:
            assert response.status == 405
            assert _error(await response.json())["code"] == "method_not_allowed"


async def test_concurrent_requests_share_commits(tmp_path: Path) -> None:
    async with running_relay(tmp_path, [webhook(NOWHERE, retry_schedule=(0.0, 3600.0))]) as relay:
        store = relay.daemon.store
        before = store.commits
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def post(n: int) -> int:
                async with http.post(
                    f"{relay.url}/v1/events",
                    data=orjson.dumps({"type": "t", "data": {"n": n}}),
                    headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
                ) as response:
                    return response.status

            statuses = await asyncio.gather(*(post(n) for n in range(200)))
        assert statuses == [202] * 200
        assert relay.sql("SELECT COUNT(*) FROM events") == [(200,)]
        # Claims and attempt results commit too; still far fewer transactions than requests.
        assert store.commits - before < 150


async def test_shutting_down_answers_503(tmp_path: Path) -> None:
    async with running_relay(tmp_path, []) as relay:
        assert relay.daemon.services is not None
        relay.daemon.services.accepting = False
        status, body = await relay.post({"type": "t", "data": {}})
        assert status == 503 and _error(body)["code"] == "unavailable"
        assert relay.sql("SELECT COUNT(*) FROM events") == [(0,)]
