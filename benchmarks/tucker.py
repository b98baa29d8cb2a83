"""TuckER pre-training on the NYC urban KG: link-prediction MRR / Hits@10 vs wall time.

Holds out a fraction of the triples (default 2%; held-out triples whose head or tail never
occurs in the training part are moved back to training), trains
:func:`torch_stgen.kg.pretrain_tucker` for each requested configuration, evaluates the
filtered MRR on a subset of the held-out triples after every epoch (evaluation time is
excluded from the training clock) and the filtered + raw MRR on all held-out triples at the
end, next to an untrained (random) model. Prints a markdown table and writes
``benchmarks/results/tucker.json`` and ``tucker.md``.

Example::

    python benchmarks/tucker.py --runs 32:1:0.01:10 64:4:0.01:8 128:1:0.01:2

A run is ``dim:num_negs:lr:epochs``. The CPU load average is recorded with every run,
because a shared machine slows the timings down.
"""
import argparse
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from torch_stgen.experiments import prepare_output  # noqa: E402
from torch_stgen.kg import link_prediction_mrr, pretrain_tucker  # noqa: E402

DEFAULT_KG = HERE.parent.parent / "shared" / "data" / "nyc_urban_kg" / "kg.txt"


def load_kg(path: Path):
    """(triples [M, 3], num_entities, num_relations, how) through ``UrbanKG`` if available."""
    try:
        from torch_stgen.data import UrbanKG  # written in parallel; fall back if absent
        kg = UrbanKG.from_file(path)
        return kg.triples, kg.num_entities, kg.num_relations, "torch_stgen.data.UrbanKG"
    except ImportError:
        ent, rel, rows = {}, {}, []
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) != 3:
                    continue
                h, r, t = parts
                rows.append((ent.setdefault(h, len(ent)), rel.setdefault(r, len(rel)),
                             ent.setdefault(t, len(ent))))
        return torch.tensor(rows, dtype=torch.long), len(ent), len(rel), "plain reader"


def pair_groups(triples: torch.Tensor) -> torch.Tensor:
    """``[M]`` group id per triple: ``(h, r, t)`` and its reverse ``(t, r, h)`` share one."""
    key = torch.stack([torch.minimum(triples[:, 0], triples[:, 2]), triples[:, 1],
                       torch.maximum(triples[:, 0], triples[:, 2])], 1)
    return torch.unique(key, dim=0, return_inverse=True)[1]


def reverse_leaks(train: torch.Tensor, test: torch.Tensor) -> int:
    """Held-out triples whose reverse (same relation) is a training triple: the NYC KG
    stores NearBy, BorderBy and SimilarFunc both ways, so a random split leaks them."""
    seen = {tuple(t) for t in train.tolist()}
    return sum((t, r, h) in seen for h, r, t in test.tolist())


def split(triples: torch.Tensor, fraction: float, seed: int, how: str = "random"):
    """Hold out ``fraction`` of the triples: ``'random'`` per triple, or ``'pairs'`` per
    group of a triple and its reverse (no held-out triple has its reverse in training).
    Held-out triples with an entity unseen in training move back to training."""
    gen = torch.Generator().manual_seed(seed)
    if how == "pairs":
        group = pair_groups(triples)
        perm = torch.randperm(int(group.max()) + 1, generator=gen)
        rank = torch.empty_like(perm)
        rank[perm] = torch.arange(perm.numel())
        perm = torch.argsort(rank[group], stable=True)      # groups in random order
        cut = int(round(fraction * triples.size(0)))
        g = group[perm]
        while 0 < cut < g.numel() and g[cut] == g[cut - 1]:  # do not cut a group in two
            cut += 1
    else:
        perm = torch.randperm(triples.size(0), generator=gen)
        cut = int(round(fraction * triples.size(0)))
    test, train = triples[perm[:cut]], triples[perm[cut:]]
    seen = torch.zeros(int(triples[:, [0, 2]].max()) + 1, dtype=torch.bool)
    seen[train[:, 0]] = True
    seen[train[:, 2]] = True
    ok = seen[test[:, 0]] & seen[test[:, 2]]
    return torch.cat([train, test[~ok]]), test[ok], int((~ok).sum())


def make_callback(test, known, subset, log):
    from pykeen.training.callbacks import TrainingCallback

    class EvalEachEpoch(TrainingCallback):
        def __init__(self):
            super().__init__()
            self.t0 = time.perf_counter()
            self.eval_time = 0.0

        def post_epoch(self, epoch, epoch_loss, **kwargs):
            t = time.perf_counter()
            train_s = t - self.t0 - self.eval_time
            m = link_prediction_mrr(self.model, test, known, max_triples=subset)
            self.eval_time += time.perf_counter() - t
            log.append(dict(epoch=epoch, train_s=round(train_s, 2), loss=epoch_loss,
                            mrr_subset=m["mrr"], hits10_subset=m["hits@10"]))
            print(f"    epoch {epoch}: loss {epoch_loss:.4f}  train {train_s:7.1f}s  "
                  f"MRR(subset) {m['mrr']:.4f}  H@10 {m['hits@10']:.4f}", flush=True)

    return EvalEachEpoch()


def table(rows):
    lines = ["| d | negs | lr | epochs | train s | s/epoch | MRR (filt.) | Hits@10 (filt.) | "
             "MRR (raw) | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dim']} | {r['num_negs']} | {r['lr']} | {r['epochs']} | "
                     f"{r['train_s']:.1f} | {r['s_per_epoch']:.1f} | {r['mrr']:.4f} | "
                     f"{r['hits@10']:.4f} | {r['mrr_raw']:.4f} | "
                     f"{r['load_before']:.1f} -> {r['load_after']:.1f} |")
    return "\n".join(lines)


def parse_run(spec: str):
    """``dim:num_negs:lr:epochs`` -> ``(dim, num_negs, lr, epochs)``; ``ValueError`` with the
    reason."""
    parts = spec.split(":")
    if len(parts) != 4:
        raise ValueError("expected dim:num_negs:lr:epochs, e.g. 32:1:0.01:10")
    try:
        dim, negs, epochs = int(parts[0]), int(parts[1]), int(parts[3])
        lr = float(parts[2])
    except ValueError:
        raise ValueError("dim, num_negs and epochs must be integers and lr a number "
                         "(dim:num_negs:lr:epochs)") from None
    if dim < 1 or negs < 1 or epochs < 0:
        raise ValueError("dim and num_negs must be >= 1 and epochs >= 0")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError("lr must be a positive finite number")
    return dim, negs, lr, epochs


def parse_args(argv=None):
    """The arguments, all checked before anything is computed or written."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kg", type=Path, default=DEFAULT_KG)
    p.add_argument("--runs", nargs="+", default=["32:1:0.01:10", "64:4:0.01:8", "128:1:0.01:2"],
                   help="dim:num_negs:lr:epochs, one per run")
    p.add_argument("--test-fraction", type=float, default=0.02,
                   help="share of the triples held out, in (0, 1) (default: %(default)s)")
    p.add_argument("--split", choices=("random", "pairs"), default="random",
                   help="'random': triples held out one by one (the committed tables; 23 %% "
                        "of the NYC KG's held-out triples then have their reverse in "
                        "training); 'pairs': a triple and its reverse together "
                        "(default: %(default)s)")
    p.add_argument("--eval-subset", type=int, default=500,
                   help="held-out triples scored after every epoch")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (1 avoids OpenMP barrier stalls on a busy CPU)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "tucker",
                   help="results prefix: writes <out>.json and <out>.md "
                        "(default: benchmarks/results/tucker)")
    args = p.parse_args(argv)
    specs = []
    for spec in args.runs:
        try:
            specs.append(parse_run(spec))
        except ValueError as err:
            p.error(f"--runs {spec!r}: {err}")
    args.specs = specs
    if not (0.0 < args.test_fraction < 1.0):  # a negative one held out perm[:-k]
        p.error(f"--test-fraction must be in (0, 1) (got {args.test_fraction})")
    if args.eval_subset < 1:
        p.error(f"--eval-subset must be a positive integer (got {args.eval_subset})")
    if args.batch_size < 2:
        p.error(f"--batch-size must be >= 2, TuckER's batch norm cannot train on batches of "
                f"one (got {args.batch_size})")
    if not 0 <= args.seed < 2 ** 32:
        p.error(f"--seed must be in [0, 2**32) (got {args.seed})")
    if args.threads is not None and args.threads < 0:     # 0: torch's default, as before
        p.error(f"--threads must be >= 0 (got {args.threads})")
    if not args.kg.is_file():
        p.error(f"--kg {args.kg}: no such file")
    try:                    # <out>.json and <out>.md: their folder, made before training
        for path in (args.out.with_suffix(".json"), args.out.with_suffix(".md")):
            prepare_output("--out", path)
    except ValueError as err:
        p.error(str(err))
    return p, args


def main(argv=None):
    p, args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    triples, n_e, n_r, how = load_kg(args.kg)
    if triples.size(0) < 2:
        p.error(f"--kg {args.kg}: {triples.size(0)} triple(s); a train / held-out split "
                f"needs at least 2")
    train, test, moved = split(triples, args.test_fraction, args.seed, args.split)
    leaks = reverse_leaks(train, test)
    if test.size(0) == 0:
        p.error(f"--test-fraction {args.test_fraction} holds out no triple of "
                f"{triples.size(0)} (after moving back those with unseen entities); "
                f"raise it")
    if train.size(0) < 2 and any(spec[3] > 0 for spec in args.specs):
        p.error(f"--kg {args.kg}: {train.size(0)} training triple(s) after the split; TuckER "
                f"training needs at least 2 (lower --test-fraction or use a larger KG)")
    print(f"KG {args.kg} via {how}: {triples.size(0)} triples, {n_e} entities, {n_r} relations;"
          f" train {train.size(0)}, held-out {test.size(0)} ({moved} moved back to train; "
          f"{leaks} held-out with their reverse in train, --split {args.split})")
    random.seed(args.seed)
    cmd = sys.argv if argv is None else [str(Path(__file__).resolve().relative_to(HERE.parent)), *argv]
    results = dict(command="python " + " ".join(cmd), kg=str(args.kg), loader=how,
                   num_triples=int(triples.size(0)), num_entities=n_e, num_relations=n_r,
                   num_train=int(train.size(0)), num_test=int(test.size(0)),
                   split=args.split, reverse_leaks=leaks,
                   torch=torch.__version__, threads=torch.get_num_threads(),
                   cpu_count=os.cpu_count(), platform=platform.platform(), runs=[])

    def save():
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
        md = ["# TuckER pre-training on the NYC urban KG\n",
              f"Command: `{results['command']}`\n",
              f"{results['num_triples']} triples, {n_e} entities, {n_r} relations; "
              f"{results['num_test']} held-out triples ({args.test_fraction:.0%}), filtered "
              f"ranking of heads and tails, realistic ranks. torch {torch.__version__}, "
              f"{results['threads']} threads on {results['cpu_count']} CPUs; the machine was "
              f"shared with other jobs (load average before -> after each run).\n",
              table(results["runs"]), ""]
        if "random" in results:
            rnd = results["random"]
            md.append(f"Untrained (random) TuckER d={rnd['dim']}: MRR {rnd['mrr']:.4f}, "
                      f"Hits@10 {rnd['hits@10']:.4f}. Uniform random ranking: MRR "
                      f"{rnd['uniform_mrr']:.5f}.\n")
        args.out.with_suffix(".md").write_text("\n".join(md))

    # random baseline: the seeded, untrained model
    rnd_emb = pretrain_tucker(train, dim=64, epochs=0, num_entities=n_e, num_relations=n_r,
                              cache_dir=False, progress=False)
    m = link_prediction_mrr(rnd_emb, test, train, max_triples=None)
    uniform = sum(1.0 / k for k in range(1, n_e + 1)) / n_e
    results["random"] = dict(dim=64, mrr=m["mrr"], **{"hits@10": m["hits@10"]},
                             uniform_mrr=uniform)
    print(f"random model: MRR {m['mrr']:.5f}  H@10 {m['hits@10']:.5f}  (uniform {uniform:.5f})")
    save()

    for dim, negs, lr, epochs in args.specs:
        print(f"== d={dim} negs={negs} lr={lr} epochs={epochs}", flush=True)
        log = []
        load_before = os.getloadavg()[0]
        cb = make_callback(test, train, args.eval_subset, log)
        t0 = time.perf_counter()
        emb = pretrain_tucker(train, dim=dim, epochs=epochs, num_negs=negs, lr=lr,
                              batch_size=args.batch_size, seed=args.seed, num_entities=n_e,
                              num_relations=n_r, cache_dir=False, progress=False,
                              callbacks=[cb])
        wall = time.perf_counter() - t0
        train_s = wall - cb.eval_time
        load_after = os.getloadavg()[0]
        filt = link_prediction_mrr(emb, test, train, max_triples=None)
        raw = link_prediction_mrr(emb, test, train, max_triples=None, filtered=False)
        row = dict(dim=dim, num_negs=negs, lr=lr, epochs=epochs, train_s=train_s,
                   s_per_epoch=train_s / max(epochs, 1), mrr=filt["mrr"],
                   **{"hits@1": filt["hits@1"], "hits@3": filt["hits@3"],
                      "hits@10": filt["hits@10"]},
                   mrr_raw=raw["mrr"], losses=emb.losses, per_epoch=log,
                   load_before=load_before, load_after=load_after)
        results["runs"].append(row)
        print(f"   -> {train_s:.1f}s train, MRR {filt['mrr']:.4f}, H@10 {filt['hits@10']:.4f}, "
              f"raw MRR {raw['mrr']:.4f}, load {load_before:.1f} -> {load_after:.1f}",
              flush=True)
        save()
    print()
    print(table(results["runs"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
