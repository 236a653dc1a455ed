"""The destination policy's pure half: IP literals in every form, refused ranges, URL checks. No sockets."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from relay.policy import blocked_range, check_url, is_blocked_address, parse_ip_host


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("2130706433", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1.2", "10.1.0.2"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("0X7F.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("127.0.0.1.", "127.0.0.1"),
        ("192.168.0x1.1", "192.168.1.1"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("[::ffff:7f00:1]", "127.0.0.1"),
        ("[fe80::1%25eth0]", "fe80::1%25eth0"),
        ("１２７.０.０.１", "127.0.0.1"),  # full-width digits, as IDNA maps them
        ("127。0。0。1", "127.0.0.1"),  # ideographic full stops
        ("93.184.215.14", "93.184.215.14"),
    ],
)
def test_parse_ip_host_reads_every_literal_form(host: str, expected: str) -> None:
    assert parse_ip_host(host) == ip_address(expected)


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "localhost",
        "1.2.3.4.5",
        "256.0.0.1",
        "1.256.0.1",
        "1.2.65536",
        "4294967296",
        "08.0.0.1",  # 8 is not an octal digit: a name, not an address
        "0xg.0.0.1",
        "1..2",
        "",
        "[example.com]",
        "[::1",
        "1e3",
        "١٢٧.0.0.1",  # Arabic-Indic digits are not ASCII digits
    ],
)
def test_parse_ip_host_leaves_names_alone(host: str) -> None:
    assert parse_ip_host(host) is None


def test_ipv4_mapped_ipv6_maps_to_its_ipv4() -> None:
    ip = parse_ip_host("::ffff:10.0.0.1")
    assert isinstance(ip, IPv4Address)
    assert ip == IPv4Address("10.0.0.1")


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "cgnat"),
        ("100.127.255.255", "cgnat"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "this-network"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fe80::1", "link-local"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "documentation"),
        ("::7f00:1", "reserved"),  # IPv4-compatible, deprecated
        ("100::1", "reserved"),  # discard-only
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:192.168.0.1", "private"),
        ("64:ff9b::7f00:1", "loopback via NAT64"),
        ("64:ff9b::a9fe:a9fe", "link-local via NAT64"),
        ("64:ff9b:1::1", "private"),
        ("2002:7f00:1::1", "loopback via 6to4"),
        ("2002:c0a8:101::1", "private via 6to4"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback via Teredo"),  # client 127.0.0.1, obfuscated
    ],
)
def test_refused_ranges(address: str, reason: str) -> None:
    ip = ip_address(address)
    assert blocked_range(ip) == reason
    assert is_blocked_address(ip)


@pytest.mark.parametrize(
    "address",
    [
        "93.184.215.14",
        "8.8.8.8",
        "1.1.1.1",
        "100.63.255.255",  # just below CGNAT
        "100.128.0.0",  # just above CGNAT
        "172.15.255.255",
        "172.32.0.0",
        "2606:4700:4700::1111",
        "2a00:1450:4001:82a::200e",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8
        "2002:808:808::1",  # 6to4 of 8.8.8.8
    ],
)
def test_public_addresses_pass(address: str) -> None:
    ip = ip_address(address)
    assert blocked_range(ip) is None
    assert not is_blocked_address(ip)


def test_mapped_address_is_judged_as_its_ipv4() -> None:
    assert is_blocked_address(IPv6Address("::ffff:10.1.2.3"))
    assert not is_blocked_address(IPv6Address("::ffff:93.184.215.14"))


STRICT = {"allow_http": False, "allow_private_networks": False}
LAX = {"allow_http": True, "allow_private_networks": True}


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hook",
        "https://example.com:8443/hook?x=1",
        "HTTPS://Example.COM/hook",
        "https://93.184.215.14/hook",
        "https://[2606:4700:4700::1111]/hook",
        "https://bücher.example/hook",
        "https://a_b.example.com./hook",
    ],
)
def test_check_url_accepts_public_https(url: str) -> None:
    assert check_url(url, **STRICT) is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.com/hook", "http:// URLs are refused unless delivery.allow_http = true"),
        ("ftp://example.com/", "must be an https:// (or http://) URL"),
        ("file:///etc/passwd", "must be an https:// (or http://) URL"),
        ("example.com/hook", "must be an https:// (or http://) URL"),
        ("https:example.com", "must be an https:// (or http://) URL"),
        ("https:///hook", "has no host"),
        ("https://user:pw@example.com/", "must not contain credentials (user:password@); use auth instead"),
        ("https://user@example.com/", "must not contain credentials (user:password@); use auth instead"),
        ("https://example.com:0/", "port 0 is not a valid destination port"),
        ("https://example.com /", "must not contain whitespace or control characters"),
        ("https://example.com/\r\nX: y", "must not contain whitespace or control characters"),
        ("https://example.com\\@127.0.0.1/", "must not contain a backslash"),
        ("https://exa<mple.com/", "host 'exa<mple.com' is not a valid hostname"),
        (
            "https://127.0.0.1/hook",
            "destination 127.0.0.1 is in a refused range (loopback) unless delivery.allow_private_networks = true",
        ),
        (
            "https://127.1/hook",
            "destination 127.1 (127.0.0.1) is in a refused range (loopback)"
            " unless delivery.allow_private_networks = true",
        ),
        (
            "https://[::1]:8080/",
            "destination ::1 is in a refused range (loopback) unless delivery.allow_private_networks = true",
        ),
        (
            "https://localhost:9000/",
            "destination localhost is in a refused range (loopback) unless delivery.allow_private_networks = true",
        ),
    ],
)
def test_check_url_refusals(url: str, message: str) -> None:
    assert check_url(url, **STRICT) == message


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://2130706433/", "loopback"),
        ("https://0x7f.0.0.1/", "loopback"),
        ("https://0177.0.0.1/", "loopback"),
        ("https://10.1.2/", "private"),
        ("https://[::ffff:127.0.0.1]/", "loopback"),
        ("https://[::ffff:a9fe:a9fe]/", "link-local"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://100.64.1.1/", "cgnat"),
        ("https://0.0.0.0/", "unspecified"),
        ("https://[::]/", "unspecified"),
        ("https://[fe80::1%25eth0]/", "link-local"),
        ("https://[fd00::1]/", "private"),
        ("https://224.0.0.1/", "multicast"),
        ("https://１２７.０.０.１/", "loopback"),
        ("https://127.0.0.1./", "loopback"),
        ("https://app.localhost/", "loopback"),
    ],
)
def test_check_url_refuses_odd_private_literals(url: str, reason: str) -> None:
    message = check_url(url, **STRICT)
    assert message is not None
    assert f"refused range ({reason})" in message


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9000/webhook", "http://localhost/", "https://10.0.0.5/", "http://[::1]/"]
)
def test_check_url_allows_private_and_http_when_configured(url: str) -> None:
    assert check_url(url, **LAX) is None


def test_allow_http_alone_still_refuses_private() -> None:
    message = check_url("http://192.168.1.10/", allow_http=True, allow_private_networks=False)
    assert message is not None and "(private)" in message
    assert check_url("https://192.168.1.10/", allow_http=False, allow_private_networks=True) is None
    assert check_url("http://192.168.1.10/", allow_http=False, allow_private_networks=True) == (
        "http:// URLs are refused unless delivery.allow_http = true"
    )


def test_invalid_port_is_refused() -> None:
    message = check_url("https://example.com:99999/", **STRICT)
    assert message is not None and message.startswith("is not a valid URL")
