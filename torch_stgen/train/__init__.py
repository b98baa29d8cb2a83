"""torch_stgen.train: training utilities shared by the models (exponential moving average
of the weights, resumable checkpoints)."""
from .checkpoint import Checkpointer, architecture_fingerprint, data_fingerprint  # noqa: F401
from .ema import EMA  # noqa: F401

__all__ = ["EMA", "Checkpointer", "architecture_fingerprint", "data_fingerprint"]
