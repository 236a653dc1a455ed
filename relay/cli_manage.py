"""The management commands of ``relay`` (CONTRACT §2), talking to the running daemon's API.

``relay webhooks list|show|add|update|rm|test|rotate-secret``, ``relay replay``, ``relay redrive``, and, in
``relay.cli_events``, ``relay deliveries list|cancel`` and ``relay events send|list|show``, and, in
``relay.cli_tenants``, ``relay tenants …``. Where the daemon is: ``--url``,
else the ``server.listen`` of the file named by ``--config`` or ``$RELAY_CONFIG``, else http://127.0.0.1:8080. The
key: ``--api-key``, ``$RELAY_API_KEY``, or the file's first ``server.api_keys`` entry. Human tables by default;
``--json`` prints the API's answer unchanged. Exit status: 0 ok, 1 the API refused or could not be reached (or a
test send failed), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from relay.client import DEFAULT_URL, Client, RejectedError, RelayClientError, ServerError, quoted, url_for
from relay.config import load_client_settings
from relay.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, ConfigError
from relay.models import BodyFormat, Ordering

Command = Callable[[Client, argparse.Namespace], int]

COMMON_OPTIONS = (
    "Every action also takes --url (where the daemon is), --api-key, --config (the daemon's file, for both) "
    "and --json (the API's answer, for scripts): see the action's --help."
)


class UsageError(Exception):
    """A wrong argument that argparse cannot see (a malformed --body, --header)."""


def add_management_commands(commands: Any) -> None:
    """Register the management commands on the ``relay`` parser's sub-commands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the daemon's API, e.g. http://127.0.0.1:8080 or unix:/run/relay/relay.sock")
    common.add_argument("--api-key", help="default: $RELAY_API_KEY, then the config's first server.api_keys")
    common.add_argument("--config", help="the daemon's TOML file, for its listen address and key ($RELAY_CONFIG)")
    common.add_argument("--json", action="store_true", help="print the API's JSON answer, for scripts")

    def command(group: Any, name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = group.add_parser(name, parents=[common], help=help_text)
        parser.set_defaults(func=lambda args: run(func, args))
        return parser

    webhooks = commands.add_parser("webhooks", help="list, create, change and test webhooks", epilog=COMMON_OPTIONS)
    hooks = webhooks.add_subparsers(dest="webhooks_command", metavar="ACTION")
    hooks.required = True
    command(hooks, "list", webhooks_list, "every webhook, newest first").add_argument(
        "--tenant", metavar="T", help="only this tenant's (admin keys)"
    )
    command(hooks, "show", webhooks_show, "one webhook").add_argument("id", help="the webhook's id")
    add = command(hooks, "add", webhooks_add, "create a webhook; its secret is printed once")
    add.add_argument("endpoint", metavar="URL", help="where events are POSTed")
    _webhook_options(add)
    add.add_argument("--secret", help="default: a generated whsec_ secret (a whsk_ key for standard-ed25519)")
    add.add_argument("--inactive", action="store_true", help="create it switched off")
    add.add_argument("--tenant", metavar="T", help="the tenant it belongs to (default: none, platform-wide)")
    update = command(hooks, "update", webhooks_update, "change a webhook created through the API")
    update.add_argument("id", help="the webhook's id")
    update.add_argument("--endpoint", metavar="URL", help="a new URL")
    _webhook_options(update)
    active = update.add_mutually_exclusive_group()
    active.add_argument("--active", dest="is_active", action="store_const", const=True, help="switch it on")
    active.add_argument("--inactive", dest="is_active", action="store_const", const=False, help="hold its deliveries")
    rm = command(hooks, "rm", webhooks_rm, "delete a webhook; its pending deliveries are cancelled")
    rm.add_argument("id", help="the webhook's id")
    command(hooks, "test", webhooks_test, "send a webhook.test event to one webhook now").add_argument(
        "id", help="the webhook's id"
    )
    rotate = command(hooks, "rotate-secret", webhooks_rotate, "a new secret; the old one signs during --overlap")
    rotate.add_argument("id", help="the webhook's id")
    rotate.add_argument("--overlap", default="24h", help="how long the previous secret keeps signing (default 24h)")
    rotate.add_argument(
        "--secret", help="default: one generated for the scheme (whsec_, or whsk_ for standard-ed25519)"
    )
    rotate.add_argument(
        "--signature",
        choices=["standard", "standard-ed25519"],
        help="move to this Standard Webhooks scheme; during --overlap the old secret signs with its own",
    )

    from relay.cli_events import add_event_commands  # it builds on this module

    add_event_commands(commands, command)
    from relay.cli_tenants import add_tenant_commands  # it builds on this module

    add_tenant_commands(commands, command)

    replay = command(commands, "replay", replay_event, "deliver a stored event again")
    replay.add_argument("event_id", metavar="EVENT_ID", help="the event's id")
    replay.add_argument("--webhook", metavar="ID", help="to this webhook only (default: every webhook it matches)")

    redrive = command(commands, "redrive", redrive_failures, "attempt parked deliveries again now")
    redrive.add_argument("--webhook", metavar="ID", help="only this webhook's")
    redrive.add_argument("--include-dead", action="store_true", help="dead deliveries too")


def _webhook_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--event", dest="events", action="append", metavar="TYPE", help="repeat; default: every type")
    parser.add_argument("--description", help="a note for people")
    parser.add_argument(
        "--signature", choices=["standard", "standard-ed25519", "hmac-sha256", "none"], help="default: standard"
    )
    parser.add_argument("--format", choices=[str(f) for f in BodyFormat], help="the body sent; default: envelope")
    parser.add_argument("--header", dest="headers", action="append", metavar="NAME=VALUE", help="repeat")
    parser.add_argument("--retry-schedule", metavar="0s,1m,5m", help="comma-separated delays")
    parser.add_argument("--timeout", metavar="DURATION", help='per attempt, e.g. "5s"')
    parser.add_argument("--rate-limit", metavar="RATE", help='e.g. "50/s"')
    parser.add_argument(
        "--ordering",
        choices=[str(o) for o in Ordering],
        help="per event ordering_key: none (default), fifo (one at a time, in order) or latest (only the newest)",
    )
    parser.add_argument("--body", metavar="JSON", help="more fields as a JSON object (e.g. auth); flags win")


def run(func: Command, args: argparse.Namespace) -> int:
    """Resolve where the daemon is and the key, run ``func``; API failures are one line and exit 1."""
    try:
        client = _client(args)
        return func(client, args)
    except UsageError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RejectedError as exc:
        if getattr(args, "json", False):
            # The API's error envelope on stdout, for scripts; the line on stderr is for people.
            _print_json({"success": False, "error": {"code": exc.code, "message": exc.message, "details": exc.details}})
        if exc.status == 401:
            print(
                f"relay: the relay at {client.url} refused the API key (401 unauthorized): "
                "pass --api-key, set RELAY_API_KEY, or point --config at the daemon's file",
                file=sys.stderr,
            )
        else:
            print(f"relay: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except RelayClientError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _client(args: argparse.Namespace) -> Client:
    config = args.config or os.environ.get("RELAY_CONFIG")
    url, key = args.url, args.api_key or os.environ.get("RELAY_API_KEY")
    if config and (url is None or not key):
        try:
            listen, config_key = load_client_settings(Path(config))
        except ConfigError as exc:
            raise UsageError(f"cannot read {config}: {exc}") from None
        url = url or url_for(listen)
        key = key or (config_key.reveal() if config_key is not None else None)
    try:
        return Client(url or DEFAULT_URL, key, timeout=120.0)  # a test send waits for the attempt
    except ValueError as exc:
        raise UsageError(str(exc)) from None


# -- webhooks ------------------------------------------------------------------------------------------------


def webhooks_list(client: Client, args: argparse.Namespace) -> int:
    webhooks: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {"tenant": args.tenant, "limit": 500, "cursor": cursor}
        answer = _ok(client.call("GET", "/v1/webhooks", query=query))
        webhooks.extend(answer["data"])
        cursor = answer.get("meta", {}).get("next_cursor")
        if cursor is None:
            break
    if args.json:
        _print_json({"success": True, "data": webhooks, "meta": {"next_cursor": None}})
        return EXIT_OK
    rows = [
        [w["id"], w["source"], "yes" if w["is_active"] else "no", ",".join(w["events"]) or "*", w["url"]]
        for w in webhooks
    ]
    _table(["ID", "SOURCE", "ACTIVE", "EVENTS", "URL"], rows, empty="no webhooks")
    return EXIT_OK


def webhooks_show(client: Client, args: argparse.Namespace) -> int:
    answer = _ok(client.call("GET", f"/v1/webhooks/{quoted(args.id)}"))
    if not args.json:
        _print_webhook(answer["data"])
    else:
        _print_json(answer)
    return EXIT_OK


def webhooks_add(client: Client, args: argparse.Namespace) -> int:
    body = {**_fields(args), "url": args.endpoint}
    if args.secret:
        body["secret"] = args.secret
    if args.inactive:
        body["is_active"] = False
    if args.tenant is not None:
        body["tenant"] = args.tenant
    answer = _ok(client.call("POST", "/v1/webhooks", body))
    if args.json:
        _print_json(answer)
        return EXIT_OK
    _print_webhook(answer["data"])
    print(answer.get("meta", {}).get("message", ""))
    return EXIT_OK


def webhooks_update(client: Client, args: argparse.Namespace) -> int:
    body = _fields(args)
    if args.endpoint:
        body["url"] = args.endpoint
    if args.is_active is not None:
        body["is_active"] = args.is_active
    if not body:
        raise UsageError("nothing to change: give at least one option (see relay webhooks update --help)")
    answer = _ok(client.call("PATCH", f"/v1/webhooks/{quoted(args.id)}", body))
    if args.json:
        _print_json(answer)
    else:
        _print_webhook(answer["data"])
    return EXIT_OK


def webhooks_rm(client: Client, args: argparse.Namespace) -> int:
    client.call("DELETE", f"/v1/webhooks/{quoted(args.id)}")
    return _deleted(args, f"deleted webhook {args.id}; its pending deliveries are cancelled")


def webhooks_test(client: Client, args: argparse.Namespace) -> int:
    answer = _ok(client.call("POST", f"/v1/webhooks/{quoted(args.id)}/test"))
    result = answer["data"]
    if args.json:
        _print_json(answer)
    else:
        outcome = f"HTTP {result['status_code']}" if result["status_code"] is not None else "no answer"
        if not result["succeeded"]:
            outcome = f"FAILED {result['error']}: {result['error_detail'] or outcome}"
        print(f"webhook.test {result['event_id']} to {args.id}: {outcome} in {result['duration_ms']:.0f} ms")
        if result.get("response_body"):
            print(f"response: {_one_line(result['response_body'])}")
    return EXIT_OK if result["succeeded"] else EXIT_FAILURE


def webhooks_rotate(client: Client, args: argparse.Namespace) -> int:
    body = {"overlap": args.overlap, **({"secret": args.secret} if args.secret else {})}
    if args.signature:
        body["signature"] = args.signature
    answer = _ok(client.call("POST", f"/v1/webhooks/{quoted(args.id)}/rotate-secret", body))
    if args.json:
        _print_json(answer)
        return EXIT_OK
    webhook = answer["data"]
    print(f"secret: {webhook['secret']}")
    if webhook.get("public_key"):
        print(f"public key (for receivers): {webhook['public_key']}")
    if webhook.get("previous_secret_until"):
        print(f"the previous secret also signs until {webhook['previous_secret_until']}")
    print(answer.get("meta", {}).get("message", ""))
    return EXIT_OK


# -- deliveries, events, replay, re-drive --------------------------------------------------------------------


def replay_event(client: Client, args: argparse.Namespace) -> int:
    body = {"webhook_id": args.webhook} if args.webhook else {}
    answer = _ok(client.call("POST", f"/v1/events/{quoted(args.event_id)}/replay", body))
    if args.json:
        _print_json(answer)
        return EXIT_OK
    deliveries = answer["data"]["deliveries"]
    print(f"replaying event {args.event_id}: {_count(len(deliveries), 'new delivery', 'new deliveries')}")
    if deliveries:
        _deliveries_table(deliveries, with_webhook=True)
    return EXIT_OK


def redrive_failures(client: Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"include_dead": args.include_dead}
    if args.webhook:
        body["webhook_id"] = args.webhook
    answer = _ok(client.call("POST", "/v1/failures/redrive", body))
    if args.json:
        _print_json(answer)
    else:
        print(f"re-driven: {_count(answer['data']['redriven'], 'delivery', 'deliveries')}")
    return EXIT_OK


# -- output --------------------------------------------------------------------------------------------------


def _ok(answer: dict[str, Any] | None) -> dict[str, Any]:
    if answer is None or "data" not in answer:
        raise ServerError("the relay answered without data")
    return answer


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    """The webhook fields the common options give (``--body`` first, the flags over it)."""
    body: dict[str, Any] = {}
    if args.body:
        try:
            body = json.loads(args.body)
        except ValueError as exc:
            raise UsageError(f"--body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise UsageError("--body must be a JSON object")
    if args.events:
        body["events"] = args.events
    if args.headers:
        headers = dict(body.get("headers") or {})
        for item in args.headers:
            name, equals, value = item.partition("=")
            if not equals or not name:
                raise UsageError(f"--header {item!r}: expected NAME=VALUE")
            headers[name] = value
        body["headers"] = headers
    if args.retry_schedule:
        body["retry_schedule"] = [step.strip() for step in args.retry_schedule.split(",")]
    for name in ("description", "signature", "format", "timeout", "rate_limit", "ordering"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    return body


def _print_json(answer: Any) -> None:
    print(json.dumps(answer, indent=2, ensure_ascii=False))


def _deleted(args: argparse.Namespace, message: str) -> int:
    """What a command that removed something prints: the API's empty answer with --json, else ``message``."""
    if args.json:
        _print_json({"success": True, "data": None})
    else:
        print(message)
    return EXIT_OK


def _print_webhook(webhook: dict[str, Any]) -> None:
    auth = webhook.get("auth")
    pairs = [
        ("id", webhook["id"]),
        ("source", webhook["source"]),
        ("tenant", webhook.get("tenant")),
        ("url", webhook["url"]),
        ("ordering", webhook.get("ordering") if webhook.get("ordering") != "none" else None),
        ("active", "yes" if webhook["is_active"] else "no"),
        ("events", ", ".join(webhook["events"]) or "* (every type)"),
        ("description", webhook.get("description")),
        ("signature", webhook["signature"]),
        ("format", webhook["format"]),
        ("sent_at_field", webhook.get("sent_at_field")),
        ("headers", ", ".join(f"{k}: {v}" for k, v in (webhook.get("headers") or {}).items()) or None),
        ("retry_schedule", " ".join(webhook["retry_schedule"]) if webhook.get("retry_schedule") else None),
        ("timeout", webhook.get("timeout")),
        ("rate_limit", webhook.get("rate_limit")),
        ("auth", " ".join(f"{k}={v}" for k, v in auth.items() if v is not None) if auth else None),
        ("created_at", webhook.get("created_at")),
        ("previous_secret_until", webhook.get("previous_secret_until")),
        ("public_key", webhook.get("public_key")),
        ("secret", webhook.get("secret")),
    ]
    _pairs([(k, v) for k, v in pairs if v is not None])


def _pairs(pairs: Sequence[tuple[str, Any]]) -> None:
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        print(f"{key + ':':<{width + 1}} {'-' if value is None else value}")


def _deliveries_table(deliveries: Sequence[dict[str, Any]], *, with_webhook: bool) -> None:
    headers = ["ID", "EVENT", *(["WEBHOOK"] if with_webhook else []), "STATUS", "ATTEMPTS", "LAST", "NEXT", "CREATED"]
    rows = []
    for d in deliveries:
        last = _attempt_summary(d["attempts"][-1]) if d.get("attempts") else "-"
        webhook = [d["webhook_id"]] if with_webhook else []
        rows.append(
            [
                d["id"],
                d["event_id"],
                *webhook,
                d["status"],
                str(d["attempt_count"]),
                last,
                d["next_attempt_at"] or "-",
                d["created_at"],
            ]
        )
    _table(headers, rows, empty="no deliveries")


def _attempt_summary(attempt: dict[str, Any]) -> str:
    status = str(attempt["status_code"]) if attempt["status_code"] is not None else "-"
    text = status if attempt["error"] is None else f"{status} {attempt['error']}"
    return f"{text} ({attempt['duration_ms']:.0f} ms)"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, empty: str) -> None:
    if not rows:
        print(empty)
        return
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    for row in [headers, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
