"""A JSONL file or stdin as a stream: one message per line, ids are line numbers, `follow` waits for more.

Acknowledging is a no-op (a restart skips every line up to the checkpoint's); dead letters go to a JSONL
file, written once each even across restarts (lines at or before its last entry are not written again).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import BinaryIO

import orjson

from cadence.data.streams.messages import Rejected
from cadence.data.streams.source import Message
from cadence.errors import StreamError


class JsonlSource:
    """Lines of `path` ("-": stdin) from line `start_after + 1` on.

    Args:
        follow: at the end of the file, wait for lines appended to it (as `tail -f`) instead of ending.
        dead_path: where dead letters go (JSONL: id, reason, payload); None keeps only the count.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        follow: bool = False,
        start_after: int = 0,
        dead_path: str | Path | None = None,
        poll_seconds: float = 0.05,
    ):
        self.name = str(path)
        self.follow = follow
        self.poll_seconds = poll_seconds
        self.exhausted = False
        self._line = 0
        self._partial = b""
        if str(path) == "-":
            self._file: BinaryIO = sys.stdin.buffer
        else:
            try:
                self._file = open(path, "rb")  # noqa: SIM115  closed by close()
            except OSError as err:
                raise StreamError(
                    f"cannot open stream file {path}: {err.strerror}. Fix: pass an existing .jsonl file."
                ) from None
        self._skip = start_after
        self._dead_path = Path(dead_path) if dead_path else None
        self._dead_upto = _last_dead_line(self._dead_path) if self._dead_path else 0

    def _next_line(self) -> bytes | None:
        """The next complete line, or None when there is none yet (a partial last line waits for its end)."""
        chunk = self._file.readline()
        if not chunk:
            return None
        if not chunk.endswith(b"\n"):
            if not self.follow:  # the file's last line without a newline is complete
                return self._partial + chunk
            self._partial += chunk
            return None
        line, self._partial = self._partial + chunk, b""
        return line

    def read(self, count: int, block_ms: int) -> list[Message]:
        out: list[Message] = []
        deadline = time.monotonic() + block_ms / 1000
        while len(out) < count:
            line = self._next_line()
            if line is None:
                if not self.follow:
                    self.exhausted = True
                    break
                if out or time.monotonic() >= deadline:
                    break
                time.sleep(self.poll_seconds)
                continue
            self._line += 1
            if self._line <= self._skip or not line.strip():
                continue
            out.append(Message(str(self._line), line.rstrip(b"\r\n")))
        return out

    def ack(self, ids: list[str]) -> None:
        pass  # the checkpoint's line number is the whole acknowledgement

    def dead_letter(self, rejected: list[Rejected]) -> None:
        if self._dead_path is None:
            return
        fresh = [r for r in rejected if int(r.id) > self._dead_upto]
        if not fresh:
            return
        with open(self._dead_path, "ab") as f:
            for r in fresh:
                entry = {"id": r.id, "reason": r.reason, "payload": r.payload.decode("utf-8", "replace")}
                f.write(orjson.dumps(entry) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self._dead_upto = max(self._dead_upto, *(int(r.id) for r in fresh))

    def position(self, message_id: str) -> tuple[int, ...]:
        return (int(message_id),)

    def lag(self) -> int | None:
        return None

    def close(self) -> None:
        if self._file is not sys.stdin.buffer:
            self._file.close()


def _last_dead_line(path: Path) -> int:
    """The line number of the last dead letter already written to `path` (0 when none)."""
    if not path.is_file():
        return 0
    last = 0
    with open(path, "rb") as f:
        for line in f:
            try:
                last = max(last, int(orjson.loads(line)["id"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a line torn by a crash mid-write
    return last
