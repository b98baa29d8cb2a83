r"""Non-learned reconstruction baselines for incomplete coarse -> complete fine maps.

Baseline (a) of the DiffRecon benchmark: *interpolation + distributional upsampling*.

1. **Nearest-observed fill** (:func:`nearest_fill`): each missing coarse cell takes the
   mean of the observed cells at the smallest Euclidean grid distance in the same step
   and channel (ties averaged, so the fill does not depend on the scan order).
2. **Distributional upsampling** (:class:`DistributionalUpsampler`): each completed
   coarse value is split over its :math:`N \times N` fine cells with the training set's
   mean fine/coarse shares

   .. math::
       s_{c,u} = \frac{\sum_t X^{fg}_{t,c,u}}{\sum_t X^{cg}_{t,c,\pi(u)}},
       \qquad \hat X^{fg}_{t,c,u} = s_{c,u}\, \hat X^{cg}_{t,c,\pi(u)},

   where :math:`\pi(u)` is the coarse cell containing fine cell :math:`u` (ratio of sums:
   a ratio of means over the training steps, robust to steps where a coarse cell is 0).
   Blocks whose training coarse mass is 0 get uniform shares :math:`1/N^2`. The shares
   of each block sum to one, so the prediction preserves the coarse mass exactly.
"""
from typing import Optional

import torch
from torch import Tensor

from ..data.grid import coarsen, upsample

__all__ = ["nearest_fill", "DistributionalUpsampler", "InterpolationUpsampling"]


def nearest_fill(x: Tensor, mask: Tensor, chunk: int = 256) -> Tensor:
    r"""Fill missing cells with the mean of the nearest observed cells of the same map.

    Args:
        x (Tensor): maps ``[..., H, W]`` (missing entries may hold anything).
        mask (Tensor): observed mask broadcastable to ``x`` (1 observed, 0 missing).
        chunk (int, optional): maps processed at once (memory ``chunk * (H*W)^2``).

    Returns:
        Tensor ``[..., H, W]``: observed cells unchanged, missing ones filled. A map with
        no observed cell is filled with zeros.
    """
    if x.dim() < 2:
        raise ValueError(f"'x' must have shape [..., H, W] (got {tuple(x.shape)})")
    mask = torch.broadcast_to(mask, x.shape).bool()
    H, W = x.shape[-2:]
    flat_x = x.reshape(-1, H * W)
    flat_m = mask.reshape(-1, H * W)
    rows = torch.arange(H, dtype=torch.float64).repeat_interleave(W)
    cols = torch.arange(W, dtype=torch.float64).repeat(H)
    dist = (rows[:, None] - rows[None, :]) ** 2 + (cols[:, None] - cols[None, :]) ** 2
    out = flat_x.clone()
    for start in range(0, flat_x.shape[0], chunk):
        xs = flat_x[start:start + chunk].to(torch.float64)
        ms = flat_m[start:start + chunk]
        if bool(ms.all()):
            continue
        # d[b, u, v]: distance from target cell u to observed source v (inf if missing).
        d = dist.unsqueeze(0).expand(xs.shape[0], -1, -1)
        d = d.masked_fill(~ms.unsqueeze(1), float("inf"))
        dmin = d.min(dim=-1, keepdim=True).values
        nearest = (d <= dmin + 1e-9) & torch.isfinite(d)
        weight = nearest.to(torch.float64)
        count = weight.sum(-1).clamp_min(1.0)
        fill = (weight * xs.masked_fill(~ms, 0.0).unsqueeze(1)).sum(-1) / count
        res = torch.where(ms, xs, fill)
        out[start:start + chunk] = res.to(out.dtype)
    return out.reshape(x.shape)


class DistributionalUpsampler:
    r"""Split coarse values over fine cells with the training set's mean shares.

    Args:
        factor (int): magnification :math:`N` (each coarse cell covers ``N x N`` fine cells).

    Shapes:
        - fit: coarse ``[T, C, h, w]`` (optional; the sum-pooled fine maps by default),
          fine ``[T, C, h*N, w*N]``
        - predict: coarse ``[..., C, h, w]`` -> fine ``[..., C, h*N, w*N]``
    """

    def __init__(self, factor: int):
        if int(factor) < 1:
            raise ValueError(f"'factor' must be a positive integer (got {factor})")
        self.factor = int(factor)
        self.shares: Optional[Tensor] = None

    def fit(self, fine: Tensor, coarse: Optional[Tensor] = None) -> "DistributionalUpsampler":
        if fine.dim() != 4:
            raise ValueError(f"'fine' must have shape [T, C, H, W] (got {tuple(fine.shape)})")
        f = self.factor
        fine = fine.to(torch.float64)
        fine_sum = fine.sum(0)  # [C, H, W]
        coarse_sum = coarsen(fine_sum, f) if coarse is None else coarse.to(torch.float64).sum(0)
        denom = upsample(coarse_sum, f)  # repeat each coarse total over its block
        uniform = torch.full_like(fine_sum, 1.0 / (f * f))
        self.shares = torch.where(denom > 0, fine_sum / denom.clamp_min(1e-300), uniform)
        return self

    def predict(self, coarse: Tensor) -> Tensor:
        if self.shares is None:
            raise RuntimeError("DistributionalUpsampler is not fitted: call fit() first")
        if tuple(coarse.shape[-3:]) != (self.shares.shape[0], self.shares.shape[1] // self.factor,
                                        self.shares.shape[2] // self.factor):
            raise ValueError(f"'coarse' must have shape [..., C, h, w] = [..., "
                             f"{self.shares.shape[0]}, {self.shares.shape[1] // self.factor}, "
                             f"{self.shares.shape[2] // self.factor}] (got {tuple(coarse.shape)})")
        out = upsample(coarse.to(torch.float64), self.factor, shares=self.shares)
        return out.to(coarse.dtype)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(factor={self.factor}, fitted={self.shares is not None})"


class InterpolationUpsampling:
    r"""Baseline (a): :func:`nearest_fill` of the incomplete coarse map, then
    :class:`DistributionalUpsampler`.

    Example::

        base = InterpolationUpsampling(factor=2).fit(train_fine)
        fine_hat = base.predict(coarse * mask, mask)   # [T, C, 2h, 2w]
    """

    name = "interp+dist"

    def __init__(self, factor: int):
        self.upsampler = DistributionalUpsampler(factor)

    @property
    def factor(self) -> int:
        return self.upsampler.factor

    def fit(self, fine: Tensor) -> "InterpolationUpsampling":
        self.upsampler.fit(fine)
        return self

    def predict(self, coarse: Tensor, mask: Tensor) -> Tensor:
        return self.upsampler.predict(nearest_fill(coarse, mask))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(factor={self.factor})"
