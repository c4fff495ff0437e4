"""Fixtures for the data tests: no test may reach the internet or see the user's data or cache."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cadence.data import idx


def closed_port_url() -> str:
    """An http URL on a loopback port nothing listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(autouse=True)
def isolated_data_env(tmp_path_factory, monkeypatch):
    """Empty $CADENCE_DATA and cache, unreachable default mirrors, no proxy for loopback servers."""
    root = tmp_path_factory.mktemp("env")
    (root / "cadence-data").mkdir()
    monkeypatch.setenv("CADENCE_DATA", str(root / "cadence-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "cache"))
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setattr(idx, "MIRRORS", {name: [closed_port_url()] for name in idx.MIRRORS})
    return root


@pytest.fixture
def no_system_datasets(tmp_path, monkeypatch) -> Path:
    """Hide /usr/share/datasets so only the directories a test sets up can hold the files."""
    empty = tmp_path / "system-datasets"
    empty.mkdir()
    monkeypatch.setattr(idx, "SYSTEM_DIR", empty)
    return empty


@pytest.fixture
def debian_fashion_dir() -> Path:
    """The Fashion-MNIST files of Debian's dataset-fashion-mnist; missing is a failure, not a skip."""
    directory = Path("/usr/share/datasets/fashion-mnist")
    missing = [f for f in idx.FILES if not (directory / f).is_file()]
    if missing:
        pytest.fail(
            f"{directory} lacks {', '.join(missing)}. These tests need the Debian package: run `make test` "
            "(it installs it) or `sudo apt-get install dataset-fashion-mnist`."
        )
    return directory
