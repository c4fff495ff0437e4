"""Callbacks the loop notifies: progress bar, checkpointing, loggers (CSV, TensorBoard, MLflow)."""

from cadence.callbacks.checkpointing import Checkpointing
from cadence.callbacks.loggers import CSVLogger, MLflowLogger, TensorBoardLogger
from cadence.callbacks.progress import Progress

__all__ = ["CSVLogger", "Checkpointing", "MLflowLogger", "Progress", "TensorBoardLogger"]
