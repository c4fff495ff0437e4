"""Cadence: train PyTorch models under a chosen strategy and find out which strategy, optimizer and
schedule work best.

    import cadence
    run = cadence.train("mlp:128,64", "digits", strategy="online", optimizer="sgd", lr=0.01, max_epochs=1)
    print(run.stop_reason, run.test_metrics)

Names are imported on first use (PEP 562), so `import cadence` and `cadence --help` do not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cadence.errors import CadenceError, CheckpointError, ConfigError, DataError, StreamError

__version__ = "0.1.0"

# name -> the module that defines it. A subpackage maps to itself (cadence.callbacks, ...).
_LAZY = {
    "train": "cadence.api",
    "train_ensemble": "cadence.api",
    "compare": "cadence.api",
    "Callback": "cadence.engine.events",
    "Run": "cadence.engine.run",
    "EnsembleRun": "cadence.engine.ensemble",
    "StopReason": "cadence.engine.stopping",
    "CompareResult": "cadence.comparison.results",
    "Dataset": "cadence.data.datasets",
    "from_arrays": "cadence.data.datasets",
    "load_data": "cadence.data.datasets",
    "RunConfig": "cadence.config",
    "Strategy": "cadence.config",
    "build_config": "cadence.config",
    "load_config": "cadence.config",
    "tune": "cadence.tuning.search",
    "lr_range_test": "cadence.tuning.lr_range",
    "load": "cadence.models.artefact",
    "TrainedModel": "cadence.models.artefact",
    "callbacks": "cadence.callbacks",
    "comparison": "cadence.comparison",
    "engine": "cadence.engine",
    "data": "cadence.data",
    "models": "cadence.models",
    "optim": "cadence.optim",
    "metrics": "cadence.metrics",
    "reports": "cadence.reports",
    "tuning": "cadence.tuning",
}

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from cadence import callbacks, comparison
    from cadence.api import compare, train, train_ensemble
    from cadence.comparison.results import CompareResult
    from cadence.config import RunConfig, Strategy, build_config, load_config
    from cadence.data.datasets import Dataset, from_arrays, load_data
    from cadence.engine.ensemble import EnsembleRun
    from cadence.engine.events import Callback
    from cadence.engine.run import Run
    from cadence.engine.stopping import StopReason
    from cadence.models.artefact import TrainedModel, load
    from cadence.tuning.lr_range import lr_range_test
    from cadence.tuning.search import tune


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'cadence' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    value = module if module.__name__ == f"cadence.{name}" else getattr(module, name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "CadenceError",
    "Callback",
    "CheckpointError",
    "CompareResult",
    "ConfigError",
    "DataError",
    "Dataset",
    "EnsembleRun",
    "Run",
    "RunConfig",
    "StopReason",
    "Strategy",
    "StreamError",
    "TrainedModel",
    "build_config",
    "callbacks",
    "compare",
    "comparison",
    "from_arrays",
    "load",
    "load_config",
    "load_data",
    "lr_range_test",
    "train",
    "train_ensemble",
    "tune",
    "__version__",
]
