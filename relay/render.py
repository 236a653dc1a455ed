"""Request bodies, by a webhook's ``format``: pure functions of the event (and, for ``sent_at_field``, the time).

- ``envelope``: ``{"id", "type", "created_at", "data"}``
- ``data``: the event's ``data`` exactly as ingested
- ``flat``: the envelope flattened to one level, keys joined by ``__``, array items by index
- ``data-flat``: the event's ``data`` flattened the same way (Didomi's "flatten request body": the producer posts
  Didomi's ``{type, parameters}`` object as ``data``, the receiver gets ``{"type", "parameters__entity__…"}``)
"""

from __future__ import annotations

from typing import Any

import orjson

from relay.models import BodyFormat, Event


def envelope_bytes(event: Event) -> bytes:
    # Built by concatenation: the stored data is already compact JSON, so it is never parsed again here.
    return b"".join(
        (
            b'{"id":',
            orjson.dumps(event.id),
            b',"type":',
            orjson.dumps(event.type),
            b',"created_at":',
            orjson.dumps(event.created_at),
            b',"data":',
            event.data,
            b"}",
        )
    )


def flatten(value: Any, prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Nested objects and arrays into one level; empty containers are kept as they are."""
    out = {} if out is None else out
    if isinstance(value, dict) and value:
        for key, item in value.items():
            flatten(item, f"{prefix}__{key}" if prefix else str(key), out)
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            flatten(item, f"{prefix}__{index}" if prefix else str(index), out)
    else:
        out[prefix] = value
    return out


def render_body(event: Event, body_format: BodyFormat) -> bytes:
    """The body every attempt of this event sends to a webhook of this format (no ``sent_at_field``)."""
    if body_format is BodyFormat.DATA:
        return event.data
    if body_format is BodyFormat.ENVELOPE:
        return envelope_bytes(event)
    if body_format is BodyFormat.DATA_FLAT:
        data = orjson.loads(event.data)
        # An empty object or array has no keys to flatten into: it is sent as it is.
        return orjson.dumps(flatten(data)) if data else event.data
    return orjson.dumps(flatten(orjson.loads(envelope_bytes(event))))


def stamp_sent_at(body: bytes, field_name: str, sent_at: str) -> bytes:
    """Set the top-level ``field_name`` of a JSON object body to the attempt's send time.

    A body that is not a JSON object (an array payload in ``data`` format) has no top level to stamp
    and is sent unchanged.
    """
    value = orjson.loads(body)
    if not isinstance(value, dict):
        return body
    value[field_name] = sent_at
    return orjson.dumps(value)
