"""The command line: version, check-config, and an invalid config stopping serve before it binds anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay import __version__
from tests.support.process import run_relay, write_config

VALID = """
[server]
listen = "127.0.0.1:0"
api_keys = ["env:TEST_RELAY_KEY"]

[storage]
path = "{db}"

[[webhooks]]
id = "crm"
url = "https://crm.example.com/hooks/consent"
events = ["consent.*"]
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
"""


async def test_version() -> None:
    code, out, _ = await run_relay("--version")
    assert code == 0 and out.strip() == f"relay {__version__}"


async def test_check_config_summarises_a_valid_file(tmp_path: Path) -> None:
    path = write_config(tmp_path / "relay.toml", VALID.format(db=tmp_path / "relay.db"))
    code, out, err = await run_relay("check-config", "--config", str(path), env={"TEST_RELAY_KEY": "k" * 16})
    assert code == 0, err
    assert "crm" in out and "https://crm.example.com/hooks/consent" in out
    assert "whsec_" not in out and "k" * 16 not in out


async def test_config_path_from_the_environment(tmp_path: Path) -> None:
    path = write_config(tmp_path / "relay.toml", VALID.format(db=tmp_path / "relay.db"))
    code, _, err = await run_relay("check-config", env={"RELAY_CONFIG": str(path), "TEST_RELAY_KEY": "k"})
    assert code == 0, err


async def test_every_problem_is_one_line_naming_its_key_path(tmp_path: Path) -> None:
    text = VALID.format(db=tmp_path / "relay.db") + '\n[webhooks.auth]\ntype = "oauth2"\nclient_id = "relay"\n'
    text = text.replace('listen = "127.0.0.1:0"', 'listen = "127.0.0.1:0"\nlisen = 1')
    path = write_config(tmp_path / "relay.toml", text)
    code, out, err = await run_relay("check-config", "--config", str(path), env={"TEST_RELAY_KEY": ""})
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert any("server.lisen" in line for line in lines)
    assert any('webhooks[0].auth.token_url: required for type "oauth2"' in line for line in lines)
    assert any("server.api_keys[0]" in line and "TEST_RELAY_KEY" in line for line in lines)
    assert "Traceback" not in err


async def test_serve_exits_2_before_binding_or_creating_the_store(tmp_path: Path) -> None:
    db = tmp_path / "state" / "relay.db"
    path = write_config(tmp_path / "relay.toml", VALID.format(db=db))
    code, _, err = await run_relay("serve", "--config", str(path), env={"TEST_RELAY_KEY": ""})
    assert code == 2
    assert "TEST_RELAY_KEY" in err
    assert not db.parent.exists()


async def test_toml_syntax_errors_give_line_and_column(tmp_path: Path) -> None:
    path = write_config(tmp_path / "relay.toml", '[server]\nlisten = "127.0.0.1:0\n')
    code, _, err = await run_relay("check-config", "--config", str(path))
    assert code == 2 and "line 2" in err and "column" in err


async def test_missing_files_and_missing_config(tmp_path: Path) -> None:
    code, _, err = await run_relay("serve", "--config", str(tmp_path / "absent.toml"))
    assert code == 2 and "absent.toml" in err
    code, _, err = await run_relay("check-config", env={"RELAY_CONFIG": ""})
    assert code == 2 and "RELAY_CONFIG" in err


async def test_a_secret_that_signs_nothing_is_a_config_error(tmp_path: Path) -> None:
    db = tmp_path / "state" / "relay.db"
    text = VALID.format(db=db).replace("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_AA==")
    path = write_config(tmp_path / "relay.toml", text)
    for command in ("check-config", "serve"):
        code, out, err = await run_relay(command, "--config", str(path), env={"TEST_RELAY_KEY": "k" * 16})
        assert code == 2 and out == "", err
        assert err.splitlines() == [
            'relay: config error: webhooks[0].secret: must be "whsec_" + base64 of 24-64 bytes (or the base64 alone)'
            ' for signature "standard": it decodes to 1 byte (webhook "crm")'
        ]
    assert not db.parent.exists()


@pytest.mark.parametrize(
    ("secret", "scheme"),
    [("whsec_AA==", None), ("whsec_AA==", "standard"), ("#", None), ("my-own-secret", "hmac-sha256")],
)
async def test_relay_receive_refuses_a_secret_that_signs_nothing(secret: str, scheme: str | None) -> None:
    args = ["receive", "--port", "0", "--secret", secret, *(["--scheme", scheme] if scheme else [])]
    code, out, err = await run_relay(*args, timeout=10)  # a receiver that started would run until the timeout
    assert code == 2 and out == ""
    assert err.startswith("relay receive: --secret must be") and "Traceback" not in err
    assert secret not in err


ROOT = Path(__file__).resolve().parents[2]


async def test_the_shipped_configs_are_valid() -> None:
    root = ROOT
    code, _, err = await run_relay("check-config", "--config", str(root / "config" / "dev.toml"))
    assert code == 0, err


async def test_console_log_format_is_for_humans(tmp_path: Path) -> None:
    import asyncio
    import os
    import signal
    import sys

    path = write_config(tmp_path / "relay.toml", VALID.format(db=tmp_path / "relay.db"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay.cli",
        "serve",
        "--config",
        str(path),
        "--log-format",
        "console",
        "--log-level",
        "debug",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "TEST_RELAY_KEY": "k" * 16},
    )
    assert proc.stdout is not None
    first = await asyncio.wait_for(proc.stdout.readline(), 15)
    while b"relay_started" not in first:
        first = await asyncio.wait_for(proc.stdout.readline(), 15)
    proc.send_signal(signal.SIGTERM)
    rest, _ = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0
    assert not first.lstrip().startswith(b"{")
    assert b"[info" in first and b"relay_started" in first
    assert b"relay_stopped" in rest
