"""The management commands about events and deliveries: ``relay events send|list|show`` and ``relay deliveries
list|cancel`` (CONTRACT §2, §11, §12), registered by ``relay.cli_manage``, whose client resolution, errors and
output they share.

``--data`` takes JSON or ``@FILE`` (``@-`` for standard input); JSON that does not parse is a usage error (exit 2),
a payload the API refuses is its one-line error (exit 1). A list prints the command for its next page on stderr,
with the same filters and ``--limit``. ``--tenant T`` (CONTRACT §9) gives a sent event its tenant, and narrows a list
to one tenant's (``?tenant=``, for admin keys; a tenant key lists only its own anyway). ``--ordering-key K``
(CONTRACT §11) gives a sent event its ordering key; ``relay deliveries cancel ID`` cancels a pending or parked
delivery, so that its ordering key moves on.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relay.cli_manage import (
    COMMON_OPTIONS,
    Command,
    UsageError,
    _attempt_summary,
    _deliveries_table,
    _ok,
    _pairs,
    _print_json,
    _table,
)
from relay.client import Client, quoted
from relay.errors import EXIT_OK
from relay.models import DeliveryStatus

AddCommand = Callable[[Any, str, Command, str], argparse.ArgumentParser]


def add_event_commands(commands: Any, command: AddCommand) -> None:
    deliveries = commands.add_parser(
        "deliveries", help="delivery history, of every webhook or one", epilog=COMMON_OPTIONS
    )
    deliveries_actions = deliveries.add_subparsers(dest="deliveries_command", metavar="ACTION")
    deliveries_actions.required = True
    listing = command(deliveries_actions, "list", deliveries_list, "deliveries with their last attempt, newest first")
    listing.add_argument("--webhook", metavar="ID", help="only this webhook's (default: every webhook's)")
    listing.add_argument("--status", choices=[str(s) for s in DeliveryStatus], help="only this status")
    _tenant_option(listing)
    _list_options(listing, "created")
    about = "cancel a pending or parked delivery; its ordering key moves on"
    cancel = command(deliveries_actions, "cancel", deliveries_cancel, about)
    cancel.add_argument("id", help="the delivery's id (dlv_…)")

    events = commands.add_parser("events", help="send, list and inspect events", epilog=COMMON_OPTIONS)
    events_actions = events.add_subparsers(dest="events_command", metavar="ACTION")
    events_actions.required = True
    send = command(events_actions, "send", events_send, "post one event (202 once it is in the outbox)")
    send.add_argument("type", metavar="TYPE", help="the event type, e.g. consent.created")
    send.add_argument("--data", required=True, metavar="JSON|@FILE", help="the payload, or @FILE to read it (@- stdin)")
    send.add_argument("--id", help="the event's id (default: one the relay makes); posting it again is a no-op")
    send.add_argument("--tenant", metavar="T", help="the tenant it belongs to (default: none; a tenant key's own)")
    send.add_argument(
        "--ordering-key", metavar="K", help='its ordering key: "fifo" and "latest" webhooks keep this key\'s order'
    )
    listing = command(events_actions, "list", events_list, "events newest first, as ingested")
    listing.add_argument("--type", help="only events of this type (exact)")
    _tenant_option(listing)
    _list_options(listing, "created (their created_at)")
    show = command(events_actions, "show", events_show, "an event with its deliveries and attempts")
    show.add_argument("id", help="the event's id")


def _tenant_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", metavar="T", help="only this tenant's (admin keys)")


def _list_options(parser: argparse.ArgumentParser, created: str) -> None:
    parser.add_argument("--since", metavar="TIME", help=f"only those {created} at or after this RFC 3339 time")
    parser.add_argument("--until", metavar="TIME", help=f"only those {created} before this RFC 3339 time")
    parser.add_argument("--limit", type=int, help="at most this many (1-500, default 50)")
    parser.add_argument("--cursor", help="the page after this cursor (printed when more follow)")


def deliveries_list(client: Client, args: argparse.Namespace) -> int:
    query = {"status": args.status, "since": args.since, "until": args.until, "limit": args.limit}
    if args.webhook is not None and args.tenant is None:  # the webhook's own list: 404 for an id no webhook has
        path, scoped = f"/v1/webhooks/{quoted(args.webhook)}/deliveries", query
    else:  # only the list of every webhook's deliveries takes ?tenant=
        path, scoped = "/v1/deliveries", {"webhook_id": args.webhook, "tenant": args.tenant, **query}
    answer = _ok(client.call("GET", path, query={**scoped, "cursor": args.cursor}))
    if args.json:
        _print_json(answer)
        return EXIT_OK
    _deliveries_table(answer["data"], with_webhook=args.webhook is None)
    _next_page(answer, "relay deliveries list", {"webhook": args.webhook, "tenant": args.tenant, **query})
    return EXIT_OK


def deliveries_cancel(client: Client, args: argparse.Namespace) -> int:
    answer = _ok(client.call("POST", f"/v1/deliveries/{quoted(args.id)}/cancel"))
    if args.json:
        _print_json(answer)
    else:
        delivery = answer["data"]
        print(f"cancelled delivery {delivery['id']} of event {delivery['event_id']} to {delivery['webhook_id']}")
    return EXIT_OK


def events_send(client: Client, args: argparse.Namespace) -> int:
    # Client.send makes the event's id before the first try, so its retries (a refused connection, a timeout, a
    # 503) can never post the event twice.
    data = _json_data(args.data)
    accepted = client.send(args.type, data, id=args.id, tenant=args.tenant, ordering_key=args.ordering_key)
    if args.json:
        _print_json({"success": True, "data": {"id": accepted.id, "deliveries": accepted.deliveries}})
    else:
        count = accepted.deliveries
        print(f"accepted {accepted.id}: {count} {'delivery' if count == 1 else 'deliveries'}")
    return EXIT_OK


def events_list(client: Client, args: argparse.Namespace) -> int:
    query = {"type": args.type, "tenant": args.tenant, "since": args.since, "until": args.until, "limit": args.limit}
    answer = _ok(client.call("GET", "/v1/events", query={**query, "cursor": args.cursor}))
    if args.json:
        _print_json(answer)
        return EXIT_OK
    rows = [[e["id"], e["type"], e["created_at"], e["ingested_at"], str(e["deliveries"])] for e in answer["data"]]
    _table(["ID", "TYPE", "CREATED", "INGESTED", "DELIVERIES"], rows, empty="no events")
    _next_page(answer, "relay events list", query)
    return EXIT_OK


def events_show(client: Client, args: argparse.Namespace) -> int:
    answer = _ok(client.call("GET", f"/v1/events/{quoted(args.id)}"))
    if args.json:
        _print_json(answer)
        return EXIT_OK
    event = answer["data"]
    _pairs(
        [
            ("id", event["id"]),
            ("type", event["type"]),
            *([("tenant", event["tenant"])] if event.get("tenant") else []),
            *([("ordering_key", event["ordering_key"])] if event.get("ordering_key") else []),
            ("created_at", event["created_at"]),
            ("ingested_at", event.get("ingested_at")),
            ("data", json.dumps(event["data"], separators=(",", ":"))),
        ]
    )
    print()
    _deliveries_table(event.get("deliveries", []), with_webhook=True)
    for delivery in event.get("deliveries", []):
        for attempt in delivery["attempts"]:
            print(f"  {delivery['id']} #{attempt['number']} {attempt['started_at']} {_attempt_summary(attempt)}")
    return EXIT_OK


def _json_data(value: str) -> Any:
    """``--data``: JSON, or ``@FILE`` for a file's (``@-``: standard input's)."""
    name = "--data"
    text = value
    if value.startswith("@"):
        name = f"--data {value}"
        try:
            text = sys.stdin.read() if value == "@-" else Path(value[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{name}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{name} is not JSON: {exc}") from None


def _next_page(answer: dict[str, Any], command: str, options: dict[str, Any]) -> None:
    """When more follow, the command for the next page (same filters and --limit), on stderr."""
    cursor = answer.get("meta", {}).get("next_cursor")
    if cursor:
        given = [f"--{name} {shlex.quote(str(value))}" for name, value in options.items() if value is not None]
        print(f"more: {' '.join([command, *given, '--cursor', cursor])}", file=sys.stderr)
