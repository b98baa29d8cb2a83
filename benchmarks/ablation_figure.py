"""Paired-by-seed ablation figure from benchmark JSON files (``torch_stgen.viz``).

Each ``--group NAME=FILE[,FILE...]`` is one model with one JSON file per seed (the same
seeds, in the same order, for every group); a file's value is the mean ``--metric`` over
its rows (e.g. the three patterns of an ablation run). The first group is the reference
unless ``--reference`` names another. Prints the per-seed values and paired differences and
writes the figure (:func:`torch_stgen.viz.plot_paired_differences`).

Example (the BikeNYC decoupled ablations in ``benchmarks/results/diffrecon_bikenyc.md``)::

    R=benchmarks/results/diffrecon_bikenyc_ablations_independent
    f() { echo "$1=${R}_seed0_$2.json,${R}_seed1_$2.json,${R}_seed2_$2.json"; }
    python benchmarks/ablation_figure.py --group "$(f full full)" \\
        --group "$(f 'no ST-PointFormer' nost)" --group "$(f 'no T-PatternNet' notp)" \\
        --out benchmarks/results/figures/diffrecon_bikenyc_ablations.png
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

from torch_stgen.viz import plot_paired_differences, save


def file_value(path: Path, metric: str) -> float:
    data = json.loads(Path(path).read_text())
    rows = data["rows"] if isinstance(data, dict) else data
    if not rows:
        raise ValueError(f"{path}: no rows")
    return sum(float(r[metric]) for r in rows) / len(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--group", action="append", required=True, metavar="NAME=FILE[,FILE...]",
                   help="a model and its per-seed JSON files (repeat; first = reference)")
    p.add_argument("--reference", default=None, help="reference group (default: the first)")
    p.add_argument("--metric", default="mae", help="row field to average (default: mae)")
    p.add_argument("--title", default=None)
    p.add_argument("--out", required=True, help="figure file (.png)")
    args = p.parse_args(argv)
    values = {}
    for spec in args.group:
        name, sep, files = spec.partition("=")
        if not sep or not files:
            p.error(f"--group must be NAME=FILE[,FILE...] (got {spec!r})")
        values[name.strip()] = [file_value(Path(f.strip()), args.metric)
                                for f in files.split(",") if f.strip()]
    ref = args.reference or next(iter(values))
    if ref not in values:
        p.error(f"--reference {ref!r} is not a --group name ({list(values)})")
    print(f"| model | per seed | mean | paired difference vs {ref} |")
    print("|---|---|---|---|")
    for name, v in values.items():
        diff = ""
        if name != ref and len(v) == len(values[ref]):
            d = [a - b for a, b in zip(v, values[ref])]
            sd = f" ± {statistics.stdev(d):.3f}" if len(d) > 1 else ""
            diff = ", ".join(f"{x:+.3f}" for x in d) + f"; mean {statistics.mean(d):+.3f}{sd}"
        print(f"| {name} | {', '.join(f'{x:.3f}' for x in v)} | {statistics.mean(v):.3f} "
              f"| {diff} |")
    fig = plot_paired_differences(values, reference=ref, metric=args.metric.upper(),
                                  title=args.title)
    print(f"wrote {save(fig, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
