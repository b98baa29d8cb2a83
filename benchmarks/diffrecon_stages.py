"""Where does DiffRecon's error come from? Stage-wise errors on training and held-out maps.

Trains each DiffRecon variant of ``--methods`` exactly as ``benchmarks/diffrecon.py`` does
(same flags, same training masks), then scores, on ``--window`` maps at the end of the
training split and at the start of the validation split:

- ``coarse_missing_mae``: Diffusion-C's completion error on the *missing* coarse cells
  (original units, sum of N x N fine cells), per mask pattern;
- ``fine_mae``: the fine-map MAE of the whole pipeline (clipped at 0 for counts), per
  pattern and with **nothing missing** (pattern ``none``: Diffusion-F alone, fed the true
  coarse map).

Comparing a variant's ``none`` row with its masked rows separates Diffusion-F's own error
from the cost of completion; comparing train with val shows over-fitting. Masks are drawn
with seed ``--mask-seed`` (never a training or evaluation seed of the main benchmark).

Example (the BikeNYC diagnosis in ``benchmarks/results/diffrecon_bikenyc.md``)::

    python benchmarks/diffrecon_stages.py --dataset bikenyc --data-root ../shared/data \\
        --methods diffrecon,diffrecon-no-joint --train-patterns $ALL \\
        --patterns fixed:0.4,random:0.4 --out benchmarks/results/diffrecon_bikenyc_stages.json
"""
import json
import sys
import time
from pathlib import Path

import torch

from torch_stgen.data import SparsePattern, chronological_split, coarsen
from torch_stgen.experiments import diffrecon as bench
from torch_stgen.experiments import resolve_device


def main(argv=None) -> int:
    parser = bench.build_parser()
    parser.add_argument("--window", type=int, default=600,
                        help="maps scored per split (after the context steps)")
    parser.add_argument("--mask-seed", type=int, default=123)
    parser.add_argument("--eval-samples", type=int, default=2)
    parser.prog = "benchmarks/diffrecon_stages.py"
    args = parser.parse_args(argv)
    bench._defaults(args)
    try:            # 'auto', a missing CUDA and the TF32 switches, as the main benchmark
        args.device = str(resolve_device(args.device, args.tf32))
    except ValueError as err:
        parser.error(str(err))
    torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or any(not m.startswith("diffrecon") for m in methods):
        parser.error("--methods must list DiffRecon variants (diffrecon, diffrecon-no-...)")
    name, fine, stamps, holidays, ext = bench._load(args)
    fine = fine.float()
    T, C, H, W = fine.shape
    N = args.factor
    train, val, _ = chronological_split(T)
    time_ = bench.calendar(stamps, holidays) if stamps is not None else None
    ext = bench.standardise_ext(ext, train)
    pick = (lambda x, s: None if x is None else x[s])
    spec = args.train_patterns or args.patterns
    train_pats = [SparsePattern.parse(s, seed=args.seed) for s in SparsePattern.split_specs(spec)]
    eval_pats = SparsePattern.split_specs(args.patterns) + ["none"]
    coarse = coarsen(fine, N)
    steps_per_day = bench.steps_per_day_of(stamps)
    ctx = max(args.history_c, args.history_f or steps_per_day) - 1
    windows = {"train": slice(train.stop - args.window - ctx, train.stop),
               "val": slice(val.start - ctx, val.start + args.window)}
    clip = bool(fine[train].min() >= 0)
    rows = []
    for method in methods:
        t0 = time.perf_counter()
        val_data = ((fine[val], pick(time_, val), pick(ext, val)) if args.early_stopping
                    else None)
        model = bench._train(method, args, fine[train], pick(time_, train), pick(ext, train),
                             train_pats, args.seed, steps_per_day, val_data).model
        train_s = time.perf_counter() - t0
        for split, sl in windows.items():
            n = sl.stop - sl.start
            for pname in eval_pats:
                if pname == "none":
                    k = torch.ones(n, C, H // N, W // N)
                else:
                    p = SparsePattern.parse(pname, seed=args.mask_seed)
                    k = p(n, H // N, W // N)[:, None].expand(-1, C, -1, -1)
                c = coarse[sl]
                rec = model.reconstruct(torch.where(k.bool(), c, torch.zeros(())), k,
                                        history=ctx, time=pick(time_, sl), ext=pick(ext, sl),
                                        num_samples=args.eval_samples,
                                        steps=args.sampling_steps, seed=args.seed)
                miss = ~k[ctx:].bool()
                cm = float((rec.coarse - c[ctx:]).abs()[miss].mean()) if miss.any() else None
                pred = rec.fine.clamp_min(0) if clip else rec.fine
                fm = float((pred - fine[sl][ctx:]).abs().mean())
                rows.append({"dataset": name, "method": method, "split": split,
                             "pattern": pname, "coarse_missing_mae": cm, "fine_mae": fm,
                             "train_seconds": round(train_s, 1), "seed": args.seed})
                print(f"{method:28s} {split:5s} {pname:11s} coarse-missing MAE "
                      f"{'-' if cm is None else f'{cm:.3f}':>6s}  fine MAE {fm:.3f}",
                      flush=True)
    print("\n| method | split | " + " | ".join(eval_pats) + " |")
    print("|---|---|" + "---|" * len(eval_pats))
    for method in methods:
        for split in windows:
            vals = {r["pattern"]: r["fine_mae"] for r in rows
                    if r["method"] == method and r["split"] == split}
            print(f"| {method} | {split} | " + " | ".join(f"{vals[p]:.3f}" for p in eval_pats)
                  + " |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(
            {"args": {k: v for k, v in vars(args).items()}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
