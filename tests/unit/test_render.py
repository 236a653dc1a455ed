"""Bodies by format: envelope, data as ingested, flattened with __, and the sent_at stamp."""

from __future__ import annotations

import orjson

from relay.models import BodyFormat, Event
from relay.render import flatten, render_body, stamp_sent_at
from tests.support.seed_payloads import DIDOMI_EVENT_CREATED, DIDOMI_EVENT_CREATED_DATA_FLAT

DATA = {
    "id": "con_abc123",
    "metadata": {"ip_address": "192.168.1.1"},
    "purposes": [{"id": "geo"}, {"id": "ads"}],
}
EVENT = Event("evt_1", "consent.created", "2024-01-15T10:35:00Z", orjson.dumps(DATA), 0.0)


def test_envelope_is_consentproofs_shape() -> None:
    body = orjson.loads(render_body(EVENT, BodyFormat.ENVELOPE))
    assert body == {
        "id": "evt_1",
        "type": "consent.created",
        "created_at": "2024-01-15T10:35:00Z",
        "data": DATA,
    }


def test_data_is_the_payload_exactly() -> None:
    assert render_body(EVENT, BodyFormat.DATA) == orjson.dumps(DATA)


def test_flat_joins_keys_with_double_underscores_and_indexes_arrays() -> None:
    body = orjson.loads(render_body(EVENT, BodyFormat.FLAT))
    assert body == {
        "id": "evt_1",
        "type": "consent.created",
        "created_at": "2024-01-15T10:35:00Z",
        "data__id": "con_abc123",
        "data__metadata__ip_address": "192.168.1.1",
        "data__purposes__0__id": "geo",
        "data__purposes__1__id": "ads",
    }


def test_flatten_keeps_empty_containers_and_scalars() -> None:
    assert flatten({"a": {}, "b": [], "c": None, "d": {"e": [1, {"f": True}]}}) == {
        "a": {},
        "b": [],
        "c": None,
        "d__e__0": 1,
        "d__e__1__f": True,
    }


def test_sent_at_is_stamped_at_the_top_level_and_replaces_an_existing_field() -> None:
    stamped = orjson.loads(stamp_sent_at(b'{"a":1,"sentAt":"old"}', "sentAt", "2026-01-01T00:00:00.000Z"))
    assert stamped == {"a": 1, "sentAt": "2026-01-01T00:00:00.000Z"}


def test_an_array_body_is_not_stamped() -> None:
    assert stamp_sent_at(b"[1,2]", "sentAt", "x") == b"[1,2]"


def test_data_flat_flattens_the_payload_not_the_envelope() -> None:
    event = Event("evt_2", "event.created", "2019-08-07T10:45:11Z", orjson.dumps(DIDOMI_EVENT_CREATED), 0.0)
    body = orjson.loads(render_body(event, BodyFormat.DATA_FLAT))
    # Didomi's "event.created (Flattened)", except that array items are keyed by index (relay's one flattening
    # rule) where Didomi's example keys purposes by their id.
    assert body == DIDOMI_EVENT_CREATED_DATA_FLAT
    assert body == flatten(DIDOMI_EVENT_CREATED)
    assert render_body(event, BodyFormat.DATA) == orjson.dumps(DIDOMI_EVENT_CREATED)


def test_data_flat_of_an_array_payload_keys_its_items_by_index() -> None:
    event = Event("evt_3", "t", "2024-01-15T10:35:00Z", b'[{"id":"a"},{"id":"b","tags":["x"]}]', 0.0)
    assert orjson.loads(render_body(event, BodyFormat.DATA_FLAT)) == {"0__id": "a", "1__id": "b", "1__tags__0": "x"}


def test_data_flat_sends_an_empty_payload_as_it_is() -> None:
    for empty in (b"{}", b"[]"):
        assert render_body(Event("evt_4", "t", "2024-01-15T10:35:00Z", empty, 0.0), BodyFormat.DATA_FLAT) == empty


def test_data_flat_of_a_flat_payload_is_the_payload() -> None:
    flat = {"a": 1, "b": None, "c": "x"}
    event = Event("evt_5", "t", "2024-01-15T10:35:00Z", orjson.dumps(flat), 0.0)
    assert orjson.loads(render_body(event, BodyFormat.DATA_FLAT)) == flat


def test_sent_at_is_stamped_on_the_flattened_body_at_the_top_level() -> None:
    event = Event("evt_6", "t", "2024-01-15T10:35:00Z", b'{"a":{"b":1}}', 0.0)
    stamped = stamp_sent_at(render_body(event, BodyFormat.DATA_FLAT), "sentAt", "2026-01-01T00:00:00.000Z")
    assert orjson.loads(stamped) == {"a__b": 1, "sentAt": "2026-01-01T00:00:00.000Z"}
