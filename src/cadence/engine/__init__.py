"""The training engine: strategies, the loop, one update, stop checks, callbacks' protocol."""

from cadence.engine.ensemble import EnsembleRun, train_ensemble
from cadence.engine.events import Callback, TrainState
from cadence.engine.loop import train
from cadence.engine.run import Run
from cadence.engine.stopping import StopReason

__all__ = ["Callback", "EnsembleRun", "Run", "StopReason", "TrainState", "train", "train_ensemble"]
