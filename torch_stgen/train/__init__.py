"""torch_stgen.train: training utilities shared by the models (exponential moving average
of the weights)."""
from .ema import EMA  # noqa: F401

__all__ = ["EMA"]
