"""Helpers shared by the diffusion tests."""
import math

import torch


def normal_quantiles(n):
    """Deterministic 'standard normal' points (exact mean 0, std ~1)."""
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return (math.sqrt(2) * torch.erfinv(2 * u - 1)).float()[:, None]


def toy_model(x, t):
    """A simple deterministic model_fn for the golden numbers."""
    tt = t.to(x.dtype).view(-1, *([1] * (x.dim() - 1))) / 1000
    return torch.tanh(x) * (0.5 + tt) + 0.1 * tt
