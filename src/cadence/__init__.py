"""Cadence: train PyTorch models under a chosen strategy and find out which strategy, optimizer and
schedule work best.

    import cadence
    run = cadence.train(data=cadence.load_data(), strategy="online", optimizer="sgd", lr=0.01, max_epochs=1)
    print(run.stop_reason, run.test_metrics)
"""

from cadence.config import RunConfig, Strategy, build_config, load_config
from cadence.data.datasets import Dataset, from_arrays, load_data
from cadence.engine import Callback, Run, StopReason, train, train_ensemble
from cadence.errors import CadenceError, CheckpointError, ConfigError, DataError, StreamError
from cadence.models.artefact import TrainedModel, load

__version__ = "0.1.0"

__all__ = [
    "CadenceError",
    "Callback",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "Dataset",
    "Run",
    "RunConfig",
    "StopReason",
    "Strategy",
    "StreamError",
    "TrainedModel",
    "build_config",
    "from_arrays",
    "load",
    "load_config",
    "load_data",
    "train",
    "train_ensemble",
    "__version__",
]
