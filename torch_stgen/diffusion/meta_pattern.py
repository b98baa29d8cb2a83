r"""Mean-shifted ("meta pattern") diffusion of KGDiff.

Wang, Chen, Jin, Deng, Pang, Liu & Zhao, "Knowledge Graph Guided Heterogeneity-Informed
Diffusion Model for Spatio-Temporal Generation", AAAI 2026 (eqs. 16-17).

The prior of the diffusion is centred on a learned per-node pattern :math:`f = f(\phi)`
instead of 0. With :math:`\bar\alpha_i = \prod_{s\le i}\alpha_s` (the paper's eq. 16 prints
:math:`\alpha_i` where the cumulative :math:`\bar\alpha_i` is meant):

.. math::
    x_i = \sqrt{\bar\alpha_i}\,x_0 + (1 - \sqrt{\bar\alpha_i})\,f
        + \sqrt{1 - \bar\alpha_i}\,\epsilon \qquad (16)

which is the marginal of the Markov transition
:math:`q(x_i \mid x_{i-1}) = \mathcal N\big(\sqrt{\alpha_i}\,x_{i-1} + (1-\sqrt{\alpha_i})f,
\ \beta_i I\big)`, with posterior

.. math::
    \mu_i = \frac{\sqrt{\bar\alpha_{i-1}}\beta_i}{1-\bar\alpha_i}x_0
        + \frac{\sqrt{\alpha_i}(1-\bar\alpha_{i-1})}{1-\bar\alpha_i}x_i
        + \Big(1 + \frac{(\sqrt{\bar\alpha_i}-1)(\sqrt{\alpha_i}+\sqrt{\bar\alpha_{i-1}})}
        {1-\bar\alpha_i}\Big) f, \qquad
    \tilde\beta_i = \frac{1-\bar\alpha_{i-1}}{1-\bar\alpha_i}\beta_i \qquad (17)

and :math:`x_T \sim \mathcal N(f, I)`.

**Equivalence with standard DDPM.** With :math:`y = x - f`, eq. 16 reads
:math:`y_i = \sqrt{\bar\alpha_i}y_0 + \sqrt{1-\bar\alpha_i}\epsilon` (DDPM eq. 4) and the
transition :math:`y_i = \sqrt{\alpha_i}y_{i-1} + \sqrt{\beta_i}\epsilon`. The DDPM posterior
mean :math:`c_0 y_0 + c_i y_i` of :math:`y` gives :math:`\mu_i = c_0 x_0 + c_i x_i +
(1 - c_0 - c_i) f`, and :math:`1 - c_0 - c_i` equals the coefficient of :math:`f` in eq. 17
because :math:`(1-\sqrt{\bar\alpha_i})(\sqrt{\alpha_i} + \sqrt{\bar\alpha_{i-1}}) =
\sqrt{\bar\alpha_{i-1}}\beta_i + \sqrt{\alpha_i}(1 - \bar\alpha_{i-1})`. So sampling
runs any DDPM / DDIM scheduler on :math:`y = x - f` and adds :math:`f` back, and EDM is
applied to :math:`x_0 - f`.
"""
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .ddpm import (DDIMScheduler, DDPMScheduler, _check_loss_batch, _expand_as, _fill_missing,
                   _loss_timesteps, _masked_mse, _prepare_sampling, _randn)
from .edm import edm_loss as _edm_loss
from .edm import edm_sampler as _edm_sampler

__all__ = ["MetaPatternDiffusion"]


class MetaPatternDiffusion(nn.Module):
    r"""Mean-shifted diffusion whose prior is centred on a meta pattern :math:`f(\phi)`
    (KGDiff eqs. 16-17; see the module docstring for the equations and the equivalence
    with DDPM on :math:`x - f`).

    The pattern head is a sub-module, so it trains jointly with the denoiser through
    :meth:`loss` (the network sees :math:`x_i`, which contains :math:`(1-\sqrt{\bar\alpha_i})f`);
    ``aux_weight > 0`` adds :math:`\lambda\,\|x_0 - f\|^2` (``0`` = the paper's pure joint
    training).

    The model convention for :meth:`loss` / :meth:`sample`: ``model_fn(x_i, t)`` receives the
    data-space noisy sample :math:`x_i` and a ``[B]`` LongTensor ``t``; its output follows the
    scheduler's ``prediction_type`` for the shifted process: :math:`\epsilon`, :math:`x_0`
    (data space, ``"sample"``) or :math:`v = \sqrt{\bar\alpha_i}\epsilon -
    \sqrt{1-\bar\alpha_i}(x_0 - f)` (``"v_prediction"``).

    Args:
        scheduler (DDPMScheduler | DDIMScheduler | Tensor): the scheduler used for sampling
            (its betas define the process), or a ``[T]`` tensor of betas (a
            :class:`DDPMScheduler` with those betas is built).
        pattern_head (nn.Module, optional): maps the guidance :math:`\phi` to :math:`f`
            (e.g. ``[N, d] -> [N, T, F]``, to be arranged as ``x0``'s per-sample shape).
            (default: ``None``: pass ``f`` directly)
        aux_weight (float): weight :math:`\lambda \ge 0` of the auxiliary pattern loss.
            (default: ``0.0``)

    Shapes:
        - **x0, x_t:** ``[B, *]`` (e.g. ``[B, T, N, F]``)
        - **f:** broadcastable to ``x0``: ``[B, *]``, or one pattern for every sample
          (e.g. ``[T, N, F]`` for ``x0`` of shape ``[B, T, N, F]``)
        - **t:** ``[B]``
    """

    def __init__(self, scheduler: Union[DDPMScheduler, DDIMScheduler, Tensor],
                 pattern_head: Optional[nn.Module] = None, aux_weight: float = 0.0):
        super().__init__()
        if isinstance(scheduler, (DDPMScheduler, DDIMScheduler)):
            self.scheduler = scheduler
        elif isinstance(scheduler, (Tensor, list, tuple)):
            self.scheduler = DDPMScheduler(trained_betas=scheduler)
        else:
            raise TypeError(f"'scheduler' must be a DDPMScheduler, DDIMScheduler or a [T] "
                            f"tensor of betas (got {type(scheduler).__name__})")
        if pattern_head is not None and not isinstance(pattern_head, nn.Module):
            raise TypeError(f"'pattern_head' must be an nn.Module or None "
                            f"(got {type(pattern_head).__name__})")
        if not aux_weight >= 0:
            raise ValueError(f"'aux_weight' must be >= 0 (got {aux_weight})")
        self.pattern_head = pattern_head
        self.aux_weight = float(aux_weight)

    # ------------------------------------------------------------------ schedule
    @property
    def betas(self) -> Tensor:
        """``[T]`` float64 betas of the process."""
        return self.scheduler.betas

    @property
    def alphas_cumprod(self) -> Tensor:
        r"""``[T]`` float64 :math:`\bar\alpha_i`."""
        return self.scheduler.alphas_cumprod

    @property
    def num_timesteps(self) -> int:
        return self.scheduler.config.num_train_timesteps

    def pattern(self, phi: Tensor) -> Tensor:
        r"""The meta pattern :math:`f = f(\phi)` from the pattern head."""
        if self.pattern_head is None:
            raise ValueError("this MetaPatternDiffusion has no 'pattern_head': pass 'f' "
                             "instead of 'phi'")
        return self.pattern_head(phi)

    def _resolve_f(self, x: Tensor, f: Optional[Tensor], phi: Optional[Tensor],
                   takes_phi: bool = True, name: str = "f") -> Tensor:
        """``f`` (or ``pattern(phi)``) checked to broadcast to ``x``; ``takes_phi``: whether
        the calling method accepts ``phi`` (the message names only what it takes)."""
        if not takes_phi and f is None:
            raise ValueError(f"'{name}' (the pattern, broadcastable to {tuple(x.shape)}) is "
                             f"required")
        if (f is None) == (phi is None):
            raise ValueError("pass exactly one of 'f' (the pattern) and 'phi' (its guidance)")
        if f is None:
            f = self.pattern(phi)
        if not isinstance(f, Tensor):
            raise TypeError(f"'{name}' must be a tensor (got {type(f).__name__})")
        try:
            torch.broadcast_shapes(f.shape, x.shape)
            ok = torch.broadcast_shapes(f.shape, x.shape) == x.shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(f"'{name}' must broadcast to the sample shape {tuple(x.shape)} "
                             f"(got {tuple(f.shape)})")
        return f.to(x.dtype)

    # ------------------------------------------------------------------ eqs. 16-17
    def q_sample(self, x0: Tensor, f: Tensor, t, noise: Optional[Tensor] = None,
                 generator: Optional[torch.Generator] = None) -> Tensor:
        r"""Sample the shifted forward marginal, eq. 16:

        .. math::
            x_i = \sqrt{\bar\alpha_i}\,x_0 + (1-\sqrt{\bar\alpha_i})\,f
                + \sqrt{1-\bar\alpha_i}\,\epsilon

        Shapes:
            - **x0:** ``[B, *]``; **f:** broadcastable to ``x0``; **t:** ``[B]`` or scalar;
              **noise:** ``[B, *]``; **output:** ``[B, *]``
        """
        f = self._resolve_f(x0, f, None, takes_phi=False)
        if noise is None:
            noise = _randn(x0.shape, generator, x0.device, x0.dtype)
        # y_i = DDPM marginal of y_0 = x_0 - f; x_i = y_i + f
        return self.scheduler.add_noise(x0 - f, noise, t) + f

    def posterior(self, x0: Tensor, x_t: Tensor, f: Tensor, t):
        r"""Posterior :math:`q(x_{i-1} \mid x_i, x_0)` of eq. 17, in closed form.

        Uses the full chain (the previous step of ``i`` is ``i - 1``).

        Returns:
            tuple: ``(mean, var)``, ``mean`` shaped like ``x_t`` and ``var`` as
            ``[B, 1, ..., 1]`` (in ``x_t``'s dtype; computed in float64). At ``i = 0`` the
            posterior is the point mass at :math:`x_0` (``var = 0``).

        Shapes:
            - **x0, x_t:** ``[B, *]``; **f:** broadcastable; **t:** ``[B]`` or scalar
        """
        if x0.shape != x_t.shape:
            raise ValueError(f"'x_t' must have the shape of 'x0' {tuple(x0.shape)} "
                             f"(got {tuple(x_t.shape)})")
        f = self._resolve_f(x_t, f, None, takes_phi=False)
        t = self.scheduler._per_sample(t, x_t, "t")
        ab = self.alphas_cumprod[t]
        ab_prev = torch.where(t > 0, self.alphas_cumprod[(t - 1).clamp(min=0)],
                              torch.ones_like(ab))
        alpha = ab / ab_prev
        beta = 1.0 - alpha
        c_x0 = ab_prev.sqrt() * beta / (1.0 - ab)
        c_xt = alpha.sqrt() * (1.0 - ab_prev) / (1.0 - ab)
        c_f = 1.0 + (ab.sqrt() - 1.0) * (alpha.sqrt() + ab_prev.sqrt()) / (1.0 - ab)
        var = (1.0 - ab_prev) / (1.0 - ab) * beta
        mean = (_expand_as(c_x0, x_t) * x0 + _expand_as(c_xt, x_t) * x_t
                + _expand_as(c_f, x_t) * f)
        return mean, _expand_as(var, x_t)

    # ------------------------------------------------------------------ training
    def loss(self, model_fn: Callable[[Tensor, Tensor], Tensor], x0: Tensor,
             phi: Optional[Tensor] = None, f: Optional[Tensor] = None,
             generator: Optional[torch.Generator] = None, mask: Optional[Tensor] = None,
             t: Optional[Tensor] = None, noise: Optional[Tensor] = None,
             return_parts: bool = False):
        r"""Joint denoising loss on the shifted process (+ optional pattern loss):

        .. math::
            L = \big\|m\odot(\text{model}(x_i, i) - y)\big\|^2 / \textstyle\sum m
                + \lambda\,\|m \odot (x_0 - f)\|^2 / \textstyle\sum m

        with :math:`x_i` from eq. 16, :math:`i \sim \mathcal U\{0..T-1\}` and :math:`y` =
        :math:`\epsilon`, :math:`x_0` or :math:`v` (shifted) per ``prediction_type``.

        Args:
            model_fn (callable): ``model_fn(x_i, t) -> output``.
            x0 (Tensor): clean data.
            phi (Tensor, optional): guidance; ``f = pattern_head(phi)``.
            f (Tensor, optional): the pattern itself (instead of ``phi``).
            generator (torch.Generator, optional): for ``t`` and :math:`\epsilon`.
            mask (Tensor, optional): 1 where the error counts. Where it is 0, ``x0`` is
                replaced by the pattern :math:`f` before noising (residual 0), so a
                missing value (NaN included) never enters the model's input.
            t (LongTensor, optional): ``[B]`` timesteps instead of random ones.
            noise (Tensor, optional): :math:`\epsilon`.
            return_parts (bool): also return ``(denoising_loss, aux_loss)``.

        Returns:
            Tensor: scalar loss (or ``(loss, denoising_loss, aux_loss)``).
        """
        B = _check_loss_batch(x0)
        f = self._resolve_f(x0, f, phi)
        t = _loss_timesteps(t, B, self.num_timesteps, generator, x0.device, name="t")
        if noise is None:
            noise = _randn(x0.shape, generator, x0.device, x0.dtype)
        elif noise.shape != x0.shape:
            raise ValueError(f"'noise' must have the shape of 'x0' {tuple(x0.shape)} "
                             f"(got {tuple(noise.shape)})")
        x0 = _fill_missing(x0, mask, f)     # a missing entry enters as the pattern
        x_t = self.q_sample(x0, f, t, noise)
        out = model_fn(x_t, t)
        kind = self.scheduler.config.prediction_type
        if kind == "sample":
            target = x0
        else:
            target = self.scheduler.training_target(x0 - f, noise, t)
        denoise = _masked_mse(out, target, mask)
        aux = _masked_mse(f.expand_as(x0), x0, mask) if self.aux_weight > 0 else \
            denoise.new_zeros(())
        total = denoise + self.aux_weight * aux
        return (total, denoise, aux) if return_parts else total

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, model_fn: Callable[[Tensor, Tensor], Tensor], f: Tensor,
               shape: Optional[Sequence[int]] = None,
               scheduler: Union[DDPMScheduler, DDIMScheduler, None] = None,
               num_inference_steps: Optional[int] = None,
               generator: Optional[torch.Generator] = None, x_T: Optional[Tensor] = None,
               eta: Optional[float] = None, progress: bool = False) -> Tensor:
        r"""Reverse chain from :math:`x_T \sim \mathcal N(f, I)` (eq. 17 by the DDPM
        scheduler, or DDIM eq. 12, on :math:`y = x - f`), under ``torch.no_grad()``.

        Args:
            model_fn (callable): ``model_fn(x_i, t) -> output`` (see the class docstring).
            f (Tensor): the meta pattern (e.g. ``self.pattern(phi)``).
            shape (sequence of int, optional): ``[B, *]``; defaults to ``x_T.shape`` or
                ``f.shape``.
            scheduler (optional): a DDPM / DDIM scheduler with the same betas; defaults to
                ``self.scheduler``.
            num_inference_steps (int, optional): calls ``scheduler.set_timesteps``.
            generator (torch.Generator, optional): for :math:`x_T` and the step noise.
            x_T (Tensor, optional): the start (already including ``f``).
            eta (float, optional): DDIM :math:`\eta`.
            progress (bool): show a tqdm bar.

        Returns:
            Tensor: samples :math:`x_0` of shape ``shape``.
        """
        sched = self.scheduler if scheduler is None else scheduler
        if not isinstance(sched, (DDPMScheduler, DDIMScheduler)):
            raise TypeError(f"'scheduler' must be a DDPMScheduler or DDIMScheduler "
                            f"(got {type(sched).__name__})")
        if sched is not self.scheduler and not torch.allclose(sched.betas, self.betas,
                                                              rtol=1e-6, atol=0):
            raise ValueError("'scheduler' must use the same betas as this "
                             "MetaPatternDiffusion")
        if not isinstance(f, Tensor):
            raise TypeError(f"'f' (the pattern) must be a tensor (got {type(f).__name__})")
        if shape is None:
            shape = x_T.shape if x_T is not None else f.shape
        shape = tuple(int(s) for s in shape)
        if x_T is not None and tuple(x_T.shape) != shape:
            raise ValueError(f"'x_T' must have shape {shape} (got {tuple(x_T.shape)})")
        ref = x_T if x_T is not None else f
        f = self._resolve_f(torch.empty(shape, dtype=ref.dtype, device=ref.device), f, None,
                            takes_phi=False)
        if x_T is None:
            x_T = f + _randn(shape, generator, f.device, f.dtype) * sched.init_noise_sigma
        step_kwargs = _prepare_sampling(sched, num_inference_steps, eta)
        prediction = sched.config.prediction_type
        x = x_T
        B = shape[0]
        for t in tqdm(sched.timesteps.tolist(), disable=not progress, desc="sampling"):
            t_batch = torch.full((B,), t, dtype=torch.long, device=x.device)
            out = model_fn(x, t_batch)
            if prediction == "sample":
                out = out - f
            y_prev = sched.step(out, t, x - f, generator=generator, **step_kwargs).prev_sample
            x = y_prev + f
        return x

    # ------------------------------------------------------------------ EDM
    def edm_loss(self, precond: Callable, x0: Tensor, f: Optional[Tensor] = None,
                 phi: Optional[Tensor] = None, mask: Optional[Tensor] = None,
                 return_parts: bool = False, aux_f: Optional[Tensor] = None, **kwargs):
        r"""EDM loss (:func:`~torch_stgen.diffusion.edm_loss`) on the residual
        :math:`x_0 - f`, plus ``aux_weight`` times :math:`\|x_0 - f\|^2` (or
        :math:`\|x_0 - f_{aux}\|^2` with ``aux_f``: the pattern the auxiliary term fits when
        the diffusion is centred on something else, e.g. KGDiff's ``pattern_shrink``).

        ``precond`` denoises the residual: :math:`D(y_0 + n;\sigma) \approx y_0`. Where
        ``mask`` is 0 the residual is set to 0 (``x0`` to :math:`f`) before noising.
        ``kwargs`` (``P_mean``, ``P_std``, ``generator``, ``sigma``, ``noise``, conditioning)
        go to :func:`~torch_stgen.diffusion.edm_loss`.
        """
        f = self._resolve_f(x0, f, phi)
        x0 = _fill_missing(x0, mask, f)     # a missing entry enters as the pattern
        if mask is not None:                # checked above; as bool, not checked again
            mask = torch.as_tensor(mask, device=x0.device) != 0
        denoise = _edm_loss(precond, x0 - f, mask=mask, **kwargs)
        target_f = f if aux_f is None else self._resolve_f(x0, aux_f, None, takes_phi=False,
                                                            name="aux_f")
        aux = _masked_mse(target_f.expand_as(x0), x0, mask) if self.aux_weight > 0 else \
            denoise.new_zeros(())
        total = denoise + self.aux_weight * aux
        return (total, denoise, aux) if return_parts else total

    @torch.no_grad()
    def edm_sample(self, denoiser: Callable, f: Tensor, latents: Tensor, **kwargs) -> Tensor:
        r"""EDM Heun sampling (:func:`~torch_stgen.diffusion.edm_sampler`) of the residual
        :math:`y = x - f`, returning :math:`x_0 = y_0 + f`; i.e. the start is
        :math:`x \sim \mathcal N(f, \sigma_{max}^2 I)`.

        Args:
            denoiser (callable): residual denoiser :math:`D(y, \sigma, **cond)`.
            f (Tensor): the meta pattern, broadcastable to ``latents``.
            latents (Tensor): standard normal ``[B, *]``.
            **kwargs: passed to :func:`~torch_stgen.diffusion.edm_sampler`.
        """
        f = self._resolve_f(latents, f, None, takes_phi=False)
        return _edm_sampler(denoiser, latents, **kwargs) + f

    def extra_repr(self) -> str:
        return (f"num_timesteps={self.num_timesteps}, "
                f"prediction_type={self.scheduler.config.prediction_type!r}, "
                f"aux_weight={self.aux_weight}")
