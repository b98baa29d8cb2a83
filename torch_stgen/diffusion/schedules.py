r"""Noise (variance) schedules :math:`\beta_1, \dots, \beta_T` for discrete-time diffusion.

Three schedules are provided, all returned as ``float64`` tensors so that the cumulative
product :math:`\bar\alpha_t = \prod_{s \le t} (1 - \beta_s)` is accurate for long chains:

* ``"linear"`` - Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020
  (https://arxiv.org/abs/2006.11239), Sec. 4: :math:`\beta_t` linear from ``1e-4`` to ``0.02``.
* ``"quadratic"`` - the schedule of CSDI (Tashiro et al., https://arxiv.org/abs/2107.03502)
  and PriSTI (Liu et al., https://arxiv.org/abs/2302.09746):
  :math:`\beta_t = \big(\mathrm{linspace}(\sqrt{\beta_{start}}, \sqrt{\beta_{end}}, T)_t\big)^2`
  with defaults ``1e-4`` .. ``0.5`` (diffusers calls it ``"scaled_linear"``).
* ``"cosine"`` - Nichol & Dhariwal, "Improved Denoising Diffusion Probabilistic Models",
  ICML 2021 (https://arxiv.org/abs/2102.09672), eq. 17:

  .. math::
      \bar\alpha_t = \frac{g(t)}{g(0)}, \quad
      g(t) = \cos^2\!\Big(\frac{t/T + s}{1 + s}\cdot\frac{\pi}{2}\Big), \quad s = 0.008,
      \qquad \beta_t = \min\Big(1 - \frac{\bar\alpha_t}{\bar\alpha_{t-1}}, 0.999\Big).
"""
import math
from typing import Optional

import torch
from torch import Tensor

from .._checks import check_int

__all__ = ["make_beta_schedule", "alphas_cumprod_from_betas"]

#: default (beta_start, beta_end) per schedule
_DEFAULTS = {"linear": (1e-4, 0.02), "quadratic": (1e-4, 0.5)}
_KINDS = ("linear", "cosine", "quadratic")


def make_beta_schedule(kind: str = "linear", num_steps: int = 1000,
                       beta_start: Optional[float] = None, beta_end: Optional[float] = None,
                       *, cosine_s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    r"""Return the variances :math:`\beta_1..\beta_T` of a diffusion schedule.

    .. math::
        \text{linear:}\ \beta_t = \beta_{start} + \tfrac{t-1}{T-1}(\beta_{end} - \beta_{start})
        \qquad
        \text{quadratic:}\ \beta_t = \Big(\sqrt{\beta_{start}} + \tfrac{t-1}{T-1}
        (\sqrt{\beta_{end}} - \sqrt{\beta_{start}})\Big)^2

    and the cosine schedule of Nichol & Dhariwal (2021), eq. 17 (see the module docstring).
    The linear and quadratic end points are *not* rescaled with ``num_steps`` (as in
    DDPM / diffusers); pass ``beta_start`` / ``beta_end`` explicitly for short chains.

    Args:
        kind (str): ``"linear"``, ``"quadratic"`` or ``"cosine"``. (default: ``"linear"``)
        num_steps (int): number of diffusion steps :math:`T \ge 1`. (default: ``1000``)
        beta_start (float, optional): first beta (linear / quadratic); defaults to ``1e-4``.
        beta_end (float, optional): last beta; defaults to ``0.02`` (linear) or ``0.5``
            (quadratic). Not used by ``"cosine"`` (passing it raises).
        cosine_s (float): offset :math:`s` of the cosine schedule. (default: ``0.008``)
        max_beta (float): clip of the cosine schedule's betas. (default: ``0.999``)

    Returns:
        Tensor: ``float64`` tensor of shape ``[num_steps]`` with values in ``(0, 1)``.
    """
    if kind not in _KINDS:
        raise ValueError(f"'kind' must be one of {_KINDS} (got {kind!r})")
    num_steps = check_int("num_steps", num_steps, 1)     # numpy integers too

    if kind == "cosine":
        if beta_start is not None or beta_end is not None:
            raise ValueError("'beta_start'/'beta_end' are not used by the 'cosine' schedule "
                             "(use 'max_beta' to change its clip)")
        if not 0.0 < max_beta < 1.0:
            raise ValueError(f"'max_beta' must be in (0, 1) (got {max_beta})")
        if not 0 <= cosine_s < math.inf:
            raise ValueError(f"'cosine_s' must be a finite number >= 0 (got {cosine_s})")
        steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        g = torch.cos((steps + cosine_s) / (1.0 + cosine_s) * math.pi / 2) ** 2
        betas = 1.0 - g[1:] / g[:-1]
        return betas.clamp(max=max_beta)

    default_start, default_end = _DEFAULTS[kind]
    beta_start = default_start if beta_start is None else float(beta_start)
    beta_end = default_end if beta_end is None else float(beta_end)
    for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"'{name}' must be in (0, 1) (got {value})")
    if beta_end < beta_start:
        raise ValueError(f"'beta_end' ({beta_end}) must be >= 'beta_start' ({beta_start})")

    if kind == "linear":
        return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    return torch.linspace(math.sqrt(beta_start), math.sqrt(beta_end), num_steps,
                          dtype=torch.float64) ** 2


def alphas_cumprod_from_betas(betas: Tensor) -> Tensor:
    r"""Cumulative products :math:`\bar\alpha_t = \prod_{s=1}^t (1 - \beta_s)` (DDPM eq. 4),
    computed in ``float64``.

    Args:
        betas (Tensor): ``[T]`` variances in ``(0, 1]``.

    Shapes:
        - **input:** ``[T]``
        - **output:** ``[T]`` (``float64``)
    """
    betas = check_betas(betas)
    return torch.cumprod(1.0 - betas, dim=0)


def check_betas(betas, name: str = "betas") -> Tensor:
    """Validate a 1-D schedule and return it as a ``float64`` CPU tensor."""
    # non-tensors straight to float64 (a list of Python floats would pass through float32)
    betas = (betas.detach() if isinstance(betas, Tensor)
             else torch.as_tensor(betas, dtype=torch.float64)).to("cpu", torch.float64)
    if betas.dim() != 1 or betas.numel() == 0:
        raise ValueError(f"'{name}' must have shape [T] with T >= 1 (got {tuple(betas.shape)})")
    if not torch.isfinite(betas).all() or (betas <= 0).any() or (betas > 1).any():
        raise ValueError(f"'{name}' must be finite and in (0, 1] "
                         f"(got min {betas.min().item()}, max {betas.max().item()})")
    if 1.0 - betas[0].item() == 1.0:
        raise ValueError(f"'{name}'[0] = {betas[0].item()!r} is below float64 resolution: "
                         f"alpha_bar_0 would be exactly 1, a noiseless t = 0 that the "
                         f"samplers divide by (1 - alpha_bar_0); use a beta >= 1e-15")
    return betas
