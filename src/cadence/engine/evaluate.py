"""Evaluate a model on a split in memory-bounded chunks: loss and the task's metrics (metrics/)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cadence.engine.step import loss_sum
from cadence.metrics import classification_metrics, confusion, regression_metrics


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Model outputs for `x`, in eval mode, restoring the previous train/eval mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(chunk) for chunk in x.split(batch_size)]) if len(x) else torch.empty(0)
    finally:
        model.train(was_training)


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    task: str,
    n_classes: int | None,
    batch_size: int = 4096,
    prefix: str = "val_",
    with_confusion: bool = False,
    group=None,
) -> dict:
    """Mean loss and metrics of `model` on (x, y), keys prefixed (`val_loss`, `val_accuracy`, ...).

    Args:
        group: a data-parallel job's `distributed.Group`: each process predicts its slice of x and every
            process gets all the outputs, so all compute the same metrics, each sample counted once.
    """
    if len(x) == 0:
        return {}
    out = predict(model, x, batch_size) if group is None else group.predict(model, x, batch_size)
    loss = float(loss_sum(task, out, y)) / len(x)
    y_true = y.cpu().numpy()  # the metrics are scikit-learn's, on the host
    if task == "classification":
        y_pred = out.argmax(dim=1).cpu().numpy()
        metrics = classification_metrics(y_true, y_pred, n_classes)
    else:
        y_pred = out.reshape(y.shape).cpu().numpy()
        metrics = regression_metrics(y_true, y_pred)
    result = {f"{prefix}loss": loss, **{f"{prefix}{k}": v for k, v in metrics.items()}}
    if with_confusion and task == "classification":
        result[f"{prefix}confusion_matrix"] = confusion(y_true, np.asarray(y_pred), n_classes)
    return result


def metric_names(task: str, prefix: str = "val_") -> list[str]:
    names = (
        ["loss", "accuracy", "precision", "recall", "f1"]
        if task == "classification"
        else ["loss", "mse", "mae", "r2"]
    )
    return [prefix + n for n in names]


def lower_is_better(metric: str) -> bool:
    return metric.endswith(("loss", "mse", "mae"))
