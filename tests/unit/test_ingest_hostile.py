"""Hostile event bodies, without a server: whatever ``parse_body`` accepts can be sent in every body format, and
whatever it refuses is refused with a ``ValidationError``/``InvalidJson``/``TooLarge``, never anything else.

An accepted event that could not be rendered would fail every one of its attempts (and the lease would bring it
back, again and again); so the check is made here, on the accepted data, for every format.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import ValidationError
from relay.ingest import MAX_DEPTH, InvalidJson, TooLarge, _parse_event, _valid_event, parse_body
from relay.models import BodyFormat, Event, Webhook
from relay.registry import Registry
from relay.render import render_body, stamp_sent_at

REGISTRY = Registry([Webhook(id="all", url="https://example.com/")])
NOW = 1_700_000_000.0

scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
)


def nested(depth: int, leaf: Any) -> Any:
    for n in range(depth):
        leaf = [leaf] if n % 2 else {"k": leaf}
    return leaf


data_values = st.one_of(
    values,
    st.tuples(st.integers(1, MAX_DEPTH + 3), values).map(lambda t: nested(*t)),
)


def check_renders(event_data: bytes) -> None:
    event = Event("evt_1", "t", "2024-01-01T00:00:00Z", event_data, NOW)
    for body_format in BodyFormat:
        body = render_body(event, body_format)
        orjson.loads(body)
        orjson.loads(stamp_sent_at(body, "sentAt", "2024-01-01T00:00:00.000Z"))


@settings(max_examples=200, deadline=None)
@given(
    data=data_values,
    created_at=st.none()
    | st.text(max_size=40)
    | st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2024-01-15T10:35:00Z"]),
)
def test_what_ingest_accepts_renders_in_every_format(data: Any, created_at: str | None) -> None:
    item: dict[str, Any] = {"type": "t", "data": data}
    if created_at is not None:
        item["created_at"] = created_at
    try:
        raw = json.dumps(item).encode()
    except (ValueError, RecursionError):
        return
    try:
        parsed = parse_body(raw, now=NOW, max_batch=10, registry=REGISTRY)
    except (ValidationError, InvalidJson, TooLarge):
        return
    [event] = parsed.events
    check_renders(event.data)


def test_data_at_the_depth_limit_is_accepted_and_renders() -> None:
    deepest = orjson.dumps({"type": "t", "data": nested(MAX_DEPTH, 1)})
    [event] = parse_body(deepest, now=NOW, max_batch=1, registry=REGISTRY).events
    check_renders(event.data)


def test_data_past_the_depth_limit_is_a_validation_error_naming_data() -> None:
    too_deep = b'{"type": "t", "data": ' + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b"}"
    with pytest.raises(ValidationError) as caught:
        parse_body(too_deep, now=NOW, max_batch=1, registry=REGISTRY)
    assert [p.path for p in caught.value.problems] == ["data"]


@pytest.mark.parametrize("created_at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_timestamp_out_of_range_in_utc_is_a_validation_error(created_at: str) -> None:
    body = orjson.dumps({"type": "t", "data": {}, "created_at": created_at})
    with pytest.raises(ValidationError) as caught:
        parse_body(body, now=NOW, max_batch=1, registry=REGISTRY)
    assert [p.path for p in caught.value.problems] == ["created_at"]


tokens = st.sampled_from(["consent.created", "ord:1", "", "a" * 129, "bad type!", "t\n", "é"]) | st.text(max_size=6)
fields = {
    "type": tokens | scalars,
    "id": tokens | scalars,
    "data": data_values,
    "created_at": st.sampled_from(["2024-01-15T10:35:00Z", "2024-01-15T10:35:00Z\n", "yesterday"]) | scalars,
    "tenant": st.sampled_from(["acme", "globex", "", "a" * 65, "t\n"]) | scalars,
    "extra": scalars,
}
items = st.fixed_dictionaries({}, optional=fields) | values


@settings(max_examples=400, deadline=None)
@given(item=items, key_tenant=st.sampled_from([None, "acme"]))
def test_the_fast_path_accepts_exactly_what_the_checked_path_accepts(item: Any, key_tenant: str | None) -> None:
    """``_valid_event`` (no problems collected) and ``_parse_event`` (every problem named) agree on every item,
    posted with an admin key or a tenant's."""
    problems: list[Any] = []
    checked = _parse_event(item, "", NOW, "2023-11-14T22:13:20.000Z", problems, REGISTRY, key_tenant)
    fast = _valid_event(item, NOW, "2023-11-14T22:13:20.000Z", REGISTRY, key_tenant)
    assert (fast is None) == (checked is None) == bool(problems)
    if fast is not None and checked is not None:
        if "id" not in item or item["id"] is None:
            fast.id = checked.id  # both generated: unique
        assert fast == checked


@pytest.mark.parametrize("field", ["type", "id", "created_at"])
def test_a_trailing_newline_is_not_a_valid_token_or_timestamp(field: str) -> None:
    item = {"type": "t", "data": {}, "id": "a", "created_at": "2024-01-15T10:35:00Z"}
    item[field] += "\n"
    with pytest.raises(ValidationError) as info:
        parse_body(orjson.dumps(item), now=NOW, max_batch=1, registry=REGISTRY)
    assert [p.path for p in info.value.problems] == [field]
