"""Streams of samples for the stream strategy: message checks, JSONL and Redis sources, dead letters, replay.

Layer 1 (data): nothing here imports the engine; the learner that trains on a stream is serve/learner.py.
"""

from cadence.data.streams.jsonl import JsonlSource
from cadence.data.streams.messages import REASONS, Batch, Rejected, Sample, Schema, parse, parse_many
from cadence.data.streams.source import Message, Source

__all__ = [
    "REASONS",
    "Batch",
    "JsonlSource",
    "Message",
    "Rejected",
    "Sample",
    "Schema",
    "Source",
    "open_source",
    "parse",
    "parse_many",
]


def open_source(url: str, **kwargs) -> Source:
    """A RedisSource for `redis://HOST:PORT/STREAM`, else a JsonlSource for a path or "-" (stdin).

    kwargs go to the source's constructor (group/consumer for Redis; follow/start_after/dead_path for JSONL).
    """
    if url.startswith("redis://"):
        from cadence.data.streams.redis import RedisSource

        return RedisSource(url, **kwargs)
    return JsonlSource(url, **kwargs)
