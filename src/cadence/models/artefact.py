"""A trained model as a file that can be used: weights plus everything needed to rebuild the model and predict
on raw inputs (model spec, input shape, task, label and feature names, the fitted standardization, versions).

The weights are `model.safetensors`; the rest is JSON in its metadata header under "cadence", so the one
file is the model (never pickle). `load` rebuilds it and returns a TrainedModel with predict /
predict_proba / evaluate on raw arrays, DataFrames (columns by name) and image files. Training is the
engine's; reading files of new inputs (CSV chunks, JSONL) is the CLI's, through `TrainedModel.columns`.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from cadence.config import ModelConfig, RunConfig
from cadence.data.checks import check_features
from cadence.data.datasets import Dataset
from cadence.errors import ConfigError, DataError
from cadence.metrics import classification_metrics, regression_metrics
from cadence.models.builders import build_model, check_trusted
from cadence.models.ensemble import Ensemble

FORMAT = "cadence-model"
VERSION = 1
FILENAME = "model.safetensors"
META_KEY = "cadence"
EVAL_BATCH = 4096  # the engine evaluates in chunks of eval.batch_size (4096): same chunks, same bits


def describe_inputs(data: Dataset) -> dict:
    """What a saved model must know about the data it was trained on to read raw inputs the same way."""
    standardize = None
    if data.mean is not None:
        standardize = {
            "shape": list(data.mean.shape),
            "mean": data.mean.reshape(-1).tolist(),
            "std": data.std.reshape(-1).tolist(),
        }
    return {
        "data": data.name,
        "task": data.task,
        "n_classes": data.n_classes,
        "n_outputs": data.n_outputs,
        "input_shape": list(data.input_shape),
        "labels": list(data.class_names) or None,
        "features": list(data.feature_names) or None,
        "target": data.target_name,
        "image": data.image,
        "standardize": standardize,
    }


def save(
    path: str | Path,
    model: nn.Module,
    config: RunConfig,
    inputs: dict | None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write `model`'s weights to `path` (a .safetensors file) with the metadata `load` needs.

    `inputs` is `describe_inputs(data)`; without it (a Run made by hand) only the weights and the model
    config are written, and `load` refuses to predict. `metadata`: more header entries kept beside
    cadence's own (a stream snapshot's version and metrics: serve/snapshots.py).
    """
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "model": config.model.model_dump(mode="json"),
        "inputs": inputs,
        "versions": {
            "cadence": _cadence_version(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={**(metadata or {}), META_KEY: json.dumps(meta)})
    return Path(path)


def _cadence_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cadence")  # the installed distribution's; no import of the package's top level
    except PackageNotFoundError:
        return "unknown"


def read_meta(path: str | Path) -> dict:
    """The metadata of a saved model (the header only; weights are not read).

    Raises:
        DataError: the file is missing, not safetensors, or carries no cadence metadata.
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except FileNotFoundError:
        raise DataError(
            f"no saved model at {path}. Fix: pass a run directory written by `cadence train`."
        ) from None
    except Exception as err:  # safetensors raises its own error types for foreign files
        raise DataError(f"{path} is not a safetensors model file: {err}.") from None
    try:
        meta = json.loads(header[META_KEY])
        ok = meta.get("format") == FORMAT
    except (KeyError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise DataError(
            f"{path} holds weights only, without cadence's metadata (model spec, inputs, labels): it was written "
            "by an older cadence or another program. Fix: retrain with this version, or build the model yourself "
            "and load the weights with safetensors.torch.load_file."
        )
    if meta.get("version") != VERSION:
        raise DataError(f"{path} is model format version {meta.get('version')}; this cadence reads {VERSION}.")
    return meta


def load(where: str | Path, model: nn.Module | str | None = None, *, trust_code: bool = False) -> TrainedModel:
    """Load a trained model from a run directory (or its model.safetensors; an ensemble's directory).

    Args:
        model: for a run trained on a module passed as an object, the module to load the weights into
            (cadence cannot rebuild it); or the `package.module:factory` spec the run names, named again.
        trust_code: import the `package.module:factory` the run names without naming it again.

    Raises:
        DataError: no saved model there. ConfigError: the run names a factory to import and it is not
            trusted, the model cannot be rebuilt without `model`, or the weights do not fit it.
    """
    where = Path(where)
    members = sorted(where.glob("member-*/" + FILENAME)) if (where / "ensemble.json").is_file() else []
    if members:
        loaded = [_load_one(p, model, trust_code) for p in members]
        first = loaded[0]
        return TrainedModel(Ensemble([m.module for m in loaded], first.task), first.meta, where)
    return _load_one(where / FILENAME if where.is_dir() else where, model, trust_code)


def _load_one(path: Path, model: nn.Module | str | None, trust_code: bool) -> TrainedModel:
    meta = read_meta(path)
    inputs = meta.get("inputs")
    if not inputs:
        raise DataError(f"{path} does not record its inputs (shape, task, preprocessing). Fix: retrain it.")
    config = ModelConfig(**meta["model"])
    if isinstance(model, str):  # a spec named again by the user is theirs: trusted
        config = config.model_copy(update={"spec": model})
    if isinstance(model, nn.Module):
        module = model
    else:
        if not isinstance(model, str):
            check_trusted(config.spec, f"model {path}", trust_code)
        with torch.random.fork_rng(devices=[]):  # building draws initial weights: leave the caller's RNG alone
            module = build_model(config, tuple(inputs["input_shape"]), inputs["n_outputs"])
    weights = load_file(str(path))
    have = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if have != got:
        diff = sorted(set(have.items()) ^ set(got.items()))[:4]
        raise ConfigError(
            f"the weights in {path} do not fit the model {config.spec!r}: {diff}. Fix: pass the module the run "
            "was trained with (same architecture)."
        )
    module.load_state_dict(weights)
    module.eval()
    return TrainedModel(module, meta, path)


class TrainedModel:
    """A trained model that takes raw inputs (as the training data were given) and answers in labels.

    Attributes:
        module: the torch model, in eval mode; its inputs are standardized.
        task, labels, features, input_shape: as recorded at training; `labels` are the class names
            (CSV target values, image folder names), None where the data had none.
    """

    def __init__(self, module: nn.Module, meta: dict, path: Path):
        self.module, self.meta, self.path = module, meta, path
        inputs = meta["inputs"]
        self.task: str = inputs["task"]
        self.n_classes: int | None = inputs["n_classes"]
        self.labels: list[str] | None = inputs["labels"]
        self.features: list[str] | None = inputs["features"]
        self.target: str | None = inputs["target"]
        self.input_shape: tuple[int, ...] = tuple(inputs["input_shape"])
        self.image: dict | None = inputs["image"]
        s = inputs["standardize"]
        self.mean = None if s is None else np.asarray(s["mean"], dtype=np.float32).reshape(s["shape"])
        self.std = None if s is None else np.asarray(s["std"], dtype=np.float32).reshape(s["shape"])

    def __repr__(self) -> str:
        what = f"{self.n_classes} classes" if self.task == "classification" else "regression"
        return f"TrainedModel({self.meta['model']['spec']!r}, input {self.input_shape}, {what}, from {self.path})"

    # --- inputs ------------------------------------------------------------------------------------

    def columns(self, names: Sequence[str]) -> list[int] | None:
        """Positions of the training feature columns among `names` (a table's header); None when the
        model has no feature names (trained on arrays).

        Raises:
            DataError: some training columns are missing (all are named).
        """
        if not self.features:
            return None
        names = [str(n) for n in names]
        missing = [f for f in self.features if f not in names]
        if missing:
            raise DataError(
                f"the inputs lack the column(s) {', '.join(map(repr, missing))} the model was trained on. "
                f"Needed: {', '.join(self.features)} (extra columns are ignored)."
            )
        return [names.index(f) for f in self.features]

    def inputs(self, x: Any) -> torch.Tensor:
        """Raw inputs as the model's standardized float32 tensor [N, *input_shape].

        `x`: an array or tensor (N, *input_shape) or (N, n_features); a pandas DataFrame or a mapping of
        columns (by name: extra columns ignored, missing ones an error); image file paths or a folder of
        images (for models trained on images).

        Raises:
            DataError: wrong shape, missing columns, non-finite values, unreadable images.
        """
        if isinstance(x, str | Path) or (
            isinstance(x, Sequence) and not isinstance(x, str) and x and isinstance(x[0], str | Path)
        ):
            a = self._images(x)
        elif hasattr(x, "columns") or isinstance(x, Mapping):
            a = self._table(x)
        else:
            a = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x)
        if a.ndim < 2:
            raise DataError(
                f"inputs must have shape (n_samples, ...); got shape {a.shape}. Fix: pass a 2-D array, "
                "e.g. x.reshape(1, -1) for one sample."
            )
        n_features = int(np.prod(self.input_shape))
        if tuple(a.shape[1:]) != self.input_shape:
            if int(np.prod(a.shape[1:])) != n_features:
                raise DataError(
                    f"inputs have shape {tuple(a.shape[1:])} per sample; the model takes {self.input_shape} "
                    f"({n_features} features)."
                )
            a = a.reshape(len(a), *self.input_shape)
        check_features(a, "inputs")
        a = a.astype(np.float32)
        if self.mean is not None:
            a = (a - self.mean) / self.std  # the same float32 operations as data.datasets.from_arrays
        return torch.from_numpy(np.ascontiguousarray(a))

    def _table(self, x) -> np.ndarray:
        names = list(x.columns) if hasattr(x, "columns") else list(x)
        cols = self.columns(names)
        if cols is None:
            return np.column_stack([np.asarray(x[n], dtype=np.float64) for n in names])
        try:
            return np.column_stack([np.asarray(x[names[i]], dtype=np.float64) for i in cols])
        except (TypeError, ValueError) as err:
            raise DataError(f"a feature column is not numeric: {err}. Fix: encode it as numbers.") from None

    def _images(self, x) -> np.ndarray:
        from cadence.data.files import images_in, read_images

        if self.image is None:
            raise DataError(
                f"this model was trained on {self.meta['inputs']['data']} features, not images; pass an array "
                "or a table."
            )
        paths = [Path(x)] if isinstance(x, str | Path) else [Path(p) for p in x]
        files = []
        for p in paths:
            if p.is_dir():
                files += images_in(p) + [
                    f for d in sorted(q for q in p.iterdir() if q.is_dir()) for f in images_in(d)
                ]
            else:
                files.append(p)
        if not files:
            raise DataError(f"no images found in {', '.join(map(str, paths))}.")
        return read_images(files, tuple(self.image["size"]), self.image["channels"], self.image["divide_by"])

    # --- predictions -------------------------------------------------------------------------------

    @torch.no_grad()
    def outputs(self, x: Any) -> torch.Tensor:
        """The model's raw outputs (logits, or regression values) for raw inputs."""
        t = self.inputs(x)
        return torch.cat([self.module(chunk) for chunk in t.split(EVAL_BATCH)]) if len(t) else torch.empty(0)

    def predict(self, x: Any) -> np.ndarray:
        """Predicted labels (class names where the training data had them, else class indices), or
        predicted values for regression: shape (N,) (or (N, k) for k regression targets)."""
        out = self.outputs(x)
        if self.task != "classification":
            return out.reshape(len(out), -1).squeeze(1).numpy() if out.shape[-1] == 1 else out.numpy()
        idx = out.argmax(dim=1).numpy()
        return np.asarray(self.labels, dtype=object)[idx] if self.labels else idx

    def predict_proba(self, x: Any) -> np.ndarray:
        """Class probabilities, shape (N, n_classes); column i is `labels[i]`.

        Raises:
            ConfigError: a regression model.
        """
        if self.task != "classification":
            raise ConfigError("predict_proba is for classification; this model does regression. Use predict.")
        return torch.softmax(self.outputs(x), dim=1).numpy()

    def label_indices(self, y: Any) -> np.ndarray:
        """Labels given by name (or as class indices) as class indices.

        Raises:
            DataError: a label the model does not know (named, with the known ones).
        """
        y = np.asarray(y)
        if self.labels and not np.issubdtype(y.dtype, np.integer):
            index = {name: i for i, name in enumerate(self.labels)}
            text = [str(v).strip() for v in y.reshape(-1)]
            unknown = sorted({t for t in text if t not in index})
            if unknown:
                raise DataError(
                    f"label(s) {', '.join(map(repr, unknown[:5]))} are not classes of this model. "
                    f"Known: {', '.join(self.labels)}."
                )
            return np.asarray([index[t] for t in text], dtype=np.int64)
        y = y.astype(np.int64).reshape(-1)
        if ((y < 0) | (y >= self.n_classes)).any():
            raise DataError(f"class indices must be in [0, {self.n_classes - 1}]; got {int(y.max())}.")
        return y

    def evaluate(self, x: Any, y: Any) -> dict[str, float]:
        """Loss and the task's metrics on labelled raw data: {"loss", "accuracy", "precision", "recall",
        "f1"} or {"loss", "mse", "mae", "r2"}, as the run's test metrics are computed."""
        out = self.outputs(x)
        if self.task == "classification":
            target = torch.from_numpy(self.label_indices(y))
            if len(target) != len(out):
                raise DataError(f"got {len(target)} labels for {len(out)} inputs.")
            loss = float(F.cross_entropy(out, target, reduction="sum")) / len(out)
            metrics = classification_metrics(target.numpy(), out.argmax(dim=1).numpy(), self.n_classes)
        else:
            target = torch.as_tensor(np.asarray(y, dtype=np.float32))
            if len(target) != len(out):
                raise DataError(f"got {len(target)} targets for {len(out)} inputs.")
            loss = float(F.mse_loss(out.reshape(target.shape), target, reduction="sum")) / len(out)
            metrics = regression_metrics(target.numpy(), out.reshape(target.shape).numpy())
        return {"loss": loss, **metrics}


__all__ = ["FILENAME", "TrainedModel", "describe_inputs", "load", "read_meta", "save"]
