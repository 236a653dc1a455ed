"""The files the package carries in ``relay/data/``: the platform profiles, the example configuration and the
systemd unit.

In the repository they live where their readers look for them (``config/profiles/``, ``relay.toml.example``,
``systemd/relay.service``) and ``relay/data/`` links to them; a wheel carries copies. Either way they are read
here, through ``importlib.resources``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

__all__ = ["Profile", "example_config", "example_config_location", "profile", "profiles", "systemd_unit"]


@dataclass(frozen=True, slots=True)
class Profile:
    """A platform profile: a commented ``[[webhooks]]`` table that delivers the way one platform does."""

    name: str  # the file's stem: "consentproof"
    summary: str  # the first line of its header, without "# "
    text: str


def _data() -> Traversable:
    return files("relay") / "data"


def profiles() -> list[Profile]:
    """Every profile, by name."""
    found = [entry for entry in (_data() / "profiles").iterdir() if entry.name.endswith(".toml")]
    return sorted((_read_profile(entry) for entry in found), key=lambda p: p.name)


def profile(name: str) -> Profile:
    """The profile called ``name``; ``LookupError`` naming the ones there are when there is none."""
    for candidate in profiles():
        if candidate.name == name:
            return candidate
    raise LookupError(f"no profile {name!r} (there are: {', '.join(p.name for p in profiles())})")


def _read_profile(entry: Traversable) -> Profile:
    text = entry.read_text(encoding="utf-8")
    first = text.split("\n", 1)[0]
    return Profile(name=entry.name.removesuffix(".toml"), summary=first.removeprefix("#").strip(), text=text)


def example_config() -> str:
    """``relay.toml.example``: every key, with its default."""
    return (_data() / "relay.toml.example").read_text(encoding="utf-8")


def example_config_location() -> str:
    """Where the installed example configuration is, for a reader to open."""
    return str(_data() / "relay.toml.example")


def systemd_unit() -> str:
    """``systemd/relay.service``: relay as a hardened systemd service."""
    return (_data() / "relay.service").read_text(encoding="utf-8")
