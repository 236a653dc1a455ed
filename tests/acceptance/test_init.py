"""``relay init`` and ``relay profiles`` as a user runs them: the starter file passes ``check-config`` as written,
bad input is one line and exit 2, and the development starter delivers, verified, to ``relay receive``."""

from __future__ import annotations

import asyncio
import json
import re
import stat
from pathlib import Path

import pytest

from relay.resources import profiles
from tests.support.process import RELAY, RelayProcess, post_events, run_relay
from tests.support.profiles import PLATFORMS


async def test_init_writes_a_private_file_that_check_config_accepts(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    code, out, err = await run_relay("init", "--path", str(path))
    assert code == 0 and err == ""
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [secret] = re.findall(r'^secret = "(whsec_[^"]+)"$', path.read_text(), re.MULTILINE)
    assert f"relay receive --port 9000 --secret {secret}" in out
    assert f"relay check-config --config {path}" in out
    code, out, err = await run_relay("check-config", "--config", str(path), env={"RELAY_API_KEY": ""})
    assert code == 0, err
    assert "dev: http://127.0.0.1:9000/webhook events=* signature=standard" in out


async def test_init_refuses_an_existing_file_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text("# mine\n")
    code, out, err = await run_relay("init", "--path", str(path))
    assert (code, out) == (2, "") and err.splitlines() == [f"relay init: {path} exists; pass --force to overwrite it"]
    assert path.read_text() == "# mine\n"
    path.chmod(0o644)
    code, _, err = await run_relay("init", "--path", str(path), "--force")
    assert code == 0, err
    assert "api_keys" in path.read_text() and stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--profile", "nope", "--path", "{tmp}/relay.toml"],
            "relay init: no profile 'nope' (there are: consentproof, dataguard, didomi, expressconsent)",
        ),
        (
            ["--path", "{tmp}/absent/relay.toml"],
            "relay init: cannot write {tmp}/absent/relay.toml: No such file or directory",
        ),
        (["--path", "{tmp}"], "relay init: {tmp} is a directory; pass the file to write, e.g. --path {tmp}/relay.toml"),
    ],
)
async def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    code, out, err = await run_relay("init", *[a.format(tmp=tmp_path) for a in args])
    assert (code, out) == (2, "")
    assert err.splitlines() == [message.format(tmp=tmp_path)]
    assert not (tmp_path / "relay.toml").exists() and not (tmp_path / "absent").exists()


async def test_profiles_lists_each_with_one_line() -> None:
    code, out, err = await run_relay("profiles")
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == sorted(PLATFORMS)
    for line, profile in zip(lines, profiles(), strict=True):
        assert line.endswith(profile.summary)


@pytest.mark.parametrize("name", PLATFORMS)
async def test_init_with_each_profile_passes_check_config(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.toml"
    code, out, err = await run_relay("init", "--profile", name, "--path", str(path))
    assert code == 0, err
    assert f"set the {name} webhook's url" in out
    code, out, err = await run_relay("check-config", "--config", str(path))
    assert code == 0, err
    assert f"  {name}: https://" in out


async def test_the_development_starter_delivers_to_relay_receive(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    code, out, err = await run_relay("init", "--path", str(path))
    assert code == 0, err
    [command] = [line.split() for line in out.splitlines() if "relay receive" in line]
    secret = command[command.index("--secret") + 1]
    receiver = await asyncio.create_subprocess_exec(
        *RELAY, "receive", "--port", "0", "--secret", secret, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert receiver.stdout is not None
        banner = (await asyncio.wait_for(receiver.stdout.readline(), 15)).decode()
        port = re.search(r"listening on http://127\.0\.0\.1:(\d+)", banner)
        assert port is not None, banner
        # The same file, on free ports (this test may run beside a relay on 8080) and with its store in tmp_path.
        text = path.read_text().replace('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:0"')
        text = text.replace(":9000/webhook", f":{port[1]}/webhook").replace(
            '"var/relay.db"', json.dumps(str(tmp_path / "relay.db"))
        )
        path.write_text(text)
        [api_key] = re.findall(r'^api_keys = \["([^"]+)"\]', text, re.MULTILINE)
        relay = await RelayProcess(path).start()
        try:
            status, answer = await post_events(relay.url, api_key, {"type": "hello", "data": {}})
            assert status == 202 and answer["data"]["deliveries"] == 1
            printed = ""
            while "Answer:" not in printed:
                printed += (await asyncio.wait_for(receiver.stdout.readline(), 15)).decode()
            assert re.search(r"Signature:\s+valid \(standard\)", printed), printed
            assert re.search(r"Answer:\s+200", printed), printed
        finally:
            await relay.stop()
    finally:
        receiver.kill()
        await receiver.wait()
