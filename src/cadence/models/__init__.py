"""Model builders (nn.Module); training lives in the engine."""

from cadence.models.builders import MLP, SmallCNN, build_model

__all__ = ["MLP", "SmallCNN", "build_model"]
