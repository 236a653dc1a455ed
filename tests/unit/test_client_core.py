"""The client's I/O-free core: ids, encoding, how a batch is split, what an answer means, the retry policy."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from relay.client_core import (
    Accepted,
    RetryPolicy,
    answer,
    batch_body,
    encode_event,
    retry_after,
    split_batch,
)
from relay.client_errors import (
    PartialBatchError,
    RejectedError,
    ServerError,
    UnavailableError,
)

URL = "http://127.0.0.1:8080"


def envelope(code: str, message: str, details: list[dict[str, str]] | None = None) -> bytes:
    return orjson.dumps({"success": False, "error": {"code": code, "message": message, "details": details or []}})


def test_each_event_gets_its_own_id_once_and_none_fields_are_left_out() -> None:
    first = encode_event({"type": "a", "data": {}, "tenant": None})
    second = encode_event({"type": "a", "data": {}})
    assert first.id != second.id and first.id.startswith("evt_")
    assert orjson.loads(first.body) == {"type": "a", "data": {}, "id": first.id}
    assert encode_event({"type": "a", "data": {}, "id": "ord-1"}).id == "ord-1"
    with pytest.raises(TypeError, match="id must be a string"):
        encode_event({"type": "a", "data": {}, "id": 7})


def test_created_at_datetimes_become_rfc3339_utc_with_their_precision() -> None:
    encoded = encode_event({"type": "a", "data": {}, "created_at": datetime(2024, 1, 15, 10, 35, 0, 5000, UTC)})
    assert orjson.loads(encoded.body)["created_at"] == "2024-01-15T10:35:00.005Z"


def test_split_batch_keeps_order_and_both_limits() -> None:
    events = [encode_event({"type": "a", "data": {"pad": "x" * n}}) for n in range(40)]
    for max_batch, max_body_size in [(1, 10**6), (3, 10**6), (1000, 300), (7, 500), (1000, 10**6)]:
        chunks = list(split_batch(events, max_batch, max_body_size))
        assert [e for chunk in chunks for e in chunk] == events
        for chunk in chunks:
            assert 1 <= len(chunk) <= max_batch
            assert len(batch_body(chunk)) <= max_body_size or len(chunk) == 1
            body = orjson.loads(batch_body(chunk))
            assert [item["id"] for item in body] == [e.id for e in chunk]


def test_an_event_larger_than_the_limit_goes_alone() -> None:
    small, big = encode_event({"type": "a", "data": {}}), encode_event({"type": "a", "data": {"x": "x" * 500}})
    assert [len(c) for c in split_batch([small, big, small], 10, 200)] == [1, 1, 1]
    assert [len(c) for c in split_batch([small, small, big], 10, 200)] == [2, 1]


def test_answer_of_a_2xx() -> None:
    assert answer(URL, 204, b"") is None
    assert answer(URL, 202, b'{"success": true, "data": {"id": "e"}}') == {"success": True, "data": {"id": "e"}}
    with pytest.raises(ServerError, match="not a JSON object"):
        answer(URL, 200, b"[1]")


def test_answer_of_a_4xx_moves_batch_paths_by_the_requests_offset() -> None:
    details = [{"path": "[0].type", "message": "required"}, {"path": "[2].data.x", "message": "bad"}]
    with pytest.raises(RejectedError) as caught:
        answer(URL, 400, envelope("validation_error", "…", details), index_offset=1000)
    assert [d["path"] for d in caught.value.details] == ["[1000].type", "[1002].data.x"]
    assert caught.value.message == "[1000].type: required; [1002].data.x: bad"
    with pytest.raises(RejectedError) as caught:
        answer(URL, 400, envelope("validation_error", "type: required", [{"path": "type", "message": "required"}]))
    assert caught.value.message == "type: required" and caught.value.details[0]["path"] == "type"


def test_answer_of_other_failures() -> None:
    with pytest.raises(UnavailableError, match="503 unavailable: shutting down") as unavailable:
        answer(URL, 503, envelope("unavailable", "shutting down"))
    assert unavailable.value.status == 503
    with pytest.raises(ServerError, match="500 internal_error"):
        answer(URL, 500, envelope("internal_error", "logged"))
    with pytest.raises(ServerError, match=r"did not answer like a relay \(HTTP 500\)"):
        answer(URL, 500, b"<html>")
    with pytest.raises(RejectedError, match=r"did not answer like a relay \(HTTP 404\)") as rejected:
        answer(URL, 404, b"Not Found")
    assert rejected.value.code == "http_error"


def test_retry_after_in_seconds_only() -> None:
    assert retry_after("2") == 2.0
    assert retry_after("0.5") == 0.5
    assert retry_after(None) is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert retry_after("-1") is None
    assert retry_after("86400") is None  # a day is not a wait the client takes


def test_retry_policy_is_checked() -> None:
    assert RetryPolicy().total == 30.0
    for bad in ({"total": -1}, {"initial": -0.1}, {"initial": 2, "maximum": 1}):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)


def test_partial_batch_error_names_a_single_accepted_event() -> None:
    cause = RejectedError(400, "validation_error", "[1].type: required")
    error = PartialBatchError([Accepted("e1", 2)], ["e2", "e3"], cause)
    assert (
        str(error)
        == "1 of 3 events were accepted (e1), then a request failed: 400 validation_error: [1].type: required"
    )
    assert error.accepted_ids == ("e1",) and error.event_ids == ("e2", "e3")
