"""The webhooks in force: what ingest fans out to and what the scheduler delivers for."""

from __future__ import annotations

from collections.abc import Iterable

from relay.models import Webhook


class Registry:
    """An immutable snapshot swapped whole on change (reload, API), so readers never see half an update."""

    def __init__(self, webhooks: Iterable[Webhook] = ()) -> None:
        self._webhooks: dict[str, Webhook] = {w.id: w for w in webhooks}
        self._match_cache: dict[str, tuple[str, ...]] = {}

    def replace(self, webhooks: Iterable[Webhook]) -> None:
        self._webhooks = {w.id: w for w in webhooks}
        self._match_cache = {}

    def upsert(self, webhook: Webhook) -> None:
        self.replace([*(w for w in self._webhooks.values() if w.id != webhook.id), webhook])

    def remove(self, webhook_id: str) -> None:
        self.replace(w for w in self._webhooks.values() if w.id != webhook_id)

    def get(self, webhook_id: str) -> Webhook | None:
        return self._webhooks.get(webhook_id)

    def all(self) -> list[Webhook]:
        return list(self._webhooks.values())

    def subscribers(self, event_type: str) -> tuple[str, ...]:
        """Ids of the active webhooks whose filter matches ``event_type`` (cached per type)."""
        cached = self._match_cache.get(event_type)
        if cached is None:
            cached = tuple(w.id for w in self._webhooks.values() if w.is_active and w.matches(event_type))
            if len(self._match_cache) < 10_000:
                self._match_cache[event_type] = cached
        return cached
