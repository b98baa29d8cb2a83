"""DiffRecon trained data-parallel over several processes, then reconstruction sharded by
rank.

Launch with ``torchrun``; every rank runs this same script. ``setup_distributed`` joins
the process group (``gloo`` on the CPU, ``nccl`` on GPUs), ``fit`` trains under
``DistributedDataParallel`` (each rank draws its own batches; gradients are averaged),
each rank reconstructs its own contiguous part of the test days, and ``all_gather_cat``
puts the parts back in order. Rank 0 prints the score and saves the weights. Without
``torchrun`` it runs as one ordinary process::

    torchrun --standalone --nproc_per_node 2 examples/distributed_training.py
    python examples/distributed_training.py            # the same, one process
"""
import argparse

import torch

from torch_stgen.data import (SparsePattern, SyntheticCity, chronological_split, coarsen,
                              time_features)
from torch_stgen.metrics import mae
from torch_stgen.models import DiffRecon
from torch_stgen.train import (all_gather_cat, cleanup_distributed, get_rank,
                               get_world_size, is_main_process, setup_distributed, shard)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="pre-training iterations")
    parser.add_argument("--days", type=int, default=14, help="days of the synthetic city")
    parser.add_argument("--size", type=int, default=8, help="fine grid side")
    parser.add_argument("--out", default=None, help="save the trained weights here")
    args = parser.parse_args()
    device = setup_distributed()                  # cuda:LOCAL_RANK or cpu
    torch.manual_seed(0)                          # DDP copies rank 0's weights anyway

    grid = SyntheticCity(seed=0, height=args.size, width=args.size, days=args.days).grid
    fine = grid.data.float()                                   # [T, 2, H, W]
    time = time_features(grid.timestamps, grid.meta.get("is_holiday"), encoding="raw")
    train, _, test = chronological_split(fine.shape[0])
    coarse = coarsen(fine, 2)
    T, C, h, w = coarse.shape
    mask = SparsePattern.parse("random:0.4", seed=0)(T, h, w)[:, None]   # 1 = observed
    observed = torch.where(mask.bool(), coarse, torch.zeros(()))

    model = DiffRecon(channels=C, coarse_size=(h, w), factor=2, history_c=4, history_f=12,
                      model_channels=16, d_model=16).to(device)
    model.fit(fine[train], time=time[train], patterns=["random:0.4", "block"],
              pretrain_steps=args.steps, joint_steps=args.steps // 5, batch_size=16,
              seed=0, progress=True)              # bars on rank 0 only

    ctx = 11                                      # context steps before each part
    steps = torch.arange(test.start, test.stop)
    mine = shard(steps)                           # this rank's contiguous test steps
    if len(mine):
        sl = slice(int(mine[0]) - ctx, int(mine[-1]) + 1)
        part = model.reconstruct(observed[sl], mask[sl], history=ctx, time=time[sl],
                                 num_samples=2, steps=10, seed=get_rank()).fine
    else:                                         # more ranks than test steps
        part = fine.new_zeros((0,) + tuple(fine.shape[1:])).to(device)
    pred = all_gather_cat(part.clamp_min(0), dim=0)            # every test step, in order
    if is_main_process():
        err = float(mae(pred.cpu(), fine[test]))
        print(f"ranks {get_world_size()}: trained on {get_world_size()} x 16 maps per step; "
              f"fine-map MAE on {pred.shape[0]} test hours {err:.3f}")
        if args.out:
            torch.save(model.state_dict(), args.out)
    cleanup_distributed()


if __name__ == "__main__":
    main()
