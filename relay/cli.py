"""The ``relay`` command: serve, check-config, migrate, store copy, receive, and the management commands
(``relay.cli_manage``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from relay import __version__
from relay.cli_manage import add_management_commands
from relay.config import Config, event_loop_factory, load_config, summarize
from relay.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, ConfigError


def _config_path(args: argparse.Namespace) -> Path:
    path = args.config or os.environ.get("RELAY_CONFIG")
    if not path:
        print("relay: no configuration: pass --config PATH or set RELAY_CONFIG", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    return Path(path)


def _load(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"relay: config error: {problem}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def cmd_serve(args: argparse.Namespace) -> int:
    from relay.daemon import Daemon
    from relay.logs import configure_logging

    path = _config_path(args)
    config = _load(path)
    configure_logging(args.log_level, args.log_format)
    daemon = Daemon(config, reload_config=lambda: load_config(path))
    with asyncio.Runner(loop_factory=event_loop_factory(config.server.event_loop)) as runner:
        return runner.run(daemon.run())


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(_config_path(args))
    print(summarize(config))
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    """Bring the store's schema up to date and stop: for deploys that migrate before they start relays."""
    from relay.errors import StoreError
    from relay.logs import configure_logging
    from relay.store import migrate_store

    storage = _load(_config_path(args)).storage
    configure_logging("warning", "console", sys.stderr)  # what it did is printed below, once
    try:
        before, after = asyncio.run(migrate_store(storage))
    except StoreError as exc:
        print(f"relay migrate: {storage.describe()}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if before == after:
        print(f"{storage.describe()}: schema version {after}, up to date")
    else:
        print(f"{storage.describe()}: migrated from schema version {before} to {after}")
    return EXIT_OK


STORE_COPY_EPILOG = (
    "The relay on the SQLite file must be stopped (the copy takes the file's lock, and refuses while a relay holds "
    "it); deliveries it was attempting become pending, due at once. The target's schema is migrated first; a "
    "target that holds any event, delivery, attempt, API webhook or refresh token is refused, and a copy that "
    "fails leaves the target as it was. Config-declared webhooks are not copied: relays declare them from their "
    "files. Exit status: 0 copied; 1 refused or failed (the SQLite file in use, the database unreachable, the "
    "target not empty); 2 a wrong argument (no such file, not a relay store, not a PostgreSQL URL, an unset env:)."
)


def cmd_store_copy(args: argparse.Namespace) -> int:
    """Copy a SQLite outbox into an empty PostgreSQL store (CONTRACT §8, "Moving up"), print what went across."""
    from relay.clock import SystemClock
    from relay.config_storage import redact_url, resolve_storage_url
    from relay.errors import StoreError, ValidationError
    from relay.logs import configure_logging
    from relay.store.copy import copy_store

    def fail(code: int, message: str) -> int:
        print(f"relay store copy: {message}", file=sys.stderr)
        return code

    try:
        target = resolve_storage_url(args.to)
    except ValueError as exc:
        return fail(EXIT_USAGE, f"--to: {exc}")
    where = redact_url(target.reveal())
    configure_logging("warning", "console", sys.stderr)  # what it did is printed below, once
    source = Path(args.source)
    try:
        done = asyncio.run(copy_store(source, target, SystemClock().now()))
    except ValidationError as exc:
        return fail(EXIT_USAGE, _without_password(str(exc), target.reveal()))
    except StoreError as exc:
        return fail(EXIT_FAILURE, f"{where}: {_without_password(str(exc), target.reveal())}")
    except KeyboardInterrupt:
        return fail(EXIT_FAILURE, "interrupted: nothing was copied (the target is as it was)")
    migrated = f" (its schema first brought from version {done.schema[0]} to {done.schema[1]})"
    print(f"copied {source}{migrated if done.schema[0] != done.schema[1] else ''} into {where} in {done.seconds:.2f} s")
    requeued = f"  ({done.requeued} being attempted: pending, due now)" if done.requeued else ""
    for name, count, note in (
        ("events", done.events, ""),
        ("deliveries", done.deliveries, requeued),
        ("attempts", done.attempts, ""),
        ("API webhooks", done.webhooks, ""),
        ("refresh tokens", done.refresh_tokens, ""),
        ("tenant keys", done.tenant_keys, ""),
    ):
        print(f"  {name:<15}{count:>10}{note}")
    return EXIT_OK


def _without_password(text: str, url: str) -> str:
    """``text`` with the URL's password, should a driver message ever quote it, replaced by ``***``."""
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        return text
    for form in {password, unquote(password)} if password else ():
        if len(form) >= 4:  # a shorter one would hide letters of the message, and no driver quotes it anyway
            text = text.replace(form, "***")
    return text


def cmd_receive(args: argparse.Namespace) -> int:
    from relay.receiver import run_receiver

    try:
        asyncio.run(run_receiver(args.host, args.port, args.secret, args.scheme, args.fail_with, sys.stdout))
    except KeyboardInterrupt:
        pass
    except ValueError as exc:
        print(f"relay receive: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"relay receive: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    from relay import resources
    from relay.signing import new_secret
    from relay.starter import new_api_key, starter_config

    try:
        profile = resources.profile(args.profile) if args.profile else None
    except LookupError as exc:
        print(f"relay init: {exc.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    starter = starter_config(profile, api_key=new_api_key(), secret=new_secret())
    path = Path(args.path)
    if path.is_dir():
        print(
            f"relay init: {path} is a directory; pass the file to write, e.g. --path {path / 'relay.toml'}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        _write_private(path, starter.text, overwrite=args.force)
    except FileExistsError:
        print(f"relay init: {path} exists; pass --force to overwrite it", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"relay init: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {path} (mode 0600): a new API key" + (" and webhook secret" if starter.secret else ""))
    print(starter.next_steps(shlex.quote(str(path))))
    return EXIT_OK


def _write_private(path: Path, text: str, *, overwrite: bool) -> None:
    """Write ``text`` to ``path``, readable and writable by its owner only; an existing file only if ``overwrite``."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        os.fchmod(fd, 0o600)  # a file overwritten keeps its mode otherwise
        file.write(text)


def cmd_profiles(args: argparse.Namespace) -> int:
    from relay import resources

    found = resources.profiles()
    width = max(len(p.name) for p in found)
    for profile in found:
        print(f"{profile.name:<{width}}  {profile.summary}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description="A durable webhook relay.")
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    serve = commands.add_parser("serve", help="run the daemon in the foreground")
    serve.add_argument("--config", help="the TOML file (default: $RELAY_CONFIG)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    serve.add_argument("--log-format", choices=["json", "console"], default="json")
    serve.set_defaults(func=cmd_serve)

    check = commands.add_parser("check-config", help="validate the configuration file and summarise it")
    check.add_argument("--config", help="the TOML file (default: $RELAY_CONFIG)")
    check.set_defaults(func=cmd_check_config)

    migrate = commands.add_parser("migrate", help="bring the store's schema up to date, then exit")
    migrate.add_argument("--config", help="the TOML file (default: $RELAY_CONFIG)")
    migrate.set_defaults(func=cmd_migrate)

    store = commands.add_parser("store", help="move an outbox between backends")
    store_commands = store.add_subparsers(dest="store_command", metavar="ACTION")
    store_commands.required = True
    copy = store_commands.add_parser(
        "copy", help="copy a SQLite outbox into an empty PostgreSQL store", epilog=STORE_COPY_EPILOG
    )
    copy.add_argument("--from", dest="source", required=True, metavar="SQLITE_PATH", help="the SQLite file")
    copy.add_argument(
        "--to", required=True, metavar="URL", help="postgresql://user:pass@host/db, or env:NAME, file:/path, cred:NAME"
    )
    copy.set_defaults(func=cmd_store_copy)

    receive = commands.add_parser("receive", help="a development receiver that verifies signatures")
    receive.add_argument("--port", type=int, default=9000, help="the port to listen on (default 9000; 0: any free)")
    receive.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    receive.add_argument(
        "--secret",
        help='verify signatures with this secret ("whsec_" + base64 of 24-64 bytes for standard, the "whpk_" '
        'public key or "whsk_" key for standard-ed25519, at least 16 characters for hmac-sha256)',
    )
    receive.add_argument(
        "--scheme", choices=["standard", "standard-ed25519", "hmac-sha256"], help="default: from the headers"
    )
    receive.add_argument("--fail-with", type=int, metavar="STATUS", help="answer this status instead of 200")
    receive.set_defaults(func=cmd_receive)

    init = commands.add_parser("init", help="write a starter configuration with a new API key and webhook secret")
    init.add_argument("--profile", metavar="NAME", help="deliver the way a platform does (see relay profiles)")
    init.add_argument("--path", default="relay.toml", help="the file to write (default relay.toml)")
    init.add_argument("--force", action="store_true", help="overwrite the file if it exists")
    init.set_defaults(func=cmd_init)

    profiles = commands.add_parser("profiles", help="list the platform profiles relay init --profile takes")
    profiles.set_defaults(func=cmd_profiles)
    add_management_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
