"""The webhooks in force: what ingest fans out to and what the scheduler delivers for."""

from __future__ import annotations

from collections.abc import Iterable

from relay.models import Scope, Webhook

_CACHE_LIMIT = 100_000  # (type, tenant) pairs whose subscribers are kept: a tuple of ids each


class Registry:
    """An immutable snapshot swapped whole on change (reload, API), so readers never see half an update.

    Webhooks are held by tenant as well as by id: an event of tenant T is matched against T's webhooks and the
    platform-wide ones only, so a relay serving thousands of tenants does not look at every webhook per event.
    """

    def __init__(self, webhooks: Iterable[Webhook] = ()) -> None:
        self.replace(webhooks)

    def replace(self, webhooks: Iterable[Webhook]) -> None:
        self._webhooks: dict[str, Webhook] = {w.id: w for w in webhooks}
        by_tenant: dict[str | None, list[Webhook]] = {}
        for webhook in self._webhooks.values():
            by_tenant.setdefault(webhook.tenant, []).append(webhook)
        self._by_tenant = by_tenant
        self._match_cache: dict[tuple[str, str | None], tuple[str, ...]] = {}

    def upsert(self, webhook: Webhook) -> None:
        self.replace([*(w for w in self._webhooks.values() if w.id != webhook.id), webhook])

    def remove(self, webhook_id: str) -> None:
        self.replace(w for w in self._webhooks.values() if w.id != webhook_id)

    def get(self, webhook_id: str) -> Webhook | None:
        """Any webhook, whoever it belongs to: for the daemon's own work. Requests go through ``find``."""
        return self._webhooks.get(webhook_id)

    def all(self) -> list[Webhook]:
        return list(self._webhooks.values())

    def find(self, webhook_id: str, scope: Scope) -> Webhook | None:
        """The webhook, if it is inside ``scope``: another tenant's is not there, exactly as a missing one."""
        webhook = self._webhooks.get(webhook_id)
        return webhook if webhook is not None and scope.sees(webhook.tenant) else None

    def visible(self, scope: Scope) -> list[Webhook]:
        """The webhooks inside ``scope``."""
        if scope.tenant is None:
            return self.all()
        return list(self._by_tenant.get(scope.tenant, ()))

    def orderings(self, webhook_ids: tuple[str, ...]) -> tuple[str, ...]:
        """Each webhook's ``ordering``, for an event with an ordering key ("none" for one no longer here)."""
        webhooks = self._webhooks
        return tuple(str(w.ordering) if (w := webhooks.get(i)) is not None else "none" for i in webhook_ids)

    def subscribers(self, event_type: str, tenant: str | None = None) -> tuple[str, ...]:
        """Ids of the active webhooks an event of ``event_type`` and ``tenant`` goes to (cached): the matching ones
        of that tenant and the platform-wide ones; an event with no tenant goes to platform-wide ones only."""
        key = (event_type, tenant)
        cached = self._match_cache.get(key)
        if cached is None:
            own = self._by_tenant.get(tenant, ()) if tenant is not None else ()
            cached = tuple(
                w.id
                for group in (self._by_tenant.get(None, ()), own)
                for w in group
                if w.is_active and w.matches(event_type)
            )
            if len(self._match_cache) < _CACHE_LIMIT:
                self._match_cache[key] = cached
        return cached
