"""Data-parallel training throughput: DiffRecon and KGDiff under ``torchrun`` ranks.

Trains each model for a fixed number of optimiser steps on the synthetic city (the
settings of ``torch-stgen run``) and reports the training time and the throughput in
training samples per second, ``world_size * batch_size * steps / seconds``: under DDP
every rank draws its own batch (:mod:`torch_stgen.train.distributed`), so one step of
``K`` ranks trains on ``K`` batches. Rank 0 appends its row to ``--out`` (JSON; rows of
the same model, world size and thread count are replaced) and prints the table of every
row in the file with each row's speed-up over the single-process, one-thread row.

Run (each line one row; on a 2-core CPU the three rows compare the two ways of using both
cores against one core)::

    python benchmarks/distributed.py --threads 1
    python benchmarks/distributed.py --threads 2
    torchrun --standalone --nproc_per_node 2 benchmarks/distributed.py --threads 1

Not a unit test: wall times on a shared machine are noisy, so compare rows of one sitting.
"""
import argparse
import json
import platform
import time
from pathlib import Path

import torch

from torch_stgen.data import SparsePattern
from torch_stgen.experiments import diffrecon as dr_exp
from torch_stgen.experiments import kgdiff as kg_exp
from torch_stgen.train import (cleanup_distributed, get_world_size, is_main_process,
                               setup_distributed)


def _diffrecon(steps: int, joint_steps: int, batch_size: int) -> dict:
    from torch_stgen.models import DiffRecon
    args = dr_exp.build_parser().parse_args(["--dataset", "synthetic", "--city-size", "8",
                                             "--city-days", "21"])
    dr_exp._defaults(args)
    _, fine, stamps, holidays, ext = dr_exp._load(args)
    T = fine.shape[0]
    train = slice(0, T // 2)
    time_ = dr_exp.calendar(stamps, holidays)
    ext = dr_exp.standardise_ext(ext, train)
    C, (H, W) = fine.shape[1], fine.shape[2:]
    kw = dr_exp._diffrecon_kwargs(args, C, (H // args.factor, W // args.factor),
                                  0 if ext is None else ext.shape[1], True,
                                  dr_exp.steps_per_day_of(stamps))
    torch.manual_seed(0)
    model = DiffRecon(**kw)
    t0 = time.perf_counter()
    model.fit(fine[train], time=time_[train], ext=None if ext is None else ext[train],
              patterns=SparsePattern.split_specs(args.patterns), pretrain_steps=steps,
              joint_steps=joint_steps, joint_refresh=max(1, joint_steps // 2),
              batch_size=batch_size, seed=0)
    seconds = time.perf_counter() - t0
    loss = model.history_log["final_loss_c"] + model.history_log["final_loss_f"]
    return {"seconds": seconds, "steps": steps + joint_steps, "final_loss": loss}


def _kgdiff(steps: int, batch_size: int) -> dict:
    args = kg_exp.build_parser().parse_args(["--dataset", "synthetic", "--quick",
                                             "--no-progress"])
    data = kg_exp.load_data(args)
    tucker = kg_exp._tucker(data, args)
    x, m, nodes = kg_exp._train_values(data)
    torch.manual_seed(0)
    model = kg_exp.build_kgdiff(data, tucker.entity, args)
    t0 = time.perf_counter()
    hist = model.fit(x, nodes, m, steps=steps, batch_size=batch_size, seed=0,
                     progress=False)["loss"]
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "steps": steps,
            "final_loss": sum(hist[-20:]) / len(hist[-20:])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="diffrecon,kgdiff")
    p.add_argument("--steps", type=int, default=200, help="optimiser steps (DiffRecon: "
                   "pre-training; plus --joint-steps)")
    p.add_argument("--joint-steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32, help="per rank")
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--out", default="benchmarks/results/distributed.json")
    args = p.parse_args(argv)
    setup_distributed(backend="gloo")
    torch.set_num_threads(args.threads)
    K = get_world_size()
    rows = []
    for model in args.models.split(","):
        if model == "diffrecon":
            r = _diffrecon(args.steps, args.joint_steps, args.batch_size)
        elif model == "kgdiff":
            r = _kgdiff(args.steps, args.batch_size)
        else:
            raise ValueError(f"--models: unknown model {model!r} (diffrecon, kgdiff)")
        r.update(model=model, world_size=K, threads_per_rank=args.threads,
                 batch_per_rank=args.batch_size,
                 samples_per_s=K * args.batch_size * r["steps"] / r["seconds"],
                 machine=platform.node())
        rows.append(r)
    if is_main_process():
        out = Path(args.out)
        old = json.loads(out.read_text()) if out.exists() else []
        key = lambda r: (r["model"], r["world_size"], r["threads_per_rank"])  # noqa: E731
        new = {key(r) for r in rows}
        allrows = [r for r in old if key(r) not in new] + rows
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(allrows, indent=1))
        print("| model | ranks | threads / rank | batch / rank | steps | seconds | "
              "samples / s | speed-up | final loss |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in sorted(allrows, key=key):
            base = [b for b in allrows if b["model"] == r["model"] and b["world_size"] == 1
                    and b["threads_per_rank"] == 1]
            up = (f"{r['samples_per_s'] / base[0]['samples_per_s']:.2f}x" if base else "")
            print(f"| {r['model']} | {r['world_size']} | {r['threads_per_rank']} | "
                  f"{r['batch_per_rank']} | {r['steps']} | {r['seconds']:.1f} | "
                  f"{r['samples_per_s']:.1f} | {up} | {r['final_loss']:.4f} |")
    cleanup_distributed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
