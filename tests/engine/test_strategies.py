"""Strategies only change which samples feed each update; these tests hold them to that."""

from __future__ import annotations

import copy

import pytest
import torch

from cadence.config import Strategy, StrategyConfig
from cadence.engine.step import loss_sum
from cadence.engine.strategies import epoch_block, rows_of, updates
from cadence.errors import ConfigError
from cadence.models import MLP


def _take(cfg: StrategyConfig, n: int, count: int, seed: int = 0):
    it = updates(cfg, n, seed)
    return [next(it) for _ in range(count)]


def test_mini_batch_covers_each_sample_once_per_epoch_and_reshuffles():
    cfg = StrategyConfig(name=Strategy.MINI_BATCH, batch_size=32)
    ups = _take(cfg, 100, 8)  # 4 updates per epoch (32, 32, 32, 4)
    epoch0 = torch.cat([c for u in ups[:4] for c in u.chunks])
    epoch1 = torch.cat([c for u in ups[4:] for c in u.chunks])
    assert sorted(epoch0.tolist()) == list(range(100)) == sorted(epoch1.tolist())
    assert not torch.equal(epoch0, epoch1), "each epoch must be reshuffled"
    assert [u.n_samples for u in ups[:4]] == [32, 32, 32, 4]
    assert [u.epoch_end for u in ups[:4]] == [False, False, False, True]


def test_mini_batch_drop_last_drops_the_partial_batch():
    cfg = StrategyConfig(name=Strategy.MINI_BATCH, batch_size=32, drop_last=True)
    ups = _take(cfg, 100, 6)
    assert [u.n_samples for u in ups] == [32] * 6
    assert [u.epoch for u in ups] == [0, 0, 0, 1, 1, 1]
    assert ups[2].epoch_end


def test_drop_last_with_batch_larger_than_data_is_a_config_error():
    with pytest.raises(ConfigError, match="batch_size=500 is larger than the 100 training samples"):
        next(updates(StrategyConfig(name=Strategy.MINI_BATCH, batch_size=500, drop_last=True), 100, 0))


def test_online_yields_one_sample_per_update_in_a_fresh_order_each_epoch():
    ups = _take(StrategyConfig(name=Strategy.ONLINE), 50, 100)
    assert all(u.n_samples == 1 for u in ups)
    first, second = [int(u.chunks[0]) for u in ups[:50]], [int(u.chunks[0]) for u in ups[50:]]
    assert sorted(first) == sorted(second) == list(range(50)) and first != second


def test_full_batch_is_one_update_per_epoch_in_memory_bounded_chunks():
    ups = _take(StrategyConfig(name=Strategy.FULL_BATCH, chunk_size=300), 1000, 2)
    assert [u.n_samples for u in ups] == [1000, 1000]
    assert [len(c) for c in ups[0].chunks] == [300, 300, 300, 100]
    assert all(u.epoch_end for u in ups)


def test_resuming_at_a_position_continues_the_same_order():
    cfg = StrategyConfig(name=Strategy.MINI_BATCH, batch_size=10)
    full = _take(cfg, 95, 25)
    it = updates(cfg, 95, 0, start_epoch=1, start_position=30)
    resumed = [next(it) for _ in range(7)]
    # epoch 0 has 10 updates; epoch 1's 4th update starts at sample 30
    for a, b in zip(full[13:20], resumed, strict=True):
        assert torch.equal(a.chunks[0], b.chunks[0]) and a.epoch == b.epoch and a.position == b.position


def test_stream_strategy_needs_a_stream_source():
    with pytest.raises(ConfigError, match="reads from a Stream"):
        next(updates(StrategyConfig(name=Strategy.STREAM), 10, 0))


def test_chunked_full_batch_gradient_equals_the_one_shot_gradient(digits):
    torch.manual_seed(0)
    model = MLP(64, [32], 10).double()
    x, y = digits.x_train.double(), digits.y_train

    def grads(chunk_size: int):
        m = copy.deepcopy(model)
        update = next(updates(StrategyConfig(name=Strategy.FULL_BATCH, chunk_size=chunk_size), len(x), 0))
        for idx in update.chunks:
            (loss_sum("classification", m(x[idx]), y[idx]) / update.n_samples).backward()
        return [p.grad.clone() for p in m.parameters()]

    one_shot, chunked = grads(len(x)), grads(100)
    assert len(next(updates(StrategyConfig(name=Strategy.FULL_BATCH, chunk_size=100), len(x), 0)).chunks) == 13
    for a, b in zip(one_shot, chunked, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    # and it is the mean-loss gradient autograd gives on the whole set at once
    m = copy.deepcopy(model)
    torch.nn.functional.cross_entropy(m(x), y).backward()
    for a, p in zip(one_shot, m.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "cfg",
    [
        StrategyConfig(name=Strategy.ONLINE),
        StrategyConfig(name=Strategy.MINI_BATCH, batch_size=8, accumulate=2, chunk_size=5),
        StrategyConfig(name=Strategy.FULL_BATCH, chunk_size=30),
    ],
)
def test_a_run_of_updates_sliced_anywhere_holds_the_same_updates_and_rows(cfg):
    """The loop takes runs as slices of an epoch's Block; an engine may read only their rows."""
    block = epoch_block(cfg, 100, 0, epoch=1, position=0)
    whole = list(block)
    assert sum(u.n_samples for u in whole) == 100 and whole[-1].epoch_end and block.epoch_end
    for k in {1, 3, len(block) - 1} & set(range(1, len(block))):  # none for full-batch: one update
        head, tail = block[:k], block[k:]
        assert [u.position for u in [*head, *tail]] == [u.position for u in whole]
        assert torch.equal(rows_of(head), torch.cat([c for u in whole[:k] for c in u.chunks]))
        assert torch.equal(rows_of(tail), rows_of(whole[k:]))
        assert head.n_samples + tail.n_samples == 100 and not head.epoch_end
