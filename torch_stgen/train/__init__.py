"""torch_stgen.train: training utilities shared by the models (exponential moving average
of the weights, resumable checkpoints, data-parallel training over ranks)."""
from .checkpoint import Checkpointer, architecture_fingerprint, data_fingerprint  # noqa: F401
from .distributed import (DataParallelLoss, all_gather_cat, cleanup_distributed,  # noqa: F401
                          get_rank, get_world_size, is_main_process, setup_distributed,
                          shard)
from .ema import EMA  # noqa: F401

__all__ = ["EMA", "Checkpointer", "architecture_fingerprint", "data_fingerprint",
           "DataParallelLoss", "setup_distributed", "cleanup_distributed", "get_rank",
           "get_world_size", "is_main_process", "shard", "all_gather_cat"]
