"""Strategies decide which samples feed each update, and nothing else.

A strategy turns (training-set size, seed) into a sequence of `Update`s: full-batch yields one update per
epoch made of memory-bounded chunks (the exact gradient), mini-batch one per batch, online one per sample.
The order of epoch e depends only on (seed, e), so a position (epoch, samples into the epoch) is enough to
resume exactly. The stream strategy has no epochs: it is served by a Stream source (data/streams).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

from cadence.config import Strategy, StrategyConfig
from cadence.engine.budget import micro_batch, samples_per_epoch
from cadence.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Update:
    """One optimizer step: index chunks into the training set whose gradients are summed.

    With gradient accumulation the chunks are the k micro-batches (each split further by chunk_size). Under
    DDP each process gets its slice of every chunk (engine/distributed.py): `n_samples` stays the update's
    total over all processes, and `offsets` says where each slice starts among the update's samples.
    """

    chunks: tuple[torch.Tensor, ...]
    n_samples: int
    epoch: int
    position: int  # samples of this epoch consumed once this update is done
    epoch_end: bool
    offsets: tuple[int, ...] | None = None  # first sample of each chunk in the update; None: one after another


@lru_cache(maxsize=2)  # a run's takes re-read the epoch's order: one draw (about 1 ms for 60,000) per epoch
def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """The sample order of `epoch`: a permutation drawn from its own generator, seeded by (seed, epoch).
    Shared between callers: read it, never write it."""
    if not shuffle:
        return _arange(n)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen)


class Block(Sequence[Update]):
    """Consecutive updates of one epoch, `order[start:stop]` in pieces of `size` samples (the last piece may
    be shorter), each Update made only when asked for.

    An online epoch is 60,000 one-sample updates; as objects (an Update and an index tensor each) they cost
    the loop more than the compiled kernel's arithmetic, mostly in the garbage collector scanning the run's
    4,096 live objects (issue 15: 4.8 of 19 us per update). An engine that needs only the rows reads `rows`,
    one slice; slicing a Block gives a Block.
    """

    __slots__ = ("order", "start", "stop", "size", "epoch", "last", "micro", "chunk")

    def __init__(self, order, start: int, stop: int, size: int, epoch: int, last: int, micro: int, chunk: int):
        self.order, self.start, self.stop, self.size = order, start, stop, size
        self.epoch, self.last = epoch, last  # last: the epoch's last sample (its update ends the epoch)
        self.micro, self.chunk = micro, chunk  # samples per micro-batch, rows per chunk of the update

    def __len__(self) -> int:
        return -(-(self.stop - self.start) // self.size)

    @property
    def rows(self) -> torch.Tensor:
        """The rows of every update, in order (the updates' chunks one after another)."""
        return self.order[self.start : self.stop]

    @property
    def n_samples(self) -> int:
        return self.stop - self.start

    @property
    def epoch_end(self) -> bool:
        return self.stop >= self.last

    def _at(self, i: int) -> int:
        return self.start + i * self.size

    def __getitem__(self, i):
        if isinstance(i, slice):
            lo, hi, step = i.indices(len(self))
            if step != 1:
                raise ValueError("a Block slices with step 1 only")
            hi = max(lo, hi)
            return Block(
                self.order,
                self._at(lo),
                min(self._at(hi), self.stop),
                self.size,
                self.epoch,
                self.last,
                self.micro,
                self.chunk,
            )
        k = len(self)
        if not -k <= i < k:
            raise IndexError(f"update {i} of a block of {k}")
        begin = self._at(i % k)
        end = min(begin + self.size, self.stop)
        batch = self.order[begin:end]
        # Plain arithmetic, and split() only when needed: Tensor.__len__ and split() cost more than the rest
        # of a one-sample update together.
        if end - begin <= min(self.micro, self.chunk):
            chunks = (batch,)
        else:
            chunks = tuple(c for mb in batch.split(self.micro) for c in mb.split(self.chunk))
        return Update(chunks, end - begin, self.epoch, end, end >= self.last)

    def __iter__(self) -> Iterator[Update]:
        return (self[i] for i in range(len(self)))


def rows_of(updates: Sequence[Update]) -> torch.Tensor:
    """Every row the updates train, in order: one slice for a Block, the chunks joined otherwise."""
    if isinstance(updates, Block):
        return updates.rows
    return torch.cat([c for u in updates for c in u.chunks])


def check(config: StrategyConfig, n: int) -> None:
    """Refuse, before any state changes, a strategy setting these n training samples cannot honour.

    Raises:
        ConfigError: the stream strategy (it reads a Stream, not an in-memory set); a mini-batch update
            larger than the data (with drop_last nothing would be trained, without it every update would
            silently be full-batch).
    """
    if config.name == Strategy.STREAM:
        raise ConfigError(
            "strategy 'stream' reads from a Stream source, not an in-memory data set. "
            "Fix: use full-batch, mini-batch or online here."
        )
    size = micro_batch(config) * config.accumulate
    if config.name != Strategy.FULL_BATCH and size > n:
        what = " x ".join(
            [f"batch_size={config.batch_size}"] * (config.name == Strategy.MINI_BATCH)
            + [f"accumulate={config.accumulate}"] * (config.accumulate > 1)
        )
        effect = (
            "drop_last is set, so no update would ever be trained"
            if config.drop_last
            else "so every update would hold all of them: that is full-batch"
        )
        knob, most = (
            ("batch_size", n // config.accumulate) if config.name == Strategy.MINI_BATCH else ("accumulate", n)
        )
        alternative = "" if config.drop_last else ", or use strategy full-batch"
        raise ConfigError(
            f"{what} is larger than the {n} training samples, and {effect}. "
            f"Fix: lower {knob} (at most {max(1, most)}){alternative}."
        )


def epoch_block(config: StrategyConfig, n: int, seed: int, epoch: int, position: int) -> Block:
    """The updates of `epoch` from sample `position` on (call `check` first)."""
    if config.name == Strategy.FULL_BATCH:
        # Order does not change the exact gradient; chunks only bound memory.
        return Block(_arange(n), 0, n, n, epoch, n, n, config.chunk_size)
    order = epoch_order(n, seed, epoch, config.shuffle)
    micro = micro_batch(config)
    size = micro * config.accumulate  # accumulation: k micro-batches, one update of k*micro samples
    last = samples_per_epoch(config, n)  # n, less the partial last update with drop_last
    return Block(order, min(position, last), last, size, epoch, last, micro, config.chunk_size)


@lru_cache(maxsize=2)
def _arange(n: int) -> torch.Tensor:
    return torch.arange(n)


def updates(
    config: StrategyConfig, n: int, seed: int, start_epoch: int = 0, start_position: int = 0
) -> Iterator[Update]:
    """Yield updates forever (the loop's budget ends the run), starting at (start_epoch, start_position):
    each epoch's Block, one update at a time.

    Raises:
        ConfigError: as `check`.
    """
    check(config, n)
    epoch, position = start_epoch, start_position
    while True:
        yield from epoch_block(config, n, seed, epoch, position)
        epoch, position = epoch + 1, 0
