"""Tuning fixtures: a real PostgreSQL server started for the session (initdb in a temp folder, a free loopback
port, run as the `postgres` OS user when the tests run as root, since postgres refuses root), stopped after.
A missing server is a failure, not a skip: `make test` installs Debian's postgresql (SYSTEM_PACKAGES)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest


def _bin(name: str) -> str:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[-1:]
    if not found:
        pytest.fail(
            f"PostgreSQL's {name} is not installed; the distributed-tuning tests need a real server. "
            "Fix: make test (installs Debian's postgresql), or apt-get install postgresql."
        )
    return found if isinstance(found, str) else found[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres() -> list[str]:
    """Run a server command as the `postgres` user when we are root (postgres will not run as root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail(
            "running as root and there is no `postgres` OS user to run the server as. Fix: install postgresql."
        )
    return [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--"]


@pytest.fixture(scope="session")
def postgres_server():
    """(host, port) of a PostgreSQL server for this test session; user `postgres`, trust auth on loopback."""
    folder = Path(tempfile.mkdtemp(prefix="cadence-pg-", dir="/tmp"))
    data = folder / "data"
    runner = _as_postgres()
    if runner:
        pw = pwd.getpwnam("postgres")
        os.chown(folder, pw.pw_uid, pw.pw_gid)
    initdb = [*runner, _bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
    done = subprocess.run(initdb, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"initdb failed: {done.stderr[-2000:]}")
    port = _free_port()
    server = subprocess.Popen(
        [
            *runner,
            _bin("postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(folder),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "max_connections=50",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"postgres did not start: {server.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
    ready = [_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
    while subprocess.run(ready, capture_output=True).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    yield "127.0.0.1", port
    # pg_ctl signals the postmaster itself (runuser, our child, would not pass a signal on); fast mode: the
    # default smart shutdown waits for the clients still pooled in this process to leave.
    stop = [*runner, _bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop"]
    subprocess.run(stop, capture_output=True, timeout=60)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh database on the session's server, as an SQLAlchemy URL Optuna's RDBStorage takes."""
    import psycopg

    host, port = postgres_server
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"postgresql://postgres@{host}:{port}/{name}"
