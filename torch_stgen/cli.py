"""The ``torch-stgen`` command line.

``torch-stgen run`` is the library's main job on its embedded default, the synthetic city
(no downloads). It trains and evaluates, on this machine's CPU in a few minutes each:

* a small **DiffRecon** (incomplete 8 x 8 coarse maps -> complete 16 x 16 fine maps)
  against the interpolation + distributional upsampling, SRCNN and UrbanFM baselines;
* a small **KGDiff** (daily speed series for unseen road sensors, guided by the city's
  knowledge graph) against the global-mean, nearest-neighbour and unconditional baselines;

and prints a table for each. ``torch-stgen baseline`` runs only the non-learned
reconstruction baseline over all nine sparse patterns (seconds). The benchmark scripts in
``benchmarks/`` run the same code on real data.
"""
import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch

from .experiments import prepare_output

__all__ = ["main"]

log = logging.getLogger(__name__)

DEFAULT_PATTERNS = ("fixed:0.2,fixed:0.4,fixed:0.6,fixed:0.8,"
                    "random:0.2,random:0.4,random:0.6,random:0.8,block")


def _markdown_table(rows: List[dict], columns: List[str]) -> str:
    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _check_baseline_args(parser: argparse.ArgumentParser, args) -> None:
    """Every ``baseline`` flag, before the city is built: positive sizes, a factor that
    divides the grid, and every pattern of ``--patterns``, each also drawn once on the
    coarse grid (a pattern it cannot take, e.g. a block hiding a 1 x 1 grid, is refused
    here, not after the earlier patterns ran)."""
    from .data import SparsePattern
    for flag in ("height", "width", "days", "factor"):
        value = getattr(args, flag)
        if value < 1:
            parser.error(f"--{flag} must be a positive integer (got {value})")
    if args.seed < 0:
        parser.error(f"--seed must be a non-negative integer (got {args.seed})")
    if args.height % args.factor or args.width % args.factor:
        parser.error(f"--factor {args.factor} must divide --height {args.height} and "
                     f"--width {args.width}")
    specs = SparsePattern.split_specs(args.patterns)
    if not specs:
        parser.error("--patterns must name at least one pattern, e.g. 'fixed:0.4,block'")
    h, w = args.height // args.factor, args.width // args.factor
    for spec in specs:
        try:
            SparsePattern.parse(spec, seed=args.seed)(1, h, w)
        except (TypeError, ValueError) as err:
            reason = str(err).replace(f"'spec' {spec!r}: ", "")
            parser.error(f"--patterns: {spec!r} is not a pattern on the {h}x{w} coarse grid "
                         f"({reason})")


def _check_output(parser: argparse.ArgumentParser, flag: str, path: Optional[str],
                  folder: bool = False) -> None:
    """:func:`~torch_stgen.experiments.prepare_output` as a ``parser.error``."""
    try:
        prepare_output(flag, path, folder=folder)
    except ValueError as err:
        parser.error(str(err))


def run_baseline(args) -> List[dict]:
    """Baseline (a) on the synthetic city for every pattern of ``args.patterns``."""
    from .data import SparsePattern, SyntheticCity, chronological_split, coarsen
    from .metrics import mae, rmse
    from .models.baselines import InterpolationUpsampling

    t0 = time.perf_counter()
    city = SyntheticCity(seed=args.seed, height=args.height, width=args.width, days=args.days)
    fine = city.grid.data                               # [T, C, H, W]
    train, _, test = chronological_split(fine.shape[0])
    coarse = coarsen(fine, args.factor)                 # [T, C, h, w], mass-preserving
    print(f"synthetic city: fine {tuple(fine.shape)} -> coarse {tuple(coarse.shape)} "
          f"(factor {args.factor}), KG {city.kg.num_entities} entities / "
          f"{city.kg.num_triples} triples, built in {time.perf_counter() - t0:.2f} s")

    method = InterpolationUpsampling(args.factor).fit(fine[train])
    rows = []
    for spec in SparsePattern.split_specs(args.patterns):  # checked by _check_baseline_args
        pattern = SparsePattern.parse(spec, seed=args.seed)
        c_test, f_test = coarse[test], fine[test]
        T, C, h, w = c_test.shape
        mask = pattern(T, h, w).unsqueeze(1).expand(T, C, h, w)
        start = time.perf_counter()
        pred = method.predict(c_test * mask, mask)
        rows.append({"dataset": "synthetic", "method": method.name, "pattern": pattern.kind,
                     "ratio": round(1.0 - float(mask.float().mean()), 4),
                     "mae": float(mae(pred, f_test)), "rmse": float(rmse(pred, f_test)),
                     "seconds": time.perf_counter() - start})
    print(_markdown_table(rows, ["method", "pattern", "ratio", "mae", "rmse", "seconds"]))
    return rows


def run_main_job(args) -> List[dict]:
    rows: List[dict] = []
    if args.model in ("diffrecon", "both"):
        from .experiments.diffrecon import run_demo
        print("== DiffRecon on the synthetic city (fine-map MAE / RMSE, lower is better) ==")
        rows += run_demo(seed=args.seed, progress=not args.no_progress, device=args.device,
                         plot=_plot_path(args, "diffrecon_demo.png"))
    if args.model in ("kgdiff", "both"):
        from .experiments.kgdiff import run_demo
        print("\n== KGDiff on the synthetic city (unseen sensors; lower is better) ==")
        rows += run_demo(seed=args.seed, progress=not args.no_progress, device=args.device,
                         plot=_plot_path(args, "kgdiff_demo.png"))
    return rows


def _plot_path(args, name: str) -> Optional[str]:
    return None if not args.plot_dir else str(Path(args.plot_dir) / name)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="torch-stgen",
                                     description="torch-stgen command line (see --help of "
                                                 "each command)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="the main job: small DiffRecon and KGDiff on the "
                                   "synthetic city against their baselines")
    p.add_argument("--model", choices=["diffrecon", "kgdiff", "both"], default="both")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--device", default="cpu",
                   help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    p.add_argument("--plot-dir", default=None, metavar="DIR",
                   help="also save the figures (diffrecon_demo.png, kgdiff_demo.png; needs "
                        "the 'viz' extra)")
    p.add_argument("--out", default=None, help="write the rows as JSON to this file")
    b = sub.add_parser("baseline", help="interpolation + distributional upsampling on the "
                                        "synthetic city, all sparse patterns (seconds)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--height", type=int, default=16)
    b.add_argument("--width", type=int, default=16)
    b.add_argument("--days", type=int, default=28)
    b.add_argument("--factor", type=int, default=2)
    b.add_argument("--patterns", default=DEFAULT_PATTERNS,
                   help="comma-separated kind[:ratio] list, 'block:r0,r1,c0,c1' for "
                        "another block (default: %(default)s)")
    b.add_argument("--out", default=None, help="write the rows as JSON to this file")
    for sp in (p, b):
        sp.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    sub_parser = p if args.command == "run" else b
    if args.command == "baseline":
        _check_baseline_args(b, args)
    elif args.seed < 0:
        p.error(f"--seed must be a non-negative integer (got {args.seed})")
    _check_output(sub_parser, "--out", args.out)
    if args.command == "run":
        _check_output(p, "--plot-dir", args.plot_dir, folder=True)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    torch.manual_seed(args.seed)

    rows = run_main_job(args) if args.command == "run" else run_baseline(args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
