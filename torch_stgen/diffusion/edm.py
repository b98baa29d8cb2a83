r"""EDM: preconditioning, training loss, :math:`\sigma` grid and the Heun sampler.

Karras, Aittala, Aila & Laine, "Elucidating the Design Space of Diffusion-Based Generative
Models", NeurIPS 2022, https://arxiv.org/abs/2206.00364 (Table 1, eq. 2, Algorithm 2).

The denoiser is :math:`D_\theta(x;\sigma)`, trained so that :math:`D(x_0 + n; \sigma)
\approx x_0` for :math:`n \sim \mathcal N(0, \sigma^2 I)`; sampling integrates the
probability-flow ODE :math:`dx/d\sigma = (x - D(x;\sigma))/\sigma` from :math:`\sigma_{max}`
to 0. As in the reference implementation, the preconditioning is a thin wrapper around a
raw network and the sampler is a plain function over the :math:`\sigma` levels.
"""
import math
import warnings
from typing import Callable, Dict, Optional, Union

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._checks import check_int
from .ddpm import _check_loss_batch, _fill_missing, _masked_mse, _randn

__all__ = ["EDMPrecond", "edm_loss", "edm_sigma_steps", "edm_sampler"]


def _sigma_like(sigma, x: Tensor, name: str = "sigma") -> Tensor:
    """``sigma`` (float, 0-dim, ``[1]`` or ``[B]``) as a ``[B, 1, ..., 1]`` tensor in x's dtype."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.dim() > 1:
        if sigma.shape[0] == x.shape[0] and sigma[0].numel() == 1:
            sigma = sigma.reshape(-1)
        else:
            raise ValueError(f"'{name}' must be a scalar or have shape [B] = [{x.shape[0]}] "
                             f"(got {tuple(sigma.shape)})")
    sigma = sigma.reshape(-1)
    if sigma.numel() == 1:
        sigma = sigma.expand(x.shape[0])
    elif sigma.numel() != x.shape[0]:
        raise ValueError(f"'{name}' must be a scalar or have shape [B] = [{x.shape[0]}] "
                         f"(got {tuple(sigma.shape)})")
    if not bool((sigma > 0).all()) or not bool(torch.isfinite(sigma).all()):
        raise ValueError(f"'{name}' must be finite and > 0")
    return sigma.reshape(-1, *([1] * (x.dim() - 1)))


class EDMPrecond(nn.Module):
    r"""EDM preconditioning of a raw network :math:`F_\theta` (Karras et al. 2022, Table 1
    and eq. 7):

    .. math::
        D_\theta(x; \sigma) = c_{skip}(\sigma)\,x + c_{out}(\sigma)\,
        F_\theta\big(c_{in}(\sigma)\,x;\ c_{noise}(\sigma)\big),

        c_{skip} = \frac{\sigma_d^2}{\sigma^2 + \sigma_d^2}, \quad
        c_{out} = \frac{\sigma\,\sigma_d}{\sqrt{\sigma^2 + \sigma_d^2}}, \quad
        c_{in} = \frac{1}{\sqrt{\sigma^2 + \sigma_d^2}}, \quad
        c_{noise} = \tfrac{1}{4}\ln\sigma.

    The raw network is called as ``raw_net(c_in * x, c_noise, **cond)`` with ``c_noise`` a
    ``[B]`` tensor, and its input is cast to the dtype of its parameters (its "own" dtype);
    the skip connection and output scaling run in the dtype of ``x``.

    Args:
        raw_net (nn.Module): :math:`F_\theta`, returns a tensor shaped like its input.
        sigma_data (float): :math:`\sigma_d`, the data standard deviation. (default: ``1.0``)

    Shapes:
        - **x:** ``[B, *]`` (e.g. ``[B, C, H, W]`` or ``[B, T, N, F]``)
        - **sigma:** scalar or ``[B]``
        - **output:** ``[B, *]``
    """

    def __init__(self, raw_net: nn.Module, sigma_data: float = 1.0):
        super().__init__()
        if not callable(raw_net):
            raise TypeError(f"'raw_net' must be callable (got {type(raw_net).__name__})")
        if not 0 < sigma_data < math.inf:
            raise ValueError(f"'sigma_data' must be a finite number > 0 (got {sigma_data})")
        self.raw_net = raw_net
        self.sigma_data = float(sigma_data)

    def get_extra_state(self) -> Dict[str, float]:
        r""":math:`\sigma_d` travels with ``state_dict()``: a model may fit it from data
        (KGDiff's ``sigma_data=None``), and a reloaded model must precondition alike."""
        return {"sigma_data": self.sigma_data}

    def set_extra_state(self, state: Dict[str, float]) -> None:
        sd = float(state["sigma_data"])
        if not 0 < sd < math.inf:          # the constructor's check: inf makes outputs NaN
            raise ValueError(f"state 'sigma_data' must be a finite number > 0 (got {sd})")
        self.sigma_data = sd

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "_extra_state"
        if key not in state_dict:          # written before sigma_data was part of the state
            warnings.warn(f"state dict has no {key!r}: keeping sigma_data="
                          f"{self.sigma_data} (set it by hand if the saved model fitted "
                          f"another)", stacklevel=2)
            state_dict[key] = self.get_extra_state()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def coefficients(self, sigma: Tensor):
        r"""Return ``(c_skip, c_out, c_in, c_noise)`` of Table 1 for ``sigma``
        (same shape as ``sigma``)."""
        sd = self.sigma_data
        sigma = torch.as_tensor(sigma)
        denom = sigma ** 2 + sd ** 2
        return sd ** 2 / denom, sigma * sd / denom.sqrt(), 1.0 / denom.sqrt(), sigma.log() / 4

    def _net_dtype(self, default: torch.dtype) -> torch.dtype:
        if isinstance(self.raw_net, nn.Module):
            for p in self.raw_net.parameters():
                if p.is_floating_point():
                    return p.dtype
        return default

    def forward(self, x: Tensor, sigma: Union[float, Tensor], **cond) -> Tensor:
        """Denoise ``x`` at noise level ``sigma``; ``cond`` is passed to ``raw_net``."""
        if not isinstance(x, Tensor) or x.dim() < 1 or not x.is_floating_point():
            raise ValueError(f"'x' must be a floating tensor of shape [B, *] "
                             f"(got {getattr(x, 'shape', type(x).__name__)})")
        sigma = _sigma_like(sigma, x)
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        dtype = self._net_dtype(x.dtype)
        F_x = self.raw_net((c_in * x).to(dtype), c_noise.reshape(-1).to(dtype), **cond)
        if not isinstance(F_x, Tensor) or F_x.shape != x.shape:
            raise ValueError(f"'raw_net' must return a tensor of shape {tuple(x.shape)} "
                             f"(got {getattr(F_x, 'shape', type(F_x).__name__)})")
        return c_skip * x + c_out * F_x.to(x.dtype)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(raw_net={self.raw_net.__class__.__name__}, "
                f"sigma_data={self.sigma_data})")


def edm_loss(precond: Callable, x0: Tensor, P_mean: float = -1.2, P_std: float = 1.2,
             mask: Optional[Tensor] = None, generator: Optional[torch.Generator] = None,
             sigma: Optional[Tensor] = None, noise: Optional[Tensor] = None,
             sigma_data: Optional[float] = None, **cond) -> Tensor:
    r"""EDM training loss (Karras et al. 2022, eq. 2 with Table 1's choices):

    .. math::
        \ln\sigma \sim \mathcal N(P_{mean}, P_{std}^2), \quad
        \lambda(\sigma) = \frac{\sigma^2 + \sigma_d^2}{(\sigma\,\sigma_d)^2}, \quad
        L = \mathbb E\big[\lambda(\sigma)\,\|D_\theta(x_0 + n; \sigma) - x_0\|^2\big],
        \ n \sim \mathcal N(0, \sigma^2 I).

    Returns the (masked) mean over elements of the weighted squared error.

    Args:
        precond (callable): :math:`D_\theta(x, \sigma, **cond)`, e.g. :class:`EDMPrecond`.
        x0 (Tensor): clean data.
        P_mean (float): mean of :math:`\ln\sigma`. (default: ``-1.2``)
        P_std (float): std of :math:`\ln\sigma`. (default: ``1.2``)
        mask (Tensor, optional): 1 where the error counts (broadcast to ``x0``). Entries
            where it is 0 are set to 0 before noising, so a missing value (NaN included)
            never enters the denoiser's input.
        generator (torch.Generator, optional): for :math:`\sigma` and :math:`n`.
        sigma (Tensor, optional): ``[B]`` noise levels instead of random ones.
        noise (Tensor, optional): unit-variance noise (scaled by :math:`\sigma`).
        sigma_data (float, optional): :math:`\sigma_d`; defaults to ``precond.sigma_data``.
        **cond: passed to ``precond``.

    Returns:
        Tensor: scalar loss.

    Shapes:
        - **x0:** ``[B, *]``; **mask:** broadcastable to ``x0``; **sigma:** ``[B]``
    """
    B = _check_loss_batch(x0)
    if not P_std > 0:
        raise ValueError(f"'P_std' must be > 0 (got {P_std})")
    sd = sigma_data if sigma_data is not None else getattr(precond, "sigma_data", None)
    if sd is None:
        raise ValueError("'sigma_data' must be given when 'precond' has no 'sigma_data'")
    try:
        ok = 0 < float(sd) < math.inf
    except (TypeError, ValueError, RuntimeError):
        ok = False
    if not ok:
        raise ValueError(f"'sigma_data' must be a finite number > 0 (got {sd!r})")
    if sigma is None:
        rnd = _randn((B,), generator, x0.device, x0.dtype)
        sigma = (rnd * P_std + P_mean).exp()
    sigma = _sigma_like(sigma, x0)
    if noise is None:
        noise = _randn(x0.shape, generator, x0.device, x0.dtype)
    elif noise.shape != x0.shape:
        raise ValueError(f"'noise' must have the shape of 'x0' {tuple(x0.shape)} "
                         f"(got {tuple(noise.shape)})")
    weight = (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2
    x0 = _fill_missing(x0, mask)
    D = precond(x0 + sigma * noise, sigma.reshape(-1), **cond)
    if D.shape != x0.shape:
        raise ValueError(f"'precond' must return shape {tuple(x0.shape)} (got {tuple(D.shape)})")
    # weight * (D - x0)^2 == (sqrt(weight) * (D - x0))^2
    return _masked_mse(weight.sqrt() * D, weight.sqrt() * x0, mask)


def edm_sigma_steps(num_steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0,
                    rho: float = 7.0) -> Tensor:
    r"""The EDM time steps (Karras et al. 2022, eq. 5 / Algorithm 2), with
    :math:`\sigma_N = 0` appended:

    .. math::
        \sigma_{i<N} = \Big(\sigma_{max}^{1/\rho} + \tfrac{i}{N-1}
        \big(\sigma_{min}^{1/\rho} - \sigma_{max}^{1/\rho}\big)\Big)^{\rho}, \qquad
        \sigma_N = 0.

    Args:
        num_steps (int): :math:`N \ge 1` (``N = 1`` gives ``[sigma_max, 0]``). (default: ``18``)
        sigma_min (float): (default: ``0.002``)
        sigma_max (float): (default: ``80``)
        rho (float): (default: ``7``)

    Returns:
        Tensor: ``float64`` tensor of shape ``[num_steps + 1]``, decreasing to 0.
    """
    num_steps = check_int("num_steps", num_steps, 1)     # numpy integers too
    if not 0 < sigma_min < sigma_max or not math.isfinite(sigma_max):
        raise ValueError(f"need 0 < 'sigma_min' < 'sigma_max' < inf "
                         f"(got {sigma_min}, {sigma_max})")
    if not rho > 0:
        raise ValueError(f"'rho' must be > 0 (got {rho})")
    if num_steps == 1:
        t = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        i = torch.arange(num_steps, dtype=torch.float64)
        hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
        t = (hi + i / (num_steps - 1) * (lo - hi)) ** rho
    return torch.cat([t, t.new_zeros(1)])


@torch.no_grad()
def edm_sampler(denoiser: Callable, latents: Tensor, num_steps: int = 18,
                sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                S_churn: float = 0.0, S_min: float = 0.0, S_max: float = float("inf"),
                S_noise: float = 1.0, generator: Optional[torch.Generator] = None,
                progress: bool = False, **cond) -> Tensor:
    r"""Heun's 2nd-order stochastic sampler (Karras et al. 2022, Algorithm 2).

    With :math:`\sigma_i` from :func:`edm_sigma_steps`, :math:`x_0 = \sigma_0 \cdot`
    ``latents`` and, for :math:`i = 0..N-1`:

    .. math::
        \gamma_i = \begin{cases}\min(S_{churn}/N, \sqrt2 - 1) & \sigma_i\in[S_{min}, S_{max}]
        \\ 0 & \text{otherwise}\end{cases},\quad
        \hat\sigma_i = \sigma_i(1 + \gamma_i),\quad
        \hat x_i = x_i + \sqrt{\hat\sigma_i^2 - \sigma_i^2}\,S_{noise}\,\epsilon_i,

        d_i = \frac{\hat x_i - D(\hat x_i; \hat\sigma_i)}{\hat\sigma_i},\quad
        x_{i+1} = \hat x_i + (\sigma_{i+1} - \hat\sigma_i) d_i,

    and, if :math:`\sigma_{i+1} \ne 0`, the Heun correction
    :math:`x_{i+1} = \hat x_i + (\sigma_{i+1} - \hat\sigma_i)\tfrac12(d_i + d_i')` with
    :math:`d_i' = (x_{i+1} - D(x_{i+1}; \sigma_{i+1}))/\sigma_{i+1}`: :math:`2N - 1`
    denoiser evaluations (35 for :math:`N = 18`).

    The sampler arithmetic runs in ``float64`` (as the reference ``generate.py``); the
    denoiser is called with inputs cast to ``latents.dtype`` and ``sigma`` as a ``[B]``
    tensor, and its output is promoted back to ``float64``. Runs under ``torch.no_grad()``.

    Args:
        denoiser (callable): :math:`D(x, \sigma, **cond)`, e.g. :class:`EDMPrecond`.
        latents (Tensor): standard normal noise (scaled by :math:`\sigma_{max}` here).
        num_steps, sigma_min, sigma_max, rho: see :func:`edm_sigma_steps`.
        S_churn, S_min, S_max, S_noise (float): stochasticity (Algorithm 2); the default
            ``S_churn=0`` gives the deterministic sampler.
        generator (torch.Generator, optional): for the churn noise.
        progress (bool): show a tqdm bar. (default: ``False``)
        **cond: passed to ``denoiser``.

    Returns:
        Tensor: samples in ``latents.dtype``.

    Shapes:
        - **latents / output:** ``[B, *]``
    """
    if not isinstance(latents, Tensor) or latents.dim() < 1 or not latents.is_floating_point():
        raise ValueError(f"'latents' must be a floating tensor of shape [B, *] "
                         f"(got {getattr(latents, 'shape', type(latents).__name__)})")
    if not (0 <= S_churn < math.inf and 0 <= S_noise < math.inf):
        raise ValueError(f"'S_churn' and 'S_noise' must be finite and >= 0 "
                         f"(got {S_churn}, {S_noise})")
    dtype, device, B = latents.dtype, latents.device, latents.shape[0]
    t_steps = edm_sigma_steps(num_steps, sigma_min, sigma_max, rho).tolist()

    def D(x: Tensor, sigma: float) -> Tensor:
        s = torch.full((B,), sigma, dtype=dtype, device=device)
        out = denoiser(x.to(dtype), s, **cond)
        if out.shape != x.shape:
            raise ValueError(f"'denoiser' must return shape {tuple(x.shape)} "
                             f"(got {tuple(out.shape)})")
        return out.to(torch.float64)

    x_next = latents.to(torch.float64) * t_steps[0]
    steps = list(zip(t_steps[:-1], t_steps[1:]))
    for i, (t_cur, t_next) in enumerate(tqdm(steps, disable=not progress, desc="EDM")):
        x_cur = x_next
        gamma = min(S_churn / num_steps, math.sqrt(2) - 1) if S_min <= t_cur <= S_max else 0.0
        t_hat = t_cur + gamma * t_cur
        if gamma > 0:
            eps = _randn(x_cur.shape, generator, device, torch.float64)
            x_hat = x_cur + math.sqrt(t_hat ** 2 - t_cur ** 2) * S_noise * eps
        else:
            x_hat = x_cur
        d_cur = (x_hat - D(x_hat, t_hat)) / t_hat
        x_next = x_hat + (t_next - t_hat) * d_cur
        if i < num_steps - 1:
            d_prime = (x_next - D(x_next, t_next)) / t_next
            x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next.to(dtype)
