r"""Plots of reconstructions and generated series (optional: ``pip install 'torch-stgen[viz]'``).

Pictures that a table cannot give:

* :func:`plot_reconstruction` - one time step of a DiffRecon-style task: the observed coarse
  map (missing cells blank), the fine truth, every method's fine map on the truth's colour
  scale and, below each, its absolute error on one shared error scale.
* :func:`plot_profiles` - KGDiff-style generation for unseen nodes: per node, the real
  daily profile (mean over days, with a quantile band) against each method's generated
  profile, plus the value distribution over all nodes (what the JSD compares).
* :func:`plot_paired_differences` - ablations against the full model, paired by seed:
  whether a gap is larger than what the seed alone does.

All return a :class:`matplotlib.figure.Figure` built without ``pyplot`` (no GUI backend,
safe in scripts and on servers); save it with ``fig.savefig(path)`` or :func:`save`.
"""
from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ._checks import check_binary_mask
from .typing import require

__all__ = ["plot_reconstruction", "plot_profiles", "plot_paired_differences", "save"]


def _figure(nrows: int, ncols: int, size: Tuple[float, float]):
    require("matplotlib", "plots")
    from matplotlib.figure import Figure
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _check(name: str, x, dims: int) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != dims:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"'{name}' must be a tensor with {dims} dimensions (got {got})")
    return x.detach().float().cpu()


def plot_reconstruction(truth: Tensor, predictions: Mapping[str, Tensor],
                        coarse: Optional[Tensor] = None, mask: Optional[Tensor] = None,
                        step: Optional[int] = None, channel: int = 0,
                        cmap: str = "viridis", error_cmap: str = "magma",
                        title: Optional[str] = None):
    r"""Fine maps of several methods against the truth at one time step.

    Top row: the observed coarse map (cells with ``mask == 0`` left blank), the fine truth
    and each prediction, all on the truth's colour scale. Bottom row: each prediction's
    absolute error :math:`|\hat X^{fg} - X^{fg}|` on one shared scale, titled with its MAE
    at this step and over all steps.

    Missing truth: NaN / infinite entries of ``truth`` are missing fine values. They are
    left blank, ignored by the default ``step`` and the colour scale, and not scored: the
    MAE is the mean over the entries whose truth is finite (``n/a`` if there is none). A
    NaN *prediction* where the truth exists is not hidden: its MAE is ``nan``.

    Args:
        truth (Tensor): ``[T, C, NI, NJ]`` fine truth (NaN = missing); ``channel`` must
            have at least one finite value.
        predictions (mapping): method name -> ``[T, C, NI, NJ]`` fine maps.
        coarse (Tensor, optional): ``[T, C, I, J]`` coarse maps (the observed values).
        mask (Tensor, optional): ``[T, C or 1, I, J]`` 0/1 mask, 1 = observed; only with
            ``coarse`` (a ``mask`` alone raises ``ValueError``).
        step (int, optional): time index; default: the step with the largest total of the
            finite ``truth`` values (a busy hour).
        channel (int): channel to show. (default: ``0``)
        cmap, error_cmap (str): colour maps. (default: ``"viridis"``, ``"magma"``)
        title (str, optional): figure title.

    Returns:
        matplotlib.figure.Figure

    Raises:
        ValueError: a shape does not match (named), ``mask`` is not 0/1 or comes without
            ``coarse``, or ``truth`` has no finite value in ``channel``.
        TypeError: ``predictions`` is not a mapping.
    """
    truth = _check("truth", truth, 4)
    if not isinstance(predictions, Mapping):
        raise TypeError(f"'predictions' must be a mapping of method name -> tensor "
                        f"(got {type(predictions).__name__})")
    if not predictions:
        raise ValueError("'predictions' must name at least one method")
    preds = {}
    for name, p in predictions.items():
        p = _check(f"predictions[{name!r}]", p, 4)
        if p.shape != truth.shape:
            raise ValueError(f"predictions[{name!r}] must have the shape of 'truth' "
                             f"{tuple(truth.shape)} (got {tuple(p.shape)})")
        preds[name] = p
    T, C = truth.shape[:2]
    if not 0 <= channel < C:
        raise ValueError(f"'channel' must lie in [0, {C}) (got {channel})")
    scored = torch.isfinite(truth)                  # missing fine values are not scored
    truth = truth.masked_fill(~scored, float("nan"))
    if not bool(scored[:, channel].any()):
        raise ValueError(f"'truth' has no finite value in channel {channel} (NaN = missing)")
    if step is None:
        step = int(truth[:, channel].nan_to_num(0.0).flatten(1).sum(1).argmax())
    if not 0 <= step < T:
        raise ValueError(f"'step' must lie in [0, {T}) (got {step})")
    if coarse is not None:
        coarse = _check("coarse", coarse, 4)
        if coarse.shape[:2] != (T, C):
            raise ValueError(f"'coarse' must have shape [T, C, I, J] = [{T}, {C}, I, J] "
                             f"(got {tuple(coarse.shape)})")
    if mask is not None:
        if coarse is None:
            raise ValueError("'mask' needs 'coarse': it marks the observed cells of the "
                             "coarse map (pass 'coarse' too, or drop 'mask')")
        I, J = coarse.shape[2:]
        if not isinstance(mask, Tensor) or mask.dim() != 4 or mask.shape[0] != T \
                or mask.shape[1] not in (1, C) or mask.shape[2:] != (I, J):
            got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"'mask' must have shape [T, C or 1, I, J] = "
                             f"[{T}, {C} or 1, {I}, {J}] (got {got})")
        check_binary_mask("mask", mask)
        mask = mask.detach().float().cpu()
    shown = coarse is not None
    ncols = 1 + int(shown) + len(preds)
    fig, axes = _figure(2, ncols, (2.6, 2.6 * truth.shape[2] / max(truth.shape[3], 1) + 0.4))
    ref = truth[step, channel][scored[step, channel]]
    if ref.numel() == 0:                            # nothing at this step: the channel's range
        ref = truth[:, channel][scored[:, channel]]
    vmin, vmax = float(ref.min()), float(ref.max())
    errors = {n: (p - truth).abs() for n, p in preds.items()}
    at_step = torch.cat([e[step, channel][torch.isfinite(e[step, channel])].reshape(-1)
                         for e in errors.values()])
    emax = (float(at_step.max()) if at_step.numel() else 0.0) or 1.0

    def mae(e: Tensor, valid: Tensor) -> str:
        return f"{float(e[valid].mean()):.3g}" if bool(valid.any()) else "n/a"

    col = 0
    if shown:
        img = coarse[step, channel].clone()
        if mask is not None:
            m = mask[step, min(channel, mask.shape[1] - 1)]
            img[m == 0] = float("nan")
            missing = 100.0 * float((m == 0).float().mean())
            axes[0, 0].set_title(f"observed coarse\n({missing:.0f} % missing)", fontsize=9)
        else:
            axes[0, 0].set_title("coarse", fontsize=9)
        axes[0, 0].imshow(img.numpy(), cmap=cmap)
        col = 1
    im = axes[0, col].imshow(truth[step, channel].numpy(), cmap=cmap, vmin=vmin, vmax=vmax)
    axes[0, col].set_title("fine truth", fontsize=9)
    fig.colorbar(im, ax=axes[0, :], shrink=0.8, label="value")
    for k, (name, p) in enumerate(preds.items()):
        c = col + 1 + k
        axes[0, c].imshow(p[step, channel].numpy(), cmap=cmap, vmin=vmin, vmax=vmax)
        axes[0, c].set_title(name, fontsize=9)
        e = errors[name]
        eim = axes[1, c].imshow(e[step, channel].numpy(), cmap=error_cmap, vmin=0, vmax=emax)
        axes[1, c].set_title(f"|error|: MAE {mae(e[step], scored[step])}\n"
                             f"(all steps {mae(e, scored)})", fontsize=8)
    fig.colorbar(eim, ax=axes[1, :], shrink=0.8, label="absolute error")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for c in range(col + 1):
        axes[1, c].set_axis_off()
    fig.suptitle(title or f"step {step}, channel {channel}", fontsize=10)
    return fig


def plot_profiles(real: Tensor, generated: Mapping[str, Tensor],
                  mask: Optional[Tensor] = None, nodes: Optional[Sequence[int]] = None,
                  max_nodes: int = 4, steps_per_hour: Optional[float] = None,
                  quantiles: Tuple[float, float] = (0.1, 0.9),
                  node_names: Optional[Sequence[str]] = None, bins: int = 40,
                  title: Optional[str] = None, ylabel: str = "value"):
    r"""Real against generated daily profiles of (unseen) nodes.

    One panel per node: the mean over days of the real series (black) and of each method's
    samples, each with its ``quantiles`` band; a last panel with the value histograms over
    all nodes and steps (the distributions the JSD compares). Non-finite values are left
    out of the histograms; constant values get a unit-wide histogram range.

    Args:
        real (Tensor): ``[D, n, L]`` real days of ``n`` nodes (NaN or ``mask == 0`` =
            missing); at least one value must be observed.
        generated (mapping): method name -> ``[S, n, L]`` samples of the same nodes, each
            with at least one finite value.
        mask (Tensor, optional): ``[D, n, L]`` 1 = observed.
        nodes (sequence of int, optional): columns to show; default ``max_nodes`` evenly
            spaced ones.
        max_nodes (int): panels when ``nodes`` is not given. (default: ``4``)
        steps_per_hour (float, optional): label the x axis in hours.
        quantiles (tuple of float): band. (default: ``(0.1, 0.9)``)
        node_names (sequence of str, optional): names of the ``n`` nodes (all ``n``, not
            only the shown ones).
        bins (int): histogram bins. (default: ``40``)
        title, ylabel (str, optional): labels.

    Returns:
        matplotlib.figure.Figure

    Raises:
        ValueError: a shape does not match (named), ``node_names`` does not have ``n``
            entries, ``real`` has no observed value or a ``generated`` series no finite
            value.
    """
    real = _check("real", real, 3)
    D, n, L = real.shape
    if mask is not None:
        m = _check("mask", mask, 3)
        if m.shape != real.shape:
            raise ValueError(f"'mask' must have the shape of 'real' {tuple(real.shape)} "
                             f"(got {tuple(m.shape)})")
        real = torch.where(m > 0, real, torch.full_like(real, float("nan")))
    if not bool(torch.isfinite(real).any()):
        raise ValueError("'real' has no observed value (all NaN, infinite or mask == 0)")
    if not generated:
        raise ValueError("'generated' must name at least one method")
    gens = {}
    for name, g in generated.items():
        g = _check(f"generated[{name!r}]", g, 3)
        if g.shape[1:] != (n, L):
            raise ValueError(f"generated[{name!r}] must have shape [S, n, L] = [S, {n}, {L}] "
                             f"(got {tuple(g.shape)})")
        if not bool(torch.isfinite(g).any()):
            raise ValueError(f"generated[{name!r}] has no finite value")
        gens[name] = g
    lo, hi = quantiles
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"'quantiles' must satisfy 0 <= lo < hi <= 1 (got {quantiles!r})")
    if nodes is None:
        k = max(1, min(int(max_nodes), n))
        nodes = torch.linspace(0, n - 1, k).round().long().unique().tolist()
    nodes = [int(i) for i in nodes]
    if any(not 0 <= i < n for i in nodes):
        raise ValueError(f"'nodes' must lie in [0, {n}) (got {nodes})")
    if node_names is not None:
        node_names = list(node_names)
        if len(node_names) != n:
            raise ValueError(f"'node_names' must name the n={n} nodes (got {len(node_names)})")
    x = torch.arange(L, dtype=torch.float32)
    xlabel = "step"
    if steps_per_hour:
        x, xlabel = x / float(steps_per_hour), "hour of day"
    fig, axes = _figure(1, len(nodes) + 1, (3.2, 2.6))
    colours = [f"C{i}" for i in range(10)]

    def band(ax, series, colour, label, width):
        mean = torch.nanmean(series, 0)
        q = torch.nanquantile(series, torch.tensor([lo, hi]), dim=0)
        ax.fill_between(x.numpy(), q[0].numpy(), q[1].numpy(), color=colour, alpha=0.15,
                        linewidth=0)
        ax.plot(x.numpy(), mean.numpy(), color=colour, lw=width, label=label)

    for a, i in zip(axes[0], nodes):
        band(a, real[:, i], "black", "real", 2.0)
        for c, (name, g) in enumerate(gens.items()):
            band(a, g[:, i], colours[c % 10], name, 1.2)
        a.set_title(node_names[i] if node_names is not None else f"node {i}", fontsize=9)
        a.set_xlabel(xlabel, fontsize=8)
    lims = [a.get_ylim() for a in axes[0, :-1]]              # one value scale for all nodes
    for a in axes[0, :-1]:
        a.set_ylim(min(l[0] for l in lims), max(l[1] for l in lims))
    axes[0, 0].set_ylabel(ylabel, fontsize=8)
    axes[0, 0].legend(fontsize=7, loc="best")
    h = axes[0, -1]
    vals = real[torch.isfinite(real)]
    all_vals = torch.cat([vals] + [g[torch.isfinite(g)] for g in gens.values()])
    vlo, vhi = float(all_vals.min()), float(all_vals.max())
    if not vhi > vlo:                               # constant values: no zero-width bins
        vlo, vhi = vlo - 0.5, vhi + 0.5
    edges = torch.linspace(vlo, vhi, bins + 1)
    h.hist(vals.numpy(), bins=edges.numpy(), density=True, histtype="step", color="black",
           lw=2.0, label="real")
    for c, (name, g) in enumerate(gens.items()):
        h.hist(g[torch.isfinite(g)].numpy(), bins=edges.numpy(), density=True,
               histtype="step", color=colours[c % 10], lw=1.2, label=name)
    h.set_title("values, all nodes", fontsize=9)
    h.set_xlabel(ylabel, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_paired_differences(values: Mapping[str, Sequence[float]], reference: str,
                            metric: str = "MAE", title: Optional[str] = None):
    r"""Ablations (or any variants) against a reference model, paired by seed.

    For each variant :math:`v` and seed :math:`s` the point :math:`d_{v,s} = m_{v,s} -
    m_{\mathrm{ref},s}` (above 0: the variant is worse on a lower-is-better metric), with
    the mean :math:`\bar d_v` and a bar of :math:`\pm` one standard deviation of the
    :math:`d_{v,s}` across seeds (none for a single seed). Pairing removes what a seed does
    to every model alike, so the spread shows whether a gap is more than seed noise.

    Args:
        values (mapping): model name -> per-seed metric values (the same seeds, in the
            same order, for every model; ``reference`` included; at least one seed).
        reference (str): the model the others are compared with (e.g. the full model).
        metric (str): axis label. (default: ``"MAE"``)
        title (str, optional): figure title.

    Returns:
        matplotlib.figure.Figure

    Raises:
        ValueError: ``reference`` is not a key, a model has no value or not one per seed
            of the reference.
        TypeError: a model's values are not numbers.
    """
    if reference not in values:
        raise ValueError(f"'reference' {reference!r} must be a key of 'values' "
                         f"(got {list(values)})")
    def numbers(k) -> Tensor:
        try:
            v = torch.as_tensor(values[k], dtype=torch.float64).reshape(-1)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"values[{k!r}] must be a sequence of numbers, one per seed "
                            f"(got {values[k]!r})") from None
        if v.numel() == 0:
            raise ValueError(f"values[{k!r}] must hold at least one value (one per seed)")
        return v

    ref = numbers(reference)
    others = {k: numbers(k) for k in values if k != reference}
    if not others:
        raise ValueError("'values' must hold at least one model besides the reference")
    for k, v in others.items():
        if v.shape != ref.shape:
            raise ValueError(f"values[{k!r}] must have one value per seed of the reference "
                             f"({ref.numel()}; got {v.numel()})")
    fig, axes = _figure(1, 1, (max(3.6, 1.2 + 1.1 * len(others)), 3.2))
    ax = axes[0, 0]
    ax.axhline(0.0, color="black", lw=0.8)
    for x, (name, v) in enumerate(others.items()):
        d = v - ref
        jitter = torch.linspace(-0.12, 0.12, d.numel()) if d.numel() > 1 else torch.zeros(1)
        ax.scatter((x + jitter).numpy(), d.numpy(), s=18, color=f"C{x % 10}", zorder=3)
        mean = float(d.mean())
        sd = float(d.std()) if d.numel() > 1 else 0.0
        ax.errorbar([x + 0.3], [mean], yerr=[sd], fmt="D", color="black", ms=5, capsize=3)
        ax.annotate(f"{round(mean, 3) + 0.0:+.3f}", (x + 0.36, mean), fontsize=7, va="center")
    ax.set_xticks(range(len(others)))
    ax.set_xticklabels(list(others), rotation=20, ha="right", fontsize=8)
    ax.set_xlim(-0.5, len(others) - 0.2)
    ax.set_ylabel(f"{metric} minus {reference} (same seed)", fontsize=8)
    ax.set_title(title or f"paired by seed, n = {ref.numel()}\n(above 0: worse than "
                 f"{reference})", fontsize=9)
    return fig


def save(fig, path: Union[str, Path], dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
