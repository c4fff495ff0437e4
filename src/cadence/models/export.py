"""Export a trained model (artefact.TrainedModel) to ONNX or TorchScript, standardization included.

The exported graph takes raw float32 inputs [N, *input_shape] and returns class probabilities
(classification) or predicted values (regression); label and feature names ride along as metadata.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from cadence.errors import ConfigError
from cadence.models.artefact import TrainedModel

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}


class RawInputModel(nn.Module):
    """(x - mean) / std, the model, then softmax for classification: what `TrainedModel.predict_proba`
    computes, as one module that export tools can trace."""

    def __init__(self, trained: TrainedModel):
        super().__init__()
        self.model = trained.module
        # Shaped as in training: (1, *input_shape) per feature, () for one global scale; both broadcast.
        none = trained.mean is None
        self.register_buffer("mean", torch.zeros(()) if none else torch.from_numpy(trained.mean.copy()))
        self.register_buffer("std", torch.ones(()) if none else torch.from_numpy(trained.std.copy()))
        self.classify = trained.task == "classification"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model((x - self.mean) / self.std)
        return torch.softmax(out, dim=1) if self.classify else out


def metadata(trained: TrainedModel) -> dict[str, str]:
    """String metadata stored with an export: what the output columns and input features are."""
    inputs = trained.meta["inputs"]
    return {
        "cadence.task": trained.task,
        "cadence.labels": json.dumps(trained.labels),
        "cadence.features": json.dumps(trained.features),
        "cadence.input_shape": json.dumps(list(trained.input_shape)),
        "cadence.output": "probabilities" if trained.task == "classification" else "prediction",
        "cadence.image": json.dumps(inputs.get("image")),
    }


def export(trained: TrainedModel, fmt: str, out: str | Path) -> Path:
    """Write `trained` as ONNX (`fmt="onnx"`, opset from torch's exporter) or TorchScript to `out`.

    Raises:
        ConfigError: an unknown format, or the onnx/onnxscript packages missing (the `export` extra).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}. Allowed: {', '.join(FORMATS)}.")
    out = Path(out)
    module = RawInputModel(trained).eval()
    example = torch.zeros(2, *trained.input_shape)
    if fmt == "onnx":
        _onnx(module, example, out, metadata(trained))
    else:
        with warnings.catch_warnings():
            # torch >= 2.10 marks TorchScript deprecated (prefer torch.export); its files still load everywhere
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.trace(module, example)
            torch.jit.save(traced, str(out), _extra_files={"cadence.json": json.dumps(metadata(trained))})
    return out


def _onnx(module: nn.Module, example: torch.Tensor, out: Path, meta: dict[str, str]) -> None:
    try:
        import onnx
        import onnxscript  # noqa: F401  torch's default (dynamo) exporter needs it
    except ImportError as err:
        raise ConfigError(
            f"ONNX export needs the onnx and onnxscript packages ({err}). Fix: pip install 'cadence[export]'."
        ) from None
    batch = torch.export.Dim("batch", min=1)
    quiet = logging.getLogger("torch.onnx")  # "torchvision is not installed. Skipping ..." lines
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        program = _export_program(module, example, batch, meta)
    finally:
        quiet.setLevel(level)
    proto = program.model_proto
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(out))


def _export_program(module: nn.Module, example: torch.Tensor, batch, meta: dict[str, str]):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's progress notes and deprecation chatter
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=["input"],
            output_names=[meta["cadence.output"]],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    return program
