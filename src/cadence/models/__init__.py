"""Model builders (nn.Module), weight init, ensembles; training lives in the engine."""

from cadence.models.builders import MLP, SmallCNN, build_model
from cadence.models.ensemble import Ensemble
from cadence.models.init import init_weights

__all__ = ["MLP", "Ensemble", "SmallCNN", "build_model", "init_weights"]
