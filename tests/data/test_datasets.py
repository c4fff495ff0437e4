"""from_arrays and load_data: checks before anything is built, seeded stratified splits, training-only scaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cadence.config import DataConfig
from cadence.data.datasets import FASHION_CLASSES, from_arrays, load_data
from cadence.errors import DataError


def blobs(n: int = 200, features: int = 4, seed: int = 0):
    """Skewed, shifted features (so split statistics differ from whole-set ones) and 3 classes."""
    rng = np.random.default_rng(seed)
    x = rng.exponential(scale=[1.0, 5.0, 0.1, 20.0][:features], size=(n, features)) + 3.0
    y = rng.integers(0, 3, size=n)
    return x, y


# --- errors -----------------------------------------------------------------------------------------


def test_label_out_of_range_says_fix_labels_or_set_n_classes():
    x, y = blobs(20)
    y[7] = 12
    with pytest.raises(
        DataError, match=r"in \[0, 9\] for 10 classes; got 12 at row 7\. Fix the labels or set n_classes=13"
    ):
        from_arrays(x, y, n_classes=10)


def test_negative_label_does_not_suggest_a_class_count():
    x, y = blobs(20)
    y[3] = -1
    with pytest.raises(DataError, match=r"got -1 at row 3\. Fix the labels: class indices start at 0\.$"):
        from_arrays(x, y, n_classes=3)


def test_nan_feature_is_located():
    x, y = blobs(20)
    x[5, 2] = np.nan
    with pytest.raises(DataError, match=r"1 non-finite values .*first at row 5, feature 2 = nan"):
        from_arrays(x, y)


@pytest.mark.parametrize("x", [np.zeros((0, 3)), np.zeros((5, 0))], ids=["no-rows", "no-features"])
def test_empty_features_raise(x):
    with pytest.raises(DataError, match="features is empty .*Fix: pass at least one sample"):
        from_arrays(x, np.zeros(len(x), dtype=np.int64))


def test_rows_of_features_and_labels_must_match():
    x, y = blobs(20)
    with pytest.raises(DataError, match="labels has 19 rows but the features have 20"):
        from_arrays(x, y[:-1])


@pytest.mark.parametrize("x", [np.arange(10.0), np.array(5.0)], ids=["1-D", "0-D"])
def test_features_without_a_feature_axis_ask_for_reshape(x):
    with pytest.raises(DataError, match=r"must have shape \(n_samples, n_features...\).*x.reshape\(-1, 1\)"):
        from_arrays(x, np.zeros(x.size, dtype=np.int64))


def test_test_features_without_test_labels_raise():
    x, y = blobs(20)
    with pytest.raises(DataError, match="got x_test without y_test. Fix: pass both or neither"):
        from_arrays(x, y, x_test=x)


def test_too_few_samples_to_split_raise_data_error():
    with pytest.raises(DataError, match="cannot split 1 samples with val_fraction=0.1 and test_fraction=0.2"):
        from_arrays(np.ones((2, 2)), np.array([0, 1]))


def test_unknown_data_set_name_lists_what_is_allowed():
    with pytest.raises(DataError, match="unknown data set 'nope'. Allowed: digits, fashion-mnist, mnist, a path"):
        load_data(DataConfig(name="nope"))


# --- splitting and scaling --------------------------------------------------------------------------


def test_standardization_uses_training_statistics_only():
    x, y = blobs()
    cfg = DataConfig(val_fraction=0.2, test_fraction=0.2)
    raw = from_arrays(x, y, config=cfg.model_copy(update={"standardize": "none"}), seed=3)
    scaled = from_arrays(x, y, config=cfg, seed=3)
    train = raw.x_train.double()
    mean, std = train.mean(0), train.std(0, unbiased=False)
    torch.testing.assert_close(
        scaled.x_train.double().mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(scaled.x_train.double().std(0, unbiased=False), torch.ones(4, dtype=torch.float64))
    for part in ("x_val", "x_test"):
        expected = (getattr(raw, part).double() - mean) / std
        torch.testing.assert_close(getattr(scaled, part).double(), expected, atol=1e-5, rtol=1e-5)
    # Whole-set statistics would give different validation values: the check above can tell them apart.
    leaked = (raw.x_val.double() - torch.from_numpy(x).mean(0)) / torch.from_numpy(x).std(0, unbiased=False)
    assert not torch.allclose(scaled.x_val.double(), leaked, atol=1e-3)
    torch.testing.assert_close(scaled.mean.reshape(-1).double(), mean, atol=1e-4, rtol=1e-5)


def test_global_standardization_uses_one_mean_and_std():
    x, y = blobs()
    data = from_arrays(x, y, config=DataConfig(standardize="global"))
    assert data.mean.numel() == 1 and data.std.numel() == 1
    assert abs(float(data.x_train.mean())) < 1e-5 and abs(float(data.x_train.std(unbiased=False)) - 1) < 1e-5


def test_constant_feature_stays_finite_and_zero():
    x, y = blobs()
    x[:, 1] = 7.0
    data = from_arrays(x, y)
    assert torch.all(data.x_train[:, 1] == 0) and torch.all(data.x_test[:, 1] == 0)


def test_same_seed_same_split_and_other_seed_other_split():
    x, y = blobs()
    a, b, c = (from_arrays(x, y, seed=s) for s in (7, 7, 8))
    for part in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(a, part), getattr(b, part))
    assert not torch.equal(a.y_train, c.y_train)


def test_split_partitions_the_samples_with_the_asked_sizes():
    x, y = blobs()
    x[:, 0] = np.arange(len(x))  # a row id that survives the split, read back through standardize="none"
    data = from_arrays(x, y, config=DataConfig(val_fraction=0.1, test_fraction=0.2, standardize="none"))
    ids = [getattr(data, p)[:, 0].long().tolist() for p in ("x_train", "x_val", "x_test")]
    assert [len(i) for i in ids] == [140, 20, 40]
    assert sorted(sum(ids, [])) == list(range(200))
    assert torch.equal(data.y_train, torch.from_numpy(y[ids[0]]))


def test_split_keeps_class_proportions():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((100, 2)), np.array([0] * 90 + [1] * 10)
    data = from_arrays(x, y, config=DataConfig(val_fraction=0.1, test_fraction=0.2))
    assert [int(data.y_test.sum()), int(data.y_val.sum())] == [2, 1]  # 10% of 20 and of 10


def test_limit_keeps_the_first_samples():
    x, y = blobs()
    data = from_arrays(x, y, config=DataConfig(limit=50, val_fraction=0.2, test_fraction=0.2))
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 50


def test_given_test_set_is_kept_and_scaled_with_training_statistics():
    x, y = blobs()
    xt, yt = blobs(30, seed=1)
    data = from_arrays(x, y, x_test=xt, y_test=yt, config=DataConfig(test_fraction=0.0, val_fraction=0.1))
    assert len(data.x_test) == 30 and torch.equal(data.y_test, torch.from_numpy(yt))
    torch.testing.assert_close(data.x_test, (torch.from_numpy(xt).float() - data.mean) / data.std)


# --- real data: the Debian Fashion-MNIST files ------------------------------------------------------


def test_load_data_fashion_mnist_shapes(debian_fashion_dir):
    data = load_data(DataConfig(name="fashion-mnist", val_fraction=0.1))
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (54000, 6000, 10000)
    assert data.n_features == 784 and data.input_shape == (784,)
    assert (data.task, data.n_classes, data.class_names) == ("classification", 10, FASHION_CLASSES)
    assert torch.equal(torch.bincount(data.y_val), torch.full((10,), 600))  # stratified
    assert abs(float(data.x_train.mean())) < 1e-3


def test_auto_standardization_uses_one_scale_for_images_and_per_feature_for_tables():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(200, 4, 4)).astype(np.float32)
    x[:, 0, 0] = 0.0  # a constant "border pixel": per-feature scaling would leave it at 0 and rescale the rest
    y = rng.integers(0, 2, size=200)
    images = from_arrays(x, y, config=DataConfig(val_fraction=0.0, test_fraction=0.0))
    assert images.mean.numel() == 1 and images.std.numel() == 1
    tables = from_arrays(x.reshape(200, -1), y, config=DataConfig(val_fraction=0.0, test_fraction=0.0))
    assert tables.mean.shape == (1, 16)
    flagged = from_arrays(
        x.reshape(200, -1), y, config=DataConfig(val_fraction=0.0, test_fraction=0.0), images=True
    )
    assert flagged.mean.numel() == 1
