"""Strategies decide which samples feed each update, and nothing else.

A strategy turns (training-set size, seed) into a sequence of `Update`s: full-batch yields one update per
epoch made of memory-bounded chunks (the exact gradient), mini-batch one per batch, online one per sample.
The order of epoch e depends only on (seed, e), so a position (epoch, samples into the epoch) is enough to
resume exactly. The stream strategy has no epochs: it is served by a Stream source (data/streams).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

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


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """The sample order of `epoch`: a permutation drawn from its own generator, seeded by (seed, epoch)."""
    if not shuffle:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen)


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


def updates(
    config: StrategyConfig, n: int, seed: int, start_epoch: int = 0, start_position: int = 0
) -> Iterator[Update]:
    """Yield updates forever (the loop's budget ends the run), starting at (start_epoch, start_position).

    Raises:
        ConfigError: as `check`.
    """
    check(config, n)
    epoch, position = start_epoch, start_position
    while True:
        if config.name == Strategy.FULL_BATCH:
            # Order does not change the exact gradient; chunks only bound memory.
            yield Update(torch.arange(n).split(config.chunk_size), n, epoch, n, True)
        else:
            order = epoch_order(n, seed, epoch, config.shuffle)
            micro = micro_batch(config)
            size = micro * config.accumulate  # accumulation: k micro-batches, one update of k*micro samples
            last = samples_per_epoch(config, n)  # n, less the partial last update with drop_last
            for start in range(position, last, size):
                # Plain arithmetic, and split() only when needed: Tensor.__len__ and split() cost more than
                # the rest of a one-sample update together.
                stop = min(start + size, last)
                batch = order[start:stop]
                if stop - start <= min(micro, config.chunk_size):
                    chunks = (batch,)
                else:
                    chunks = tuple(c for mb in batch.split(micro) for c in mb.split(config.chunk_size))
                yield Update(chunks, stop - start, epoch, stop, stop >= last)
        epoch, position = epoch + 1, 0
