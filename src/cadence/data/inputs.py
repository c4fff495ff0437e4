"""What `train(data=...)` accepts, turned into a Dataset: None (the config's data set), (x, y) arrays, a
Dataset, or a torch `Dataset` / `TensorDataset` / `DataLoader` of (x, y) pairs. The loop sees only Datasets.
"""

from __future__ import annotations

import torch
from torch.utils import data as torch_data

from cadence.config import DataConfig
from cadence.data.datasets import Dataset, from_arrays, load_data
from cadence.errors import DataError

ACCEPTED = "a cadence Dataset, an (x, y) tuple of arrays, a torch Dataset/TensorDataset/DataLoader, or None"


def as_dataset(data: object, config: DataConfig, seed: int) -> Dataset:
    """`data` as a Dataset, checked, split and standardized as `from_arrays` does (torch data too).

    A torch DataLoader is read once, in its own order; its batch size does not matter, since the run's
    strategy decides what each update holds.

    Raises:
        DataError: a type not listed in ACCEPTED, items that are not (x, y) pairs, or bad values.
    """
    if data is None:
        return load_data(config, seed=seed)
    if isinstance(data, Dataset):
        return data
    if isinstance(data, tuple | list):
        if len(data) != 2:
            raise DataError(f"data as a tuple is (x, y); got {len(data)} items. Fix: pass (features, targets).")
        return from_arrays(*data, config=config, seed=seed)
    if isinstance(data, torch_data.DataLoader | torch_data.Dataset):
        x, y = torch_tensors(data)
        return from_arrays(x, y, config=config, seed=seed, name=type(data).__name__)
    raise DataError(f"data must be {ACCEPTED}; got {type(data).__name__}.")


def torch_tensors(data: torch_data.Dataset | torch_data.DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """All (x, y) of a torch Dataset or DataLoader, stacked into two tensors (samples first).

    Raises:
        DataError: an empty source, or items that are not (x, y) pairs of tensors or numbers.
    """
    name = type(data).__name__
    if isinstance(data, torch_data.TensorDataset):
        if len(data.tensors) != 2:
            raise DataError(
                f"a TensorDataset for training holds two tensors (features, targets); this one holds "
                f"{len(data.tensors)}. Fix: TensorDataset(x, y)."
            )
        return data.tensors[0], data.tensors[1]
    if isinstance(data, torch_data.DataLoader):
        batches = [_pair(b, name, "batch") for b in data]
        xs, ys = [b[0] for b in batches], [b[1] for b in batches]
        cat = torch.cat
    else:
        items = (
            (data[i] for i in range(len(data)))  # map-style: index it, as a DataLoader would
            if hasattr(data, "__len__") and not isinstance(data, torch_data.IterableDataset)
            else iter(data)
        )
        pairs = [_pair(item, name, "item") for item in items]
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        cat = torch.stack
    if not xs:
        raise DataError(f"the {name} is empty. Fix: pass at least one (x, y) sample.")
    try:
        return cat(xs), cat(ys)
    except RuntimeError as err:
        raise DataError(
            f"the samples of the {name} do not have one shape: {err}. Fix: make every x the same shape."
        ) from None


def _pair(item: object, source: str, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(item, tuple | list) and len(item) == 2):
        raise DataError(
            f"each {what} of the {source} must be an (x, y) pair; got {type(item).__name__}"
            f"{f' of length {len(item)}' if isinstance(item, tuple | list) else ''}. "
            "Fix: return (features, target) from __getitem__."
        )
    return torch.as_tensor(item[0]), torch.as_tensor(item[1])
