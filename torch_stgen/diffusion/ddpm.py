r"""DDPM and DDIM schedulers with the diffusers contract, and generic loss / sampling helpers.

* Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020,
  https://arxiv.org/abs/2006.11239 (eqs. 4, 6, 7, 11).
* Song, Meng & Ermon, "Denoising Diffusion Implicit Models", ICLR 2021,
  https://arxiv.org/abs/2010.02502 (eqs. 12, 16).

The schedulers follow the diffusers contract (``set_timesteps``, ``timesteps``,
``step(model_output, timestep, sample) -> (prev_sample, pred_original_sample)``,
``add_noise``, ``get_velocity``, a frozen ``config``) and reproduce diffusers'
``DDPMScheduler`` / ``DDIMScheduler`` numbers, but keep the schedule in ``float64`` and do
**not** clip the predicted :math:`x_0` by default: spatio-temporal data is not in
:math:`[-1, 1]`.
"""
import logging
import math
from collections.abc import Mapping
from typing import Callable, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._checks import check_binary_mask, check_int, is_integer_dtype
from .schedules import check_betas, make_beta_schedule

__all__ = ["FrozenConfig", "SchedulerOutput", "DDPMScheduler", "DDIMScheduler",
           "diffusion_loss", "sample"]

log = logging.getLogger(__name__)

_PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
_SPACINGS = ("leading", "linspace", "trailing")


def _rebuild_config(data: dict) -> "FrozenConfig":
    return FrozenConfig(**data)


class FrozenConfig(Mapping):
    """A read-only mapping with attribute access (the diffusers ``FrozenDict`` habit)."""

    def __init__(self, **kwargs):
        object.__setattr__(self, "_data", dict(kwargs))

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def __getattr__(self, key):
        if key == "_data":          # not set yet (an instance being unpickled / copied)
            raise AttributeError(key)
        try:
            return self._data[key]
        except KeyError:
            raise AttributeError(key) from None

    def __reduce__(self):
        # copy.deepcopy / pickle rebuild through __init__ (attribute setting is frozen)
        return (_rebuild_config, (dict(self._data),))

    def __setattr__(self, key, value):
        raise AttributeError(f"config is frozen: cannot set '{key}'")

    def __delattr__(self, key):
        raise AttributeError(f"config is frozen: cannot delete '{key}'")

    def __repr__(self):
        items = ", ".join(f"{k}={v!r}" for k, v in self._data.items())
        return f"FrozenConfig({items})"


class SchedulerOutput(NamedTuple):
    """Result of a scheduler ``step``: unpacks as ``(prev_sample, pred_original_sample)``."""
    prev_sample: Tensor
    pred_original_sample: Tensor


def _randn(shape, generator: Optional[torch.Generator], device, dtype) -> Tensor:
    """Standard normal noise drawn on the generator's device, then moved (diffusers'
    ``randn_tensor`` behaviour, so that CPU generators reproduce across devices)."""
    gen_device = generator.device if generator is not None else device
    noise = torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=dtype)
    return noise.to(device)


def _variance_noise(model_output: Tensor, sample: Tensor,
                    generator: Optional[torch.Generator],
                    variance_noise: Optional[Tensor]) -> Tensor:
    """The noise of a stochastic step: ``variance_noise`` if given (checked), else a draw
    from ``generator``; giving both is an error."""
    if variance_noise is not None and generator is not None:
        raise ValueError("pass either 'generator' or 'variance_noise', not both")
    if variance_noise is None:
        return _randn(model_output.shape, generator, model_output.device, model_output.dtype)
    if variance_noise.shape != sample.shape:
        raise ValueError(f"'variance_noise' must have shape {tuple(sample.shape)} "
                         f"(got {tuple(variance_noise.shape)})")
    return variance_noise


def _scalar_timestep(timestep, name: str = "timestep") -> int:
    if isinstance(timestep, Tensor):
        if timestep.numel() == 0:
            raise ValueError(f"'{name}' must be a scalar timestep (got an empty tensor)")
        flat = timestep.reshape(-1)
        if not bool((flat == flat[0]).all()):
            raise ValueError(f"'{name}' must be one timestep shared by the batch in step() "
                             f"(got {flat.tolist()[:8]}...)")
        timestep = flat[0].item()
    if float(timestep) != int(timestep):
        raise ValueError(f"'{name}' must be an integer timestep (got {timestep})")
    return int(timestep)


def _expand_as(coef: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample ``[B]`` (or scalar) coefficient to broadcast against ``x``."""
    coef = coef.to(device=x.device, dtype=x.dtype)
    return coef.reshape(coef.shape[0], *([1] * (x.dim() - 1)))


class _DiscreteScheduler:
    r"""Shared machinery of the DDPM and DDIM schedulers: the schedule (DDPM eq. 4),
    timestep spacing, the forward process and the prediction-type conversions."""

    order = 1
    init_noise_sigma = 1.0

    def __init__(self, num_train_timesteps: int, beta_schedule: str,
                 beta_start: Optional[float], beta_end: Optional[float],
                 trained_betas, prediction_type: str, clip_sample: bool,
                 clip_sample_range: float, timestep_spacing: str, steps_offset: int,
                 **extra):
        if prediction_type not in _PREDICTION_TYPES:
            raise ValueError(f"'prediction_type' must be one of {_PREDICTION_TYPES} "
                             f"(got {prediction_type!r})")
        if timestep_spacing not in _SPACINGS:
            raise ValueError(f"'timestep_spacing' must be one of {_SPACINGS} "
                             f"(got {timestep_spacing!r})")
        if not 0 < clip_sample_range < math.inf:
            raise ValueError(f"'clip_sample_range' must be a finite number > 0 "
                             f"(got {clip_sample_range})")
        if steps_offset < 0:
            raise ValueError(f"'steps_offset' must be >= 0 (got {steps_offset})")
        if trained_betas is not None:
            betas = check_betas(trained_betas, "trained_betas")
            num_train_timesteps = betas.numel()
            beta_schedule = "custom"
        else:
            betas = make_beta_schedule(beta_schedule, num_train_timesteps, beta_start, beta_end)
            if beta_schedule != "cosine":
                beta_start, beta_end = betas[0].item(), betas[-1].item()
        self.config = FrozenConfig(
            num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
            beta_start=beta_start, beta_end=beta_end,
            # the betas themselves for a custom schedule, so Scheduler(**config) rebuilds it
            trained_betas=None if trained_betas is None else tuple(betas.tolist()),
            prediction_type=prediction_type,
            clip_sample=bool(clip_sample), clip_sample_range=float(clip_sample_range),
            timestep_spacing=timestep_spacing, steps_offset=int(steps_offset), **extra)
        #: ``[T]`` float64 variances :math:`\beta_t`
        self.betas = betas
        #: ``[T]`` float64 :math:`\alpha_t = 1 - \beta_t`
        self.alphas = 1.0 - betas
        #: ``[T]`` float64 :math:`\bar\alpha_t` (DDPM eq. 4)
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        if prediction_type == "epsilon" and self.alphas_cumprod[-1].item() == 0.0:
            raise ValueError("a schedule whose last alpha_bar is 0 (a beta of 1: zero terminal "
                             "SNR) cannot be sampled with prediction_type='epsilon' (x0 = "
                             "(x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar) divides by 0); "
                             "use 'v_prediction' or 'sample'")
        self.num_inference_steps: Optional[int] = None
        self.custom_timesteps = False
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.long)

    # ------------------------------------------------------------------ timesteps
    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def set_timesteps(self, num_inference_steps: Optional[int] = None,
                      device: Union[str, torch.device, None] = None,
                      timesteps: Optional[Sequence[int]] = None) -> None:
        r"""Choose the (descending) timesteps used for sampling.

        Spacing as in diffusers / Lin et al. 2024 (Table 2), with :math:`T` training steps
        and :math:`n` inference steps: ``"leading"`` :math:`t_k = k\lfloor T/n\rfloor +
        \text{offset}`, ``"linspace"`` :math:`\mathrm{round}(\mathrm{linspace}(0, T-1, n))`,
        ``"trailing"`` :math:`\mathrm{round}(T - k T/n) - 1`.

        Args:
            num_inference_steps (int, optional): number of sampling steps :math:`n \le T`.
            device: where to put :attr:`timesteps`.
            timesteps (sequence of int, optional): custom strictly descending timesteps
                (instead of ``num_inference_steps``).
        """
        T = self.config.num_train_timesteps
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of 'num_inference_steps' and 'timesteps'")
        if timesteps is not None:
            ts = torch.as_tensor(list(timesteps))
            if ts.numel() and not is_integer_dtype(ts):
                raise ValueError(f"'timesteps' must be integers (got {ts.dtype}: a float "
                                 f"timestep would be truncated)")
            ts = ts.long()
            if ts.dim() != 1 or ts.numel() == 0:
                raise ValueError(f"'timesteps' must be a non-empty 1-D sequence (got {timesteps})")
            if (ts[1:] >= ts[:-1]).any():
                raise ValueError(f"'timesteps' must be strictly descending (got {ts.tolist()})")
            if ts[0] >= T or ts[-1] < 0:
                raise ValueError(f"'timesteps' must lie in [0, {T - 1}] (got {ts.tolist()})")
            self.custom_timesteps = True
            self.num_inference_steps = ts.numel()
            self.timesteps = ts.to(device)
            return
        try:
            n = check_int("num_inference_steps", num_inference_steps, 1)
        except ValueError:
            n = None
        if n is None or n > T:
            raise ValueError(f"'num_inference_steps' must be an int in [1, {T}] "
                             f"(got {num_inference_steps!r})")
        spacing = self.config.timestep_spacing
        if n == 1 and spacing != "trailing" and T > 1:
            raise ValueError(f"'num_inference_steps'=1 with {spacing!r} spacing runs its only "
                             f"step at t={self.config.steps_offset if spacing == 'leading' else 0}"
                             f" of {T}: the sampler would return its starting noise; use 2 or "
                             f"more steps, or timestep_spacing='trailing' (t={T - 1})")
        if spacing == "linspace":
            ts = torch.linspace(0, T - 1, n, dtype=torch.float64).round().flip(0)
        elif spacing == "leading":
            ratio = T // n
            ts = (torch.arange(n, dtype=torch.float64) * ratio).flip(0) + self.config.steps_offset
        else:  # trailing: round(T - k T / n) - 1, k = 0..n-1. The arange (diffusers' form,
            # kept for its exact values at half-integers) can pick up an (n+1)-th value, -1,
            # through round-off: only its first n are the schedule
            ratio = T / n
            ts = (torch.round(torch.arange(T, 0, -ratio, dtype=torch.float64)) - 1)[:n]
        ts = ts.long()
        if ts.min() < 0:        # cannot happen with the spacings above; guards edits
            raise ValueError(f"{spacing!r} spacing gave a negative timestep for n={n}")
        if ts.max() >= T:
            raise ValueError(f"'steps_offset'={self.config.steps_offset} pushes timesteps past "
                             f"{T - 1} with {n} inference steps")
        self.custom_timesteps = False
        self.num_inference_steps = n
        self.timesteps = ts.to(device)

    def previous_timestep(self, timestep) -> int:
        """The timestep that follows ``timestep`` in :attr:`timesteps` (``-1`` after the
        last one), or ``timestep - 1`` before :meth:`set_timesteps` was called."""
        t = _scalar_timestep(timestep)
        if not 0 <= t < self.config.num_train_timesteps:
            raise ValueError(f"'timestep' must be in [0, {self.config.num_train_timesteps - 1}] "
                             f"(got {t})")
        if self.num_inference_steps is None:
            return t - 1
        idx = (self.timesteps.cpu() == t).nonzero()
        if idx.numel() == 0:
            raise ValueError(f"'timestep' {t} is not one of the scheduler's timesteps "
                             f"{self.timesteps.tolist()}")
        idx = idx[0, 0].item()
        return -1 if idx == self.timesteps.numel() - 1 else int(self.timesteps[idx + 1])

    def scale_model_input(self, sample: Tensor, timestep=None) -> Tensor:
        """Identity (diffusers interchangeability)."""
        return sample

    # ------------------------------------------------------------------ forward process
    def _per_sample(self, timesteps, x: Tensor, name: str = "timesteps") -> Tensor:
        t = torch.as_tensor(timesteps, device="cpu")
        if t.numel() and not is_integer_dtype(t):
            raise ValueError(f"'{name}' must be integers (got {t.dtype}: a float timestep "
                             f"would be truncated)")
        if isinstance(x, Tensor) and not x.is_floating_point():
            raise ValueError(f"the sample must be a floating tensor (got {x.dtype}: the "
                             f"schedule's coefficients would be truncated to it)")
        t = t.long().reshape(-1)
        T = self.config.num_train_timesteps
        if t.numel() == 0 or (t < 0).any() or (t >= T).any():
            raise ValueError(f"'{name}' must be integers in [0, {T - 1}] (got {t.tolist()[:8]})")
        if x.dim() == 0:
            raise ValueError("the sample must have shape [B, *] (got a scalar)")
        if t.numel() == 1:
            return t.expand(x.shape[0])
        if t.numel() != x.shape[0]:
            raise ValueError(f"'{name}' must have shape [B] with B = {x.shape[0]} or be a "
                             f"scalar (got {tuple(torch.as_tensor(timesteps).shape)})")
        return t

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps) -> Tensor:
        r"""Sample the forward marginal (DDPM eq. 4):

        .. math::
            x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon

        Args:
            original_samples (Tensor): clean data :math:`x_0`.
            noise (Tensor): :math:`\epsilon`, same shape.
            timesteps (LongTensor or int): one timestep per sample.

        Shapes:
            - **original_samples, noise:** ``[B, *]``
            - **timesteps:** ``[B]`` or scalar
            - **output:** ``[B, *]``
        """
        if noise.shape != original_samples.shape:
            raise ValueError(f"'noise' must have the shape of 'original_samples' "
                             f"{tuple(original_samples.shape)} (got {tuple(noise.shape)})")
        t = self._per_sample(timesteps, original_samples)
        ab = self.alphas_cumprod[t]
        a = _expand_as(ab.sqrt(), original_samples)
        s = _expand_as((1 - ab).sqrt(), original_samples)
        return a * original_samples + s * noise

    def get_velocity(self, sample: Tensor, noise: Tensor, timesteps) -> Tensor:
        r"""The v-prediction target (Salimans & Ho 2022, https://arxiv.org/abs/2202.00512):
        :math:`v = \sqrt{\bar\alpha_t}\,\epsilon - \sqrt{1-\bar\alpha_t}\,x_0`.

        Shapes:
            - **sample (x_0), noise:** ``[B, *]``; **timesteps:** ``[B]`` or scalar
        """
        if noise.shape != sample.shape:
            raise ValueError(f"'noise' must have the shape of 'sample' {tuple(sample.shape)} "
                             f"(got {tuple(noise.shape)})")
        t = self._per_sample(timesteps, sample)
        ab = self.alphas_cumprod[t]
        return _expand_as(ab.sqrt(), sample) * noise - _expand_as((1 - ab).sqrt(), sample) * sample

    def training_target(self, x0: Tensor, noise: Tensor, timesteps) -> Tensor:
        r"""Regression target for the configured ``prediction_type``: :math:`\epsilon`
        (DDPM eq. 14's simplified loss), :math:`x_0`, or :math:`v` (:meth:`get_velocity`).

        Shapes:
            - **x0, noise:** ``[B, *]``; **timesteps:** ``[B]`` or scalar; **output:** ``[B, *]``
        """
        kind = self.config.prediction_type
        if kind == "epsilon":
            if noise.shape != x0.shape:
                raise ValueError(f"'noise' must have the shape of 'x0' {tuple(x0.shape)} "
                                 f"(got {tuple(noise.shape)})")
            return noise
        if kind == "sample":
            return x0
        return self.get_velocity(x0, noise, timesteps)

    # ------------------------------------------------------------------ reverse helpers
    def _alpha_prod(self, t: int) -> float:
        return self.alphas_cumprod[t].item() if t >= 0 else self._final_alpha_cumprod()

    def _final_alpha_cumprod(self) -> float:
        return 1.0

    def _check_step_inputs(self, model_output: Tensor, sample: Tensor) -> None:
        if not isinstance(model_output, Tensor) or not isinstance(sample, Tensor):
            raise TypeError("'model_output' and 'sample' must be tensors")
        if model_output.shape != sample.shape:
            raise ValueError(f"'model_output' must have the shape of 'sample' "
                             f"{tuple(sample.shape)} (got {tuple(model_output.shape)})")

    def _predict_x0_eps(self, model_output: Tensor, sample: Tensor, alpha_prod_t: float):
        r"""Convert the model output to :math:`(\hat x_0, \hat\epsilon)` with
        :math:`x_t = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\epsilon` (DDPM eq. 4 / 15)."""
        a, b = alpha_prod_t ** 0.5, (1.0 - alpha_prod_t) ** 0.5
        kind = self.config.prediction_type
        if kind == "epsilon":
            x0, eps = (sample - b * model_output) / a, model_output
        elif kind == "sample":
            x0 = model_output
            eps = (sample - a * x0) / b
        else:
            x0 = a * sample - b * model_output
            eps = a * model_output + b * sample
        if self.config.clip_sample:
            r = self.config.clip_sample_range
            x0 = x0.clamp(-r, r)
        return x0, eps

    def __repr__(self) -> str:
        c = self.config
        return (f"{self.__class__.__name__}(num_train_timesteps={c.num_train_timesteps}, "
                f"beta_schedule={c.beta_schedule!r}, prediction_type={c.prediction_type!r}, "
                f"num_inference_steps={self.num_inference_steps})")


class DDPMScheduler(_DiscreteScheduler):
    r"""Ancestral DDPM sampler (Ho et al. 2020) with the diffusers contract.

    Forward process (eq. 4) and posterior (eqs. 6-7) for the step from timestep :math:`t`
    to the previous scheduled timestep :math:`s` (:math:`s = t-1` when all steps are used,
    otherwise the strided step with :math:`\alpha_t := \bar\alpha_t/\bar\alpha_s`):

    .. math::
        q(x_t \mid x_0) = \mathcal{N}\big(\sqrt{\bar\alpha_t}\,x_0, (1-\bar\alpha_t)I\big)
        \qquad (4)

        \tilde\mu_t(x_t, x_0) = \frac{\sqrt{\bar\alpha_{s}}\,\beta_t}{1-\bar\alpha_t}x_0
        + \frac{\sqrt{\alpha_t}(1-\bar\alpha_{s})}{1-\bar\alpha_t}x_t, \qquad
        \tilde\beta_t = \frac{1-\bar\alpha_{s}}{1-\bar\alpha_t}\beta_t \qquad (6, 7)

    and the ancestral step (eq. 11 for the epsilon parameterisation)
    :math:`x_{s} = \tilde\mu_t(x_t, \hat x_0) + \sigma_t z` with
    :math:`\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta)/\sqrt{\bar\alpha_t}`,
    :math:`\sigma_t^2 = \tilde\beta_t` (``"fixed_small"``) or :math:`\beta_t`
    (``"fixed_large"``) and no noise at :math:`t = 0`.

    Args:
        num_train_timesteps (int): :math:`T`. (default: ``1000``)
        beta_schedule (str): ``"linear"``, ``"quadratic"`` or ``"cosine"`` (see
            :func:`~torch_stgen.diffusion.make_beta_schedule`). (default: ``"linear"``)
        beta_start (float, optional): (default: ``1e-4``; unused by ``"cosine"``)
        beta_end (float, optional): (default: ``0.02`` linear, ``0.5`` quadratic)
        trained_betas (Tensor, optional): explicit ``[T]`` betas (overrides the above).
        prediction_type (str): what the model predicts: ``"epsilon"``, ``"sample"``
            (:math:`x_0`) or ``"v_prediction"``. (default: ``"epsilon"``)
        variance_type (str): ``"fixed_small"`` (:math:`\tilde\beta_t`) or ``"fixed_large"``
            (:math:`\beta_t`). (default: ``"fixed_small"``)
        clip_sample (bool): clamp :math:`\hat x_0` to ``[-clip_sample_range,
            clip_sample_range]``. (default: ``False``)
        clip_sample_range (float): (default: ``1.0``)
        timestep_spacing (str): ``"leading"``, ``"linspace"`` or ``"trailing"``.
            (default: ``"leading"``)
        steps_offset (int): added to ``"leading"`` timesteps. (default: ``0``)

    Shapes:
        - **model_output, sample:** ``[B, *]`` (e.g. ``[B, T, N, F]``)
        - **prev_sample, pred_original_sample:** ``[B, *]``
    """

    _VARIANCE_TYPES = ("fixed_small", "fixed_large")

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "linear",
                 beta_start: Optional[float] = None, beta_end: Optional[float] = None,
                 prediction_type: str = "epsilon", variance_type: str = "fixed_small",
                 clip_sample: bool = False, clip_sample_range: float = 1.0,
                 timestep_spacing: str = "leading", steps_offset: int = 0,
                 trained_betas=None):
        if variance_type not in self._VARIANCE_TYPES:
            raise ValueError(f"'variance_type' must be one of {self._VARIANCE_TYPES} "
                             f"(got {variance_type!r})")
        super().__init__(num_train_timesteps, beta_schedule, beta_start, beta_end,
                         trained_betas, prediction_type, clip_sample, clip_sample_range,
                         timestep_spacing, steps_offset, variance_type=variance_type)

    def posterior_coefficients(self, timestep):
        r"""Return ``(c_x0, c_xt, variance)`` of eqs. 6-7 for the step leaving ``timestep``
        (``variance`` is :math:`\tilde\beta_t` or :math:`\beta_t` per ``variance_type``),
        as python floats computed in float64."""
        t = _scalar_timestep(timestep)
        prev_t = self.previous_timestep(t)
        ab_t, ab_prev = self._alpha_prod(t), self._alpha_prod(prev_t)
        alpha_t = ab_t / ab_prev
        beta_t = 1.0 - alpha_t
        c_x0 = ab_prev ** 0.5 * beta_t / (1.0 - ab_t)
        c_xt = alpha_t ** 0.5 * (1.0 - ab_prev) / (1.0 - ab_t)
        if self.config.variance_type == "fixed_small":
            var = max((1.0 - ab_prev) / (1.0 - ab_t) * beta_t, 1e-20)
        else:
            var = beta_t
        return c_x0, c_xt, var

    def step(self, model_output: Tensor, timestep, sample: Tensor,
             generator: Optional[torch.Generator] = None,
             variance_noise: Optional[Tensor] = None,
             return_dict: bool = True) -> Union[SchedulerOutput, Tuple[Tensor, Tensor]]:
        r"""One ancestral step :math:`x_t \to x_{s}` (eqs. 6, 7, 11).

        Args:
            model_output (Tensor): network output for ``sample`` at ``timestep``.
            timestep (int or Tensor): current timestep (one for the whole batch).
            sample (Tensor): current :math:`x_t`.
            generator (torch.Generator, optional): for the variance noise :math:`z`.
            variance_noise (Tensor, optional): :math:`z` given explicitly (not with
                ``generator``).
            return_dict (bool, optional): ``False`` returns a plain tuple, as diffusers'
                ``return_dict=False`` (``[0]`` is ``prev_sample`` either way).
                (default: ``True``)

        Returns:
            SchedulerOutput: ``(prev_sample, pred_original_sample)``.
        """
        self._check_step_inputs(model_output, sample)
        t = _scalar_timestep(timestep)
        c_x0, c_xt, var = self.posterior_coefficients(t)
        x0, _ = self._predict_x0_eps(model_output, sample, self._alpha_prod(t))
        prev = c_x0 * x0 + c_xt * sample
        # no noise on the last step (DDPM Algorithm 2: z = 0 at t = 1), also when the
        # schedule ends above t = 0 ('trailing', steps_offset, custom timesteps), where
        # fixed_large's beta_t would otherwise noise the returned sample
        if self.previous_timestep(t) >= 0:
            prev = prev + var ** 0.5 * _variance_noise(model_output, sample, generator,
                                                       variance_noise)
        out = SchedulerOutput(prev, x0)
        return out if return_dict else tuple(out)


class DDIMScheduler(_DiscreteScheduler):
    r"""DDIM sampler (Song et al. 2021) with the diffusers contract.

    Generalised step from timestep :math:`t` to the previous scheduled timestep :math:`s`
    (eq. 12), with :math:`\sigma_t(\eta)` of eq. 16 (:math:`\eta = 0`: deterministic DDIM,
    :math:`\eta = 1`: DDPM's :math:`\tilde\beta_t`):

    .. math::
        x_{s} = \sqrt{\bar\alpha_{s}}\,\hat x_0
        + \sqrt{1 - \bar\alpha_{s} - \sigma_t^2}\;\hat\epsilon + \sigma_t z,
        \qquad
        \sigma_t = \eta\sqrt{\frac{1-\bar\alpha_{s}}{1-\bar\alpha_t}}
        \sqrt{1 - \frac{\bar\alpha_t}{\bar\alpha_{s}}}

    where the previous timestep of the last step has :math:`\bar\alpha_s = 1`
    (``set_alpha_to_one=True``) or :math:`\bar\alpha_0`.

    Args:
        num_train_timesteps, beta_schedule, beta_start, beta_end, trained_betas,
            prediction_type, clip_sample, clip_sample_range, timestep_spacing, steps_offset:
            as in :class:`DDPMScheduler`.
        eta (float): default :math:`\eta` of :meth:`step`. (default: ``0.0``)
        set_alpha_to_one (bool): :math:`\bar\alpha` after the last step is 1.
            (default: ``True``)

    Note:
        Before :meth:`set_timesteps` is called, all :math:`T` timesteps are used.
        The previous timestep is the next entry of :attr:`timesteps`, so ``"linspace"`` and
        ``"trailing"`` spacings step between the listed timesteps (diffusers' DDIM always
        steps by :math:`\lfloor T/n \rfloor`; both agree for ``"leading"``).

    Shapes:
        - **model_output, sample:** ``[B, *]``
        - **prev_sample, pred_original_sample:** ``[B, *]``
    """

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "linear",
                 beta_start: Optional[float] = None, beta_end: Optional[float] = None,
                 prediction_type: str = "epsilon", clip_sample: bool = False,
                 clip_sample_range: float = 1.0, timestep_spacing: str = "leading",
                 steps_offset: int = 0, eta: float = 0.0, set_alpha_to_one: bool = True,
                 trained_betas=None):
        if not eta >= 0:
            raise ValueError(f"'eta' must be >= 0 (got {eta})")
        super().__init__(num_train_timesteps, beta_schedule, beta_start, beta_end,
                         trained_betas, prediction_type, clip_sample, clip_sample_range,
                         timestep_spacing, steps_offset, eta=float(eta),
                         set_alpha_to_one=bool(set_alpha_to_one))

    def _final_alpha_cumprod(self) -> float:
        return 1.0 if self.config.set_alpha_to_one else self.alphas_cumprod[0].item()

    def step(self, model_output: Tensor, timestep, sample: Tensor, eta: Optional[float] = None,
             generator: Optional[torch.Generator] = None,
             variance_noise: Optional[Tensor] = None,
             return_dict: bool = True) -> Union[SchedulerOutput, Tuple[Tensor, Tensor]]:
        r"""One DDIM step :math:`x_t \to x_s` (eqs. 12, 16).

        Args:
            model_output (Tensor): network output for ``sample`` at ``timestep``.
            timestep (int or Tensor): current timestep (one for the whole batch).
            sample (Tensor): current :math:`x_t`.
            eta (float, optional): :math:`\eta`; defaults to ``config.eta``.
            generator (torch.Generator, optional): for :math:`z` when :math:`\eta > 0`.
            variance_noise (Tensor, optional): :math:`z` given explicitly.
            return_dict (bool, optional): ``False`` returns a plain tuple, as diffusers'
                ``return_dict=False``. (default: ``True``)

        Returns:
            SchedulerOutput: ``(prev_sample, pred_original_sample)``.
        """
        self._check_step_inputs(model_output, sample)
        eta = self.config.eta if eta is None else float(eta)
        if not eta >= 0:
            raise ValueError(f"'eta' must be >= 0 (got {eta})")
        t = _scalar_timestep(timestep)
        prev_t = self.previous_timestep(t)
        ab_t, ab_prev = self._alpha_prod(t), self._alpha_prod(prev_t)
        x0, eps = self._predict_x0_eps(model_output, sample, ab_t)
        variance = (1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev)
        std = eta * variance ** 0.5
        direction2 = 1.0 - ab_prev - std ** 2
        if direction2 < -1e-12:
            raise ValueError(f"'eta'={eta} is too large for the step {t} -> {prev_t}: "
                             f"sigma_t^2 exceeds 1 - alpha_bar_prev (use eta <= 1)")
        direction = max(direction2, 0.0) ** 0.5
        prev = ab_prev ** 0.5 * x0 + direction * eps
        if eta > 0:
            prev = prev + std * _variance_noise(model_output, sample, generator,
                                                variance_noise)
        out = SchedulerOutput(prev, x0)
        return out if return_dict else tuple(out)


Scheduler = Union[DDPMScheduler, DDIMScheduler]


def _masked_mse(pred: Tensor, target: Tensor, mask: Optional[Tensor], name: str = "mask"
                ) -> Tensor:
    if pred.shape != target.shape:
        raise ValueError(f"model output must have the shape of its target {tuple(target.shape)} "
                         f"(got {tuple(pred.shape)})")
    err = (pred - target) ** 2
    if mask is None:
        return err.mean()
    try:
        mask = torch.broadcast_to(mask.to(err.dtype), err.shape)
    except RuntimeError:
        raise ValueError(f"'{name}' must broadcast to {tuple(err.shape)} "
                         f"(got {tuple(mask.shape)})") from None
    # missing entries score 0 even when the model's output there is NaN or inf; an
    # all-missing batch gives 0 (no observed entry to score), never NaN
    err = torch.where(mask != 0, err, torch.zeros((), dtype=err.dtype, device=err.device))
    return (err * mask).sum() / mask.sum().clamp(min=1.0)


def _fill_missing(x: Tensor, mask: Optional[Tensor], value: Union[float, Tensor] = 0.0,
                  name: str = "mask") -> Tensor:
    """``x`` with the entries where ``mask == 0`` replaced by ``value`` (broadcast to
    ``x``): what a missing entry holds (NaN, a stored 0, any number) never reaches a
    model's input. ``mask=None`` returns ``x``."""
    if mask is None:
        return x
    mask = torch.as_tensor(mask, device=x.device)
    try:
        keep = torch.broadcast_to(mask != 0, x.shape)
    except RuntimeError:
        raise ValueError(f"'{name}' must broadcast to {tuple(x.shape)} "
                         f"(got {tuple(mask.shape)})") from None
    check_binary_mask(name, mask)       # a -1 or NaN weight would bend the loss silently
    value = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    return torch.where(keep, x, value)


def _check_loss_batch(x0) -> int:
    """``x0`` of a denoising loss: a non-empty floating ``[B, *]`` tensor; returns ``B``."""
    if not isinstance(x0, Tensor) or x0.dim() < 1:
        raise ValueError(f"'x0' must be a tensor of shape [B, *] (got {getattr(x0, 'shape', x0)})")
    if not x0.is_floating_point():
        raise ValueError(f"'x0' must be a floating tensor (got {x0.dtype})")
    if x0.shape[0] == 0:
        raise ValueError("'x0' is an empty batch (B = 0): the loss is undefined")
    return x0.shape[0]


def _loss_timesteps(t, B: int, num_timesteps: int, generator: Optional[torch.Generator],
                    device, name: str = "timesteps") -> Tensor:
    """A loss's timesteps: ``t`` checked (integers, shape ``[B]``), or ``[B]`` uniform draws
    from ``{0..num_timesteps-1}`` with ``generator`` when ``t`` is ``None``."""
    if t is None:
        t = torch.randint(0, num_timesteps, (B,), generator=generator,
                          device=generator.device if generator is not None else "cpu")
    t = torch.as_tensor(t)
    if not is_integer_dtype(t):
        raise ValueError(f"'{name}' must be an integer tensor (got {t.dtype})")
    t = t.long().to(device)
    if t.shape != (B,):
        raise ValueError(f"'{name}' must have shape [B] = [{B}] (got {tuple(t.shape)})")
    return t


def diffusion_loss(model_fn: Callable[[Tensor, Tensor], Tensor], x0: Tensor,
                   scheduler: Scheduler, generator: Optional[torch.Generator] = None,
                   mask: Optional[Tensor] = None, timesteps: Optional[Tensor] = None,
                   noise: Optional[Tensor] = None) -> Tensor:
    r"""Denoising loss (DDPM eq. 14, the simplified objective, for any prediction type):

    .. math::
        L = \mathbb{E}_{t, x_0, \epsilon}\,
        \big\| m \odot \big(\text{model}(\sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\epsilon,
        t) - y_t\big)\big\|^2 / \textstyle\sum m

    with :math:`t \sim \mathcal{U}\{0..T-1\}` per sample, :math:`\epsilon\sim\mathcal N(0, I)`
    and :math:`y_t` = :meth:`~DDPMScheduler.training_target` (:math:`\epsilon`,
    :math:`x_0` or :math:`v`).

    Args:
        model_fn (callable): ``model_fn(x_t, t) -> output`` with ``t`` a ``[B]`` LongTensor.
        x0 (Tensor): clean data.
        scheduler: a :class:`DDPMScheduler` or :class:`DDIMScheduler`.
        generator (torch.Generator, optional): for ``t`` and :math:`\epsilon`.
        mask (Tensor, optional): 1 where the error counts (broadcast to ``x0``); the loss is
            the mean over those entries (0 when there are none). Entries where it is 0
            are set to 0 before noising, so a missing value (NaN included) never enters
            the model's input.
        timesteps (LongTensor, optional): ``[B]`` timesteps instead of random ones.
        noise (Tensor, optional): :math:`\epsilon` instead of random noise.

    Returns:
        Tensor: scalar loss.

    Shapes:
        - **x0:** ``[B, *]`` (e.g. ``[B, T, N, F]``); **mask:** broadcastable to ``x0``
    """
    B = _check_loss_batch(x0)
    timesteps = _loss_timesteps(timesteps, B, scheduler.config.num_train_timesteps, generator,
                                x0.device)
    if noise is None:
        noise = _randn(x0.shape, generator, x0.device, x0.dtype)
    x0 = _fill_missing(x0, mask)
    x_t = scheduler.add_noise(x0, noise, timesteps)
    out = model_fn(x_t, timesteps)
    return _masked_mse(out, scheduler.training_target(x0, noise, timesteps), mask)


def _prepare_sampling(scheduler, num_inference_steps: Optional[int],
                      eta: Optional[float]) -> dict:
    """Set the inference timesteps (if given) and return the extra ``step`` arguments;
    ``eta`` is only accepted by :class:`DDIMScheduler`."""
    if num_inference_steps is not None:
        scheduler.set_timesteps(num_inference_steps)
    if eta is None:
        return {}
    if not isinstance(scheduler, DDIMScheduler):
        raise ValueError("'eta' is only used by DDIMScheduler")
    return {"eta": eta}


@torch.no_grad()
def sample(model_fn: Callable[[Tensor, Tensor], Tensor], scheduler: Scheduler,
           shape: Optional[Sequence[int]] = None, num_inference_steps: Optional[int] = None,
           generator: Optional[torch.Generator] = None, x_T: Optional[Tensor] = None,
           progress: bool = False, eta: Optional[float] = None,
           device: Union[str, torch.device, None] = None,
           dtype: torch.dtype = torch.float32) -> Tensor:
    r"""Run the reverse chain :math:`x_T \sim \mathcal N(0, I) \to x_0` with ``scheduler``
    (DDPM Algorithm 2 / DDIM eq. 12), under ``torch.no_grad()``.

    Args:
        model_fn (callable): ``model_fn(x_t, t) -> output`` with ``t`` a ``[B]`` LongTensor
            (all entries equal); the output follows ``scheduler.config.prediction_type``.
        scheduler: a :class:`DDPMScheduler` or :class:`DDIMScheduler`.
        shape (sequence of int, optional): sample shape ``[B, *]`` (or take ``x_T.shape``).
        num_inference_steps (int, optional): calls ``scheduler.set_timesteps`` first; if
            ``None`` the scheduler's current :attr:`timesteps` are used.
        generator (torch.Generator, optional): for :math:`x_T` and the step noise.
        x_T (Tensor, optional): the starting noise.
        progress (bool): show a tqdm bar. (default: ``False``)
        eta (float, optional): DDIM :math:`\eta` (DDIM only).
        device, dtype: of the drawn :math:`x_T`. (default: CPU, ``float32``)

    Returns:
        Tensor: :math:`x_0` of shape ``shape``.
    """
    if x_T is None:
        if shape is None:
            raise ValueError("pass 'shape' or 'x_T'")
        try:
            shape = tuple(check_int("shape", s, 1) for s in shape)
        except (TypeError, ValueError):
            raise ValueError(f"'shape' must be a sequence [B, *] of positive sizes "
                             f"(got {shape!r})") from None
        if len(shape) < 1:
            raise ValueError(f"'shape' must be [B, *] with positive sizes (got {shape})")
        x = _randn(shape, generator, device or "cpu", dtype) * scheduler.init_noise_sigma
    else:
        if shape is not None and tuple(shape) != tuple(x_T.shape):
            raise ValueError(f"'x_T' must have shape {tuple(shape)} (got {tuple(x_T.shape)})")
        x = x_T
    step_kwargs = _prepare_sampling(scheduler, num_inference_steps, eta)
    B = x.shape[0]
    for t in tqdm(scheduler.timesteps.tolist(), disable=not progress, desc="sampling"):
        t_batch = torch.full((B,), t, dtype=torch.long, device=x.device)
        out = model_fn(x, t_batch)
        x = scheduler.step(out, t, x, generator=generator, **step_kwargs).prev_sample
    return x
