"""One rank of the data-parallel tests (``tests/train/test_distributed.py``), launched by
``torchrun --standalone --nproc_per_node 2 _ddp_worker.py OUT``. Each rank writes what it
saw to ``OUT/rank{r}.pt``; the test compares the ranks."""
import copy
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_checkpoint import FIT, _Cut, _cut_after, _diffrecon, _kgdiff  # noqa: E402
from _grids import daily_grid_series  # noqa: E402

from torch_stgen.train import (DataParallelLoss, all_gather_cat, cleanup_distributed,  # noqa: E402
                               get_rank, get_world_size, setup_distributed, shard)


def main(out: Path) -> None:
    device = setup_distributed(backend="gloo")
    rank = get_rank()
    res = {"world": get_world_size(), "device": str(device)}

    # gradients through DataParallelLoss: the mean of the ranks' own gradients
    torch.manual_seed(100 + rank)                      # different initial weights per rank
    lin = nn.Linear(3, 2)
    loss_fn = DataParallelLoss(lin)                    # copies rank 0's weights here
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(rank))
    local = copy.deepcopy(lin)
    (local(x) ** 2).mean().backward()
    loss_fn(lambda: (lin(x) ** 2).mean()).backward()
    res["lin_weight"] = lin.weight.detach().clone()
    res["local_grad"] = local.weight.grad.clone()
    res["ddp_grad"] = lin.weight.grad.clone()

    # KGDiff: plain run, a run cut after 4 steps, and its resumption
    g = torch.Generator().manual_seed(0)
    nodes = torch.arange(24) % 6
    xs = 10 + 5 * (nodes % 2)[:, None] + torch.randn(24, 16, generator=g)
    kw = dict(steps=8, batch_size=4, seed=3, progress=False, ema_decay=0.9)
    torch.manual_seed(rank)
    plain = _kgdiff()
    res["kg_loss"] = plain.fit(xs, nodes, **kw)["loss"]
    res["kg_plain"] = plain.state_dict()
    path = out / "kg.pt"
    first = _kgdiff()
    _cut_after(first, "loss", 5)
    try:
        first.fit(xs, nodes, checkpoint=path, checkpoint_every=2, **kw)
    except _Cut:
        pass
    second = _kgdiff()
    res["kg_resumed_loss"] = second.fit(xs, nodes, checkpoint=path, checkpoint_every=2,
                                        **kw)["loss"]
    res["kg_resumed"] = second.state_dict()

    # DiffRecon with a joint phase and validation: plain, cut in the joint phase, resumed
    fine, time = daily_grid_series()
    val, val_time = daily_grid_series(T=30, seed=1)
    fkw = dict(FIT, time=time, val_fine=val, val_time=val_time)
    dr = _diffrecon().fit(fine, **fkw)
    res["dr_plain"] = dr.state_dict()
    res["dr_curve"] = dr.history_log["val_curve"]
    path = out / "dr.pt"
    first = _diffrecon()
    _cut_after(first.stage_f, "loss", 9)
    try:
        first.fit(fine, checkpoint=path, checkpoint_every=2, **fkw)
    except _Cut:
        pass
    second = _diffrecon().fit(fine, checkpoint=path, checkpoint_every=2, **fkw)
    res["dr_resumed"] = second.state_dict()

    # every rank must be given the same data
    try:
        _kgdiff().fit(xs + rank, nodes, **kw)
    except ValueError as err:
        res["mismatch"] = str(err)

    # ... and the same checkpoint file
    try:
        _kgdiff().fit(xs, nodes, checkpoint=out / f"own{rank}.pt", **kw)
    except ValueError as err:
        res["own_file"] = str(err)

    # a loss that turns NaN on rank 1 only stops both ranks at the same step
    nan_model = _kgdiff()
    if rank == 1:
        real = nan_model.loss
        nan_model.loss = lambda *a, **k: real(*a, **k) * float("nan")
    try:
        nan_model.fit(xs, nodes, **kw)
    except FloatingPointError as err:
        res["diverged"] = str(err)

    # sharded work, gathered in rank order
    items = list(range(7))
    res["gathered"] = all_gather_cat(torch.tensor(shard(items)) * 10)
    torch.save(res, out / f"rank{rank}.pt")
    cleanup_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
