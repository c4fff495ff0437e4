"""Fashion-MNIST for the benchmarks, read straight from the IDX files (numpy + gzip).

Kept local to bench/ so the suite runs from any checkout; cadence's own loader lives in cadence.data.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

DATA_DIR = Path(os.environ.get("CADENCE_FASHION_DIR", "/usr/share/datasets/fashion-mnist"))
# The tutorial's Normalize((0.2860,), (0.3530,)): Fashion-MNIST's pixel mean and std after ToTensor.
MEAN, STD = 0.2860, 0.3530


def _read(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images uint8 [60000, 28, 28], train labels, test images [10000, 28, 28], test labels)."""
    files = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    found = []
    for name in files:
        path = next((p for p in (DATA_DIR / f"{name}.gz", DATA_DIR / name) if p.exists()), None)
        if path is None:
            raise SystemExit(
                f"Fashion-MNIST file {name} not found in {DATA_DIR}. Fix: apt-get install dataset-fashion-mnist "
                "or set CADENCE_FASHION_DIR."
            )
        found.append(_read(path) if path.suffix == ".gz" else np.fromfile(path, dtype=np.uint8))
    return found[0], found[1].astype(np.int64), found[2], found[3].astype(np.int64)


def normalized(images: np.ndarray) -> np.ndarray:
    """ToTensor + Normalize applied to the whole array at once: float32 [n, 784]."""
    return ((images.reshape(len(images), -1).astype(np.float32) / 255.0) - MEAN) / STD


def cadence_dataset():
    """The same normalized arrays as a cadence Dataset: all 60k for training, the 10k test set for testing.

    (Once cadence.data reads IDX files this is load_data(DataConfig(name="fashion-mnist", val_fraction=0,
    standardize="global")), which computes the same mean and std from the training images.)
    """
    from cadence.config import DataConfig
    from cadence.data.datasets import from_arrays

    x, y, xt, yt = load()
    config = DataConfig(val_fraction=0.0, test_fraction=0.0, standardize="none")
    return from_arrays(normalized(x), y, x_test=normalized(xt), y_test=yt, config=config, n_classes=10)
