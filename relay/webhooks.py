"""Every change to the set of webhooks, whether it comes through the management API or from the config file.

A change is committed to the store first and then swapped into the ``Registry``, one change at a time (one lock),
so the two never disagree for longer than a swap. Config-declared webhooks answer ``409`` to API changes; the
file is reconciled as a whole at startup and on SIGHUP, and webhooks created through the API stay as they are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import orjson
import structlog

from relay.clock import Clock
from relay.config import DeliveryConfig
from relay.errors import ConfigError, Conflict, NotFound, Problem
from relay.models import Scope, Secret, Webhook, new_id
from relay.registry import Registry
from relay.store import Store, TenantRemoved
from relay.webhook_specs import (
    create_spec,
    load_api_webhooks,
    parse_rotation,
    patch_spec,
    rotation_scheme,
    rotation_secret,
    warn_weak_secrets,
)

log = structlog.get_logger()


def webhook_spec(webhook: Webhook) -> bytes:
    """What the store keeps of a config-declared webhook: its public shape, never a secret."""
    return orjson.dumps(
        {
            "id": webhook.id,
            "url": webhook.url,
            "events": list(webhook.events),
            "signature": webhook.signature,
            "format": webhook.format,
            "tenant": webhook.tenant,
            "ordering": webhook.ordering,
        }
    )


class WebhookService:
    def __init__(self, store: Store, registry: Registry, clock: Clock) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self._lock = asyncio.Lock()

    # -- the config file ---------------------------------------------------------------------------------

    async def load(self, declared: Iterable[Webhook]) -> None:
        """At startup: the webhooks created through the API, as stored, then the file's."""
        now = self.clock.now()
        api_webhooks = await load_api_webhooks(self.store)
        warn_weak_secrets(api_webhooks, now)  # stored before the secret rules; the config's are held to them
        self.registry.replace(api_webhooks)
        await self.apply_config(tuple(declared))

    async def reload_api_webhooks(self) -> list[str]:
        """Another relay changed webhooks through its API: take the API webhooks as the store now has them into the
        Registry (the config-declared ones stay); the ids of those added, changed or removed."""
        async with self._lock:
            stored = {w.id: w for w in await load_api_webhooks(self.store)}
            # No await between reading the Registry and the swap, as in ``apply_config``.
            held = {w.id: w for w in self.registry.all() if w.source == "api"}
            declared = [w for w in self.registry.all() if w.source != "api" and w.id not in stored]
            self.registry.replace([*declared, *stored.values()])
        changed = sorted(i for i in stored.keys() | held.keys() if stored.get(i) != held.get(i))
        for webhook_id in changed:
            log.info("webhook_reloaded", webhook_id=webhook_id, removed=webhook_id not in stored)
        return changed

    async def apply_config(self, declared: tuple[Webhook, ...]) -> None:
        """Make the config-declared webhooks ``declared``; those created through the API stay as they are."""
        now = self.clock.now()
        api_ids = {w.id for w in self.registry.all() if w.source == "api"}
        clashes = [
            Problem(f"webhooks[{index}].id", f'"{w.id}" is already the id of a webhook created through the API')
            for index, w in enumerate(declared)
            if w.id in api_ids
        ]
        if clashes:
            raise ConfigError(clashes)
        removed = await self.store.sync_config_webhooks({w.id: webhook_spec(w) for w in declared}, now)
        for webhook_id in removed:
            log.info("webhook_removed", webhook_id=webhook_id, source="config")
        created = await self.store.webhook_created_at()
        # No await between reading the API webhooks and the swap: a concurrent API change is never lost.
        api_webhooks = [w for w in self.registry.all() if w.source == "api"]
        self.registry.replace([*(replace(w, created_at=created.get(w.id)) for w in declared), *api_webhooks])

    # -- the management API ------------------------------------------------------------------------------

    def get(self, webhook_id: str, scope: Scope) -> Webhook:
        """The webhook inside ``scope``: another tenant's is missing, with the same 404."""
        webhook = self.registry.find(webhook_id, scope)
        if webhook is None:
            raise NotFound(f"no webhook with id {webhook_id!r}")
        return webhook

    async def create(
        self, body: Any, delivery: DeliveryConfig, *, tenant: str | None, max_per_tenant: int | None = None
    ) -> Webhook:
        """A new API webhook. ``tenant``: the tenant of the key creating it (None: an admin key), whose webhook it
        is; a body naming another is a 400. A tenant holding ``max_per_tenant`` webhooks gets none more (409)."""
        webhook, spec = create_spec(body, delivery, tenant=tenant)
        now = self.clock.now()
        async with self._lock:
            for _ in range(3):  # a generated id is random; a clash with a config-declared one is all but impossible
                taken = self.registry.get(webhook.id) is not None
                if not taken and await self.store.insert_api_webhook(
                    webhook.id, orjson.dumps(spec), now, max_per_tenant=max_per_tenant
                ):
                    break
                webhook = replace(webhook, id=new_id("whk", now))
            else:
                raise Conflict("could not allocate a webhook id; try again")
            webhook = replace(webhook, created_at=now)
            self.registry.upsert(webhook)
        log.info("webhook_created", webhook_id=webhook.id, source="api", tenant=webhook.tenant)
        return webhook

    async def patch(self, webhook_id: str, body: Any, delivery: DeliveryConfig, *, scope: Scope) -> Webhook:
        async with self._lock:
            current = self._api_webhook(webhook_id, scope)
            stored = await self.store.api_webhook(current.id)
            if stored is None:
                raise NotFound(f"no webhook with id {current.id!r}")
            webhook, spec = patch_spec(orjson.loads(stored.spec), body, delivery)
            webhook = replace(
                webhook,
                id=current.id,
                created_at=current.created_at,
                previous_secret=current.previous_secret,
                previous_secret_until=current.previous_secret_until,
            )
            if not await self.store.update_api_webhook(current.id, orjson.dumps(spec), self.clock.now()):
                raise NotFound(f"no webhook with id {current.id!r}")
            self.registry.upsert(webhook)
        fields = sorted(body) if isinstance(body, dict) else []
        log.info("webhook_updated", webhook_id=webhook.id, fields=fields, is_active=webhook.is_active)
        return webhook

    async def delete(self, webhook_id: str, *, scope: Scope) -> int:
        """Remove an API webhook; how many of its unfinished deliveries were cancelled (kept, as ``cancelled``)."""
        async with self._lock:
            current = self._api_webhook(webhook_id, scope)
            # Out of the Registry first: an ingest that still matched it has already queued its commit, which the
            # cancellation below (queued after it) then covers.
            self.registry.remove(current.id)
            try:
                cancelled = await self.store.delete_api_webhook(current.id, self.clock.now())
            except BaseException:
                self.registry.upsert(current)
                raise
        if cancelled is None:
            raise NotFound(f"no webhook with id {current.id!r}")
        log.info("webhook_deleted", webhook_id=current.id, cancelled=cancelled)
        return cancelled

    async def rotate_secret(self, webhook_id: str, body: Any, *, scope: Scope) -> Webhook:
        """A new secret (given, or generated); the previous one keeps signing for the overlap the body asks. A
        rotation may move the webhook between the two Standard Webhooks schemes: the previous secret then signs
        with its own during the overlap (``relay.signing.previous_scheme``)."""
        asked = parse_rotation(body)
        overlap = asked.overlap
        now = self.clock.now()
        async with self._lock:
            current = self._api_webhook(webhook_id, scope)
            scheme = rotation_scheme(current.signature, asked.signature)
            secret = rotation_secret(asked.secret, scheme)
            stored = await self.store.api_webhook(current.id)
            if stored is None:
                raise NotFound(f"no webhook with id {current.id!r}")
            spec = {**orjson.loads(stored.spec), "secret": secret}
            if scheme is not current.signature:
                spec["signature"] = str(scheme)
            previous = current.secret if overlap > 0 else None
            until = now + overlap if previous is not None else None
            rotation = (previous.reveal() if previous is not None else None, until)
            if not await self.store.update_api_webhook(current.id, orjson.dumps(spec), now, rotation=rotation):
                raise NotFound(f"no webhook with id {current.id!r}")
            webhook = replace(
                current,
                secret=Secret(secret),
                signature=scheme,
                previous_secret=previous,
                previous_secret_until=until,
            )
            self.registry.upsert(webhook)
        log.info("webhook_secret_rotated", webhook_id=webhook.id, overlap_seconds=overlap, signature=str(scheme))
        return webhook

    async def remove_tenant(self, tenant: str) -> TenantRemoved:
        """Offboard a tenant: its API webhooks removed (their unfinished deliveries cancelled), its keys revoked,
        its portal links ended. A tenant with webhooks declared in the config file is refused (409) before anything
        changes: those are removed from the file."""
        async with self._lock:
            held = [w for w in self.registry.all() if w.tenant == tenant]
            declared = sorted(w.id for w in held if w.source != "api")
            if declared:
                raise Conflict(
                    f"tenant {tenant!r} has webhooks declared in the configuration file ({', '.join(declared)}); "
                    "remove them there and reload (SIGHUP) first"
                )
            # Out of the Registry first, as ``delete`` does: the cancellation covers what ingests still queued.
            for webhook in held:
                self.registry.remove(webhook.id)
            try:
                removed = await self.store.delete_tenant(tenant, self.clock.now())
            except BaseException:
                for webhook in held:
                    self.registry.upsert(webhook)
                raise
        for webhook_id in removed.webhook_ids:
            log.info("webhook_deleted", webhook_id=webhook_id, tenant=tenant)
        return removed

    def _api_webhook(self, webhook_id: str, scope: Scope) -> Webhook:
        webhook = self.get(webhook_id, scope)
        if webhook.source != "api":
            raise Conflict(
                f"webhook {webhook.id!r} is declared in the configuration file; change it there and reload (SIGHUP)"
            )
        return webhook
