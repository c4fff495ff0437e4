"""The Python API as a user meets it: `import cadence`, compare(), callbacks, reprs, to_pandas, torch data,
verbose=, one argument order, and summary fields that say what ran."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

import cadence
from cadence.errors import ConfigError, DataError

SRC = str(Path(__file__).resolve().parents[1] / "src")
FAST = dict(model="mlp:16", threads=1)


@pytest.fixture(scope="module")
def digits_xy():
    bunch = load_digits()
    return torch.tensor(bunch.data, dtype=torch.float32)[:600], torch.tensor(bunch.target)[:600]


def test_import_cadence_is_lazy_and_reaches_every_public_name():
    code = (
        "import sys, cadence; lazy = 'torch' not in sys.modules; "
        "p = cadence.callbacks.Progress; f = cadence.compare; ok = callable(f) and p.__name__ == 'Progress'; "
        "print(lazy, ok, sorted(n for n in cadence.__all__ if not hasattr(cadence, n)))"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.stdout.split() == ["True", "True", "[]"], proc.stderr
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        cadence.nonsense  # noqa: B018


def test_compare_is_a_function_returning_the_result(digits_xy):
    result = cadence.compare(
        "mlp:16",
        digits_xy,
        strategies=["online", "mini-batch:32"],
        optimizers=["sgd"],
        seeds=1,
        budget={"epochs": 1},
        workers=1,
    )
    assert [r["label"] for r in result.runs] == ["online + sgd", "mini-batch 32 + sgd"]
    assert result.meta["data"]["split"] == "shared by every seed" and result.meta["data"]["n_train"] == 420
    assert repr(result) == "CompareResult(2 runs on arrays, equal epochs (1 per run))"
    table = result.to_pandas()
    assert list(table["label"]) == ["online + sgd", "mini-batch 32 + sgd"] and "history" not in table
    with pytest.raises(ConfigError, match="got settings= and seeds"):
        cadence.compare(settings=cadence.comparison.CompareConfig(), seeds=2)


def test_reprs_are_short_and_say_what_ran(digits_xy):
    data = cadence.from_arrays(*digits_xy)
    assert repr(data) == "Dataset(arrays: classification, input (64,), 420 train / 60 val / 120 test, 10 classes)"
    # sgd at 0.01 without early stopping: the defaults this repr was written with (a budget stop)
    old = dict(optimizer="sgd", lr=0.01, early_stopping=None)
    run = cadence.train(data=data, strategy="online", max_epochs=30, eval_every_updates=50, **FAST, **old)
    assert len(run.history) > 200  # the dataclass repr would hold every record, the config and the model
    text = repr(run)
    assert len(text) < 200 and text.startswith("Run(online + sgd, lr=0.01, stop_reason='budget', updates=12,600")
    assert f"test_accuracy={run.test_metrics['test_accuracy']:.4f}" in text


def test_to_pandas_has_one_row_per_history_record(digits_xy):
    run = cadence.train(data=digits_xy, max_epochs=3, **FAST)
    frame = run.to_pandas()
    assert len(frame) == len(run.history) == 3
    assert list(frame["updates"]) == [r["updates"] for r in run.history]
    assert frame["val_accuracy"].tolist() == [r["val_accuracy"] for r in run.history]


class PairDataset(Dataset):
    """A map-style torch Dataset of (x, y) pairs, as users write them."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class PairStream(IterableDataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __iter__(self):
        return zip(self.x, self.y, strict=True)


@pytest.mark.parametrize(
    "wrap",
    [
        TensorDataset,
        PairDataset,
        PairStream,
        lambda x, y: DataLoader(TensorDataset(x, y), batch_size=100),  # batches, in order: same samples
    ],
    ids=["TensorDataset", "map-style Dataset", "IterableDataset", "DataLoader"],
)
def test_torch_data_trains_exactly_as_the_same_arrays(digits_xy, wrap):
    x, y = digits_xy
    reference = cadence.train(data=(x.numpy(), y.numpy()), max_epochs=2, **FAST)
    run = cadence.train(data=wrap(x, y), max_epochs=2, **FAST)
    timeless = [{k: v for k, v in r.items() if k != "seconds"} for r in run.history]
    assert timeless == [{k: v for k, v in r.items() if k != "seconds"} for r in reference.history]
    for a, b in zip(run.model.state_dict().values(), reference.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (TensorDataset(torch.ones(4, 2)), "holds two tensors .* this one holds 1"),
        (PairDataset([torch.ones(2), torch.ones(3)], [0, 1]), "samples of the PairDataset do not have one shape"),
        ([torch.ones(2)] * 4, r"data as a tuple is \(x, y\); got 4 items"),
        (TensorDataset(torch.ones(0, 2), torch.ones(0)), "empty"),
        ({"x": 1}, "data must be a cadence Dataset, an \\(x, y\\) tuple"),
    ],
)
def test_bad_data_objects_get_a_data_error(data, match):
    with pytest.raises(DataError, match=match):
        cadence.train(data=data, max_epochs=1, **FAST)


def test_items_that_are_not_pairs_are_named():
    class Triples(PairDataset):
        def __getitem__(self, i):
            return self.x[i], self.y[i], 0

    with pytest.raises(DataError, match=r"each item of the Triples must be an \(x, y\) pair; got tuple of len"):
        cadence.train(data=Triples(torch.ones(4, 2), torch.zeros(4)), max_epochs=1, **FAST)


def test_verbose_shows_a_progress_bar_on_stderr(digits_xy, capfd):
    cadence.train(data=digits_xy, max_epochs=1, verbose=True, **FAST)
    assert "40/40" not in capfd.readouterr().out
    cadence.train(data=digits_xy, max_epochs=1, **FAST)
    quiet = capfd.readouterr()
    assert quiet.err == "" and quiet.out == ""
    cadence.train(data=digits_xy, max_epochs=1, verbose=True, **FAST)
    assert "7/7" in capfd.readouterr().err  # 420 samples / 64 per batch: 7 updates


def test_train_ensemble_takes_the_arguments_of_train_and_the_old_order_still_works(digits_xy):
    new = cadence.train_ensemble("mlp:8", digits_xy, {"stop": {"max_epochs": 1}}, members=2)
    with pytest.warns(DeprecationWarning, match="train_ensemble\\(data, config, members\\) is deprecated"):
        old = cadence.train_ensemble(digits_xy, {"model": {"spec": "mlp:8"}, "stop": {"max_epochs": 1}}, 2)
    assert new.test_metrics == old.test_metrics and len(new.members) == len(old.members) == 2
    assert [r.config.seed for r in new.members] == [0, 1] and new.members[0].config.model.spec == "mlp:8"


def test_summary_batch_size_is_what_one_update_used(digits_xy):
    sizes = {}
    for strategy in ("online", "mini-batch", "full-batch"):
        run = cadence.train(data=digits_xy, strategy=strategy, batch_size=32, max_updates=3, **FAST)
        sizes[strategy] = run.summary()["batch_size"]
    assert sizes == {"online": 1, "mini-batch": 32, "full-batch": 420}


def test_a_data_set_name_is_recorded_in_the_config():
    run = cadence.train("logreg", "digits", max_updates=2, threads=1)
    assert run.config.data.name == "digits" and run.config.model.spec == "logreg"


def test_unknown_keyword_suggests_the_near_names(digits_xy):
    with pytest.raises(ConfigError, match=r"argument\(s\) \['batchsize'\]; did you mean batch_size"):
        cadence.train(data=digits_xy, batchsize=8)


def test_old_keyword_spellings_still_work(digits_xy):
    run = cadence.train(data=digits_xy, epochs=1, eval_every=3, **FAST)
    assert run.config.stop.max_epochs == 1 and run.config.eval.every_updates == 3
    assert np.isclose(run.epochs, 1.0)
