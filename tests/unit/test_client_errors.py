"""How a failed request is described in ``error_detail``: what failed and where, never aiohttp's connection key."""

from __future__ import annotations

import socket
import ssl

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey

from relay.outbound import describe_client_error


def key(host: str, port: int, *, is_ssl: bool = False) -> ConnectionKey:
    return ConnectionKey(host, port, is_ssl, True, None, None, None, None)


def refused(host: str, port: int) -> OSError:
    return ConnectionRefusedError(111, f"Connect call failed ('{host}', {port})")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            aiohttp.ClientConnectorError(key("127.0.0.1", 9), refused("127.0.0.1", 9)),
            "cannot connect to 127.0.0.1:9: connection refused",
        ),
        (
            aiohttp.ClientConnectorError(key("example.com", 443, is_ssl=True), refused("93.184.215.14", 443)),
            "cannot connect to example.com:443: connection refused",
        ),
        (
            aiohttp.ClientConnectorError(key("::1", 8443), OSError(113, "Connect call failed ('::1', 8443)")),
            "cannot connect to [::1]:8443: no route to host",
        ),
        (
            aiohttp.ClientConnectorError(key("two.example", 80), OSError("Multiple exceptions: a, b")),
            "cannot connect to two.example:80: Multiple exceptions: a, b",
        ),
        (
            aiohttp.ClientConnectorDNSError(
                key("nowhere.invalid", 80), socket.gaierror(-2, "Name or service not known")
            ),
            "cannot resolve nowhere.invalid: Name or service not known",
        ),
        (
            aiohttp.ClientConnectorSSLError(
                key("127.0.0.1", 8080, is_ssl=True),
                ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"),
            ),
            "TLS handshake with 127.0.0.1:8080 failed: wrong version number",
        ),
        (aiohttp.ServerDisconnectedError(), "Server disconnected"),
        (ConnectionResetError(104, "Connection reset by peer"), "[Errno 104] Connection reset by peer"),
    ],
)
def test_a_client_error_is_described_in_words(exc: BaseException, expected: str) -> None:
    assert describe_client_error(exc) == expected
    assert "ssl:" not in describe_client_error(exc)


def test_a_rejected_certificate_gives_the_verifier_s_reason() -> None:
    error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    error.verify_message = "self-signed certificate"
    exc = aiohttp.ClientConnectorCertificateError(key("self.example", 443, is_ssl=True), error)
    assert describe_client_error(exc) == "TLS certificate of self.example:443 not accepted: self-signed certificate"


def test_a_description_is_at_most_500_characters() -> None:
    assert len(describe_client_error(aiohttp.ClientError("x" * 2000))) == 500
