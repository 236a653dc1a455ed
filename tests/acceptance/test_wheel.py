"""The wheel as a user installs it: built from a copy of the repository, installed into a fresh virtual environment
(its dependencies from the package index), and run from outside the source tree, so that nothing here is imported
from the repository. One build and one environment serve the whole module."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from relay import __version__
from tests.support.profiles import PLATFORMS

REPO = Path(__file__).resolve().parents[2]
# What the build reads: the package (relay/data/ links to the three below), the metadata, and the linked files.
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "relay", "config/profiles", "relay.toml.example", "systemd")


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    home: Path  # an empty working directory, away from the repository

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {"PATH": f"{self.venv / 'bin'}:/usr/bin:/bin", "HOME": str(self.home), "LANG": "C.UTF-8"}
        return subprocess.run(args, cwd=self.home, env=env, capture_output=True, text=True, timeout=timeout)

    def relay(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.venv / "bin" / "relay"), *args)

    def python(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.venv / "bin" / "python"), *args)


def _check(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    for name in SOURCES:  # a copy, so that the build's build/ and *.egg-info stay out of the work tree
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, source / name)
    dist = root / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    _check(subprocess.run([*pip, "wheel", "--no-deps", "-w", str(dist), str(source)], capture_output=True, text=True))
    [wheel] = dist.glob("*.whl")
    venv = root / "venv"
    _check(subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True))
    home = root / "home"
    home.mkdir()
    done = Installed(wheel, venv, home)
    _check(done.run(str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel), timeout=600))
    yield done


def test_the_wheel_is_relay_webhooks_with_its_license_and_real_data_files(installed: Installed) -> None:
    assert installed.wheel.name == f"relay_webhooks-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(f"relay_webhooks-{__version__}.dist-info/METADATA").decode()
        data = {info.filename: info for info in wheel.infolist() if info.filename.startswith("relay/data/")}
    assert "Name: relay-webhooks" in metadata and "License-Expression: Apache-2.0" in metadata
    assert f"relay_webhooks-{__version__}.dist-info/licenses/LICENSE" in names
    expected = {"relay/data/relay.toml.example", "relay/data/relay.service"} | {
        f"relay/data/profiles/{name}.toml" for name in PLATFORMS
    }
    assert set(data) == expected
    for info in data.values():  # files, not the repository's symlinks
        assert (info.external_attr >> 16) & 0o170000 == 0o100000, info.filename


def test_relay_and_python_m_relay_print_the_version(installed: Installed) -> None:
    assert _check(installed.relay("--version")).strip() == f"relay {__version__}"
    assert _check(installed.python("-m", "relay", "--version")).strip() == f"relay {__version__}"


def test_the_installed_package_is_the_one_that_runs(installed: Installed) -> None:
    where = _check(installed.python("-c", "import relay; print(relay.__file__)")).strip()
    assert Path(where).is_relative_to(installed.venv), where


def test_relay_profiles_lists_the_packaged_profiles(installed: Installed) -> None:
    lines = _check(installed.relay("profiles")).splitlines()
    assert [line.split()[0] for line in lines] == sorted(PLATFORMS)
    assert all("Deliver like" in line for line in lines)


def test_relay_init_writes_a_file_check_config_accepts(installed: Installed) -> None:
    path = installed.home / "relay.toml"
    _check(installed.relay("init", "--path", str(path)))
    summary = _check(installed.relay("check-config", "--config", str(path)))
    assert "dev: http://127.0.0.1:9000/webhook" in summary
    for name in PLATFORMS:
        profile_path = installed.home / f"{name}.toml"
        _check(installed.relay("init", "--profile", name, "--path", str(profile_path)))
        assert f"  {name}: https://" in _check(installed.relay("check-config", "--config", str(profile_path)))


def test_the_example_config_and_the_systemd_unit_are_in_the_package(installed: Installed) -> None:
    script = (
        "import json, relay.resources as r; from importlib.resources import files; "
        "data = files('relay') / 'data'; "
        "print(json.dumps({'example': r.example_config(), 'unit': r.systemd_unit(), "
        "'example_path': str(data / 'relay.toml.example'), 'unit_path': str(data / 'relay.service')}))"
    )
    found = json.loads(_check(installed.python("-c", script)))
    assert found["example"] == (REPO / "relay.toml.example").read_text()
    assert found["unit"] == (REPO / "systemd" / "relay.service").read_text()
    for key in ("example_path", "unit_path"):
        path = Path(found[key])
        assert path.is_relative_to(installed.venv) and path.is_file() and not path.is_symlink(), path
