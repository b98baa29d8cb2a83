"""NYC urban KG -> TuckER -> Geometry MoE -> KGDiff guidance vectors for its 280 regions.

The KSTDiff New York KG (``../shared/data/nyc_urban_kg``: 67,418 triples, 26,604 entities,
5 relations) goes through the KGDiff guidance path: :func:`torch_stgen.kg.pretrain_tucker`
(sLCWA, cache disabled by default so the time is a cold run) and a
:class:`torch_stgen.models.KGDiff`'s encoder (projection + residual
:class:`torch_stgen.nn.GeometryMoEConv` layers over all typed edges + LayerNorm), giving
:math:`\\varphi` for every region (``kg.node2entity`` = the regions). Wall time of every
stage is reported; prints a markdown table and writes ``benchmarks/results/kg_guidance.json``
and ``.md``. Target: under 10 minutes on a 2-core CPU.

Example::

    python benchmarks/kg_guidance.py --tucker-dim 32 --tucker-epochs 10 --num-negs 1
"""
import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from torch_stgen.data import read_nyc_urban_kg  # noqa: E402
from torch_stgen.kg import pretrain_tucker  # noqa: E402
from torch_stgen.models.kgdiff import KGDiff  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=str(HERE.parent.parent / "shared" / "data" / "nyc_urban_kg"))
    p.add_argument("--tucker-dim", type=int, default=32)
    p.add_argument("--tucker-epochs", type=int, default=10)
    p.add_argument("--num-negs", type=int, default=1)
    p.add_argument("--dim", type=int, default=64, help="guidance size")
    p.add_argument("--moe-layers", type=int, default=2)
    p.add_argument("--variant", default=None, help="Geometry MoE variant (default: layer's)")
    p.add_argument("--cache", action="store_true", help="use the TuckER cache (default: cold)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "results" / "kg_guidance.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]
    t = {}
    t0 = time.perf_counter()
    kg, regions = read_nyc_urban_kg(args.root)
    t["read KG"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb = pretrain_tucker(kg, dim=args.tucker_dim, epochs=args.tucker_epochs,
                          num_negs=args.num_negs, seed=0,
                          cache_dir=None if args.cache else False)
    t["TuckER pre-training"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = KGDiff(kg, emb.entity, length=48, stride=3, window=16, dim=args.dim,
                   num_moe_layers=args.moe_layers, variant=args.variant)
    t["build KGDiff"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.no_grad():
        phi = model.guidance(torch.arange(len(regions)))
    t["Geometry MoE -> guidance (280 regions)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.no_grad():
        f = model.pattern(torch.arange(len(regions)))
    t["meta pattern f(phi)"] = time.perf_counter() - t0
    total = sum(t.values())
    assert phi.shape == (len(regions), args.dim) and torch.isfinite(phi).all()
    result = {"kg": repr(kg), "regions": len(regions), "guidance_shape": list(phi.shape),
              "pattern_shape": list(f.shape), "tucker": {"dim": args.tucker_dim,
              "epochs": args.tucker_epochs, "num_negs": args.num_negs,
              "final_loss": emb.losses[-1] if emb.losses else None,
              "from_cache": emb.from_cache},
              "moe_layers": args.moe_layers, "variant": args.variant or "default",
              "seconds": {k: round(v, 2) for k, v in t.items()}, "total_seconds": round(total, 2),
              "threads": args.threads, "load_avg_before_after": [round(load0, 2),
                                                                 round(os.getloadavg()[0], 2)],
              "torch": torch.__version__, "platform": platform.platform(),
              "command": "python benchmarks/kg_guidance.py " + " ".join(argv or sys.argv[1:])}
    lines = ["| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in t.items()] + [f"| **total** | **{total:.2f}** |"]
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(
        "# NYC urban KG -> TuckER -> Geometry MoE -> guidance (280 regions)\n\n"
        f"Command: `{result['command']}`\n\n{result['kg']}; TuckER d={args.tucker_dim}, "
        f"{args.tucker_epochs} epochs, {args.num_negs} negative(s) (sLCWA, cold: "
        f"{not emb.from_cache}); {args.moe_layers} Geometry MoE layers "
        f"({result['variant']}); guidance {tuple(phi.shape)}. torch {torch.__version__}, "
        f"{args.threads} thread(s) on a shared 2-core CPU (load average {load0:.1f} -> "
        f"{os.getloadavg()[0]:.1f}).\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
