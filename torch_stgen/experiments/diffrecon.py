r"""The DiffRecon benchmark: incomplete coarse -> complete fine maps, DiffRecon against the
three baselines, on the synthetic city, BikeNYC or a user's own ``.npz`` grid.

Protocol (DiffRecon §V, `arXiv:2410.05323 <https://arxiv.org/abs/2410.05323>`_):

* fine maps ``[T, C, H, W]``; coarse maps by ``factor x factor`` sum-pooling;
  chronological 2:1:1 train / validation / test split;
* a sparse pattern (``fixed:r``, ``random:r``, ``block``) is drawn **once** over the
  whole series with ``--seed`` and applied to the coarse maps; the evaluated split is
  scored, earlier steps serve as (equally masked) history;
* every learned method is trained on the training split only, with masks *simulated*
  from the evaluated pattern kinds (fresh seeds, never the evaluation mask): by default
  one model per method for all requested patterns (``--train-per-pattern`` trains one per
  pattern); inputs are standardised with statistics of the training values;
* MAE and RMSE on the **fine** maps of the evaluated split in original units. When the
  training data are non-negative (counts), every method's prediction is clipped at 0
  (the JSON rows say ``"clipped": true``).

Methods: ``interp`` (baseline (a): nearest fill + distributional upsampling), ``srcnn``
(b), ``urbanfm`` (c), ``diffrecon`` and its ablations ``diffrecon-no-pretrain``,
``diffrecon-no-joint``, ``diffrecon-no-stpointformer``, ``diffrecon-no-tpatternnet`` and
``diffrecon-sr-f`` (the paper's "Diffusion-F replaced by a super-resolution network": the
full model's Diffusion-C completes, then UrbanFM, trained on complete sum-pooled coarse
maps as Diffusion-F is pre-trained, infers the fine maps).

Entry points: :func:`build_parser`, :func:`run` (-> JSON rows ``{dataset, method,
pattern, ratio, mae, rmse, seconds, train_seconds, ...}``; ``ratio`` is the measured
missing fraction of the evaluated coarse cells, ``seconds`` the wall time of the method's
reconstruction of the evaluated split for that pattern, ``train_seconds`` the training time
of the model that produced the row, shared by all rows it served), :func:`print_table`,
:func:`merge_rows` and :func:`run_demo` (the ``torch-stgen run`` main job).

Defaults (x0-prediction, 1000 pre-training + 200 joint iterations at batch 32, 4 samples x
20 DDIM steps) were chosen on the BikeNYC **validation** split, never on the test split.
"""
import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .._checks import check_int
from . import (DataError, add_checkpoint_arguments, add_device_arguments, checkpoint_path,
               positive_int_arg, prepare_output, resolve_device)

__all__ = ["build_parser", "run", "print_table", "format_table", "merge_rows", "run_demo",
           "METHODS", "ABLATIONS"]

log = logging.getLogger(__name__)

BASELINES = ("interp", "srcnn", "urbanfm")
ABLATIONS = ("diffrecon-no-pretrain", "diffrecon-no-joint", "diffrecon-no-stpointformer",
             "diffrecon-no-tpatternnet", "diffrecon-sr-f")
METHODS = BASELINES + ("diffrecon",) + ABLATIONS
ALL_PATTERNS = ("fixed:0.2,fixed:0.4,fixed:0.6,fixed:0.8,"
                "random:0.2,random:0.4,random:0.6,random:0.8,block")
#: US federal holidays inside the BikeNYC span (2014-04-01 .. 2014-09-30)
BIKENYC_HOLIDAYS = ("2014-05-26", "2014-07-04", "2014-09-01")


# --------------------------------------------------------------------------- arguments
def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """The benchmark's arguments (added to ``parser`` when given)."""
    p = parser or argparse.ArgumentParser(
        prog="benchmarks/diffrecon.py",
        description="DiffRecon vs. baselines: fine-map MAE / RMSE per sparse pattern.")
    p.add_argument("--dataset", default="synthetic",
                   help="'synthetic', 'bikenyc' or a path to a grid .npz (default: %(default)s)")
    p.add_argument("--data-root", default=os.environ.get("TORCH_STGEN_DATA", "../shared/data"),
                   help="folder holding bikenyc/ (default: $TORCH_STGEN_DATA or %(default)s)")
    p.add_argument("--factor", type=positive_int_arg, default=2,
                   help="magnification N, a positive integer dividing the fine grid "
                        "(default: 2)")
    p.add_argument("--patterns", default=None,
                   help=f"comma-separated kind[:ratio] list, 'block:r0,r1,c0,c1' for "
                        f"another block (default: all nine, "
                        f"'{ALL_PATTERNS}'; with --quick 'random:0.4')")
    p.add_argument("--methods", default="interp,srcnn,urbanfm,diffrecon",
                   help=f"comma-separated subset of {','.join(METHODS)} (default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="one pattern, short training (minutes), same JSON schema")
    p.add_argument("--seed", type=int, default=0, help="masks, initialisation, sampling")
    p.add_argument("--out", default=None, help="write the JSON rows to this file")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="also draw the first evaluated pattern at the busiest evaluated "
                        "step: observed coarse map, fine truth, every method's fine map and "
                        "error (torch_stgen.viz; needs the 'viz' extra)")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="evaluated split; 'val' for model selection (default: %(default)s)")
    p.add_argument("--train-patterns", default=None,
                   help="patterns whose simulated masks train the learned methods (default: "
                        "the evaluated --patterns); e.g. all nine for ablations evaluated "
                        "on three")
    p.add_argument("--early-stopping", action="store_true",
                   help="the learned methods (SRCNN, UrbanFM, DiffRecon's two stages) keep "
                        "their weights with the lowest loss on the validation split, checked "
                        "every --val-every iterations")
    p.add_argument("--val-condition", choices=("truth", "completed"), default="truth",
                   help="DiffRecon's early stopping: Diffusion-F's validation loss "
                        "conditioned on the true coarse maps or on Diffusion-C's "
                        "completions of them (default: %(default)s)")
    p.add_argument("--val-every", type=int, default=100,
                   help="iterations between early-stopping checks (default: %(default)s)")
    p.add_argument("--train-per-pattern", action="store_true",
                   help="train one model per evaluated pattern instead of one for all")
    g = p.add_argument_group("DiffRecon")
    g.add_argument("--steps", type=int, default=None,
                   help="pre-training iterations (default: 1000; quick 300)")
    g.add_argument("--joint-steps", type=int, default=None,
                   help="joint-training iterations (default: 200; quick 60)")
    g.add_argument("--joint-refresh", type=int, default=250,
                   help="iterations between refreshes of Diffusion-C's completions")
    g.add_argument("--joint-series", type=int, default=3,
                   help="Diffusion-C completion series per joint refresh, drawn from the "
                        "training patterns (default: 3; 0 = one per pattern)")
    g.add_argument("--joint-sampler", choices=("ddim", "ddpm"), default="ddim",
                   help="sampler of Diffusion-C's joint-phase completions (default: ddim)")
    g.add_argument("--joint-mix", type=float, default=1.0,
                   help="share of Diffusion-F's joint-phase samples conditioned on "
                        "Diffusion-C's completions instead of the truth (default: 1.0)")
    g.add_argument("--joint-mode", choices=("sampled", "end_to_end"), default="sampled",
                   help="joint phase: detached DDIM completions (default) or Diffusion-C's "
                        "differentiable one-step x0 (end to end)")
    g.add_argument("--completion-mask", action="store_true",
                   help="Diffusion-F also sees which coarse cells Diffusion-C completed "
                        "(an addition to the paper; see DiffRecon's docstring)")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--history-c", type=int, default=8, help="ST-PointFormer window")
    g.add_argument("--history-f", type=int, default=None,
                   help="T-PatternNet series length (default: one day of steps)")
    g.add_argument("--model-channels", type=int, default=32)
    g.add_argument("--d-model", type=int, default=32)
    g.add_argument("--top-k", type=int, default=3, help="T-PatternNet periods (reference 5)")
    g.add_argument("--num-kernels", type=int, default=3,
                   help="T-PatternNet Inception kernels (reference 6)")
    g.add_argument("--d-ff", type=int, default=None,
                   help="T-PatternNet feed-forward width (default: --d-model; reference 64)")
    g.add_argument("--prediction-type", default="sample",
                   choices=("epsilon", "sample", "v_prediction"),
                   help="what the denoisers predict (default: %(default)s, x0)")
    g.add_argument("--position-channels", type=int, default=0,
                   help="learnable positional map channels of the U-Nets (default: 0)")
    g.add_argument("--independent-stages", action="store_true",
                   help="initialise each stage from its own seed and clip each stage's "
                        "gradient on its own (DiffRecon(independent_stages=True))")
    g.add_argument("--inter-init", choices=("default", "identity"), default="default",
                   help="bottleneck fusion W_p of both U-Nets: PyTorch's init or [I | 0] "
                        "(each stage starts as its ablation without the inter-encoder) "
                        "(default: %(default)s)")
    g.add_argument("--samples", type=int, default=None,
                   help="samples per map (default: 4; quick 2)")
    g.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim")
    g.add_argument("--sampling-steps", type=int, default=None,
                   help="reverse steps (default: 20; quick 10)")
    g.add_argument("--reduce", choices=("mean", "median"), default="mean")
    g.add_argument("--mass-consistent", nargs="?", const="additive", default=None,
                   choices=("additive", "proportional"),
                   help="make each fine block sum to its completed coarse value "
                        "(bare flag: additive; 'proportional' for counts)")
    g = p.add_argument_group("baselines")
    g.add_argument("--baseline-steps", type=int, default=None,
                   help="SRCNN / UrbanFM iterations (default: 2000; quick 300)")
    g.add_argument("--baseline-batch-size", type=int, default=64)
    g = p.add_argument_group("synthetic city")
    g.add_argument("--city-size", type=int, default=16, help="fine grid side")
    g.add_argument("--city-days", type=int, default=28)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: tiny models run fastest single-threaded "
                        "on a shared CPU; 0 keeps torch's default)")
    add_device_arguments(p)
    add_checkpoint_arguments(p)
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="hide the progress bars")
    return p


def _defaults(args) -> None:
    q = bool(args.quick)
    for name, full, quick in (("steps", 1000, 300), ("joint_steps", 200, 60),
                              ("samples", 4, 2), ("sampling_steps", 20, 10),
                              ("baseline_steps", 2000, 300)):
        if getattr(args, name) is None:
            setattr(args, name, quick if q else full)
    if args.patterns is None:
        args.patterns = "random:0.4" if q else ALL_PATTERNS


def _parse_patterns(flag: str, text: str, seed: int) -> list:
    """The ``SparsePattern`` list of a comma-separated ``--patterns`` style flag; a bad
    entry raises a ``ValueError`` naming the flag."""
    from ..data import SparsePattern
    out = []
    for spec in SparsePattern.split_specs(str(text)):
        try:
            out.append(SparsePattern.parse(spec, seed=seed))
        except (TypeError, ValueError) as err:
            reason = str(err).replace(f"'spec' {spec!r}: ", "")
            raise ValueError(f"{flag}: {spec!r} is not a pattern ({reason})") from None
    if not out:
        raise ValueError(f"{flag} must name at least one pattern (got {text!r})")
    return out


def check_args(args) -> None:
    """Check the arguments of :func:`run` that argparse cannot (a ``Namespace`` built or
    changed in code, patterns, output folders); ``ValueError`` naming the flag. Run by
    :func:`run` before any data is loaded."""
    factor = getattr(args, "factor", None)
    try:
        args.factor = check_int("--factor", factor, 1)      # numpy integers too
    except ValueError:
        raise ValueError(f"--factor must be a positive integer (got {factor!r})") from None
    for m in (m.strip() for m in str(args.methods).split(",") if m.strip()):
        if m not in METHODS:
            raise ValueError(f"--methods: unknown method {m!r}; choose from "
                             f"{', '.join(METHODS)}")
    _parse_patterns("--patterns", args.patterns, args.seed)
    if getattr(args, "train_patterns", None):
        _parse_patterns("--train-patterns", args.train_patterns, args.seed)
    prepare_output("--out", getattr(args, "out", None))
    prepare_output("--plot", getattr(args, "plot", None))


# --------------------------------------------------------------------------- data
def _load(args):
    """-> ``(name, fine [T, C, H, W], timestamps or None, holidays, ext or None)``."""
    from ..data import SyntheticCity, read_deepst_h5, read_npz
    from ..data.series import GridSeries
    ds = str(args.dataset)
    if ds == "synthetic":
        city = SyntheticCity(seed=args.seed, height=args.city_size, width=args.city_size,
                             days=args.city_days)
        g = city.grid
        return "synthetic", g.data, g.timestamps, g.meta.get("is_holiday"), g.ext
    if ds == "bikenyc":
        root = Path(args.data_root) / "bikenyc"
        if not root.is_dir():
            root = Path(args.data_root)
        g = read_deepst_h5(root)
        return "bikenyc", g.data, g.timestamps, list(BIKENYC_HOLIDAYS), g.ext
    if ds.endswith(".npz"):
        g = read_npz(ds)
        if not isinstance(g, GridSeries):
            raise ValueError(f"--dataset {ds}: 'data' must be a grid (T, C, H, W) for the "
                             f"DiffRecon benchmark (got a graph series)")
        if g.mask is not None and not bool(g.mask.bool().all()):
            raise ValueError(f"--dataset {ds}: the fine maps have missing values; the "
                             f"benchmark needs complete fine truth to train and score")
        return Path(ds).stem, g.data, g.timestamps, g.meta.get("is_holiday"), g.ext
    raise ValueError(f"--dataset must be 'synthetic', 'bikenyc' or a path ending in .npz "
                     f"(got {ds!r})")


def calendar(timestamps, holidays=None) -> torch.Tensor:
    """``[T, 3]`` float ``(hour of day incl. fraction, weekday Monday=0, holiday flag)``:
    :func:`torch_stgen.data.time_features` with ``encoding='raw'``, DiffRecon's ``time``
    (numeric holiday flags count as booleans: any non-zero value is a holiday)."""
    from ..data import time_features
    return time_features(timestamps, holidays, encoding="raw")


def steps_per_day_of(timestamps, default: int = 24) -> int:
    """Steps per day from the most common spacing of ``timestamps`` (as
    :class:`~torch_stgen.data.DailyDataset` reads it; the first gap alone misread hourly
    data that starts with a gap); ``default`` when there are fewer than two or the
    spacing does not divide a day."""
    from ..data.datasets import step_minutes
    if timestamps is None or len(timestamps) < 2:
        return default
    dt = step_minutes(timestamps)
    return max(1, 1440 // dt) if dt is not None and 1440 % dt == 0 else default


def standardise_ext(ext: Optional[torch.Tensor], train: slice) -> Optional[torch.Tensor]:
    """Covariates standardised with the statistics of the ``train`` steps (constant
    columns keep unit scale)."""
    if ext is None:
        return None
    mu, sd = ext[train].mean(0), ext[train].std(0)
    return (ext - mu) / torch.where(sd > 1e-8, sd, torch.ones_like(sd))


# --------------------------------------------------------------------------- methods
def _diffrecon_kwargs(args, channels, coarse_size, ext_features, use_time, steps_per_day):
    return dict(channels=channels, coarse_size=coarse_size, factor=args.factor,
                history_c=args.history_c, history_f=args.history_f or steps_per_day,
                use_time=use_time, ext_features=ext_features,
                model_channels=args.model_channels, d_model=args.d_model,
                top_k=args.top_k, num_kernels=args.num_kernels, d_ff=args.d_ff,
                prediction_type=args.prediction_type,
                position_channels=args.position_channels,
                completion_mask=args.completion_mask,
                inter_init=args.inter_init,
                independent_stages=bool(getattr(args, "independent_stages", False)))


def _upsampler(method, args, fine_tr, time_tr, ext_tr, patterns, seed, val_data,
               checkpoint=None):
    """Baseline (b) SRCNN or (c) UrbanFM, trained with masks simulated from ``patterns``
    (``["random:0.0"]``: on complete coarse maps); ``checkpoint``: its resumable file."""
    from ..models.baselines import SRCNN, UrbanFM, fit_upsampler
    C, (H, W), N = fine_tr.shape[1], fine_tr.shape[2:], args.factor
    coarse_size = (H // N, W // N)
    cond = _cond_vector(time_tr, ext_tr) if method == "urbanfm" else None
    if method == "srcnn":
        net = SRCNN(C, coarse_size, N)
    else:
        net = UrbanFM(C, coarse_size, N, cond_features=0 if cond is None else cond.shape[1],
                      width=64, num_blocks=8)
    net = net.to(args.device)
    val_fine, val_time, val_ext = val_data if val_data is not None else (None, None, None)
    val_cond = None
    if val_fine is not None and method == "urbanfm":
        val_cond = _cond_vector(val_time, val_ext)
    fit_upsampler(net, fine_tr, cond, patterns=patterns, steps=args.baseline_steps,
                  batch_size=args.baseline_batch_size, lr=args.lr, seed=seed,
                  progress=args.progress, val_fine=val_fine, val_cond=val_cond,
                  val_every=args.val_every, checkpoint=checkpoint,
                  checkpoint_every=getattr(args, "checkpoint_every", 100))
    return net


def _train(method, args, fine_tr, time_tr, ext_tr, patterns, seed, steps_per_day,
           val_data=None, checkpoint=None):
    """Train one method on the training maps; returns a predict callable
    ``f(coarse [T', C, h, w] incl. context, mask, time, ext, context) -> fine [T'-ctx]``.
    ``val_data``: ``(fine, time, ext)`` of held-out maps for early stopping, or ``None``;
    ``checkpoint``: the method's resumable checkpoint file, or ``None``."""
    val_fine, val_time, val_ext = val_data if val_data is not None else (None, None, None)
    from ..models.baselines import InterpolationUpsampling
    from ..models.diffrecon import DiffRecon
    C, (H, W), N = fine_tr.shape[1], fine_tr.shape[2:], args.factor
    coarse_size = (H // N, W // N)
    use_time = time_tr is not None
    ext_features = 0 if ext_tr is None else ext_tr.shape[1]
    torch.manual_seed(seed)
    if method == "interp":
        m = InterpolationUpsampling(N).fit(fine_tr)
        return lambda c, k, tm, ex, ctx: m.predict(c[ctx:], k[ctx:])
    if method in ("srcnn", "urbanfm"):
        net = _upsampler(method, args, fine_tr, time_tr, ext_tr, patterns, seed, val_data,
                         checkpoint)

        def predict(c, k, tm, ex, ctx):
            cv = _cond_vector(tm, ex) if method == "urbanfm" else None
            return net.predict(c[ctx:], k[ctx:], None if cv is None else cv[ctx:])
        predict.model = net
        return predict
    if method.startswith("diffrecon"):
        # "diffrecon-sr-f" (the paper's "Diffusion-F replaced by a super-resolution
        # network") trains the full model, whose Diffusion-C it keeps
        full = method == "diffrecon-sr-f"
        kw = _diffrecon_kwargs(args, C, coarse_size, ext_features, use_time, steps_per_day)
        kw["use_stpointformer"] = method != "diffrecon-no-stpointformer"
        kw["use_tpatternnet"] = method != "diffrecon-no-tpatternnet"
        model = DiffRecon(**kw).to(args.device)
        model.fit(fine_tr, time=time_tr, ext=ext_tr, patterns=patterns,
                  pretrain_steps=args.steps, joint_steps=args.joint_steps,
                  batch_size=args.batch_size, lr=args.lr,
                  pretrain=method != "diffrecon-no-pretrain",
                  joint=method != "diffrecon-no-joint", joint_refresh=args.joint_refresh,
                  joint_series=args.joint_series or None, joint_sampler=args.joint_sampler,
                  joint_mix=args.joint_mix,
                  joint_mode=args.joint_mode, seed=seed,
                  progress=args.progress, val_fine=val_fine, val_time=val_time,
                  val_ext=val_ext, val_every=args.val_every,
                  val_condition=args.val_condition, checkpoint=checkpoint,
                  checkpoint_every=getattr(args, "checkpoint_every", 100))

        def predict(c, k, tm, ex, ctx):
            return model.reconstruct(c, k, history=ctx, time=tm, ext=ex,
                                     num_samples=args.samples, sampler=args.sampler,
                                     steps=args.sampling_steps, reduce=args.reduce,
                                     mass_consistent=args.mass_consistent or False,
                                     seed=seed,
                                     progress=args.progress).fine

        if full:
            # UrbanFM in Diffusion-F's place, trained like Diffusion-F's pre-training on
            # complete (sum-pooled) coarse maps, fed Diffusion-C's completions at test
            torch.manual_seed(seed)
            net = _upsampler("urbanfm", args, fine_tr, time_tr, ext_tr, ["random:0.0"], seed,
                             val_data, None if checkpoint is None else
                             Path(checkpoint).with_name(Path(checkpoint).stem + "_urbanfm.pt"))

            def predict(c, k, tm, ex, ctx):  # noqa: F811 - replaces the fine stage
                comp, _ = model.complete(c, k, history=ctx, time=tm, ext=ex,
                                         num_samples=args.samples, sampler=args.sampler,
                                         steps=args.sampling_steps, reduce=args.reduce,
                                         seed=seed, progress=args.progress)
                cv = _cond_vector(tm, ex)
                return net.predict(comp, torch.ones_like(comp),
                                   None if cv is None else cv[ctx:])
            predict.upsampler = net
        predict.model = model
        return predict
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def _trained_seconds(predict, wall: float) -> float:
    """Training seconds of the models behind ``predict`` as they record them (DiffRecon's
    ``history_log['seconds']``, a baseline's ``train_seconds``; both include the time
    spent before a resumed checkpoint), or ``wall`` when none records it."""
    total, found = 0.0, False
    for net in (getattr(predict, "model", None), getattr(predict, "upsampler", None)):
        secs = (getattr(net, "history_log", {}) or {}).get("seconds",
                                                            getattr(net, "train_seconds", None))
        if secs is not None:
            total, found = total + float(secs), True
    return total if found else wall


def _cond_vector(time_: Optional[torch.Tensor], ext: Optional[torch.Tensor]):
    """UrbanFM's external vector: cyclic hour / weekday, holiday flag, covariates."""
    parts = []
    if time_ is not None:
        a = 2 * np.pi * time_[:, 0] / 24.0
        b = 2 * np.pi * time_[:, 1] / 7.0
        parts.append(torch.stack([a.sin(), a.cos(), b.sin(), b.cos(), time_[:, 2]], 1))
    if ext is not None:
        parts.append(ext)
    return torch.cat(parts, 1) if parts else None


# --------------------------------------------------------------------------- run
def run(args) -> List[Dict]:
    """Run the benchmark described by ``args`` (from :func:`build_parser`); returns the
    JSON rows (also written to ``args.out`` when set)."""
    from ..data import chronological_split, coarsen
    from ..metrics import mae, rmse
    _defaults(args)
    check_args(args)
    args.device = str(resolve_device(getattr(args, "device", "cpu"),
                                     getattr(args, "tf32", False)))
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    patterns = _parse_patterns("--patterns", args.patterns, args.seed)
    try:
        name, fine, timestamps, holidays, ext = _load(args)
    except (ValueError, OSError) as err:
        raise DataError(f"--dataset {args.dataset}: {err}") from err
    fine = fine.float()
    T, C, H, W = fine.shape
    N = args.factor
    if H % N or W % N:
        raise DataError(f"--factor {N} must divide the fine grid {H} x {W}")
    h, w = H // N, W // N
    time_ = calendar(timestamps, holidays) if timestamps is not None else None
    steps_per_day = steps_per_day_of(timestamps)
    train, val, test = chronological_split(T)
    if any(m.startswith("diffrecon") for m in methods):  # before any method trains
        history_f = args.history_f or steps_per_day
        if history_f // 2 < args.top_k:
            raise DataError(f"--history-f: T-PatternNet's window of {history_f} steps "
                             f"({'given' if args.history_f else 'one day of this data'}) has "
                             f"fewer than --top-k {args.top_k} periods; pass --history-f "
                             f">= {2 * args.top_k}")
        need = max(args.history_c, history_f)
        if len(train) < need + 1:
            raise DataError(f"the training split has {len(train)} steps (half of T={T}); "
                             f"DiffRecon needs more than max(--history-c, --history-f) = "
                             f"{need}: pass shorter windows or more data")
    evald = test if args.split == "test" else val
    ext = standardise_ext(ext, train)
    coarse = coarsen(fine, N)
    clip = bool(fine[train.start:train.stop].min() >= 0)
    ctx = min(evald.start, max(args.history_c, args.history_f or steps_per_day) - 1)
    sl = slice(evald.start - ctx, evald.stop)
    print(f"{name}: fine {tuple(fine.shape)} -> coarse {tuple(coarse.shape)} (factor {N}); "
          f"train {len(train)} / val {len(val)} / test {len(test)} steps; evaluating "
          f"{args.split} with {ctx} context steps; patterns "
          f"{', '.join(p.name for p in patterns)}")
    masks = {p.name: p(T, h, w)[:, None].expand(T, C, h, w) for p in patterns}
    fine_tr = fine[train.start:train.stop]
    time_tr = None if time_ is None else time_[train.start:train.stop]
    ext_tr = None if ext is None else ext[train.start:train.stop]
    if args.train_per_pattern:
        groups = [([p], [p]) for p in patterns]
    elif args.train_patterns:
        groups = [(patterns, _parse_patterns("--train-patterns", args.train_patterns,
                                             args.seed))]
    else:
        groups = [(patterns, patterns)]
    val_data = None
    if args.early_stopping:
        val_data = (fine[val.start:val.stop], None if time_ is None else time_[val],
                    None if ext is None else ext[val])
        if args.split == "val":
            print("note: --early-stopping selects weights on the validation split, which is "
                  "also the evaluated split here")
    rows = []
    plot_preds: Dict[str, torch.Tensor] = {}
    for method in methods:
        for group, train_pats in groups:
            t0 = time.perf_counter()
            tag = method + (f"_{group[0].name}" if args.train_per_pattern else "")
            predict = _train(method, args, fine_tr, time_tr, ext_tr, train_pats, args.seed,
                             steps_per_day, val_data,
                             checkpoint_path(args, name, tag, args.seed))
            # training time including what a resumed checkpoint had already spent
            train_s = _trained_seconds(predict, time.perf_counter() - t0)
            for p in group:
                k = masks[p.name]
                obs = torch.where(k.bool(), coarse, torch.zeros(()))
                t1 = time.perf_counter()
                pred = predict(obs[sl], k[sl], None if time_ is None else time_[sl],
                               None if ext is None else ext[sl], ctx)
                secs = time.perf_counter() - t1
                if clip:
                    pred = pred.clamp_min(0)
                truth = fine[evald.start:evald.stop]
                if args.plot and p.name == patterns[0].name:
                    plot_preds[method] = pred
                row = {"dataset": name, "method": method, "pattern": p.name,
                       "ratio": round(1.0 - float(k[evald.start:evald.stop].float().mean()), 4),
                       "mae": float(mae(pred, truth)), "rmse": float(rmse(pred, truth)),
                       "seconds": round(secs, 2), "train_seconds": round(train_s, 2),
                       "split": args.split, "seed": args.seed, "clipped": clip,
                       "device": torch.device(args.device).type,
                       "trained_on": [q.name for q in train_pats]}
                if row["device"] == "cuda":
                    row["tf32"] = bool(getattr(args, "tf32", False))
                net = getattr(predict, "model", None)       # early stopping: what was kept
                log_ = getattr(net, "history_log", {})
                if "best_iter_c" in log_:
                    row["best_iter_c"], row["best_iter_f"] = (log_["best_iter_c"],
                                                              log_["best_iter_f"])
                if getattr(net, "best_step", None) is not None:
                    row["best_step"] = net.best_step
                rows.append(row)
                print(f"  {method:28s} {p.name:11s} MAE {row['mae']:.3f}  RMSE "
                      f"{row['rmse']:.3f}  ({secs:.1f} s eval, {train_s:.0f} s train)",
                      flush=True)
                if args.out:
                    _write(args.out, rows, args)
    if args.out:
        _write(args.out, rows, args)
    if args.plot and plot_preds:
        from ..viz import plot_reconstruction, save
        k = masks[patterns[0].name][evald.start:evald.stop]
        fig = plot_reconstruction(fine[evald.start:evald.stop], plot_preds,
                                  coarse=coarse[evald.start:evald.stop], mask=k,
                                  title=f"{name}, {patterns[0].name} ({args.split} split)")
        print(f"wrote {save(fig, args.plot)}")
    return rows


def _write(path, rows, args) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump({"args": {k: v for k, v in vars(args).items() if k != "func"},
                   "rows": rows}, f, indent=1)


def merge_rows(paths: Sequence[str]) -> List[Dict]:
    """Rows of several ``--out`` JSON files (a later file's row replaces an earlier one for
    the same ``(dataset, method, pattern)``)."""
    merged: Dict[tuple, Dict] = {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        for r in (data["rows"] if isinstance(data, dict) else data):
            merged[(r["dataset"], r["method"], r["pattern"])] = r
    return list(merged.values())


# --------------------------------------------------------------------------- table
def format_table(rows: Sequence[Dict], metric: str = "mae") -> str:
    """Markdown table methods x patterns of ``metric`` (``"mae"`` or ``"rmse"``), one
    block per dataset, with the per-method average over the patterns and, when DiffRecon
    and baselines are present, its gain over the best baseline per pattern."""
    out = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == ds]
        pats = list(dict.fromkeys(r["pattern"] for r in rs))
        meths = [m for m in METHODS if any(r["method"] == m for r in rs)]
        meths += [m for m in dict.fromkeys(r["method"] for r in rs) if m not in meths]
        val = {(r["method"], r["pattern"]): r[metric] for r in rs}
        out.append(f"**{ds}** — fine-map {metric.upper()} (lower is better)\n")
        out.append("| method | " + " | ".join(pats) + " | mean |")
        out.append("|---|" + "---|" * (len(pats) + 1))
        for m in meths:
            vs = [val.get((m, p)) for p in pats]
            have = [v for v in vs if v is not None]
            mean = f"{sum(have) / len(have):.3f}" if len(have) == len(pats) else "-"
            out.append(f"| {m} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in vs)
                       + f" | {mean} |")
        bases = [m for m in BASELINES if m in meths]
        if "diffrecon" in meths and bases:
            gains, worse = [], 0
            cells = []
            for p in pats:
                bv = [val[(b, p)] for b in bases if (b, p) in val]
                if (("diffrecon", p) not in val) or not bv or min(bv) == 0:
                    cells.append("-")      # no baseline, or one that is exact: no ratio
                    continue
                g = 1.0 - val[("diffrecon", p)] / min(bv)
                gains.append(g)
                worse += g < 0
                cells.append(f"{100 * g:+.1f}%")
            mean_g = f"{100 * sum(gains) / len(gains):+.1f}%" if gains else "-"
            out.append("| *DiffRecon vs best baseline* | " + " | ".join(cells)
                       + f" | {mean_g} |")
            out.append(f"\nDiffRecon is worse than the best baseline in {worse} of "
                       f"{len(gains)} settings.")
        out.append("")
    return "\n".join(out)


def print_table(rows: Sequence[Dict]) -> None:
    """Print the MAE and RMSE tables of :func:`format_table`."""
    print(format_table(rows, "mae"))
    print(format_table(rows, "rmse"))


# --------------------------------------------------------------------------- demo
def run_demo(seed: int = 0, progress: bool = True, device: str = "cpu",
             plot: Optional[str] = None) -> List[Dict]:
    """The ``torch-stgen run`` main job: a small DiffRecon trained and evaluated on the
    synthetic city (8 x 8 fine -> 4 x 4 coarse, 3 weeks of hourly maps) against the three
    baselines, at fixed 40 %, random 40 % and the block, every learned method early-stopped
    on the validation split; prints the table. About two minutes on one CPU core."""
    args = build_parser().parse_args([
        "--dataset", "synthetic", "--city-size", "8", "--city-days", "21",
        "--patterns", "fixed:0.4,random:0.4,block", "--steps", "300", "--joint-steps", "60",
        "--joint-refresh", "30", "--baseline-steps", "300", "--samples", "2",
        "--sampling-steps", "10", "--early-stopping", "--val-every", "30",
        "--seed", str(seed), "--device", str(device)] + (["--plot", str(plot)] if plot else []))
    args.progress = progress
    rows = run(args)
    print_table(rows)
    return rows
