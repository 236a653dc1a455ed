"""The platform profiles in ``config/profiles/`` as a user would paste them, for tests at every tier.

A profile is a commented TOML fragment: one active ``[[webhooks]]`` table (with its ``[webhooks.auth]``), plus
commented alternatives a user may switch to: single ``# key = value`` lines (``# format = "data-flat"``) and
whole commented tables (``# [delivery]`` hints, ``# [webhooks.auth]`` alternatives). The helpers below edit a
profile the way a user would (set a key, uncomment an alternative, swap the auth table) and compose a full
config file around it, so the tests run the profile's own text and not a copy of it.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path

from relay.config import Config, load_config
from relay.models import Webhook

PROFILE_DIR = Path(__file__).resolve().parents[2] / "config" / "profiles"
PLATFORMS = ("expressconsent", "consentproof", "didomi", "dataguard")
API_KEY = "profile-test-key-0123"

# Every secret the profiles read with "env:", as a test's fake environment.
PROFILE_ENV = {
    "EXPRESSCONSENT_WEBHOOK_SECRET": "expressconsent-secret-0123",
    "CONSENTPROOF_WEBHOOK_SECRET": "whsec_a1b2c3d4e5f6",
    "DIDOMI_OAUTH_CLIENT_SECRET": "didomi-client-secret",
    "DATAGUARD_CLIENT_SECRET": "dataguard-client-secret",
    "DATAGUARD_REFRESH_TOKEN": "dataguard-refresh-token",
    "DATAGUARD_STATIC_TOKEN": "dataguard-static-token",
}

_ACTIVE_KEY = r"^{key}[ \t]*=.*$"
_COMMENTED_KEY = re.compile(r"^# ([a-z_]+) = .*$")
_COMMENTED_HEADER = re.compile(r"^# (\[\[?[a-z_.]+\]\]?)(?:\s+#.*)?$")
_ACTIVE_AUTH = re.compile(r"^\[webhooks\.auth\][^\n]*\n(?:[^#\n][^\n]*(?:\n|$))*", re.MULTILINE)


def read_profile(name: str) -> str:
    return (PROFILE_DIR / f"{name}.toml").read_text()


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def set_keys(text: str, **values: object) -> str:
    """Set each key's active (uncommented) line, which must occur exactly once; ``None`` deletes the line."""
    for key, value in values.items():
        pattern = re.compile(_ACTIVE_KEY.format(key=re.escape(key)), re.MULTILINE)
        found = pattern.findall(text)
        assert len(found) == 1, f"{key!r}: {len(found)} active lines in the profile"
        replacement = "" if value is None else f"{key} = {toml_value(value)}"
        text = pattern.sub(_constant(replacement), text)
    return text


def _constant(line: str) -> Callable[[re.Match[str]], str]:
    """A ``re.sub`` replacement taken literally (no backslash escapes)."""
    return lambda _: line


def commented_lines(text: str) -> list[tuple[int, str]]:
    """``(line index, key)`` of each commented ``# key = value`` line that is not part of a commented table."""
    found: list[tuple[int, str]] = []
    in_table = False
    for index, line in enumerate(text.splitlines()):
        if _COMMENTED_HEADER.match(line):
            in_table = True
        elif (match := _COMMENTED_KEY.match(line)) is not None:
            if not in_table:
                found.append((index, match.group(1)))
        else:
            in_table = False
    return found


def uncomment(text: str, key: str) -> str:
    """Switch to the commented alternative ``# key = …``: uncomment it in place (so it stays in its table) and
    delete that table's active line for the same key, if any."""
    candidates = [index for index, name in commented_lines(text) if name == key]
    assert len(candidates) == 1, f"{key!r}: {len(candidates)} commented alternatives in the profile"
    return uncomment_line(text, candidates[0])


def uncomment_line(text: str, index: int) -> str:
    lines = text.splitlines()
    line = lines[index].removeprefix("# ")
    key = line.split("=", 1)[0].strip()
    lines[index] = line
    start = max((i for i in range(index) if lines[i].startswith("[")), default=0)
    end = next((i for i in range(index + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    active = re.compile(_ACTIVE_KEY.format(key=re.escape(key)))
    kept = [item for i, item in enumerate(lines) if not (start <= i < end and i != index and active.match(item))]
    return "\n".join(kept) + "\n"


def commented_tables(text: str) -> list[tuple[str, str]]:
    """Each commented table (``# [delivery]`` and the lines ``# key = value`` under it), uncommented, with its
    header: ``[("[delivery]", '[delivery]\\nredrive_max_age = "3h"\\n'), …]``."""
    tables: list[tuple[str, str]] = []
    current: list[str] | None = None
    header = ""
    for line in [*text.splitlines(), ""]:
        if (match := _COMMENTED_HEADER.match(line)) is not None:
            if current:
                tables.append((header, "\n".join(current) + "\n"))
            header, current = match.group(1), [line.removeprefix("# ")]
        elif current is not None and _COMMENTED_KEY.match(line):
            current.append(line.removeprefix("# "))
        elif current is not None:
            tables.append((header, "\n".join(current) + "\n"))
            current = None
    return tables


def delivery_hints(text: str) -> dict[str, object]:
    """The profile's commented ``[delivery]`` settings, parsed; ``{}`` when it has none."""
    hints: dict[str, object] = {}
    for header, table in commented_tables(text):
        if header == "[delivery]":
            hints.update(tomllib.loads(table)["delivery"])
    return hints


def replace_auth(text: str, table: str | None) -> str:
    """Replace the active ``[webhooks.auth]`` table with ``table`` (``None``: delete it)."""
    assert len(_ACTIVE_AUTH.findall(text)) == 1, "the profile has no single active [webhooks.auth] table"
    return _ACTIVE_AUTH.sub(lambda _: table or "", text)


def config_text(
    *profiles: str,
    listen: str | None = None,
    storage_path: Path | None = None,
    delivery: Mapping[str, object] | None = None,
) -> str:
    """A whole relay.toml: ``[server]`` (and ``[storage]``, ``[delivery]`` when given), then the pasted profiles."""
    head = ["[server]"]
    if listen is not None:
        head.append(f"listen = {toml_value(listen)}")
    head.append(f"api_keys = [{toml_value(API_KEY)}]")
    if storage_path is not None:
        head += ["", "[storage]", f"path = {toml_value(str(storage_path))}"]
    if delivery:
        head += ["", "[delivery]", *(f"{key} = {toml_value(value)}" for key, value in delivery.items())]
    return "\n".join(head) + "\n\n" + "\n".join(profiles)


LOCAL = {"allow_http": True, "allow_private_networks": True}  # receivers on 127.0.0.1 over plain HTTP


def load_profile_config(tmp_path: Path, *profiles: str, environ: Mapping[str, str], **delivery: object) -> Config:
    path = tmp_path / "relay.toml"
    path.write_text(config_text(*profiles, delivery=delivery))
    return load_config(path, environ=environ)


def profile_webhook(tmp_path: Path, profile: str, *, environ: Mapping[str, str]) -> Webhook:
    """The webhook a (possibly edited) profile declares, loaded by ``load_config`` with local destinations allowed."""
    [webhook] = load_profile_config(tmp_path, profile, environ=environ, **LOCAL).webhooks
    return webhook
