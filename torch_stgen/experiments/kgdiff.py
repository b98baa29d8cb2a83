r"""KGDiff benchmark: generate daily series for unseen (southern) nodes, against baselines.

Protocol (KGDiff, Wang et al., AAAI 2026; ``../shared/DESIGN.md`` "KGDiff"):

* one sample = one **weekday** (Mon-Fri, holidays dropped) of one node; complete days only;
* nodes are split by latitude with :func:`torch_stgen.data.split_nodes_by_latitude`:
  ``--split latitude`` holds out the **southern** ``--test-frac`` of the nodes (lowest
  latitudes) as unseen test nodes; the validation nodes used to tune baselines (the
  ``k`` of k-NN) are the southern ``--val-frac`` of the *training* nodes, so no choice is
  made on test nodes;
* every method generates as many samples per test node as there are real test days;
* metrics (:func:`evaluate`): MAE / RMSE between the per-node mean profiles of generated and
  real days (averaged over nodes and steps; RMSE is the root of the mean squared error over
  all node-steps); MMD between the generated and the real days of each node (multi-kernel
  Gaussian, 5 bandwidths, multiplier 2, :func:`torch_stgen.metrics.mmd_per_node`) averaged
  over nodes; JSD between the value histograms (50 bins) of each node's generated and real
  values, averaged over nodes.

Model selection never looks at test nodes: ``--eval-nodes val`` trains on the training nodes
minus the validation nodes and scores on the validation nodes (rows of dataset
``<name>[val]``); ``--tag`` marks the configuration in the method name.

Data sets (``--dataset``):

* ``synthetic``: the road sensors of :class:`~torch_stgen.data.SyntheticCity` (30-minute
  steps, 48 per day; ``U = 3, V = 16``) and the city's KG, which *causes* the speeds;
* ``metr-la``: ``<data-root>/metr_la`` (5-minute steps, 288 per day; ``U = 9, V = 32``),
  KG from sensor distances (bins 1 / 2 / 5 km) plus road adjacency
  (:func:`~torch_stgen.data.kg_from_sensor_graph`);
* ``PATH.npz``: a user's graph in the :func:`~torch_stgen.data.read_npz` schema (``data``
  ``(T, N)`` or ``(T, N, C)`` with ``--channel``, ``lat``, ``lon``, timestamps, optional
  ``adj``, ``node_ids``); the KG is read from ``--kg FILE`` (tab-separated ``head relation
  tail``, node entities named by ``node_ids`` or ``sensor_<i>``) or built from distances
  (+ ``adj``). Nodes never observed on a complete weekday are left out of training and
  scoring (printed); at least two weekdays are needed (the MMD compares sets of days).

Methods (``--methods``, comma-separated, or ``main``, ``ablations``, ``all``): see
:data:`METHODS`.
"""
import argparse
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from . import (DataError, add_checkpoint_arguments, add_device_arguments, checkpoint_path,
               open_fraction_arg, positive_int_arg, prepare_output, resolve_device)

__all__ = ["METHODS", "build_parser", "run", "print_table", "evaluate", "load_data",
           "run_demo", "delay_settings", "merge_rows", "build_kgdiff"]

log = logging.getLogger(__name__)

#: method key -> (table label, KGDiff options or None for a deterministic baseline)
METHODS: Dict[str, tuple] = {
    "global-mean": ("Global mean profile", None),
    "knn": ("k-NN profile (k tuned on val. nodes)", None),
    "uncond": ("Unconditional diffusion (= w/o guidance)", {"guidance": False}),
    "tucker-con": ("TuckER-conditioned diffusion (DiffWave-con-like)",
                   {"geometry_moe": False, "meta_pattern": False}),
    "kgdiff": ("KGDiff", {}),
    "kgdiff-no-moe": ("w/o Geometry MoE", {"geometry_moe": False}),
    "kgdiff-no-h": ("w/o H expert", {"experts": ("E", "S")}),
    "kgdiff-no-e": ("w/o E expert", {"experts": ("H", "S")}),
    "kgdiff-no-s": ("w/o S expert", {"experts": ("E", "H")}),
    "kgdiff-no-meta": ("w/o meta pattern", {"meta_pattern": False}),
    "kgdiff-paper": ("Geometry MoE variant='paper'", {"variant": "paper"}),
}
GROUPS = {
    "main": ["global-mean", "knn", "uncond", "tucker-con", "kgdiff"],
    "ablations": ["kgdiff", "kgdiff-no-moe", "kgdiff-no-h", "kgdiff-no-e", "kgdiff-no-s",
                  "kgdiff-no-meta", "uncond", "kgdiff-paper"],
}
GROUPS["all"] = list(dict.fromkeys(GROUPS["main"] + GROUPS["ablations"]))
METRICS = ("mae", "rmse", "mmd", "jsd")

#: reference delay-embedding settings of the paper: steps per day -> (U, V)
_DELAY = {48: (3, 16), 288: (9, 32)}


def delay_settings(length: int):
    r"""Stride ``U`` and window ``V`` for a day of ``length`` steps: the paper's
    ``(3, 16)`` for 48 and ``(9, 32)`` for 288 steps; otherwise the smallest power of two
    :math:`V \ge \sqrt{L}` (at least 8) and the smallest :math:`U` with
    :math:`(V-1)U + V \ge L` (full coverage)."""
    if length in _DELAY:
        return _DELAY[length]
    V = max(8, 2 ** math.ceil(math.log2(math.sqrt(length))))
    U = max(1, math.ceil((length - V) / (V - 1)))
    while U > V:
        V *= 2
        U = max(1, math.ceil((length - V) / (V - 1)))
    return U, V


def _sigma_data_arg(text: str):
    """``--sigma-data``: a positive number or a rule name of ``KGDiff(sigma_data=...)``."""
    from ..models.kgdiff import _SIGMA_DATA_RULES
    if text in _SIGMA_DATA_RULES:
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number or one of "
                                         f"{', '.join(_SIGMA_DATA_RULES)} (got {text})")
    return value


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """The benchmark's command-line options (also used by ``benchmarks/kgdiff.py``)."""
    p = parser or argparse.ArgumentParser(
        description="KGDiff benchmark: generation for unseen nodes (southern latitude band)")
    p.add_argument("--dataset", default="synthetic",
                   help="'synthetic', 'metr-la' or a path to a .npz graph (default: %(default)s)")
    p.add_argument("--data-root", default=os.environ.get("TORCH_STGEN_DATA", "../shared/data"),
                   help="folder holding metr_la/ (default: %(default)s)")
    p.add_argument("--kg", default=None,
                   help="for a .npz dataset: KG triples file (head<TAB>relation<TAB>tail)")
    p.add_argument("--kg-header", action="store_true",
                   help="the --kg file's first line names the columns: skip it")
    p.add_argument("--kg-comment", default=None, metavar="PREFIX",
                   help="skip --kg lines starting with PREFIX, e.g. '#' (default: none)")
    p.add_argument("--channel", type=int, default=0,
                   help="the channel whose daily series are generated, for data with C > 1 "
                        "channels (default: %(default)s)")
    p.add_argument("--split", choices=("latitude",), default="latitude",
                   help="node split: 'latitude' = the southern --test-frac are test nodes")
    p.add_argument("--test-frac", type=open_fraction_arg, default=0.3,
                   help="fraction of the nodes held out as test nodes, in (0, 1) "
                        "(default: %(default)s)")
    p.add_argument("--val-frac", type=open_fraction_arg, default=0.2,
                   help="fraction of the *training* nodes (their southern band) used as "
                        "validation nodes to tune baselines (default: %(default)s)")
    p.add_argument("--eval-nodes", choices=("test", "val"), default="test",
                   help="'val': model selection run - train on the training nodes minus the "
                        "validation nodes and score on the validation nodes (test nodes "
                        "unused) (default: %(default)s)")
    p.add_argument("--tag", default="",
                   help="suffix appended to the method names of the rows (e.g. '+ft')")
    p.add_argument("--methods", default="main",
                   help=f"comma-separated among {list(METHODS)} or a group "
                        f"{list(GROUPS)} (default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="small city / few steps: a few minutes on a 2-core CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the JSON rows to this file")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="also draw real against generated daily profiles of four test "
                        "nodes and the value histograms (torch_stgen.viz; needs the 'viz' "
                        "extra)")
    g = p.add_argument_group("KGDiff")
    g.add_argument("--steps", type=int, default=None, help="training steps "
                   "(default: 500; 200 with --quick)")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--lr", type=float, default=2e-3)
    g.add_argument("--dim", type=int, default=64, help="guidance size |phi|")
    g.add_argument("--model-channels", type=int, default=16)
    g.add_argument("--channel-mult", default=None,
                   help="U-Net levels, e.g. '1,2' (default: '1,2' for V <= 16, '1,2,2' above)")
    g.add_argument("--pattern-weight", type=float, default=1.0)
    g.add_argument("--pattern-shrink", type=float, default=0.5,
                   help="centre the diffusion on lambda * f(phi); 1 = the paper "
                        "(default: %(default)s)")
    g.add_argument("--message-norm", type=int, choices=(0, 1), default=1,
                   help="layer-normalise each Geometry MoE expert's message before W_m "
                        "(1) or not (0, the paper) (default: %(default)s)")
    g.add_argument("--moe-input-scale", type=int, choices=(0, 1), default=1,
                   help="scale each Geometry MoE layer's input to mean entity norm 1, "
                        "fixed at the first pass (1), or not (0, the paper) "
                        "(default: %(default)s)")
    g.add_argument("--sigma-data", type=_sigma_data_arg, default=None,
                   help="EDM sigma_d of KGDiff: a positive number, 'target' (measured by "
                        "fit: RMS of the diffusion's target z - lambda * node mean day) or "
                        "'node-residual' (RMS around the node mean day) (default: the "
                        "model's default rule, 'node-residual')")
    g.add_argument("--delay-layout", choices=("sliding", "imagentime"), default="sliding",
                   help="delay embedding columns: every window start jU ('sliding') or "
                        "ImagenTime's windows inside the series, then zeros "
                        "(default: %(default)s)")
    g.add_argument("--delay-inverse", choices=("mean", "last"), default="mean",
                   help="image -> series: mean over a step's copies, or ImagenTime's last "
                        "column (default: %(default)s)")
    g.add_argument("--guidance-dropout", type=float, default=0.1)
    g.add_argument("--aggregation", choices=("mean", "relation"), default="relation",
                   help="Geometry MoE aggregation: eq. 15's mean over all edges, or the mean "
                        "per relation summed over relations (default: %(default)s)")
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--ema-decay", type=float, default=None,
                   help="sample with an exponential moving average of the weights "
                        "(torch_stgen.train.EMA; e.g. 0.99; default: the last iterate)")
    g.add_argument("--finetune-embedding", type=int, choices=(0, 1), default=0,
                   help="train the TuckER entity embeddings jointly (1) or freeze them (0); "
                        "frozen generalises better to unseen nodes here (default: %(default)s)")
    g.add_argument("--moe-layers", type=int, default=None,
                   help="Geometry MoE layers (default: 2 for the synthetic city, whose "
                        "category -> POI -> sensor chain is two hops; 1 for distance KGs)")
    g.add_argument("--sampler", choices=("edm", "ddpm", "ddim"), default="edm")
    g.add_argument("--sampling-steps", type=int, default=None,
                   help="EDM N (2N-1 evaluations; default 10, 6 with --quick) or DDPM/DDIM steps")
    g.add_argument("--stride", type=positive_int_arg, default=None,
                   help="delay stride U, a positive integer (default: the paper's)")
    g.add_argument("--window", type=positive_int_arg, default=None,
                   help="delay window V, a positive integer (default: the paper's)")
    g = p.add_argument_group("TuckER")
    g.add_argument("--tucker-dim", type=int, default=32)
    g.add_argument("--tucker-epochs", type=int, default=None,
                   help="(default: 40; 10 with --quick)")
    g.add_argument("--tucker-cache", default=None,
                   help="cache folder (default: pretrain_tucker's)")
    g = p.add_argument_group("synthetic city")
    g.add_argument("--sensors", type=int, default=None,
                   help="road sensors (default: 200)")
    g.add_argument("--city-days", type=int, default=None, help="(default: 28; 14 with --quick)")
    g.add_argument("--city-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 is fastest on a shared 2-core CPU)")
    add_device_arguments(p)
    add_checkpoint_arguments(p)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="only merge these JSON row files (later files win), print the "
                        "table and write --out")
    return p


def _defaults(args) -> None:
    q = bool(getattr(args, "quick", False))
    for name, full, quick in (("steps", 500, 200), ("sampling_steps", 10, 6),
                              ("tucker_epochs", 40, 10), ("sensors", 200, 200),
                              ("city_days", 28, 14)):
        if getattr(args, name, None) is None:
            setattr(args, name, quick if q else full)


def _check_args(args) -> None:
    """Checks argparse cannot make (a ``Namespace`` built or changed in code, output and
    cache folders); ``ValueError`` naming the flag. Run before any data is loaded."""
    for flag in ("stride", "window"):
        value = getattr(args, flag, None)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"--{flag} must be a positive integer (got {value!r}); leave "
                             f"it out for the paper's setting")
    for flag in ("test_frac", "val_frac"):
        value = getattr(args, flag, None)
        if not isinstance(value, (int, float)) or isinstance(value, bool) \
                or not 0.0 < value < 1.0:
            raise ValueError(f"--{flag.replace('_', '-')} must be in (0, 1) (got {value!r})")
    prepare_output("--out", getattr(args, "out", None))
    prepare_output("--plot", getattr(args, "plot", None))
    cache = getattr(args, "tucker_cache", None)
    if cache and Path(cache).exists() and not Path(cache).is_dir():
        raise ValueError(f"--tucker-cache {cache} is not a directory")


def _methods(spec: str) -> List[str]:
    out: List[str] = []
    for part in str(spec).split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part in GROUPS:
            out += GROUPS[part]
        elif part in METHODS:
            out.append(part)
        else:
            raise ValueError(f"--methods: unknown method {part!r}; choose among "
                             f"{list(METHODS)} or {list(GROUPS)}")
    return list(dict.fromkeys(out))


# ---------------------------------------------------------------------------- data
def load_data(args) -> dict:
    """Load the series, its KG and the node split (see the module docstring).

    Returns a dict with ``name``, ``kg`` (``node2entity`` set), ``lat``, ``lon`` ``[N]``,
    ``values`` / ``mask`` ``[D, N, L]`` (weekdays), ``train`` / ``val`` / ``test`` node
    indices, ``length``, ``stride``, ``window``, ``units``.
    """
    from ..data import (DailyDataset, SyntheticCity, UrbanKG, kg_from_sensor_graph,
                        read_dcrnn, read_npz, split_nodes_by_latitude)
    _defaults(args)
    _check_args(args)
    ds = str(args.dataset)
    holidays = None
    if ds == "synthetic":
        city = SyntheticCity(seed=0, height=args.city_size, width=args.city_size,
                             days=args.city_days, num_sensors=args.sensors)
        series, kg = city.roads, city.kg
        kg.set_node_entities(city.road_node2entity)
        holidays = series.meta.get("holidays")
        name = "synthetic"
    elif ds in ("metr-la", "metr_la"):
        root = Path(args.data_root) / "metr_la"
        series = read_dcrnn(root)
        kg = kg_from_sensor_graph(series.lat, series.lon, adj=series.adj,
                                  sensor_ids=series.node_ids, name="metr_la_kg")
        name = "metr-la"
    elif ds.endswith(".npz"):
        series = read_npz(ds)
        if series.__class__.__name__ != "GraphSeries":
            raise ValueError(f"'--dataset' {ds!r} must hold a graph series: 'data' (T, N) or "
                             f"(T, N, C)")
        if series.lat is None or series.lon is None:
            raise ValueError(f"'--dataset' {ds!r} needs 'lat' and 'lon' arrays (the split is "
                             f"by latitude)")
        ids = (list(series.node_ids) if series.node_ids is not None
               else [f"sensor_{i}" for i in range(series.num_nodes)])
        if args.kg:
            kg = UrbanKG.from_file(args.kg, header=getattr(args, "kg_header", False),
                                   comment=getattr(args, "kg_comment", None))
            kg.set_node_entities(ids)
        else:
            kg = kg_from_sensor_graph(series.lat, series.lon, adj=series.adj,
                                      sensor_ids=ids, name=Path(ds).stem + "_kg")
        name = Path(ds).stem
    else:
        raise ValueError(f"'--dataset' must be 'synthetic', 'metr-la' or a .npz path "
                         f"(got {ds!r})")
    channels = series.data.shape[-1]
    channel = getattr(args, "channel", 0)
    if isinstance(channel, bool) or not isinstance(channel, int) \
            or not -channels <= channel < channels:
        raise ValueError(f"--channel must be in [-{channels}, {channels}) for {name!r}, which "
                         f"has {channels} channel(s) (got {channel!r})")
    daily = DailyDataset(series, weekdays="weekday", holidays=holidays, channel=channel)
    if daily.num_days < 2:          # one real day per node: the MMD would be a constant
        raise ValueError(f"dataset {name!r} has {daily.num_days} complete weekday(s); the "
                         f"benchmark needs at least 2 (its MMD compares sets of days)")
    train, test = split_nodes_by_latitude(series.lat, args.test_frac, direction="south")
    # validation nodes: the southern band of the training nodes (next to the test band)
    _, val_local = split_nodes_by_latitude(series.lat[train], args.val_frac, direction="south")
    val = train[val_local]
    if getattr(args, "eval_nodes", "test") == "val":  # model selection: test nodes unused
        keep = torch.ones(train.numel(), dtype=torch.bool)
        keep[val_local] = False
        rest = train[keep]
        _, val_local2 = split_nodes_by_latitude(series.lat[rest], args.val_frac,
                                                direction="south")
        train, test, val = rest, val, rest[val_local2]
    # a node never observed on a kept weekday has no profile to learn from or score
    # against (its profile read as all zeros); it stays in the KG, so KGDiff can still
    # generate for it
    dead = daily.mask.sum((0, 2)) == 0
    if bool(dead.any()):
        train, test, val = (s[~dead[s]] for s in (train, test, val))
        if test.numel() == 0 or train.numel() == 0:
            raise ValueError(f"dataset {name!r}: no {'test' if test.numel() == 0 else 'training'}"
                             f" node is observed on any complete weekday")
    U, V = delay_settings(daily.steps_per_day)
    U = args.stride or U
    V = args.window or V
    return {"name": name, "kg": kg, "lat": series.lat, "lon": series.lon,
            "unobserved": dead.nonzero().flatten(), "channel": (channel % channels, channels),
            "values": daily.values, "mask": daily.mask, "train": train, "test": test,
            "val": val, "length": daily.steps_per_day, "stride": U, "window": V,
            "units": series.meta.get("units", ""), "days": daily.num_days,
            "freq_minutes": daily.freq_minutes}


# ---------------------------------------------------------------------------- metrics
def evaluate(gen: torch.Tensor, real: torch.Tensor, mask: Optional[torch.Tensor] = None,
             bins: int = 50) -> Dict[str, float]:
    r"""KGDiff's four metrics for generated ``gen`` ``[S, n, L]`` vs real ``real``
    ``[D, n, L]`` (module docstring).

    Missing real entries (``mask`` 0) are left out of the real profile and the JSD; for
    the MMD (which needs whole days) they are filled with the node's real mean profile.
    A slot never observed on any real day has no real profile value and is left out of
    the MAE / RMSE; a node never observed at all is left out of every metric.
    """
    from ..metrics import jsd, mae, mmd_per_node, rmse
    from ..models.kg_baselines import node_profiles
    if gen.dim() != 3 or real.dim() != 3 or gen.shape[1:] != real.shape[1:]:
        raise ValueError(f"'gen' [S, n, L] and 'real' [D, n, L] must agree in n and L "
                         f"(got {tuple(gen.shape)}, {tuple(real.shape)})")
    m = torch.ones_like(real) if mask is None else mask.to(real.dtype)
    prof_real = node_profiles(real, m)     # 0 where never observed: not a real value
    prof_gen = gen.mean(0)
    seen = m.sum(0) > 0                    # [n, L]
    if not bool(seen.any()):
        raise ValueError("'mask' leaves no observed real value to score against")
    scored = None if bool(seen.all()) else seen
    nodes = seen.any(1)
    filled = torch.where(m > 0, real, prof_real.unsqueeze(0).expand_as(real))
    out = {"mae": float(mae(prof_gen, prof_real, scored)),
           "rmse": float(rmse(prof_gen, prof_real, scored)),
           "mmd": float(mmd_per_node(gen[:, nodes], filled[:, nodes]))}
    js = []
    for j in range(gen.shape[1]):
        r = real[:, j][m[:, j] > 0]
        if r.numel():
            js.append(float(jsd(gen[:, j], r, bins=bins)))
    out["jsd"] = sum(js) / max(len(js), 1)
    return out


# ---------------------------------------------------------------------------- methods
def _tucker(data: dict, args):
    from ..kg import pretrain_tucker
    cache = args.tucker_cache if args.tucker_cache else None
    return pretrain_tucker(data["kg"], dim=args.tucker_dim, epochs=args.tucker_epochs,
                           seed=args.seed, progress=args.progress, cache_dir=cache,
                           device=args.device)


def _train_values(data: dict):
    tr = data["train"]
    D = data["values"].shape[0]
    x = data["values"][:, tr].reshape(-1, data["length"])
    m = data["mask"][:, tr].reshape(-1, data["length"])
    nodes = tr.repeat(D)
    keep = m.sum(1) > 0
    return x[keep], m[keep], nodes[keep]


def build_kgdiff(data: dict, entity: torch.Tensor, args, **options):
    """A :class:`~torch_stgen.models.KGDiff` for ``data`` with the benchmark's settings."""
    from ..models.kgdiff import KGDiff
    mult = (tuple(int(v) for v in args.channel_mult.split(",")) if args.channel_mult
            else ((1, 2) if data["window"] <= 16 else (1, 2, 2)))
    return KGDiff(data["kg"], entity, data["length"], data["stride"], data["window"],
                  dim=args.dim, model_channels=args.model_channels, channel_mult=mult,
                  pattern_weight=args.pattern_weight, sigma_data=args.sigma_data,
                  pattern_shrink=args.pattern_shrink,
                  message_norm=bool(args.message_norm),
                  moe_input_scale=bool(args.moe_input_scale),
                  guidance_dropout=args.guidance_dropout, aggregation=args.aggregation,
                  finetune_embedding=bool(args.finetune_embedding),
                  num_moe_layers=args.moe_layers or (2 if data["name"] == "synthetic" else 1),
                  delay_layout=args.delay_layout, delay_inverse=args.delay_inverse,
                  **options)


def _run_method(key: str, data: dict, args, tucker) -> Tuple[dict, torch.Tensor]:
    """Train / fit method ``key`` and score it: ``(row, generated [D, n_test, L])``."""
    label, options = METHODS[key]
    te, tr = data["test"], data["train"]
    real, rmask = data["values"][:, te], data["mask"][:, te]
    D = real.shape[0]
    t0 = time.perf_counter()
    extra = {}
    if key == "global-mean":
        from ..models.kg_baselines import GlobalMeanProfile, node_profiles
        prof, obs = node_profiles(data["values"][:, tr], data["mask"][:, tr],
                                  return_observed=True)
        gen = GlobalMeanProfile().fit(prof, obs).generate(te.numel(), D)
    elif key == "knn":
        from ..models.kg_baselines import NearestNeighbourProfile, node_profiles
        prof, obs = node_profiles(data["values"][:, tr], data["mask"][:, tr],
                                  return_observed=True)
        pos = {int(v): i for i, v in enumerate(tr.tolist())}
        val_local = torch.tensor([pos[int(v)] for v in data["val"]], dtype=torch.long)
        base = NearestNeighbourProfile().tune(prof, data["lat"][tr], data["lon"][tr], val_local,
                                              observed=obs)
        gen = base.generate(data["lat"][te], data["lon"][te], D)
        extra = {"k": base.k, "val_mae": {str(k): round(v, 4) for k, v in
                                          base.validation.items()}}
    else:
        torch.manual_seed(args.seed)
        model = build_kgdiff(data, tucker.entity, args, **options).to(args.device)
        x, m, nodes = _train_values(data)
        hist = model.fit(x, nodes, m, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         weight_decay=args.weight_decay, seed=args.seed,
                         progress=args.progress, ema_decay=args.ema_decay,
                         checkpoint=checkpoint_path(args, data["name"],
                                                    key + (getattr(args, "tag", "") or ""),
                                                    args.seed),
                         checkpoint_every=getattr(args, "checkpoint_every", 100))
        gen = model.generate(te, num_samples=D, sampler=args.sampler,
                             num_steps=args.sampling_steps, seed=args.seed + 1,
                             progress=args.progress).cpu()
        extra = {"final_loss": round(sum(hist["loss"][-50:]) / len(hist["loss"][-50:]), 4),
                 "steps": args.steps}
        if args.ema_decay is not None:
            extra["ema_decay"] = args.ema_decay
    seconds = time.perf_counter() - t0
    tag = getattr(args, "tag", "") or ""
    row = {"dataset": data["name"] + ("[val]" if getattr(args, "eval_nodes", "test") == "val"
                                      else ""),
           "method": key + tag, "label": label + (f" ({tag})" if tag else "")}
    row.update(evaluate(gen, real, rmask))
    row["seconds"] = round(seconds, 2)
    row["seed"] = args.seed
    row["device"] = torch.device(args.device).type
    if row["device"] == "cuda":
        row["tf32"] = bool(getattr(args, "tf32", False))
    row.update(extra)
    return row, gen


def _write(rows: List[dict], path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(rows, f, indent=2)
    os.replace(tmp, path)


def merge_rows(paths) -> List[dict]:
    """Rows of several JSON files; a later ``(dataset, method, seed)`` replaces an earlier."""
    merged: Dict[tuple, dict] = {}
    for p in paths:
        with open(p) as f:
            for r in json.load(f):
                merged[(r["dataset"], r["method"], r.get("seed", 0))] = r
    return list(merged.values())


def run(args) -> List[dict]:
    """Run the benchmark described by ``args`` (from :func:`build_parser`) and return the
    JSON rows ``{dataset, method, mae, rmse, mmd, jsd, seconds, ...}``; with ``--out`` the
    rows are (re)written after every method, so a stopped run keeps what it finished."""
    _defaults(args)
    if getattr(args, "merge", None):
        rows = merge_rows(args.merge)
        if args.out:
            _write(rows, args.out)
        return rows
    _check_args(args)
    torch.set_num_threads(max(1, int(args.threads)))
    args.device = str(resolve_device(getattr(args, "device", "cpu"),
                                     getattr(args, "tf32", False)))
    methods = _methods(args.methods)
    t0 = time.perf_counter()
    try:
        data = load_data(args)
    except (ValueError, OSError) as err:
        raise DataError(f"--dataset {args.dataset}: {err}") from err
    print(f"{data['name']}: {data['values'].shape[1]} nodes ({data['train'].numel()} train, "
          f"{data['val'].numel()} of them validation, {data['test'].numel()} test = southern "
          f"{args.test_frac:.0%} by latitude), {data['days']} weekdays of {data['length']} "
          f"steps (U={data['stride']}, V={data['window']}), KG {data['kg'].num_entities} "
          f"entities / {data['kg'].num_triples} triples ({time.perf_counter() - t0:.1f} s)",
          flush=True)
    channel, channels = data["channel"]
    if channels > 1:
        print(f"series: channel {channel} of {channels} (--channel)", flush=True)
    if data["unobserved"].numel():
        print(f"left out of training and scoring: {data['unobserved'].numel()} node(s) never "
              f"observed on a complete weekday (indices {data['unobserved'][:10].tolist()})",
              flush=True)
    if data["kg"].num_triples == 0 and any(METHODS[k][1] is not None for k in methods):
        raise DataError(f"the KG of {data['name']!r} has no triples, so TuckER has nothing to "
                         f"learn: sensors more than 5 km apart get no distance link; pass "
                         f"--kg FILE, or an 'adj' array in the .npz (the global-mean and "
                         f"k-NN baselines run without a KG: --methods global-mean,knn)")
    tucker = None
    if any(METHODS[k][1] is not None for k in methods):
        t1 = time.perf_counter()
        tucker = _tucker(data, args)
        print(f"TuckER d={args.tucker_dim}, {args.tucker_epochs} epochs: "
              f"{'cache' if tucker.from_cache else 'trained'} in "
              f"{time.perf_counter() - t1:.1f} s", flush=True)
    rows: List[dict] = []
    generated: Dict[str, torch.Tensor] = {}
    for key in methods:
        row, gen = _run_method(key, data, args, tucker)
        rows.append(row)
        if args.plot:
            generated[key] = gen
        print(f"  {key:15s} mae {row['mae']:.3f} rmse {row['rmse']:.3f} mmd {row['mmd']:.4f} "
              f"jsd {row['jsd']:.4f} ({row['seconds']:.0f} s)", flush=True)
        if args.out:
            _write(rows, args.out)
    if args.plot and generated:
        from ..viz import plot_profiles, save
        te = data["test"]
        fig = plot_profiles(data["values"][:, te], generated, mask=data["mask"][:, te],
                            steps_per_hour=data["length"] / 24.0,
                            title=f"{data['name']}: unseen test nodes, real vs generated "
                                  f"days (mean and 10-90 % band)")
        print(f"wrote {save(fig, args.plot)}")
    return rows


def _rank_column(rows: List[dict]) -> Dict[int, float]:
    """Average rank over the four metrics (1 = best) within each dataset."""
    ranks: Dict[int, List[float]] = {id(r): [] for r in rows}
    for ds in {r["dataset"] for r in rows}:
        group = [r for r in rows if r["dataset"] == ds]
        for metric in METRICS:
            vals = sorted(r[metric] for r in group)
            for r in group:  # ties share the mean rank
                first = vals.index(r[metric])
                ranks[id(r)].append(first + (vals.count(r[metric]) + 1) / 2)
    return {k: sum(v) / len(v) for k, v in ranks.items()}


def print_table(rows: List[dict], file=None) -> str:
    """Print (and return) a markdown table of ``rows`` with each method's average rank
    over the four metrics within its dataset."""
    ranks = _rank_column(rows)
    cols = ["dataset", "method", "mae", "rmse", "mmd", "jsd", "avg rank", "seconds"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [r["dataset"], r.get("label", r["method"]), f"{r['mae']:.3f}",
                 f"{r['rmse']:.3f}", f"{r['mmd']:.4f}", f"{r['jsd']:.4f}",
                 f"{ranks[id(r)]:.2f}", f"{r['seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text, file=file)
    return text


def run_demo(seed: int = 0, progress: bool = True, device: str = "cpu",
             plot: Optional[str] = None) -> List[dict]:
    """Train and evaluate a small KGDiff on the synthetic city against the baselines and
    print the table (a few minutes on a 2-core CPU; ``torch-stgen run``'s KGDiff part)."""
    args = build_parser().parse_args(["--dataset", "synthetic", "--methods", "main",
                                      "--seed", str(seed), "--quick",
                                      "--device", str(device)]
                                     + (["--plot", str(plot)] if plot else []))
    args.progress = progress
    rows = run(args)
    print_table(rows)
    return rows


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _defaults(args)
    try:
        if not args.merge:
            _check_args(args)
            _methods(args.methods)
            resolve_device(args.device, args.tf32)
    except ValueError as err:
        parser.error(str(err))
    logging.basicConfig(level=logging.WARNING)
    try:
        rows = run(args)
    except DataError as err:                 # the data, not the code: no traceback
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    print_table(rows)
    return 0
