r"""Evaluation metrics for spatio-temporal reconstruction and generation.

* :func:`mae`, :func:`rmse` - point errors, masked (DiffRecon reports both on the fine map;
  KGDiff on the per-node mean profiles).
* :func:`mmd`, :func:`mmd_per_node` - multi-kernel Gaussian maximum mean discrepancy
  between a generated and a real sample set (KGDiff's distribution metric).
* :func:`jsd` - Jensen-Shannon divergence between the value histograms of two sets.
* :func:`crps` - continuous ranked probability score of an ensemble of samples.

Every function accepts tensors or array-likes, computes in ``float64`` and returns a
``float64`` ``torch.Tensor``: 0-d (call ``.item()`` for a Python float), or ``[N]`` for
``mmd_per_node(..., reduction="none")``. Masks follow the
library convention: ``1`` = scored, ``0`` = ignored; values under a ``0`` may be anything,
NaN included. A non-finite value where the mask scores it raises ``ValueError`` rather than
returning a silent NaN.

References:
    Sun et al., "From Incomplete Coarse-Grained to Complete Fine-Grained: A Two-Stage
    Framework for Spatiotemporal Data Reconstruction", https://arxiv.org/abs/2410.05323.
    Wang et al., "Knowledge Graph Guided Heterogeneity-Informed Diffusion Model for
    Spatio-Temporal Generation", AAAI 2026.
    Gretton et al., "A Kernel Two-Sample Test", JMLR 2012.
    Gneiting & Raftery, "Strictly Proper Scoring Rules, Prediction, and Estimation",
    JASA 2007, https://doi.org/10.1198/016214506000001437.
    Ferro, "Fair scores for ensemble forecasts", QJRMS 2014, https://doi.org/10.1002/qj.2270.
"""
import math
import numbers
from typing import Optional, Tuple

import torch
from torch import Tensor

from ._checks import check_binary_mask

__all__ = ["mae", "rmse", "mmd", "mmd_per_node", "jsd", "crps"]


def _as_float64(value, name: str) -> Tensor:
    if isinstance(value, Tensor):
        if value.is_complex():
            raise TypeError(f"'{name}' must be a real tensor (got dtype {value.dtype})")
        return value.detach().to(torch.float64)
    try:
        return torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"'{name}' must be a tensor or an array-like of numbers "
                        f"(got {type(value).__name__})") from err


def _score_mask(mask, shape: torch.Size, device, name: str = "mask") -> Tensor:
    """Boolean mask broadcast to ``shape``; raises when it cannot or when it is all zero."""
    m = torch.as_tensor(mask, device=device)
    try:
        m = torch.broadcast_to(m, shape)
    except RuntimeError as err:
        raise ValueError(f"'{name}' must have (or broadcast to) the target's shape "
                         f"{tuple(shape)} (got {tuple(m.shape)})") from err
    check_binary_mask(name, m, "1 = scored")
    m = m != 0
    if not bool(m.any()):
        raise ValueError(f"'{name}' scores no entry (all zero): the metric is undefined")
    return m


def _pair(pred, target, mask, pred_name: str = "pred") -> Tuple[Tensor, Tensor, Tensor]:
    p = _as_float64(pred, pred_name)
    t = _as_float64(target, "target").to(p.device)
    if p.shape != t.shape:
        raise ValueError(f"'{pred_name}' must have the target's shape {tuple(t.shape)} "
                         f"(got {tuple(p.shape)})")
    if p.numel() == 0:
        raise ValueError(f"'{pred_name}' and 'target' are empty")
    m = (torch.ones_like(t, dtype=torch.bool) if mask is None
         else _score_mask(mask, t.shape, t.device))
    for name, v in ((pred_name, p), ("target", t)):
        bad = m & ~torch.isfinite(v)
        if bool(bad.any()):
            raise ValueError(f"'{name}' has {int(bad.sum())} non-finite value(s) where the "
                             f"mask scores it; mark them missing (mask 0) instead")
    return p, t, m


def mae(pred, target, mask=None) -> Tensor:
    r"""Masked mean absolute error.

    .. math::
        \mathrm{MAE} = \frac{\sum_i m_i\, |\hat{x}_i - x_i|}{\sum_i m_i}

    Args:
        pred: predictions, any shape.
        target: ground truth, the shape of ``pred``.
        mask: optional ``0/1`` (or bool) tensor broadcastable to ``target``; ``1`` = scored.
            ``None`` scores every entry. An all-zero mask raises ``ValueError``.

    Returns:
        0-d ``float64`` tensor.

    Shapes:
        ``pred``, ``target``: ``[*]``; ``mask``: broadcastable to ``[*]``.
    """
    p, t, m = _pair(pred, target, mask)
    err = torch.where(m, (p - t).abs(), torch.zeros((), dtype=p.dtype, device=p.device))
    return err.sum() / m.sum()


def rmse(pred, target, mask=None) -> Tensor:
    r"""Masked root mean squared error.

    .. math::
        \mathrm{RMSE} = \sqrt{\frac{\sum_i m_i\, (\hat{x}_i - x_i)^2}{\sum_i m_i}}

    Args:
        pred: predictions, any shape.
        target: ground truth, the shape of ``pred``.
        mask: optional ``0/1`` (or bool) tensor broadcastable to ``target``; ``1`` = scored.

    Returns:
        0-d ``float64`` tensor.

    Shapes:
        ``pred``, ``target``: ``[*]``; ``mask``: broadcastable to ``[*]``.
    """
    p, t, m = _pair(pred, target, mask)
    err = torch.where(m, (p - t) ** 2, torch.zeros((), dtype=p.dtype, device=p.device))
    return torch.sqrt(err.sum() / m.sum())


def _sample_set(value, name: str, batched: bool = False) -> Tensor:
    v = _as_float64(value, name)
    if not batched and v.dim() == 1:
        v = v.unsqueeze(-1)
    want = 3 if batched else 2
    if v.dim() != want:
        shape = "[S, N, L]" if batched else "[n, d] (or [n])"
        raise ValueError(f"'{name}' must have shape {shape} (got {tuple(v.shape)})")
    if v.shape[-2 if not batched else 0] == 0:
        raise ValueError(f"'{name}' holds no sample (got shape {tuple(v.shape)})")
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"'{name}' has non-finite values")
    return v


def _mmd_batched(x: Tensor, y: Tensor, num_kernels: int, kernel_mul: float,
                 bandwidth: Optional[float]) -> Tensor:
    """MMD^2 for a batch of sample-set pairs: x ``[B, n, d]``, y ``[B, m, d]`` -> ``[B]``."""
    n, m = x.shape[1], y.shape[1]
    z = torch.cat([x, y], dim=1)  # [B, n + m, d]
    # squared Euclidean distances |a|^2 + |b|^2 - 2 a.b in float64 ([B, P, P] memory, not
    # [B, P, P, d]); rounding can leave tiny negatives: clamp, and exact zeros on the diagonal
    sq = z.pow(2).sum(-1)
    d2 = (sq.unsqueeze(2) + sq.unsqueeze(1) - 2.0 * z @ z.transpose(1, 2)).clamp_min(0.0)
    d2 = d2 * (1.0 - torch.eye(z.shape[1], dtype=z.dtype, device=z.device))
    tot = n + m
    if bandwidth is None:
        if tot < 3:     # with two, D-bar is their own distance: the same value for any pair
            raise ValueError(f"mmd needs at least three pooled samples to set the bandwidth "
                             f"from the data (got {n} + {m}); with two the result is a "
                             f"constant whatever they are; pass 'bandwidth'")
        centre = d2.sum(dim=(1, 2)) / (tot * tot - tot)  # mean over off-diagonal pairs
    else:
        centre = torch.full((x.shape[0],), float(bandwidth), dtype=x.dtype, device=x.device)
    base = centre / kernel_mul ** (num_kernels // 2)
    degenerate = base <= 0  # every pooled sample identical: both sets are the same point
    base = torch.where(degenerate, torch.ones_like(base), base)
    k = torch.zeros_like(d2)
    for i in range(num_kernels):
        k = k + torch.exp(-d2 / (base * kernel_mul ** i).view(-1, 1, 1))
    xx = k[:, :n, :n].mean(dim=(1, 2))
    yy = k[:, n:, n:].mean(dim=(1, 2))
    xy = k[:, :n, n:].mean(dim=(1, 2))
    out = xx + yy - 2.0 * xy
    return torch.where(degenerate, torch.zeros_like(out), out)


def _check_kernels(num_kernels: int, kernel_mul: float, bandwidth: Optional[float]):
    if int(num_kernels) != num_kernels or num_kernels < 1:
        raise ValueError(f"'num_kernels' must be a positive integer (got {num_kernels})")
    if not 0 < kernel_mul < math.inf:
        raise ValueError(f"'kernel_mul' must be a finite number > 0 (got {kernel_mul})")
    if bandwidth is not None and not (math.isfinite(bandwidth) and bandwidth > 0):
        raise ValueError(f"'bandwidth' must be a finite number > 0 or None (got {bandwidth})")


def mmd(x, y, num_kernels: int = 5, kernel_mul: float = 2.0,
        bandwidth: Optional[float] = None) -> Tensor:
    r"""Multi-kernel Gaussian maximum mean discrepancy (squared), the biased V-statistic.

    KGDiff compares generated and real series with a sum of ``num_kernels`` Gaussian
    kernels whose bandwidths form a geometric ladder around the mean pairwise squared
    distance (5 bandwidths, multiplier 2 in the paper), as in Gretton et al. (2012):

    .. math::
        k(a, b) = \sum_{i=0}^{K-1} \exp\!\Big(-\frac{\lVert a - b\rVert^2}
        {\sigma_0\, \mu^{i}}\Big), \qquad
        \sigma_0 = \frac{\bar{D}}{\mu^{\lfloor K/2 \rfloor}}, \qquad
        \bar{D} = \frac{1}{P(P-1)} \sum_{p \neq q} \lVert z_p - z_q \rVert^2

    .. math::
        \mathrm{MMD}^2 = \frac{1}{n^2}\sum_{i,j} k(x_i, x_j)
        + \frac{1}{m^2}\sum_{i,j} k(y_i, y_j) - \frac{2}{nm}\sum_{i,j} k(x_i, y_j)

    with :math:`K` = ``num_kernels``, :math:`\mu` = ``kernel_mul``, and
    :math:`z` the :math:`P = n + m` pooled samples. With the defaults the bandwidths are
    :math:`\bar{D}/4, \bar{D}/2, \bar{D}, 2\bar{D}, 4\bar{D}` (the denominator of the
    exponent, no factor 2). The kernels are *summed*, so the value lies in
    :math:`[0, 2K]`. The estimator keeps the diagonal terms (V-statistic): it is always
    :math:`\ge 0` and exactly 0 when ``x`` and ``y`` are the same set. When every pooled
    sample is the same point (:math:`\bar{D} = 0`) the result is 0. The data-driven
    bandwidth needs :math:`P \ge 3`: for two samples :math:`\bar{D}` is their own
    distance and the value a constant.

    Args:
        x: first sample set, ``[n, d]`` (a 1-D tensor is read as ``[n, 1]``).
        y: second sample set, ``[m, d]``.
        num_kernels (int, optional): number of Gaussian kernels :math:`K`. (default: ``5``)
        kernel_mul (float, optional): ratio :math:`\mu` between consecutive bandwidths.
            (default: ``2.0``)
        bandwidth (float, optional): fixed centre bandwidth replacing :math:`\bar{D}`
            (the ladder is still divided by :math:`\mu^{\lfloor K/2 \rfloor}`).
            (default: ``None``, data-driven)

    Returns:
        0-d ``float64`` tensor, :math:`\mathrm{MMD}^2`.

    Shapes:
        ``x``: ``[n, d]``; ``y``: ``[m, d]``; output ``[]``.
    """
    _check_kernels(num_kernels, kernel_mul, bandwidth)
    x = _sample_set(x, "x")
    y = _sample_set(y, "y").to(x.device)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"'y' must have shape [m, d={x.shape[1]}] like 'x' "
                         f"(got {tuple(y.shape)})")
    return _mmd_batched(x.unsqueeze(0), y.unsqueeze(0), int(num_kernels),
                        float(kernel_mul), bandwidth)[0]


def mmd_per_node(gen, real, num_kernels: int = 5, kernel_mul: float = 2.0,
                 bandwidth: Optional[float] = None, reduction: str = "mean") -> Tensor:
    r"""KGDiff's distribution metric: :func:`mmd` computed separately for every node
    between its generated and its real series, then averaged over nodes.

    .. math::
        \overline{\mathrm{MMD}^2} = \frac{1}{N} \sum_{v=1}^{N}
        \mathrm{MMD}^2\big(\{g_{s,v}\}_{s=1}^{S}, \{r_{s,v}\}_{s=1}^{R}\big)

    Each sample is one series (e.g. one day) of length ``L`` treated as a point of
    :math:`\mathbb{R}^L`; the data-driven bandwidth is set per node.

    Args:
        gen: generated samples ``[S, N, L]``.
        real: real samples ``[R, N, L]``.
        num_kernels, kernel_mul, bandwidth: as in :func:`mmd`.
        reduction (str, optional): ``"mean"`` over nodes or ``"none"`` for the ``[N]``
            per-node values. (default: ``"mean"``)

    Shapes:
        ``gen``: ``[S, N, L]``; ``real``: ``[R, N, L]``; output ``[]`` or ``[N]``.
    """
    _check_kernels(num_kernels, kernel_mul, bandwidth)
    if reduction not in ("mean", "none"):
        raise ValueError(f"'reduction' must be 'mean' or 'none' (got {reduction!r})")
    g = _sample_set(gen, "gen", batched=True)
    r = _sample_set(real, "real", batched=True).to(g.device)
    if r.shape[1:] != g.shape[1:]:
        raise ValueError(f"'real' must have shape [R, N={g.shape[1]}, L={g.shape[2]}] "
                         f"like 'gen' (got {tuple(r.shape)})")
    if g.shape[1] == 0:
        raise ValueError("'gen' and 'real' have no node (N = 0): the MMD is undefined")
    vals = _mmd_batched(g.transpose(0, 1), r.transpose(0, 1), int(num_kernels),
                        float(kernel_mul), bandwidth)
    return vals.mean() if reduction == "mean" else vals


def jsd(x, y, bins: int = 50, range: Optional[Tuple[float, float]] = None,
        base: Optional[float] = 2.0) -> Tensor:
    r"""Jensen-Shannon divergence between the value histograms of two sets.

    Both sets are flattened and binned on the same ``bins`` equal-width bins spanning
    ``range`` (default: the minimum and maximum of the pooled values). With the
    normalised histograms :math:`P, Q` and :math:`M = (P + Q) / 2`:

    .. math::
        \mathrm{JSD}(P \,\|\, Q) = \tfrac12 \mathrm{KL}(P \,\|\, M)
        + \tfrac12 \mathrm{KL}(Q \,\|\, M), \qquad
        \mathrm{KL}(P \,\|\, M) = \sum_b P_b \log_{\beta} \frac{P_b}{M_b}

    with :math:`0 \log 0 = 0`. This is the *divergence*, the square of
    ``scipy.spatial.distance.jensenshannon`` (which returns the distance). In base 2 it
    lies in :math:`[0, 1]`; with ``base=None`` (natural log) in :math:`[0, \ln 2]`.

    Args:
        x: first set of values, any shape (flattened).
        y: second set of values, any shape (flattened).
        bins (int, optional): number of equal-width bins. (default: ``50``)
        range (tuple, optional): ``(low, high)`` of the bins. Values outside are not
            counted (as in ``numpy.histogram``); a set left with no value in range raises
            ``ValueError``. (default: ``None``, the pooled min / max; a constant pooled set
            uses ``(v - 0.5, v + 0.5)``)
        base (float, optional): logarithm base :math:`\beta`; ``None`` or ``math.e`` for
            nats. (default: ``2.0``, bits)

    Returns:
        0-d ``float64`` tensor.

    Shapes:
        ``x``: ``[*]``; ``y``: ``[*]``; output ``[]``.
    """
    if isinstance(bins, bool) or not isinstance(bins, numbers.Real) or int(bins) != bins \
            or bins < 1:
        raise ValueError(f"'bins' must be a positive integer (got {bins!r})")
    if base is not None and not (base > 0 and base != 1):
        raise ValueError(f"'base' must be > 0 and != 1, or None for natural log (got {base})")
    a = _as_float64(x, "x").reshape(-1).cpu()
    b = _as_float64(y, "y").reshape(-1).cpu()
    for name, v in (("x", a), ("y", b)):
        if v.numel() == 0:
            raise ValueError(f"'{name}' is empty")
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"'{name}' has non-finite values")
    if range is None:
        lo = float(min(a.min(), b.min()))
        hi = float(max(a.max(), b.max()))
    else:
        if isinstance(range, (str, bytes)) or not hasattr(range, "__len__") \
                or len(range) != 2:
            raise ValueError(f"'range' must be a (low, high) pair (got {range!r})")
        lo, hi = float(range[0]), float(range[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ValueError(f"'range' must be finite with low <= high (got {range})")
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    hists = []
    for name, v in (("x", a), ("y", b)):
        h = torch.histogram(v, bins=int(bins), range=(lo, hi)).hist
        if float(h.sum()) == 0:
            raise ValueError(f"no value of '{name}' falls in 'range' ({lo}, {hi})")
        hists.append(h / h.sum())
    p, q = hists
    mid = 0.5 * (p + q)

    def kl(u: Tensor) -> Tensor:
        pos = u > 0
        return torch.where(pos, u * torch.log(torch.where(pos, u / mid, 1.0)), 0.0).sum()

    out = 0.5 * kl(p) + 0.5 * kl(q)
    if base is not None:
        out = out / math.log(base)
    return out.clamp_min(0.0)


def crps(samples, target, mask=None, fair: bool = False) -> Tensor:
    r"""Continuous ranked probability score of an ensemble, in its energy form, averaged
    over the scored entries (lower is better; it equals the MAE for a single sample).

    For every entry with ensemble :math:`x_1, \dots, x_S` and observation :math:`y`
    (the kernel form of Gneiting & Raftery 2007; the fair variant of Ferro 2014):

    .. math::
        \mathrm{CRPS} = \frac{1}{S}\sum_{i} |x_i - y|
        - \frac{1}{2\,c}\sum_{i,j} |x_i - x_j|, \qquad
        c = \begin{cases} S^2 & \text{standard (ensemble as the forecast CDF)} \\
        S(S-1) & \text{fair / unbiased (} \texttt{fair=True} \text{)} \end{cases}

    The standard form is the CRPS of the empirical CDF of the ensemble; the fair form is
    an unbiased estimate of the CRPS of the distribution the ensemble is drawn from. The
    pairwise term is computed exactly in :math:`O(S \log S)` with the sorted ensemble,
    :math:`\sum_{i,j}|x_i - x_j| = 2\sum_k (2k - S - 1)\, x_{(k)}`. This is not CSDI's
    normalised quantile-loss approximation.

    Args:
        samples: ensemble ``[S, *]`` (``S`` samples of the target's shape).
        target: observations ``[*]``.
        mask: optional ``0/1`` tensor broadcastable to ``target``; ``1`` = scored.
        fair (bool, optional): use the unbiased :math:`S(S-1)` form (needs ``S >= 2``).
            (default: ``False``)

    Returns:
        0-d ``float64`` tensor.

    Shapes:
        ``samples``: ``[S, *]``; ``target``: ``[*]``; output ``[]``.
    """
    s = _as_float64(samples, "samples")
    t = _as_float64(target, "target").to(s.device)
    if s.dim() != t.dim() + 1 or s.shape[1:] != t.shape:
        want = ", ".join(["S"] + [str(d) for d in t.shape])
        raise ValueError(f"'samples' must have shape [{want}] (S samples of the target's "
                         f"shape; got {tuple(s.shape)})")
    n = s.shape[0]
    if n == 0 or t.numel() == 0:
        raise ValueError(f"'samples' is empty (got shape {tuple(s.shape)})")
    if fair and n < 2:
        raise ValueError(f"the fair CRPS needs at least 2 samples (got S={n})")
    m = (torch.ones_like(t, dtype=torch.bool) if mask is None
         else _score_mask(mask, t.shape, t.device))
    if bool((m & ~torch.isfinite(t)).any()):
        raise ValueError("'target' has non-finite values where the mask scores it")
    if bool((m.unsqueeze(0) & ~torch.isfinite(s)).any()):
        raise ValueError("'samples' has non-finite values where the mask scores it")
    zero = torch.zeros((), dtype=s.dtype, device=s.device)
    s = torch.where(m.unsqueeze(0), s, zero)
    t = torch.where(m, t, zero)
    skill = (s - t.unsqueeze(0)).abs().mean(0)
    srt = torch.sort(s, dim=0).values
    k = torch.arange(1, n + 1, dtype=s.dtype, device=s.device)
    k = k.view(-1, *([1] * t.dim()))
    pair_sum = 2.0 * ((2.0 * k - n - 1.0) * srt).sum(0)  # sum_{i,j} |x_i - x_j|
    spread = pair_sum / (2.0 * (n * (n - 1) if fair else n * n))
    score = torch.where(m, skill - spread, zero)
    return score.sum() / m.sum()
