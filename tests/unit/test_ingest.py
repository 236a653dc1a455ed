"""Ingest validation: every problem named by its path, batches all or nothing, fan-out by filter."""

from __future__ import annotations

import orjson
import pytest

from relay.errors import ValidationError
from relay.ingest import InvalidJson, TooLarge, parse_body
from relay.models import Webhook
from relay.registry import Registry

NOW = 1_700_000_000.0
REGISTRY = Registry(
    [
        Webhook(id="all", url="https://a.example/h"),
        Webhook(id="consent", url="https://b.example/h", events=("consent.*",)),
        Webhook(id="exact", url="https://c.example/h", events=("policy.updated",)),
        Webhook(id="off", url="https://d.example/h", is_active=False),
    ]
)


def parse(value: object, max_batch: int = 10) -> list[tuple[str, str, tuple[str, ...]]]:
    parsed = parse_body(orjson.dumps(value), now=NOW, max_batch=max_batch, registry=REGISTRY)
    return [(e.id, e.type, e.webhook_ids) for e in parsed.events]


def problems(value: object) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        parse(value)
    return [(p.path, p.message) for p in info.value.problems]


def test_a_single_event_gets_an_id_and_fans_out_by_filter() -> None:
    [(event_id, event_type, webhooks)] = parse({"type": "consent.created", "data": {"x": 1}})
    assert event_id.startswith("evt_") and len(event_id) == 30
    assert event_type == "consent.created"
    assert webhooks == ("all", "consent")


def test_exact_filters_and_inactive_webhooks() -> None:
    assert parse({"type": "policy.updated", "data": {}})[0][2] == ("all", "exact")
    assert parse({"type": "consentx", "data": {}})[0][2] == ("all",)


def test_producer_ids_and_created_at_are_kept_normalised_to_utc() -> None:
    parsed = parse_body(
        orjson.dumps({"id": "ord:1", "type": "t", "data": [], "created_at": "2024-01-15T12:35:00+02:00"}),
        now=NOW,
        max_batch=1,
        registry=REGISTRY,
    )
    assert parsed.events[0].id == "ord:1"
    assert parsed.events[0].created_at == "2024-01-15T10:35:00Z"
    assert parsed.batch is False


def test_every_problem_is_named_by_path() -> None:
    found = problems(
        [
            {"type": "ok", "data": {}},
            {"data": {}},
            {"type": "bad type!", "data": 3, "id": "", "created_at": "yesterday", "extra": 1},
            "nope",
        ]
    )
    paths = [path for path, _ in found]
    assert paths == [
        "[1].type",
        "[2].extra",
        "[2].type",
        "[2].data",
        "[2].id",
        "[2].created_at",
        "[3]",
    ]


def test_duplicate_ids_in_one_batch_are_refused() -> None:
    found = problems([{"id": "a", "type": "t", "data": {}}, {"id": "a", "type": "t", "data": {}}])
    assert found == [("[1].id", "duplicates the id of [0]")]


def test_empty_batches_and_scalars_are_refused() -> None:
    assert problems([]) == [("", "a batch must hold at least one event")]
    assert problems(42)[0][0] == ""


def test_batches_over_max_batch_are_too_large() -> None:
    with pytest.raises(TooLarge):
        parse([{"type": "t", "data": {}}] * 11)


@pytest.mark.parametrize("body", [b"{", b"\xff\xfe", b'{"type": NaN}', b"[" * 2000, b""])
def test_bodies_that_do_not_parse_say_where(body: bytes) -> None:
    with pytest.raises(InvalidJson, match="line 1 column"):
        parse_body(body, now=NOW, max_batch=10, registry=REGISTRY)
