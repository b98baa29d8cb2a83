"""KGDiff vs. baselines (and its ablations): daily series for unseen, southern nodes.

A thin wrapper around :mod:`torch_stgen.experiments.kgdiff` (all logic lives there; see its
docstring for the protocol: weekdays, latitude split with the southern ``--test-frac`` as
test nodes, as many generated samples per test node as real test days, MAE / RMSE between
per-node mean profiles, per-node MMD and JSD).

Examples::

    python benchmarks/kgdiff.py --quick                                  # minutes
    python benchmarks/kgdiff.py --dataset metr-la --methods main \\
        --out benchmarks/results/kgdiff_metr-la_main.json
    python benchmarks/kgdiff.py --dataset synthetic --methods ablations \\
        --out benchmarks/results/kgdiff_synthetic_ablations.json
    python benchmarks/kgdiff.py --dataset my_graph.npz --kg my_kg.txt    # your own data
    python benchmarks/kgdiff.py --merge benchmarks/results/kgdiff_*.json
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from torch_stgen.experiments.kgdiff import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
