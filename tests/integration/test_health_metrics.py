"""Health, readiness and Prometheus metrics, parsed with prometheus-client's own parser."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from relay.clock import FakeClock
from relay.config import Config, Listen
from relay.models import OAuth2Auth, Secret, Webhook
from relay.store import NewEvent
from tests.support.oauth_server import BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, OAuthServer
from tests.support.receiver import Receiver
from tests.support.relay_harness import RunningRelay, make_config, running_relay, webhook
from tests.support.sqlite_raw import in_writer, set_busy_timeout

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def exposition(relay: RunningRelay, base: str | None = None) -> str:
    async with relay.http.get(f"{base or relay.url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return await response.text()


async def scrape(relay: RunningRelay, base: str | None = None) -> Samples:
    samples = {}
    for family in text_string_to_metric_families(await exposition(relay, base)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def uncached(tmp_path: Path, hooks: list[Webhook], **delivery: Any) -> Config:
    """A relay that counts its store's deliveries on every scrape."""
    config = make_config(tmp_path, hooks, **delivery)
    return replace(config, server=replace(config.server, metrics_cache_ttl=0.0))


async def test_counters_move_with_ingest_and_attempts(tmp_path: Path, receiver: Receiver) -> None:
    receiver.script("/bad", [500])
    hooks = [webhook(receiver.url("/ok"), id="ok"), webhook(receiver.url("/bad"), id="bad")]
    config = uncached(tmp_path, hooks, retry_schedule=(0.0, 3600.0))
    async with running_relay(tmp_path, hooks, config=config) as relay:
        before = await scrape(relay)
        assert before[("relay_events_ingested_total", ())] == 0
        await relay.post([{"type": "t", "data": {"n": n}} for n in range(3)])
        await relay.post({"type": "t", "data": {}, "id": "again"})
        await relay.post({"type": "t", "data": {}, "id": "again"})  # a repeat is not a new event
        await receiver.wait_for(8)
        await relay.wait_until(lambda: relay.sql("SELECT COUNT(*) FROM attempts") == [(8,)])
        after = await scrape(relay)
    assert after[("relay_events_ingested_total", ())] == 4
    assert after[("relay_delivery_attempts_total", (("outcome", "success"), ("webhook", "ok")))] == 4
    assert after[("relay_delivery_attempts_total", (("outcome", "http_error"), ("webhook", "bad")))] == 4
    assert after[("relay_delivery_duration_seconds_count", ())] == 8
    assert after[("relay_event_to_delivery_seconds_count", ())] == 4
    assert after[("relay_deliveries", (("status", "succeeded"),))] == 4
    assert after[("relay_deliveries", (("status", "pending"),))] == 4
    assert after[("relay_deliveries", (("status", "dead"),))] == 0
    labels = {dict(key[1]).get("webhook") for key in after} - {None}
    assert labels == {"ok", "bad"}  # bounded: webhook ids only, never event ids or URLs
    assert after[("relay_store_commits_total", ())] > before[("relay_store_commits_total", ())]


async def test_the_process_and_the_store_commits_are_exposed_with_their_types(tmp_path: Path) -> None:
    async with running_relay(tmp_path, []) as relay:
        families = {f.name: f for f in text_string_to_metric_families(await exposition(relay))}
    assert families["relay_store_commits"].type == "counter"
    assert families["relay_store_commits"].samples[0].name == "relay_store_commits_total"
    for name in ("process_resident_memory_bytes", "process_open_fds", "process_max_fds", "process_start_time_seconds"):
        assert families[name].type == "gauge" and families[name].samples[0].value > 0, name
    assert families["process_cpu_seconds"].type == "counter"
    assert families["python_info"].samples[0].labels["implementation"] == "CPython"
    assert families["relay_oldest_due_delivery_age_seconds"].samples[0].value == 0


async def test_store_counts_are_cached_for_metrics_cache_ttl_and_the_oldest_due_age_grows(tmp_path: Path) -> None:
    clock = FakeClock()
    hooks = [webhook("http://127.0.0.1:9/", id="paused", is_active=False)]
    config = make_config(tmp_path, hooks)
    assert config.server.metrics_cache_ttl == 10.0
    age = ("relay_oldest_due_delivery_age_seconds", ())
    pending = ("relay_deliveries", (("status", "pending"),))
    async with running_relay(tmp_path, hooks, clock=clock, config=config) as relay:
        first = await scrape(relay)
        assert (first[pending], first[age]) == (0, 0)
        # Deliveries queued before the webhook was paused: due, and waiting until it resumes.
        events = [NewEvent(f"e{n}", "t", "2026-01-01T00:00:00Z", b"{}", ("paused",)) for n in range(2)]
        await relay.daemon.store.ingest(events, clock.now())
        relay.advance(4)
        cached = await scrape(relay)
        assert (cached[pending], cached[age]) == (0, 0), "counted again within metrics_cache_ttl"
        relay.advance(7)
        counted = await scrape(relay)
        assert (counted[pending], counted[age]) == (2, 11)
        relay.advance(5)
        later = await scrape(relay)
        assert (later[pending], later[age]) == (2, 16), "the age is taken at the scrape, from the cached due time"


async def test_oauth_token_requests_are_counted(tmp_path: Path, oauth_server: OAuthServer) -> None:
    auth = OAuth2Auth("client_credentials", oauth_server.token_url, BASIC_CLIENT_ID, Secret(BASIC_CLIENT_SECRET))
    async with running_relay(tmp_path, [webhook(oauth_server.resource_url, auth=auth)]) as relay:
        await relay.post([{"type": "t", "data": {}}] * 5)
        await relay.wait_until(lambda: relay.sql("SELECT COUNT(*) FROM attempts") == [(5,)])
        samples = await scrape(relay)
    assert samples[("relay_oauth_token_requests_total", (("result", "success"), ("webhook", "hook")))] == 1


async def test_health_listen_serves_health_and_metrics_on_their_own_address(tmp_path: Path) -> None:
    config = make_config(tmp_path, [])
    config = replace(config, server=replace(config.server, health_listen=Listen("127.0.0.1", 0)))
    async with running_relay(tmp_path, [], config=config) as relay:
        health = f"http://{relay.daemon.bound[1]}"
        for path in ("/healthz", "/readyz"):
            async with relay.http.get(f"{health}{path}") as response:
                assert response.status == 200
        await scrape(relay, health)
        async with relay.http.get(f"{relay.url}/metrics") as response:
            assert response.status == 404  # not on the API listener when health_listen is set


async def test_a_full_store_answers_503_and_recovers(tmp_path: Path) -> None:
    async with running_relay(tmp_path, []) as relay:
        async with relay.http.get(f"{relay.url}/readyz") as response:
            assert response.status == 200

        def full(conn: sqlite3.Connection) -> None:  # the disk-full fault: no page may be added
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")

        await in_writer(relay.daemon.store, full)
        async with relay.http.get(f"{relay.url}/readyz") as response:
            assert response.status == 503
            body = await response.json()
        assert body["status"] == "unavailable" and "full" in body["reason"]
        status, answer = await relay.post({"type": "t", "data": {"blob": "x" * 50_000}})
        assert status == 503 and answer["error"]["code"] == "unavailable"
        assert relay.sql("SELECT COUNT(*) FROM events") == [(0,)]

        def space_again(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA max_page_count = 1073741823")

        await in_writer(relay.daemon.store, space_again)  # the daemon recovers by itself once there is room
        async with relay.http.get(f"{relay.url}/readyz") as response:
            assert response.status == 200
        status, _ = await relay.post({"type": "t", "data": {"blob": "x" * 50_000}})
        assert status == 202
        assert relay.sql("PRAGMA integrity_check") == [("ok",)]


async def test_a_locked_store_answers_503_and_recovers(tmp_path: Path) -> None:
    async with running_relay(tmp_path, []) as relay:
        set_busy_timeout(relay.daemon.store, 0.1)  # wait 100 ms for a lock instead of 5 s
        other = sqlite3.connect(relay.db_path, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")  # another process holds the database
            status, answer = await relay.post({"type": "t", "data": {}, "id": "while-locked"})
            assert status == 503 and answer["error"]["code"] == "unavailable"
            async with relay.http.get(f"{relay.url}/readyz") as response:
                assert response.status == 503
            other.execute("ROLLBACK")
        finally:
            other.close()
        status, _ = await relay.post({"type": "t", "data": {}, "id": "after"})
        assert status == 202
        async with relay.http.get(f"{relay.url}/readyz") as response:
            assert response.status == 200
        assert relay.sql("SELECT id FROM events") == [("after",)]
