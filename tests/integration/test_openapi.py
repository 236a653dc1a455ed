"""The OpenAPI document at GET /v1/openapi.json is kept true: schemathesis generates requests for every operation
against a running relay (a few hundred in all) and each answer must be no 5xx and conform to the document
(status code, content type, body schema).

The relay and a receiver run on an event loop in a background thread, because schemathesis sends its requests
synchronously (with ``requests``). Every webhook URL a generated body carries is pointed at that receiver, so no
request leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from relay.daemon import Daemon
from tests.support.receiver import Receiver
from tests.support.relay_harness import API_KEY, make_config, webhook

T = TypeVar("T")
AUTH = {"Authorization": f"Bearer {API_KEY}"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
RANDOM_IDS, KNOWN_IDS, NEGATIVE = 10, 10, 5  # examples per operation and round


class _Loop:
    """An event loop running in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="relay-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class _Relay:
    def __init__(self, url: str, receiver: Receiver) -> None:
        self.url, self.receiver = url, receiver
        self.http = requests.Session()
        self.http.headers.update(AUTH)

    def new_webhook(self) -> str:
        answer = self.http.post(f"{self.url}/v1/webhooks", json={"url": self.receiver.url()}, timeout=10)
        assert answer.status_code == 201, answer.text
        webhook_id: str = answer.json()["data"]["id"]
        return webhook_id

    def new_tenant_key(self, tenant: str) -> str:
        """A new key of ``tenant`` (which makes the tenant, if it was not there); the key's id."""
        answer = self.http.post(f"{self.url}/v1/tenants/{tenant}/keys", json={}, timeout=10)
        assert answer.status_code == 201, answer.text
        key_id: str = answer.json()["data"]["id"]
        return key_id

    def new_event(self) -> str:
        answer = self.http.post(f"{self.url}/v1/events", json={"type": "t", "data": {}}, timeout=10)
        assert answer.status_code == 202, answer.text
        event_id: str = answer.json()["data"]["id"]
        return event_id

    def new_delivery(self) -> str:
        """The id of a new event's delivery (to the configured webhook, which no receiver answers)."""
        answer = self.http.get(f"{self.url}/v1/events/{self.new_event()}", timeout=10)
        assert answer.status_code == 200, answer.text
        delivery_id: str = answer.json()["data"]["deliveries"][0]["id"]
        return delivery_id


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[_Relay]:
    loop = _Loop()
    receiver = Receiver()
    daemon = Daemon(make_config(tmp_path, [webhook("http://127.0.0.1:9/unused", id="cfg")], retry_schedule=(0.0,)))
    try:
        loop.run(receiver.start())
        loop.run(daemon.start())
        yield _Relay(f"http://{daemon.bound[0]}", receiver)
    finally:
        loop.run(daemon.shutdown())
        loop.run(receiver.stop())
        loop.close()


def _keep_local(case: schemathesis.Case, receiver: Receiver) -> None:
    """Point every URL a generated body carries at the receiver."""
    body = case.body
    if isinstance(body, dict):
        if isinstance(body.get("url"), str):
            body["url"] = receiver.url()
        auth = body.get("auth")
        if isinstance(auth, dict) and isinstance(auth.get("token_url"), str):
            auth["token_url"] = receiver.url("/token")


def _exercise(relay: _Relay, operation: Any, examples: int, mode: GenerationMode, **fixed: Any) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    def run(case: schemathesis.Case) -> None:
        _keep_local(case, relay.receiver)
        response = case.call(base_url=relay.url, headers=AUTH, timeout=15)
        case.validate_response(response, checks=CHECKS, headers=AUTH)

    run()


# schemathesis's strategies call the `random` module, which this hypothesis version reports as deprecated.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_every_answer_conforms_to_the_openapi_document(relay: _Relay) -> None:
    schema = schemathesis.openapi.from_url(f"{relay.url}/v1/openapi.json", timeout=10)
    operations = [result.ok() for result in schema.get_all_operations()]
    # Deleting last, so that the other operations still meet the webhooks made for them.
    operations.sort(key=lambda op: op.method.upper() == "DELETE")
    # §4, §5, §9 and §11; schemathesis leaves out the document's own location
    assert len(operations) == 23
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        _exercise(relay, operation, RANDOM_IDS, GenerationMode.POSITIVE)
        if "webhook_id" in names:
            for webhook_id in (relay.new_webhook(), "cfg"):
                _exercise(
                    relay, operation, KNOWN_IDS, GenerationMode.POSITIVE, path_parameters={"webhook_id": webhook_id}
                )
        if "event_id" in names:
            fixed = {"event_id": relay.new_event()}
            _exercise(relay, operation, KNOWN_IDS, GenerationMode.POSITIVE, path_parameters=fixed)
        if "delivery_id" in names:
            fixed = {"delivery_id": relay.new_delivery()}
            _exercise(relay, operation, KNOWN_IDS, GenerationMode.POSITIVE, path_parameters=fixed)
        if "tenant" in names:
            for tenant in ("acme", "tenant.with:odd_chars-1"):
                key_id = relay.new_tenant_key(tenant)
                fixed = {"tenant": tenant, **({"key_id": key_id} if "key_id" in names else {})}
                _exercise(relay, operation, KNOWN_IDS, GenerationMode.POSITIVE, path_parameters=fixed)
        if operation.body or operation.query:
            _exercise(relay, operation, NEGATIVE, GenerationMode.NEGATIVE)
