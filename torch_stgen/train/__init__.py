"""torch_stgen.train: the training loop the models share (:class:`Trainer`) and its parts
(exponential moving average of the weights, early stopping with the best weights, resumable
checkpoints, data-parallel training over ranks)."""
from .checkpoint import Checkpointer, architecture_fingerprint, data_fingerprint  # noqa: F401
from .distributed import (DataParallelLoss, all_gather_cat, all_mean,  # noqa: F401
                          cleanup_distributed, get_rank, get_world_size, is_main_process,
                          rank_seed, setup_distributed, shard)
from .early_stopping import BestWeights  # noqa: F401
from .ema import EMA  # noqa: F401
from .trainer import Trainer  # noqa: F401

__all__ = ["Trainer", "BestWeights", "EMA", "Checkpointer", "architecture_fingerprint", "data_fingerprint",
           "DataParallelLoss", "setup_distributed", "cleanup_distributed", "get_rank",
           "get_world_size", "is_main_process", "rank_seed", "shard", "all_gather_cat", "all_mean"]
