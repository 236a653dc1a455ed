"""The lists across the outbox, ``GET /v1/events`` and ``GET /v1/deliveries``, against a running relay on a real
SQLite file: their filters, pages that hold every item once while events keep coming, and a 400 naming every wrong
query parameter (time moved by a FakeClock)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from relay.clock import FakeClock
from tests.support.management import call, error_of
from tests.support.receiver import Receiver
from tests.support.relay_harness import RunningRelay, running_relay, webhook

T0 = 1_750_000_000.0


async def every_page(relay: RunningRelay, path: str, **query: Any) -> list[list[dict[str, Any]]]:
    """Each page of a list, following ``meta.next_cursor`` to the end."""
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        given = {**query, **({"cursor": cursor} if cursor else {})}
        status, answer = await call(relay, "GET", f"{path}?{urlencode(given)}")
        assert status == 200, answer
        pages.append(answer["data"])
        cursor = answer["meta"]["next_cursor"]
        if cursor is None:
            return pages


async def listed(relay: RunningRelay, path: str, **query: Any) -> list[str]:
    return [item["id"] for page in await every_page(relay, path, limit=500, **query) for item in page]


async def test_events_newest_first_by_type_and_created_at(tmp_path: Path, receiver: Receiver) -> None:
    hooks = [webhook(receiver.url("/all"), id="all"), webhook(receiver.url("/x"), id="x", events=("x.*",))]
    async with running_relay(tmp_path, hooks, clock=FakeClock(T0)) as relay:
        batch = [
            {"id": "whole", "type": "a.made", "data": {}, "created_at": "2024-01-15T10:35:00Z"},
            {"id": "half", "type": "x.made", "data": {}, "created_at": "2024-01-15T10:35:00.5Z"},
            {"id": "offset", "type": "a.made", "data": {}, "created_at": "2024-01-15T11:35:00.25+01:00"},
            {"id": "before", "type": "x.made", "data": [], "created_at": "2024-01-15T10:34:59.999999Z"},
        ]
        status, _ = await relay.post(batch)
        assert status == 202
        relay.advance(5)
        status, _ = await relay.post({"id": "now", "type": "a.made", "data": {}})
        assert status == 202

        status, answer = await call(relay, "GET", "/v1/events")
        assert status == 200 and answer["meta"] == {"next_cursor": None}
        assert [e["id"] for e in answer["data"]] == ["now", "before", "offset", "half", "whole"]  # as ingested
        first, *_, last = answer["data"]
        assert first == {
            "id": "now",
            "type": "a.made",
            "created_at": "2025-06-15T15:06:45.000Z",
            "ingested_at": "2025-06-15T15:06:45.000Z",
            "tenant": None,
            "deliveries": 1,
        }
        assert last["created_at"] == "2024-01-15T10:35:00Z" and last["ingested_at"] == "2025-06-15T15:06:40.000Z"
        assert [e["deliveries"] for e in answer["data"]] == [1, 2, 1, 2, 1]

        assert await listed(relay, "/v1/events", type="x.made") == ["before", "half"]
        assert await listed(relay, "/v1/events", type="x") == []  # exact, not a prefix
        # since is inclusive and until exclusive, compared as times: "…:00Z" is before "…:00.25Z", "…:00.5Z".
        window = {"since": "2024-01-15T10:35:00Z", "until": "2024-01-15T10:35:00.5Z"}
        assert await listed(relay, "/v1/events", **window) == ["offset", "whole"]
        # The same instants with an offset (its + sent as %2B, which urlencode does).
        window = {"since": "2024-01-15T11:35:00+01:00", "until": "2024-01-15T05:35:00.5-05:00"}
        assert await listed(relay, "/v1/events", **window) == ["offset", "whole"]
        assert await listed(relay, "/v1/events", until="2024-01-15T10:35:00Z", type="x.made") == ["before"]
        assert await listed(relay, "/v1/events", since="2025-06-15T15:06:45Z") == ["now"]
        assert await listed(relay, "/v1/events", since="2024-01-15T10:35:00Z", until="2024-01-15T10:35:00Z") == []

        status, answer = await call(relay, "POST", "/v1/events/whole/replay")
        assert status == 202
        query = "/v1/events?limit=1&type=a.made&until=2024-02-01T00:00:00Z"
        status, answer = await call(relay, "GET", query)
        assert [(e["id"], e["deliveries"]) for e in answer["data"]] == [("offset", 1)]
        status, answer = await call(relay, "GET", f"{query}&cursor={answer['meta']['next_cursor']}")
        assert [(e["id"], e["deliveries"]) for e in answer["data"]] == [("whole", 2)]  # replays count
        assert answer["meta"] == {"next_cursor": None}


async def test_event_pages_hold_each_event_once_while_events_keep_coming(tmp_path: Path) -> None:
    async with running_relay(tmp_path, [], clock=FakeClock(T0)) as relay:
        status, _ = await relay.post([{"id": f"e{n}", "type": "t", "data": {}} for n in range(7)])
        assert status == 202
        pages: list[list[str]] = []
        cursor = None
        while True:
            status, answer = await call(relay, "GET", "/v1/events?limit=3" + (f"&cursor={cursor}" if cursor else ""))
            assert status == 200, answer
            pages.append([e["id"] for e in answer["data"]])
            await relay.post({"id": f"late{len(pages)}", "type": "t", "data": {}})  # after the list began
            cursor = answer["meta"]["next_cursor"]
            if cursor is None:
                break
        assert pages == [["e6", "e5", "e4"], ["e3", "e2", "e1"], ["e0"]]
        assert (await listed(relay, "/v1/events"))[:3] == ["late3", "late2", "late1"]


async def test_deliveries_across_webhooks_by_webhook_status_and_time(tmp_path: Path, receiver: Receiver) -> None:
    receiver.script("/bad", [500] * 3)
    receiver.script("/later", [500] * 3)
    hooks = [
        webhook(receiver.url("/good"), id="good"),
        webhook(receiver.url("/bad"), id="bad", retry_schedule=(0.0,)),  # failed (parked) after one attempt
        webhook(receiver.url("/later"), id="later", retry_schedule=(0.0, 3600.0)),  # pending, due in an hour
    ]
    async with running_relay(tmp_path, hooks, clock=FakeClock(T0)) as relay:
        event_ids = []
        for n in range(3):
            _, answer = await relay.post({"type": "t", "data": {"n": n}})
            event_ids.append(answer["data"]["id"])
            relay.advance(10)
        await receiver.wait_for(9)
        await relay.wait_until(lambda: _settled(relay))

        pages = await every_page(relay, "/v1/deliveries", limit=4)
        assert [len(page) for page in pages] == [4, 4, 1]
        shown = [d for page in pages for d in page]
        newest_first = [e for e in reversed(event_ids) for _ in range(3)]
        assert [d["event_id"] for d in shown] == newest_first and len({d["id"] for d in shown}) == 9
        assert {d["webhook_id"] for d in shown[:3]} == {"good", "bad", "later"}
        [good] = [d for d in shown[:3] if d["webhook_id"] == "good"]
        assert good["status"] == "succeeded" and [a["status_code"] for a in good["attempts"]] == [200]

        def of(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
            return [(d["event_id"], d["webhook_id"]) for d in items]

        async def deliveries(**query: Any) -> list[tuple[str, str]]:
            return of([d for page in await every_page(relay, "/v1/deliveries", **query) for d in page])

        assert await deliveries(webhook_id="bad") == [(e, "bad") for e in reversed(event_ids)]
        assert await deliveries(status="failed") == [(e, "bad") for e in reversed(event_ids)]
        assert await deliveries(status="pending", limit=1) == [(e, "later") for e in reversed(event_ids)]
        assert await deliveries(status="succeeded", webhook_id="bad") == []
        assert await deliveries(webhook_id="whk_nobody") == []  # an id no webhook has: nothing, not a 404
        # Created at T0, T0 + 10 and T0 + 20: since inclusive, until exclusive.
        window = {"since": "2025-06-15T15:06:50Z", "until": "2025-06-15T15:07:00Z"}
        assert {e for e, _ in await deliveries(**window)} == {event_ids[1]}
        assert {e for e, _ in await deliveries(since="2025-06-15T15:06:50Z")} == set(event_ids[1:])
        assert await deliveries(until="2025-06-15T15:06:50Z", webhook_id="good") == [(event_ids[0], "good")]
        # The webhook's own list takes the same window.
        status, answer = await call(relay, "GET", "/v1/webhooks/good/deliveries?until=2025-06-15T15:06:50Z")
        assert status == 200 and of(answer["data"]) == [(event_ids[0], "good")]


async def _settled(relay: RunningRelay) -> bool:
    _, answer = await call(relay, "GET", "/v1/stats")
    counts = answer["data"]["deliveries"]
    return bool(counts["succeeded"] == counts["failed"] == counts["pending"] == 3)


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("type=", ["type"]),
        ("type=a%20b", ["type"]),
        ("type=" + "a" * 129, ["type"]),
        ("since=yesterday", ["since"]),
        ("since=2024-01-15", ["since"]),
        ("until=2024-13-01T00:00:00Z", ["until"]),
        ("since=", ["since"]),
        ("since=2024-01-02T00:00:00Z&until=2024-01-01T23:59:59.999Z", ["until"]),
        ("limit=0", ["limit"]),
        ("limit=501", ["limit"]),
        ("limit=ten", ["limit"]),
        ("cursor=%21%21", ["cursor"]),
        (f"cursor={_cursor('e:12x')}", ["cursor"]),
        (f"cursor={_cursor('d:12')}", ["cursor"]),  # a cursor of the deliveries' list
        ("type=&since=soon&until=later&limit=0&cursor=x", ["type", "since", "until", "limit", "cursor"]),
    ],
)
async def test_a_wrong_query_of_the_events_list_is_a_400_naming_it(
    tmp_path: Path, query: str, named: list[str]
) -> None:
    async with running_relay(tmp_path, []) as relay:
        status, answer = await call(relay, "GET", f"/v1/events?{query}")
        assert status == 400 and error_of(answer) == ("validation_error", named)


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("status=nope", ["status"]),
        ("status=", ["status"]),
        ("webhook_id=", ["webhook_id"]),
        ("since=2024-01-15T10:35:00", ["since"]),  # no offset
        ("until=2024-01-15T25:00:00Z", ["until"]),
        ("since=2024-01-15T10:00:00Z&until=2024-01-15T09:00:00Z", ["until"]),
        ("limit=-1", ["limit"]),
        (f"cursor={_cursor('d:')}", ["cursor"]),
        (f"cursor={_cursor('e:5')}", ["cursor"]),  # a cursor of the events' list
        ("status=x&webhook_id=&since=x&limit=x", ["webhook_id", "status", "since", "limit"]),
    ],
)
async def test_a_wrong_query_of_the_deliveries_list_is_a_400_naming_it(
    tmp_path: Path, query: str, named: list[str]
) -> None:
    async with running_relay(tmp_path, [webhook("http://127.0.0.1:9/", id="w")]) as relay:
        status, answer = await call(relay, "GET", f"/v1/deliveries?{query}")
        assert status == 400 and error_of(answer) == ("validation_error", named)
        if "webhook_id" not in named:
            status, answer = await call(relay, "GET", f"/v1/webhooks/w/deliveries?{query}")
            assert status == 400 and error_of(answer) == ("validation_error", named)


async def test_a_plus_left_unencoded_in_a_time_is_named_with_what_to_do(tmp_path: Path) -> None:
    async with running_relay(tmp_path, []) as relay:
        status, answer = await call(relay, "GET", "/v1/events?since=2024-01-15T11:35:00+01:00")
        assert status == 400 and error_of(answer) == ("validation_error", ["since"])
        assert "%2B" in answer["error"]["details"][0]["message"]
        status, answer = await call(relay, "GET", f"/v1/events?since={quote('2024-01-15T11:35:00+01:00')}")
        assert status == 200 and answer["data"] == []
