"""Checks on user data before any training: shapes, dtypes, label range, finiteness.

Each failure raises DataError naming the problem, where it is, and the fix; nothing is changed first.
"""

from __future__ import annotations

import numpy as np
import torch

from cadence.errors import DataError


def as_numpy(a, what: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    try:
        return np.asarray(a)
    except Exception as err:  # ragged lists and the like
        raise DataError(
            f"{what} could not be read as an array: {err}. Fix: pass a NumPy array or tensor."
        ) from None


def check_features(x: np.ndarray, what: str = "features") -> None:
    """Raise DataError if `x` is empty, not numeric, 1-D, or has NaN/inf."""
    if x.size == 0:
        raise DataError(f"{what} is empty (shape {x.shape}). Fix: pass at least one sample.")
    if x.ndim < 2:
        raise DataError(
            f"{what} must have shape (n_samples, n_features...); got shape {x.shape}. "
            "Fix: reshape a single feature column with x.reshape(-1, 1)."
        )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"{what} must be numeric; got dtype {x.dtype}. Fix: encode non-numeric columns first.")
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x.reshape(x.shape[0], -1))
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise DataError(
                f"{what} has {int(bad.sum())} non-finite values (NaN or inf); first at row {row}, "
                f"feature {col} = {x.reshape(x.shape[0], -1)[row, col]}. Fix: impute or drop those rows."
            )
        limit = np.finfo(np.float32).max  # training runs in float32: larger values would become inf
        big = np.abs(x.reshape(x.shape[0], -1)) > limit
        if big.any():
            row, col = np.argwhere(big)[0]
            raise DataError(
                f"{what} has {int(big.sum())} values beyond the float32 range (+-{limit:.3g}) training uses; "
                f"first at row {row}, feature {col} = {x.reshape(x.shape[0], -1)[row, col]}. "
                "Fix: rescale those features (e.g. log or divide by a constant)."
            )


def check_targets(y: np.ndarray, n_samples: int, task: str, n_classes: int | None, what: str = "labels") -> None:
    """Raise DataError if targets do not match the samples or the task (labels in [0, n_classes))."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 0 or y.shape[0] != n_samples:
        got = f"{y.shape[0]} rows" if y.ndim else f"no rows (a single value {y.item()!r})"
        raise DataError(f"{what} has {got} but the features have {n_samples}. Fix: pass one target per sample.")
    if task == "classification":
        if y.ndim != 1:
            raise DataError(f"{what} must be 1-D class indices; got shape {y.shape}. Fix: use argmax of one-hot.")
        if not np.issubdtype(y.dtype, np.integer):
            if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
                y = y.astype(np.int64)
            else:
                raise DataError(
                    f"{what} must be integer class indices for classification; got dtype {y.dtype}. "
                    "Fix: encode classes as 0..K-1, or set task='regression'."
                )
        assert n_classes is not None
        bad = (y < 0) | (y >= n_classes)
        if bad.any():
            row = int(np.argmax(bad))
            # A negative label has no n_classes that would fit it, so only suggest one for labels too large.
            fix = ": class indices start at 0" if y[row] < 0 else f" or set n_classes={int(y.max()) + 1}"
            raise DataError(
                f"{what} must be in [0, {n_classes - 1}] for {n_classes} classes; got {y[row]} at row {row}. "
                f"Fix the labels{fix}."
            )
    else:
        if not np.issubdtype(y.dtype, np.number):
            raise DataError(f"{what} must be numeric for regression; got dtype {y.dtype}.")
        bad = ~np.isfinite(y.astype(np.float64))
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise DataError(f"{what} has non-finite targets; first at row {row}. Fix: drop or impute those rows.")
        big = np.abs(y.astype(np.float64)) > np.finfo(np.float32).max
        if big.any():
            row = int(np.argwhere(big)[0][0])
            raise DataError(
                f"{what} has targets beyond the float32 range training uses; first at row {row} = "
                f"{y.reshape(len(y), -1)[row]}. Fix: rescale the targets."
            )
