"""Redis Streams through a consumer group (redis-py): read in batches, own pending entries first, ack,
dead letters in `<stream>:dead`, takeover of a dead consumer's entries (XAUTOCLAIM), one active learner per
group (a lease), and reconnection with back-off. What is acked when is the learner's business.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from collections.abc import Callable
from urllib.parse import urlparse

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cadence.data.streams.messages import Rejected
from cadence.data.streams.source import Message
from cadence.errors import StreamError

DATA_FIELD = b"data"  # each entry carries its JSON message in this field
_OUTAGE = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)
# Renew the lease only while we hold it: a learner whose lease expired must not take it back silently.
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def parse_url(url: str) -> tuple[str, int, str]:
    """(host, port, stream) from `redis://HOST:PORT/STREAM`.

    Raises:
        StreamError: not that form.
    """
    parts = urlparse(url)
    stream = parts.path.lstrip("/")
    if parts.scheme != "redis" or not stream or not parts.hostname:
        raise StreamError(
            f"not a Redis stream address: {url!r}. Fix: write redis://HOST:PORT/STREAM, e.g. "
            "redis://127.0.0.1:6379/events."
        )
    try:
        port = parts.port or 6379
    except ValueError:
        raise StreamError(f"bad port in {url!r}. Fix: redis://HOST:PORT/STREAM with PORT a number.") from None
    return parts.hostname, port, stream


def connect(host: str, port: int) -> redis.Redis:
    """A client without redis-py's own retries: RedisSource._call owns the back-off (logged, counted, and
    interruptible by SIGTERM)."""
    return redis.Redis(
        host=host, port=port, socket_timeout=30, socket_connect_timeout=5, retry=Retry(NoBackoff(), 0)
    )


class RedisSource:
    """One consumer of a consumer group on a Redis stream (created with the group when missing).

    Args:
        url: redis://HOST:PORT/STREAM.
        group, consumer: the consumer group and this reader's name in it.
        claim_idle_ms: at start, take over entries of other consumers idle this long (XAUTOCLAIM).
        should_stop: polled while Redis is unreachable, to give up waiting (then StreamError).
        log: where a line goes on an outage, a recovery or a takeover.
    """

    def __init__(
        self,
        url: str,
        group: str = "cadence",
        consumer: str = "learner",
        *,
        claim_idle_ms: int = 30_000,
        should_stop: Callable[[], bool] = lambda: False,
        log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    ):
        self.host, self.port, self.stream = parse_url(url)
        self.name = url
        self.group, self.consumer = group, consumer
        self.dead_stream = f"{self.stream}:dead"
        self.counts_key = f"{self.stream}:dead:counts"
        self.lease_key = f"{self.stream}:lease:{group}"
        self.claim_idle_ms = claim_idle_ms
        self.exhausted = False
        self.reconnects = 0
        self.unreachable = False  # in an outage right now (the learner's idle clock does not run then)
        self.trimmed = 0  # pending entries whose body was gone (XAUTOCLAIM drops them itself)
        self.should_stop, self._log = should_stop, log
        self.r = connect(self.host, self.port)
        # Entries as Redis sends them ([id, [field, value, ...]]): redis-py's own reply parsing builds a dict per
        # entry in Python, the reader's largest cost after the network; _entries and _body read the raw form.
        self.r.set_response_callback("XREADGROUP", _raw)
        self._cursor = "0"  # "0": our own pending entries first (after a restart); then ">": new ones
        self._call(self._create_group)

    # --- calls that survive an outage --------------------------------------------------------------------

    def _call(self, fn: Callable, *args, **kwargs):
        """fn(*args) and retry through a Redis outage with exponential back-off (50 ms doubling to 5 s,
        with jitter), so the learner loses nothing and does not hammer a restarting server."""
        delay, down_since = 0.05, None
        while True:
            try:
                out = fn(*args, **kwargs)
            except _OUTAGE as err:
                self.unreachable = True
                if down_since is None:
                    down_since = time.monotonic()
                    self._log(f"redis {self.host}:{self.port} unreachable ({err}); retrying with back-off")
                if self.should_stop():
                    raise StreamError(
                        f"stopped while redis {self.host}:{self.port} was unreachable: {err}"
                    ) from None
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)
                continue
            if down_since is not None:
                self.unreachable = False
                self.reconnects += 1
                self._log(
                    f"redis {self.host}:{self.port} reachable again after {time.monotonic() - down_since:.1f} s"
                )
            return out

    def _create_group(self) -> None:
        try:
            self.r.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise StreamError(
                    f"cannot create consumer group {self.group!r} on {self.stream!r}: {err}"
                ) from None

    # --- one active learner per group --------------------------------------------------------------------

    def acquire_lease(self, ms: int, wait: bool = True) -> bool:
        """Take the group's lease (SET NX PX). With `wait`, stand by until the holder lets it expire, then
        take over its pending entries. Returns whether we hold it."""
        announced = False
        while not self._call(self.r.set, self.lease_key, self.consumer, nx=True, px=ms):
            holder = self._call(self.r.get, self.lease_key)
            if holder is not None and holder.decode() == self.consumer:  # our own, from before a restart
                self._call(self.r.pexpire, self.lease_key, ms)
                break
            if not wait or self.should_stop():
                return False
            if not announced:
                self._log(
                    f"standing by: consumer {holder.decode() if holder else '?'} holds the lease of {self.group!r}"
                )
                announced = True
            time.sleep(ms / 4000)
        if announced:
            self._log(f"took over the lease of group {self.group!r}")
        return True

    def renew_lease(self, ms: int) -> bool:
        """Extend our lease; False when another consumer holds it now (we must stop)."""
        return bool(self._call(self.r.eval, _RENEW, 1, self.lease_key, self.consumer, ms))

    def release_lease(self) -> None:
        with contextlib.suppress(*_OUTAGE):  # it expires by itself
            self.r.eval(_RELEASE, 1, self.lease_key, self.consumer)

    def claim(self) -> int:
        """Take over entries other consumers left pending longer than claim_idle_ms (XAUTOCLAIM); they are
        read again from our pending list next. Returns how many were claimed."""
        claimed, start = 0, "0-0"
        while True:
            # Not justid: redis-py then drops the cursor. Bodies come along; they are read again from the PEL.
            reply = self._call(
                self.r.xautoclaim, self.stream, self.group, self.consumer, self.claim_idle_ms, start, count=1000
            )
            nxt, entries, deleted = reply[0], reply[1], reply[2] if len(reply) > 2 else []
            claimed += len(entries)
            self.trimmed += len(deleted)  # Redis drops deleted entries from the pending list itself
            start = nxt.decode() if isinstance(nxt, bytes) else nxt
            if start == "0-0":
                break
        if claimed:
            self._cursor = "0"
            self._log(f"claimed {claimed} pending entries of other consumers in group {self.group!r}")
        return claimed

    # --- reading and acknowledging -----------------------------------------------------------------------

    def read(self, count: int, block_ms: int) -> list[Message]:
        if self._cursor == ">":
            before = self.reconnects
            reply = self._call(
                self.r.xreadgroup, self.group, self.consumer, {self.stream: ">"}, count, block_ms or None
            )
            if self.reconnects != before:
                # The connection broke during a read: Redis may have delivered entries whose reply was lost.
                # They are in our pending list, ahead of this reply's: read that list again, in order.
                self._cursor = "0"
                return self.read(count, block_ms)
            return [Message(_s(i), _body(f)) for i, f in _entries(reply)]
        reply = self._call(self.r.xreadgroup, self.group, self.consumer, {self.stream: self._cursor}, count)
        entries = _entries(reply)
        if not entries:
            self._cursor = ">"  # our pending list is read through
            return self.read(count, block_ms)
        self._cursor = _s(entries[-1][0])
        first, last = _s(entries[0][0]), self._cursor
        info = self._call(self.r.xpending_range, self.stream, self.group, first, last, len(entries), self.consumer)
        times = {_s(p["message_id"]): int(p["times_delivered"]) for p in info}
        return [Message(_s(i), _body(f), times.get(_s(i), 1)) for i, f in entries]

    def ack(self, ids: list[str]) -> None:
        """XACK `ids` in one round trip (a pipeline of commands of 2,000 ids each; XACK is idempotent, so a
        pipeline cut by an outage is sent again whole)."""
        if not ids:
            return

        def send() -> None:
            pipe = self.r.pipeline(transaction=False)
            for start in range(0, len(ids), 2000):
                pipe.xack(self.stream, self.group, *ids[start : start + 2000])
            pipe.execute()

        self._call(send)

    def dead_letter(self, rejected: list[Rejected]) -> None:
        """XADD each to `<stream>:dead` (id, reason, payload), XACK it and count it by reason, in one
        MULTI/EXEC transaction: a crash leaves either all of it or none (then it is redelivered)."""
        if not rejected:
            return
        tries = []

        def send() -> None:
            if tries and not self._is_pending(rejected[0].id):
                return  # the transaction went through before the connection broke: do not add them twice
            tries.append(1)
            pipe = self.r.pipeline(transaction=True)
            for r in rejected:
                fields = {
                    "id": r.id,
                    "reason": r.reason,
                    "payload": r.payload,
                    "group": self.group,
                    "consumer": self.consumer,
                }
                pipe.xadd(self.dead_stream, fields)
                pipe.hincrby(self.counts_key, r.code, 1)
            pipe.xack(self.stream, self.group, *[r.id for r in rejected])
            pipe.execute()

        self._call(send)

    def _is_pending(self, message_id: str) -> bool:
        return bool(self.r.xpending_range(self.stream, self.group, message_id, message_id, 1))

    def dead_counts(self) -> dict[str, int]:
        """Dead letters of this stream by reason code (all consumers, all time)."""
        return {k.decode(): int(v) for k, v in self._call(self.r.hgetall, self.counts_key).items()}

    def position(self, message_id: str) -> tuple[int, ...]:
        ms, _, seq = message_id.partition("-")
        return int(ms), int(seq or 0)

    def lag(self) -> int | None:
        """Entries not yet delivered to the group (XINFO GROUPS `lag`, Redis 7+)."""
        try:
            groups = self.r.xinfo_groups(self.stream)
        except (*_OUTAGE, redis.ResponseError):
            return None
        for g in groups:
            if _s(g["name"]) == self.group:
                lag = g.get("lag")
                return None if lag is None else int(lag)
        return None

    def pending(self) -> int:
        return int(self._call(self.r.xpending, self.stream, self.group)["pending"])

    def close(self) -> None:
        self.r.close()


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _raw(response, **options):
    return response


def _entries(reply) -> list:
    """The [id, fields] entries of a one-stream XREADGROUP reply, as a list ([stream, entries]) or a map."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return next(iter(reply.values()))
    return reply[0][1]


def _body(fields: list | None) -> bytes | None:
    """The message of an entry (its flat [field, value, ...] list); None when the body is gone (a trimmed
    pending entry comes without fields). An entry without our data field gets its fields as JSON, so the
    checks name what is missing."""
    if not fields:
        return None
    if len(fields) == 2 and fields[0] == DATA_FIELD:
        return fields[1]
    pairs = dict(zip(fields[::2], fields[1::2], strict=True))
    data = pairs.get(DATA_FIELD)
    if data is not None:
        return data
    return orjson.dumps({_s(k): _s(v) for k, v in pairs.items()})
