"""What the learner asks of a stream source, whatever carries it: read in order, acknowledge, dead-letter.

A source hands out `Message`s in source order; `position(id)` orders their ids, so a checkpoint's "last
trained id" tells which redelivered messages were already trained. jsonl.py and redis.py implement it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cadence.data.streams.messages import Rejected


@dataclass(frozen=True, slots=True)
class Message:
    """A message as the source delivered it. `payload` None: its body is gone (a trimmed Redis entry).
    `deliveries`: how often it has been handed out, this time included."""

    id: str
    payload: bytes | None
    deliveries: int = 1


class Source(Protocol):
    """A stream of messages in order (see the module docstring)."""

    name: str
    exhausted: bool  # a finite source read to its end (a JSONL file without follow)

    def read(self, count: int, block_ms: int) -> list[Message]:
        """Up to `count` messages, waiting up to `block_ms` when none is there; own redeliveries first."""

    def ack(self, ids: list[str]) -> None:
        """Mark messages done: their effect is in a durable checkpoint (or they need none)."""

    def dead_letter(self, rejected: list[Rejected]) -> None:
        """Record each with its reason and payload and acknowledge it, durably and once."""

    def position(self, message_id: str) -> tuple[int, ...]:
        """A sortable key of a message id, in source order."""

    def lag(self) -> int | None:
        """Messages in the source not yet handed to this reader, when the source knows."""

    def close(self) -> None: ...
