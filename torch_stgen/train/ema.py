r"""Exponential moving average (EMA) of a module's trainable parameters.

The standard companion of diffusion training (DDPM, EDM): the averaged weights

.. math::
    \bar\theta_t = \beta_t\,\bar\theta_{t-1} + (1 - \beta_t)\,\theta_t, \qquad
    \beta_t = \min\Big(\beta, \frac{1 + t}{10 + t}\Big)

(the warm-up keeps the first, poor iterates from dominating a short run) are usually a
better sampler than the last iterate, whose value depends on the last few noisy steps.
"""
from typing import Dict

import torch
from torch import Tensor, nn

__all__ = ["EMA"]


def _check_shadow(shadow: Dict[str, Tensor], other: Dict[str, Tensor], what: str) -> None:
    """``other`` must hold a tensor of the same shape for every averaged parameter (a
    ``copy_`` would broadcast a ``[1, d]`` tensor into ``[n, d]`` silently)."""
    differ = sorted(set(shadow) ^ set(other))
    if differ:
        raise ValueError(f"{what} does not match the EMA's parameters (differing names: "
                         f"{differ[:5]})")
    shapes = [f"{k}: {tuple(other[k].shape)} for {tuple(v.shape)}"
              for k, v in shadow.items() if tuple(other[k].shape) != tuple(v.shape)]
    if shapes:
        raise ValueError(f"{what} does not match the EMA's parameter shapes "
                         f"({'; '.join(shapes[:5])})")


class EMA:
    r"""Shadow copy of ``module``'s trainable parameters, updated after each optimiser step.

    Args:
        module (nn.Module): the trained module.
        decay (float): :math:`\beta \in [0, 1)`. (default: ``0.999``)
        warmup (bool): use :math:`\beta_t = \min(\beta, (1 + t) / (10 + t))`.
            (default: ``True``)

    Example::

        ema = EMA(model, decay=0.99)
        for batch in loader:
            loss(model, batch).backward(); opt.step(); opt.zero_grad()
            ema.update()
        ema.copy_to(model)        # sample with the averaged weights
    """

    def __init__(self, module: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"'decay' must lie in [0, 1) (got {decay!r})")
        self.decay, self.warmup, self.num_updates = float(decay), bool(warmup), 0
        self.shadow: Dict[str, Tensor] = {
            name: p.detach().clone() for name, p in module.named_parameters()
            if p.requires_grad}
        self._module = module

    def current_decay(self) -> float:
        t = self.num_updates
        return min(self.decay, (1.0 + t) / (10.0 + t)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self) -> None:
        """Fold the module's current parameters into the average."""
        beta = self.current_decay()
        params = dict(self._module.named_parameters())
        for name, avg in self.shadow.items():
            p = params[name].detach()
            if avg.device != p.device:        # the module moved (module.to(...))
                avg = self.shadow[name] = avg.to(p.device)
            avg.lerp_(p.to(avg.dtype), 1.0 - beta)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module = None) -> None:
        """Write the averaged parameters into ``module`` (default: the tracked one)."""
        module = self._module if module is None else module
        params = dict(module.named_parameters())
        _check_shadow(self.shadow, {k: params[k] for k in self.shadow if k in params},
                      "the module's parameters")
        for name, avg in self.shadow.items():
            params[name].copy_(avg)

    def state_dict(self) -> Dict[str, object]:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    @torch.no_grad()
    def load_state_dict(self, state: Dict[str, object]) -> None:
        """Restore :meth:`state_dict` (e.g. from a training checkpoint); the shadow
        tensors keep their device."""
        _check_shadow(self.shadow, state["shadow"], "the EMA state")
        if not 0.0 <= float(state["decay"]) < 1.0:
            raise ValueError(f"the EMA state's 'decay' must lie in [0, 1) "
                             f"(got {state['decay']!r})")
        self.decay, self.warmup = float(state["decay"]), bool(state["warmup"])
        self.num_updates = int(state["num_updates"])
        for name, avg in self.shadow.items():
            avg.copy_(state["shadow"][name])

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(decay={self.decay}, warmup={self.warmup}, "
                f"num_updates={self.num_updates})")
