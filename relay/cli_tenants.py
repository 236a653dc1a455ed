"""The tenant commands (CONTRACT §9), for admin keys: ``relay tenants list|show|rm|portal`` and ``relay tenants keys
create|list|revoke``, registered by ``relay.cli_manage``, whose client resolution, errors and output they share.

A tenant needs no creation: ``relay tenants keys create T`` (or a webhook added with ``--tenant T``) makes it. A
tenant that has neither is unknown (the API's one-line ``404``); a tenant id that is not one is its ``400`` naming
``tenant``. A new key is printed once: the relay keeps only its SHA-256.
"""

from __future__ import annotations

import argparse
from typing import Any

from relay.cli_events import AddCommand
from relay.cli_manage import COMMON_OPTIONS, _deleted, _ok, _pairs, _print_json, _table
from relay.client import Client, quoted
from relay.errors import EXIT_OK


def add_tenant_commands(commands: Any, command: AddCommand) -> None:
    tenants = commands.add_parser(
        "tenants", help="a platform's customers: their keys, portal links, offboarding", epilog=COMMON_OPTIONS
    )
    actions = tenants.add_subparsers(dest="tenants_command", metavar="ACTION")
    actions.required = True
    command(actions, "list", tenants_list, "every tenant: its webhooks, keys and deliveries by status")
    command(actions, "show", tenants_show, "one tenant").add_argument("tenant", help="the tenant's id")
    rm = command(actions, "rm", tenants_rm, "offboard: its API webhooks deleted (deliveries cancelled), keys revoked")
    rm.add_argument("tenant", help="the tenant's id")
    portal = command(actions, "portal", tenants_portal, "a link that opens the dashboard as the tenant")
    portal.add_argument("tenant", help="the tenant's id")
    portal.add_argument("--ttl", metavar="DURATION", help="how long the link works (default 1h, at most 30d)")

    keys = actions.add_parser("keys", help="create, list and revoke a tenant's API keys", epilog=COMMON_OPTIONS)
    key_actions = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    key_actions.required = True
    create = command(key_actions, "create", keys_create, "a new key for the tenant; it is printed once")
    create.add_argument("tenant", help="the tenant's id (created with its first key)")
    create.add_argument("--description", help="a note for people, e.g. who holds the key")
    command(key_actions, "list", keys_list, "the tenant's keys (never the keys themselves)").add_argument(
        "tenant", help="the tenant's id"
    )
    revoke = command(key_actions, "revoke", keys_revoke, "refuse the key from the next request on")
    revoke.add_argument("tenant", help="the tenant's id")
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key's id (key_…), as keys list shows it")


def tenants_list(client: Client, args: argparse.Namespace) -> int:
    answer = _ok(client.call("GET", "/v1/tenants"))
    if args.json:
        _print_json(answer)
        return EXIT_OK
    rows = [[t["id"], str(t["webhooks"]), str(t["keys"]), _by_status(t["deliveries"])] for t in answer["data"]]
    _table(["ID", "WEBHOOKS", "KEYS", "DELIVERIES"], rows, empty="no tenants")
    return EXIT_OK


def tenants_show(client: Client, args: argparse.Namespace) -> int:
    answer = _ok(client.call("GET", f"/v1/tenants/{quoted(args.tenant)}"))
    if args.json:
        _print_json(answer)
        return EXIT_OK
    tenant = answer["data"]
    _pairs(
        [
            ("id", tenant["id"]),
            ("webhooks", tenant["webhooks"]),
            ("keys", tenant["keys"]),
            ("deliveries", _by_status(tenant["deliveries"])),
        ]
    )
    return EXIT_OK


def tenants_rm(client: Client, args: argparse.Namespace) -> int:
    client.call("DELETE", f"/v1/tenants/{quoted(args.tenant)}")
    return _deleted(
        args, f"deleted tenant {args.tenant}: its API webhooks are gone (deliveries cancelled), its keys revoked"
    )


def tenants_portal(client: Client, args: argparse.Namespace) -> int:
    body = {"ttl": args.ttl} if args.ttl is not None else {}
    answer = _ok(client.call("POST", f"/v1/tenants/{quoted(args.tenant)}/portal", body))
    if args.json:
        _print_json(answer)
    else:
        _pairs([("url", answer["data"]["url"]), ("expires_at", answer["data"]["expires_at"])])
    return EXIT_OK


def keys_create(client: Client, args: argparse.Namespace) -> int:
    body = {"description": args.description} if args.description is not None else {}
    answer = _ok(client.call("POST", f"/v1/tenants/{quoted(args.tenant)}/keys", body))
    if args.json:
        _print_json(answer)
        return EXIT_OK
    key = answer["data"]
    pairs = [(name, key.get(name)) for name in ("id", "tenant", "description", "created_at", "key")]
    _pairs([(name, value) for name, value in pairs if value is not None])
    print(answer.get("meta", {}).get("message", ""))
    return EXIT_OK


def keys_list(client: Client, args: argparse.Namespace) -> int:
    answer = _ok(client.call("GET", f"/v1/tenants/{quoted(args.tenant)}/keys"))
    if args.json:
        _print_json(answer)
        return EXIT_OK
    rows = [
        [k["id"], k["prefix"] + "…", k["created_at"], k["last_used_at"] or "never", k["description"] or "-"]
        for k in answer["data"]
    ]
    _table(["ID", "PREFIX", "CREATED", "LAST_USED", "DESCRIPTION"], rows, empty=f"no keys for tenant {args.tenant}")
    return EXIT_OK


def keys_revoke(client: Client, args: argparse.Namespace) -> int:
    client.call("DELETE", f"/v1/tenants/{quoted(args.tenant)}/keys/{quoted(args.key_id)}")
    return _deleted(args, f"revoked key {args.key_id} of tenant {args.tenant}: it is refused from the next request on")


def _by_status(counts: dict[str, int]) -> str:
    """``{"succeeded": 12, "failed": 1}`` as ``succeeded=12 failed=1`` (statuses with none left out)."""
    return " ".join(f"{status}={n}" for status, n in counts.items() if n) or "-"
