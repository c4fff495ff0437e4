"""Load a data set by name or from arrays, split it with a seed, and standardize on the training part.

Owns the in-memory `Dataset` every strategy reads from; file formats live in idx.py and files.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from cadence.config import DataConfig
from cadence.data.checks import as_numpy, check_features, check_targets
from cadence.errors import DataError

BUILTIN = ("digits", "fashion-mnist", "mnist")
MAX_INFERRED_CLASSES = 100_000  # beyond this, labels are ids or values, not class indices


@dataclass
class Dataset:
    """Train/validation/test tensors in memory, already standardized with training statistics."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: str = "classification"
    n_classes: int | None = None
    name: str = "arrays"
    class_names: list[str] = field(default_factory=list)
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    # What a saved model needs to read raw inputs as these were read (models/artefact.py):
    feature_names: list[str] = field(default_factory=list)  # CSV columns, in the order of the features
    target_name: str | None = None  # the CSV target column
    image: dict | None = None  # image data: {"size": [H, W], "channels": C, "divide_by": pixel divisor}
    test_rows: np.ndarray | None = None  # indices into the given rows of the test split (None: given apart)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_features(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def n_outputs(self) -> int:
        return (
            self.n_classes
            if self.task == "classification"
            else (1 if self.y_train.ndim == 1 else int(self.y_train.shape[1]))
        )

    def __repr__(self) -> str:  # the dataclass repr would print every tensor
        return f"Dataset({self.describe()})"

    def describe(self) -> str:
        return (
            f"{self.name}: {self.task}, input {self.input_shape}, "
            f"{len(self.x_train)} train / {len(self.x_val)} val / {len(self.x_test)} test"
            + (f", {self.n_classes} classes" if self.n_classes else "")
        )


def _infer_task(y: np.ndarray, task: str) -> str:
    if task != "auto":
        return task
    if np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        return "classification"
    return "regression"


def from_arrays(
    x,
    y,
    *,
    x_test=None,
    y_test=None,
    config: DataConfig | None = None,
    seed: int = 0,
    n_classes: int | None = None,
    name: str = "arrays",
    class_names: list[str] | None = None,
    images: bool = False,
    feature_names: list[str] | None = None,
    target_name: str | None = None,
    image: dict | None = None,
) -> Dataset:
    """Build a Dataset from arrays: checks, seeded split, standardization fitted on the training part.

    Args:
        class_names: the name of each class (label i is class_names[i]), kept with a saved model.
        images: the features are pixels (one standardization scale by default).
        feature_names, target_name, image: how the raw inputs were read, kept with a saved model.

    Raises:
        DataError: empty data, wrong shapes, non-finite values, labels outside [0, n_classes), a
            classification with a single class.
    """
    config = config or DataConfig()
    x = as_numpy(x, "features")
    y = as_numpy(y, "targets")
    check_features(x)
    task = _infer_task(y, config.task)
    if task == "classification":
        if n_classes is None:
            check_targets(y, len(x), "regression", None)  # numeric + finite before max()
            n_classes = int(np.max(y)) + 1
            if n_classes > MAX_INFERRED_CLASSES:
                raise DataError(
                    f"labels go up to {int(np.max(y))}, which would mean {n_classes} classes (more than "
                    f"{MAX_INFERRED_CLASSES}). Fix: map the labels to 0..K-1 (np.unique(y, return_inverse=True)),"
                    " pass n_classes explicitly, or set task='regression'."
                )
        check_targets(y, len(x), task, n_classes)
        y = y.reshape(-1).astype(np.int64)
    else:
        check_targets(y, len(x), task, None)
        y = y.astype(np.float32)
    if (x_test is None) != (y_test is None):
        raise DataError(
            f"got {'x_test' if y_test is None else 'y_test'} without "
            f"{'y_test' if y_test is None else 'x_test'}. Fix: pass both or neither."
        )
    if x_test is not None:
        x_test = as_numpy(x_test, "test features")
        y_test = as_numpy(y_test, "test targets")
        check_features(x_test, "test features")
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(f"test features have shape {x_test.shape[1:]} per sample, training {x.shape[1:]}.")
        check_targets(y_test, len(x_test), task, n_classes, "test labels")
        y_test = y_test.reshape(-1).astype(np.int64) if task == "classification" else y_test.astype(np.float32)

    if config.limit is not None:
        x, y = x[: config.limit], y[: config.limit]
    if task == "classification" and len(y) > 1 and (y == y[0]).all():
        name_of = f" ({class_names[y[0]]!r})" if class_names and y[0] < len(class_names) else ""
        raise DataError(
            f"every label is {int(y[0])}{name_of}: a classifier needs at least two classes to tell apart (with "
            "one, every prediction is trivially right). Fix: add samples of the other classes."
        )
    labels = y if task == "classification" else None
    idx = np.arange(len(x))
    test_rows = None
    if x_test is None and config.test_fraction > 0:
        idx, test_idx = _split(idx, labels, config.test_fraction, seed, config)
        x_test, y_test = x[test_idx], y[test_idx]
        test_rows = test_idx
    train_idx, val_idx = idx, idx[:0]
    if config.val_fraction > 0:
        # val_fraction is of all samples given; convert to a fraction of what the test split left.
        frac = min(config.val_fraction * len(x) / len(idx), 0.9)
        train_idx, val_idx = _split(idx, labels, frac, seed, config)
    if x_test is None:
        x_test, y_test = x[:0], y[:0]
        test_rows = idx[:0]
    if len(train_idx) == 0:
        raise DataError(f"the training part is empty after the split ({len(x)} samples). Fix: pass more data.")

    xf = x.astype(np.float32)
    x_train, x_val, x_test = xf[train_idx], xf[val_idx], x_test.astype(np.float32)
    mean = std = None
    mode = config.standardize
    if mode == "auto":
        # Per-pixel scaling blows up the noise of near-constant border pixels; images share one scale.
        mode = "global" if images or x.ndim > 2 else "feature"
    if mode != "none":
        axis = 0 if mode == "feature" else None
        # float64 statistics: a float32 sum of large values overflows to inf
        mean = x_train.mean(axis=axis, keepdims=axis is not None, dtype=np.float64).astype(np.float32)
        std = x_train.std(axis=axis, keepdims=axis is not None, dtype=np.float64).astype(np.float32)
        std = np.where(std < 1e-8, 1.0, std).astype(np.float32)  # constant features stay at 0
        with np.errstate(over="ignore", invalid="ignore"):
            x_train, x_val, x_test = ((a - mean) / std for a in (x_train, x_val, x_test))
        if not all(np.isfinite(a).all() for a in (x_train, x_val, x_test)):
            raise DataError(
                "standardizing the features overflowed float32: some feature spans more than +-1.7e38. "
                "Fix: rescale the features, or set data.standardize='none'."
            )

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a))

    return Dataset(
        x_train=t(x_train),
        y_train=t(y[train_idx]),
        x_val=t(x_val),
        y_val=t(y[val_idx]),
        x_test=t(x_test),
        y_test=t(y_test),
        task=task,
        n_classes=n_classes if task == "classification" else None,
        name=name,
        class_names=class_names or [],
        mean=None if mean is None else torch.as_tensor(mean),
        std=None if std is None else torch.as_tensor(std),
        feature_names=list(feature_names or []),
        target_name=target_name,
        image=image,
        test_rows=test_rows,
    )


def _split(idx: np.ndarray, labels: np.ndarray | None, test_size: float, seed: int, config: DataConfig):
    """Seeded train_test_split of `idx`, stratified by class where sklearn can honour it.

    sklearn stratifies only with >= 2 samples per class and room for every class on both sides.
    """
    strat = None
    if labels is not None:
        counts = np.bincount(labels[idx])
        counts = counts[counts > 0]
        n_test = math.ceil(test_size * len(idx))  # the size sklearn computes
        if counts.min() >= 2 and n_test >= len(counts) and len(idx) - n_test >= len(counts):
            strat = labels[idx]
    try:
        return train_test_split(idx, test_size=test_size, random_state=seed, stratify=strat)
    except ValueError as err:  # too few samples for the fractions asked
        raise DataError(
            f"cannot split {len(idx)} samples with val_fraction={config.val_fraction} and "
            f"test_fraction={config.test_fraction}: {err} Fix: pass more data or lower the fractions."
        ) from None


def load_data(config: DataConfig | None = None, seed: int = 0) -> Dataset:
    """Load the data set named by `config.name`: a built-in name, a .csv file or an image folder.

    Raises:
        DataError: unknown name, missing files, or malformed content.
    """
    config = config or DataConfig()
    name = config.name
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return from_arrays(
            bunch.data,
            bunch.target,
            config=config,
            seed=seed,
            n_classes=10,
            name="digits",
            class_names=[str(c) for c in range(10)],
        )
    if name in ("fashion-mnist", "mnist"):
        from cadence.data.idx import load_idx_dataset

        x, y, xt, yt = load_idx_dataset(name, data_dir=config.data_dir)
        cfg = config.model_copy(update={"test_fraction": 0.0})
        return from_arrays(
            x.reshape(len(x), -1),
            y.astype(np.int64),
            x_test=xt.reshape(len(xt), -1),
            y_test=yt.astype(np.int64),
            config=cfg,
            seed=seed,
            n_classes=10,
            name=name,
            class_names=FASHION_CLASSES if name == "fashion-mnist" else [str(c) for c in range(10)],
            images=True,
            image={"size": [28, 28], "channels": 1, "divide_by": 1.0},  # IDX pixels are 0..255
        )
    path = Path(name)
    if path.suffix.lower() == ".csv":
        from cadence.data.files import load_csv

        table = load_csv(path, config.target)
        if table.classes is not None and config.task == "regression":
            raise DataError(
                f"{path} target column {config.target!r} holds text ({table.classes[0]!r}, ...), which cannot be "
                "regressed on. Fix: give a numeric target, or drop data.task='regression' to classify."
            )
        data = from_arrays(
            table.x,
            table.y,
            config=config,
            seed=seed,
            n_classes=None if table.classes is None else len(table.classes),
            name=path.name,
            class_names=table.classes,
            feature_names=table.features,
            target_name=config.target,
        )
        if data.task == "classification" and not data.class_names:  # integer codes name themselves
            data.class_names = [str(c) for c in range(data.n_classes)]
        return data
    if path.is_dir():
        from cadence.data.files import PIXEL_SCALE, load_image_folder

        x, y, classes = load_image_folder(path, size=config.image_size)
        image = {"size": list(config.image_size), "channels": int(x.shape[1]), "divide_by": PIXEL_SCALE}
        return from_arrays(
            x,
            y,
            config=config,
            seed=seed,
            n_classes=len(classes),
            name=path.name,
            class_names=classes,
            image=image,
        )
    raise DataError(
        f"unknown data set {name!r}. Allowed: {', '.join(BUILTIN)}, a path to a .csv file (with --target), "
        "or a folder of images with one subfolder per class."
    )


FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
