"""The destination policy's pure half: which URLs and which addresses the relay refuses to send to.

``check_url`` judges a URL as written (scheme, userinfo, an IP-literal host) when a webhook is declared;
``is_blocked_address`` / ``blocked_range`` judge every address a host resolves to, at connect time, in the
HTTP client. Nothing here resolves a name or opens a socket.

IP literals are read the way OS resolvers read them (``inet_aton``): ``2130706433``, ``127.1``, ``0x7f.0.0.1``
and ``0177.0.0.1`` all mean 127.0.0.1, and ``::ffff:127.0.0.1`` is judged as the IPv4 address it carries.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import urlsplit

IPAddress = IPv4Address | IPv6Address

_V4_RANGES: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(net), name)
    for net, name in (
        ("0.0.0.0/32", "unspecified"),
        ("0.0.0.0/8", "this-network"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "cgnat"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),  # IETF protocol assignments
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "reserved"),  # retired 6to4 relay anycast
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
    )
)

_V6_RANGES: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(net), name)
    for net, name in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("64:ff9b:1::/48", "private"),  # local-use NAT64 (RFC 8215)
        ("2001:2::/48", "benchmarking"),
        ("2001:10::/28", "reserved"),  # ORCHID
        ("2001:20::/28", "reserved"),  # ORCHIDv2
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("fc00::/7", "private"),  # unique local
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    )
)
_V6_GLOBAL_UNICAST = IPv6Network("2000::/3")
_NAT64 = IPv6Network("64:ff9b::/96")

# One inet_aton part: hex (0x..., digits optional as browsers allow), octal (leading 0) or decimal.
_V4_PART = re.compile(r"0[xX](?P<hex>[0-9a-fA-F]*)|(?P<oct>0[0-7]*)|(?P<dec>[1-9][0-9]*)")
_HOSTNAME = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*\.?")


def parse_ip_host(host: str) -> IPAddress | None:
    """The IP address a URL host denotes when it is an IP literal in any form a resolver accepts; else None.

    ``[::1]`` and ``::1`` give IPv6; ``2130706433``, ``127.1``, ``10.1.2``, ``0x7f.0.0.1``, ``0177.0.0.1``
    give IPv4; an IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) gives its IPv4. Non-ASCII hosts are first
    mapped the way IDNA does (full-width digits and dots become ASCII).
    """
    if host.startswith("[") and host.endswith("]"):
        try:
            return _unmap(ipaddress.ip_address(host[1:-1]))
        except ValueError:
            return None
    if not host.isascii():
        ascii_host = _to_ascii(host)
        if ascii_host is None:
            return None
        host = ascii_host
    host = host.removesuffix(".")
    try:
        return _unmap(ipaddress.ip_address(host))
    except ValueError:
        return _parse_loose_ipv4(host)


def blocked_range(ip: IPAddress) -> str | None:
    """The name of the refused range ``ip`` is in (``"loopback"``, ``"private"``, …), or None when it is fine.

    IPv4-mapped IPv6 is judged by its IPv4; NAT64 (64:ff9b::/96), 6to4 and Teredo by the IPv4 they embed.
    IPv6 outside global unicast (2000::/3) is refused as reserved.
    """
    if isinstance(ip, IPv4Address):
        for net4, name in _V4_RANGES:
            if ip in net4:
                return name
        return None
    if ip.ipv4_mapped is not None:
        return blocked_range(ip.ipv4_mapped)
    for embedded, via in _embedded_ipv4(ip):
        reason = blocked_range(embedded)
        if reason is not None:
            return f"{reason} via {via}"
    for net6, name in _V6_RANGES:
        if ip in net6:
            return name
    if ip not in _V6_GLOBAL_UNICAST and ip not in _NAT64:
        return "reserved"
    return None


def is_blocked_address(ip: IPAddress) -> bool:
    """True when ``ip`` is loopback, private, link-local, CGNAT, multicast, unspecified, reserved, …"""
    return blocked_range(ip) is not None


def check_url(url: str, *, allow_http: bool, allow_private_networks: bool) -> str | None:
    """None when ``url`` may be a destination, else why not (one message, for a config or API problem)."""
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        return "must not contain whitespace or control characters"
    if "\\" in url:
        return "must not contain a backslash"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL: {exc}"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not url.lower().startswith(f"{scheme}://"):
        return "must be an https:// (or http://) URL"
    if scheme == "http" and not allow_http:
        return "http:// URLs are refused unless delivery.allow_http = true"
    if "@" in parts.netloc:
        return "must not contain credentials (user:password@); use auth instead"
    host = parts.hostname
    if not host:
        return "has no host"
    if port == 0:
        return "port 0 is not a valid destination port"
    ip = parse_ip_host(host)
    if ip is None:
        ascii_host = host if host.isascii() else _to_ascii(host)
        if ascii_host is None or not _HOSTNAME.fullmatch(ascii_host):
            return f"host {host!r} is not a valid hostname"
    if allow_private_networks:
        return None
    if ip is None:
        name = host.removesuffix(".")
        if name == "localhost" or name.endswith(".localhost"):  # RFC 6761: always loopback
            return f"destination {host} is in a refused range (loopback) {_PRIVATE_HINT}"
        return None
    reason = blocked_range(ip)
    if reason is None:
        return None
    shown = host if host == str(ip) else f"{host} ({ip})"
    return f"destination {shown} is in a refused range ({reason}) {_PRIVATE_HINT}"


_PRIVATE_HINT = "unless delivery.allow_private_networks = true"


def _unmap(ip: IPAddress) -> IPAddress:
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _embedded_ipv4(ip: IPv6Address) -> list[tuple[IPv4Address, str]]:
    found: list[tuple[IPv4Address, str]] = []
    if ip in _NAT64:
        found.append((IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64"))
    if ip.sixtofour is not None:
        found.append((ip.sixtofour, "6to4"))
    if ip.teredo is not None:
        found.append((ip.teredo[1], "Teredo"))
    return found


def _to_ascii(host: str) -> str | None:
    """Map a non-ASCII host as IDNA does (NFKC, ideographic dots); None when it cannot be mapped."""
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        normalized = unicodedata.normalize("NFKC", host).lower()
        return normalized if normalized.isascii() else None


def _parse_loose_ipv4(host: str) -> IPv4Address | None:
    """``inet_aton``: 1 to 4 dot-separated parts, each decimal, octal or hex; the last fills the rest."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers: list[int] = []
    for part in parts:
        match = _V4_PART.fullmatch(part)
        if match is None:
            return None
        if match["hex"] is not None:
            numbers.append(int(match["hex"] or "0", 16))
        elif match["oct"] is not None:
            numbers.append(int(match["oct"], 8))
        else:
            numbers.append(int(match["dec"]))
    *leading, last = numbers
    if any(n > 0xFF for n in leading) or last >= 1 << (8 * (4 - len(leading))):
        return None
    value = last
    for index, number in enumerate(leading):
        value |= number << (8 * (3 - index))
    return IPv4Address(value)
