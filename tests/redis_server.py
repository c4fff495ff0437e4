"""A real redis-server for the stream tests, on a free loopback port, stopped after (missing = failure)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """redis-server in `directory` on a free port. `durable`: append-only file fsynced on every write,
    so a restart (stop + start) keeps every acknowledged entry, as a production setup would."""

    def __init__(self, directory: Path, durable: bool = False):
        exe = shutil.which("redis-server")
        assert exe, "redis-server is not installed: run `make test` (SYSTEM_PACKAGES installs it)"
        self.exe, self.directory, self.durable = exe, Path(directory), durable
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        args = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        args += ["--save", "", "--protected-mode", "no"]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                client.ping()
                client.close()
                return self
            except redis.ConnectionError:
                time.sleep(0.02)
        raise AssertionError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def url(self, stream: str) -> str:
        return f"redis://127.0.0.1:{self.port}/{stream}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)
