r"""Embeddings of the diffusion step, of calendar time and of external covariates.

* :class:`SinusoidalEmbedding` - the fixed sinusoidal position encoding of
  `"Attention Is All You Need" <https://arxiv.org/abs/1706.03762>`_ used for the diffusion
  step in `"Denoising Diffusion Probabilistic Models" <https://arxiv.org/abs/2006.11239>`_
  (integer steps) and for EDM's noise label :math:`c_\text{noise} = \ln(\sigma)/4`
  (`"Elucidating the Design Space of Diffusion-Based Generative Models"
  <https://arxiv.org/abs/2206.00364>`_, floats).
* :class:`TimestepEmbedding` - sinusoidal encoding followed by a two-layer SiLU MLP.
* :class:`TimeFeatureEmbedding` - hour of day, day of week and holiday flag, the time
  features that DiffRecon (`arXiv:2410.05323 <https://arxiv.org/abs/2410.05323>`_, eq. 14)
  adds to its point embeddings as "external features".
* :class:`ExternalEmbedding` - external covariates (weather, temperature, ...).
"""
import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

__all__ = ["SinusoidalEmbedding", "TimestepEmbedding", "TimeFeatureEmbedding",
           "ExternalEmbedding"]


def _check_finite(name: str, x: Tensor):
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"'{name}' contains NaN or infinite values; mark missing entries "
                         f"with a mask and zero them instead")


def _as_steps(t, name: str = "t") -> Tensor:
    """``t`` as a 1-D float tensor ``[B]`` (a Python number or a 0-d tensor gives ``[1]``)."""
    t = torch.as_tensor(t)
    if t.dim() == 0:
        t = t.reshape(1)
    if t.dim() != 1:
        raise ValueError(f"'{name}' must have shape [B] (one step index or noise level per "
                         f"sample; got {tuple(t.shape)})")
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"'{name}' must be an integer or floating tensor (got {t.dtype})")
    _check_finite(name, t)
    return t


class SinusoidalEmbedding(nn.Module):
    r"""Fixed sinusoidal embedding of a scalar per sample (diffusion step index or EDM
    noise label), from `"Attention Is All You Need" <https://arxiv.org/abs/1706.03762>`_
    (Section 3.5) as used for the step :math:`t` in DDPM (Ho et al. 2020, Appendix B).

    .. math::
        \omega_k = \text{max\_period}^{-k/h}, \quad k = 0, \dots, h-1, \quad
        h = \lfloor \text{dim}/2 \rfloor

        \mathrm{PE}(t) = \big[\cos(s\,t\,\omega_0), \dots, \cos(s\,t\,\omega_{h-1}),
        \sin(s\,t\,\omega_0), \dots, \sin(s\,t\,\omega_{h-1})\big]

    where :math:`s` is ``scale``. An odd ``dim`` gets one trailing zero column.
    Float inputs such as EDM's :math:`c_\text{noise} = \ln(\sigma)/4` (roughly in
    :math:`[-1.6, 1.1]`) only reach the slowest-turning frequencies; set ``scale`` (e.g.
    ``1000``) to spread them over more of the spectrum.

    Args:
        dim (int): embedding size (>= 2).
        max_period (float, optional): the longest period :math:`\text{max\_period}`.
            (default: ``10000``)
        scale (float, optional): factor :math:`s` applied to the input first.
            (default: ``1.0``)

    Shapes:
        - **input:** ``t`` of shape ``[B]`` (integers or floats; a scalar is ``[1]``)
        - **output:** ``[B, dim]`` (float32, or the dtype of a floating ``t``)
    """

    def __init__(self, dim: int, max_period: float = 10000.0, scale: float = 1.0):
        super().__init__()
        if int(dim) < 2:
            raise ValueError(f"'dim' must be >= 2 (got {dim})")
        if not 1 < max_period < math.inf:
            raise ValueError(f"'max_period' must be a finite number > 1 (got {max_period})")
        if not math.isfinite(scale):
            raise ValueError(f"'scale' must be finite (got {scale})")
        self.dim = int(dim)
        self.max_period = float(max_period)
        self.scale = float(scale)
        half = self.dim // 2
        freqs = torch.exp(-math.log(self.max_period)
                          * torch.arange(half, dtype=torch.float64) / half)
        self.register_buffer("freqs", freqs.float(), persistent=False)

    def forward(self, t) -> Tensor:
        t = _as_steps(t)
        dtype = t.dtype if t.is_floating_point() else torch.float32
        if t.device != self.freqs.device:
            t = t.to(self.freqs.device)
        # compute the arguments in float64 so large step indices keep their precision
        args = (t.double() * self.scale)[:, None] * self.freqs.double()[None, :]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if self.dim % 2:
            emb = torch.cat([emb, emb.new_zeros(emb.shape[0], 1)], dim=-1)
        return emb.to(dtype)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.dim}, max_period={self.max_period:g}, "
                f"scale={self.scale:g})")


class TimestepEmbedding(nn.Module):
    r"""Diffusion-step embedding: sinusoidal encoding followed by a two-layer MLP with a
    SiLU in between (DDPM, `arXiv:2006.11239 <https://arxiv.org/abs/2006.11239>`_,
    Appendix B; the "step embedding" that KGDiff adds in every denoiser block).

    .. math::
        e(t) = W_2\,\mathrm{SiLU}\big(W_1\,\mathrm{PE}(t) + b_1\big) + b_2

    Args:
        dim (int): output size.
        hidden (int, optional): hidden width of the MLP. (default: ``4 * dim``)
        freq_dim (int, optional): size of the sinusoidal encoding :math:`\mathrm{PE}`.
            (default: ``dim``)
        max_period (float, optional): see :class:`SinusoidalEmbedding`. (default: ``10000``)
        scale (float, optional): see :class:`SinusoidalEmbedding`. (default: ``1.0``)

    Shapes:
        - **input:** ``t`` of shape ``[B]`` (step indices or noise labels)
        - **output:** ``[B, dim]``
    """

    def __init__(self, dim: int, hidden: Optional[int] = None,
                 freq_dim: Optional[int] = None, max_period: float = 10000.0,
                 scale: float = 1.0):
        super().__init__()
        self.dim = int(dim)
        self.hidden = int(hidden) if hidden is not None else 4 * self.dim
        self.freq_dim = int(freq_dim) if freq_dim is not None else self.dim
        if self.dim < 1 or self.hidden < 1:
            raise ValueError(f"'dim' and 'hidden' must be positive (got dim={dim}, "
                             f"hidden={hidden})")
        self.sinusoidal = SinusoidalEmbedding(self.freq_dim, max_period, scale)
        self.lin1 = nn.Linear(self.freq_dim, self.hidden)
        self.act = nn.SiLU()
        self.lin2 = nn.Linear(self.hidden, self.dim)
        self.reset_parameters()

    def reset_parameters(self):
        self.lin1.reset_parameters()
        self.lin2.reset_parameters()

    def forward(self, t) -> Tensor:
        emb = self.sinusoidal(t).to(self.lin1.weight.dtype)
        return self.lin2(self.act(self.lin1(emb)))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.dim}, hidden={self.hidden}, "
                f"freq_dim={self.freq_dim})")


class TimeFeatureEmbedding(nn.Module):
    r"""Embedding of calendar time features (hour of day, day of week, holiday flag), the
    time indices and holiday flags DiffRecon feeds as external features (eq. 14 of
    `arXiv:2410.05323 <https://arxiv.org/abs/2410.05323>`_).

    Hour and weekday are periodic, so they are encoded with Fourier features of their
    phase (hour 23.5 is close to hour 0) and then mapped linearly:

    .. math::
        \theta_h = 2\pi\,\frac{\text{hour}}{P_h}, \quad
        \theta_d = 2\pi\,\frac{\text{weekday}}{P_d}

        \phi = \big[\cos(k\theta_h), \sin(k\theta_h)\big]_{k=1}^{K_h} \,\|\,
        \big[\cos(k\theta_d), \sin(k\theta_d)\big]_{k=1}^{K_d} \,\|\, \text{holiday},
        \qquad e = W\phi + b

    With ``weekday_harmonics=3`` the 7 weekdays are separated exactly (any function of
    the weekday is linear in the features); ``hour_harmonics=12`` does the same for 24
    integer hours.

    Accepted encodings of the last axis (``encoding="auto"`` picks by its size; all
    three give the **same** :math:`\phi` for the same instant on whole hours, so one
    trained embedding serves them all; onehot carries the hour only, so between whole
    hours it gives the hour's :math:`\phi` while raw and cyclic keep the minutes):

    * **raw**, 3 values ``[hour, weekday, holiday]``: ``hour`` in ``[0, hour_period)``
      (fractions allowed, 13.5 is 13:30; default ``hour_period=24``, pass ``1`` for a
      fraction of the day), ``weekday`` in ``[0, weekday_period)`` with Monday = 0
      (default ``7``; pass ``1`` for ``weekday / 7``), ``holiday`` in ``[0, 1]``.
    * **cyclic**, 5 values ``[sin a, cos a, sin b, cos b, holiday]`` with
      :math:`a = 2\pi\,\text{minute}/1440`, :math:`b = 2\pi\,\text{weekday}/7`, the
      default output of :func:`torch_stgen.data.time_features`; the phases are
      recovered with ``atan2`` (each (sin, cos) pair must have unit norm).
    * **onehot**, 32 values: one-hot hour (24), one-hot weekday (7), holiday
      (``time_features(..., encoding='onehot')``).

    Values outside these ranges raise a ``ValueError`` (a wrong encoding is an error,
    never silently wrapped).

    Args:
        dim (int): output size.
        hour_harmonics (int, optional): :math:`K_h`. (default: ``6``)
        weekday_harmonics (int, optional): :math:`K_d`. (default: ``3``)
        hour_period (float, optional): :math:`P_h` of the raw encoding. (default: ``24``)
        weekday_period (float, optional): :math:`P_d` of the raw encoding.
            (default: ``7``)
        encoding (str, optional): ``"auto"``, ``"raw"``, ``"cyclic"`` or ``"onehot"``.
            (default: ``"auto"``)

    Shapes:
        - **input:** ``[..., 3]``, ``[..., 5]`` or ``[..., 32]``
        - **output:** ``[..., dim]``
    """

    _SIZES = {"raw": 3, "cyclic": 5, "onehot": 32}

    def __init__(self, dim: int, hour_harmonics: int = 6, weekday_harmonics: int = 3,
                 hour_period: float = 24.0, weekday_period: float = 7.0,
                 encoding: str = "auto"):
        super().__init__()
        if int(dim) < 1:
            raise ValueError(f"'dim' must be positive (got {dim})")
        if hour_harmonics < 1 or weekday_harmonics < 1:
            raise ValueError(f"'hour_harmonics' and 'weekday_harmonics' must be >= 1 (got "
                             f"{hour_harmonics}, {weekday_harmonics})")
        if not (hour_period > 0 and weekday_period > 0):
            raise ValueError(f"'hour_period' and 'weekday_period' must be positive (got "
                             f"{hour_period}, {weekday_period})")
        if encoding != "auto" and encoding not in self._SIZES:
            raise ValueError(f"'encoding' must be 'auto', 'raw', 'cyclic' or 'onehot' "
                             f"(got {encoding!r})")
        self.dim = int(dim)
        self.hour_harmonics = int(hour_harmonics)
        self.weekday_harmonics = int(weekday_harmonics)
        self.hour_period = float(hour_period)
        self.weekday_period = float(weekday_period)
        self.encoding = encoding
        self.in_features = 2 * (self.hour_harmonics + self.weekday_harmonics) + 1
        self.lin = nn.Linear(self.in_features, self.dim)
        self.reset_parameters()

    def reset_parameters(self):
        self.lin.reset_parameters()

    def _encoding_of(self, time: Tensor) -> str:
        size = time.shape[-1] if time.dim() >= 1 else None
        if self.encoding == "auto":
            for name, n in self._SIZES.items():
                if size == n:
                    return name
        elif size == self._SIZES[self.encoding]:
            return self.encoding
        want = ("[..., 3] (hour, weekday, holiday), [..., 5] (cyclic) or [..., 32] (onehot)"
                if self.encoding == "auto" else f"[..., {self._SIZES[self.encoding]}] "
                f"({self.encoding} encoding)")
        raise ValueError(f"'time' must have shape {want} (got {tuple(time.shape)})")

    @staticmethod
    def _check_range(name: str, v: Tensor, lo: float, hi: float, closed: bool, hint: str):
        bad = (v < lo) | ((v > hi) if closed else (v >= hi))
        if v.numel() and bool(bad.any()):
            rng = f"[{lo:g}, {hi:g}{']' if closed else ')'}"
            raise ValueError(f"'time' {name} values must lie in {rng} (got range "
                             f"[{float(v.min()):g}, {float(v.max()):g}]){hint}")

    def phases(self, time: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        r"""``(theta_h, theta_d, holiday)`` in radians / ``[0, 1]``, each ``[...]``."""
        time = torch.as_tensor(time)
        enc = self._encoding_of(time)
        _check_finite("time", time)
        dtype = self.lin.weight.dtype
        time = time.to(device=self.lin.weight.device, dtype=dtype)
        two_pi = 2 * math.pi
        if enc == "raw":
            hour, day, hol = time.unbind(-1)
            self._check_range("hour", hour, 0, self.hour_period, False,
                              "; set 'hour_period' to match your encoding")
            self._check_range("weekday", day, 0, self.weekday_period, False,
                              "; set 'weekday_period' to match your encoding")
            th, td = two_pi * hour / self.hour_period, two_pi * day / self.weekday_period
        elif enc == "cyclic":
            sa, ca, sb, cb, hol = time.unbind(-1)
            for name, s, c in (("hour (sin, cos)", sa, ca), ("weekday (sin, cos)", sb, cb)):
                norm = s * s + c * c
                if norm.numel() and bool(((norm - 1).abs() > 1e-3).any()):
                    raise ValueError(f"'time' {name} pairs of the cyclic encoding must have "
                                     f"unit norm (got sin^2+cos^2 in [{float(norm.min()):g}, "
                                     f"{float(norm.max()):g}])")
            th, td = torch.atan2(sa, ca), torch.atan2(sb, cb)
        else:  # onehot
            hours, days, hol = time[..., :24], time[..., 24:31], time[..., 31]
            for name, block in (("hour", hours), ("weekday", days)):
                ok = ((block == 0) | (block == 1)).all(-1) & (block.sum(-1) == 1)
                if ok.numel() and not bool(ok.all()):
                    raise ValueError(f"'time' {name} block of the onehot encoding must hold "
                                     f"exactly one 1 and zeros elsewhere")
            th = two_pi * hours.argmax(-1).to(dtype) / 24
            td = two_pi * days.argmax(-1).to(dtype) / 7
        self._check_range("holiday", hol, 0, 1, True, "")
        return th, td, hol

    def features(self, time: Tensor) -> Tensor:
        r"""The Fourier features :math:`\phi` (before the linear map), ``[..., in_features]``."""
        th, td, hol = self.phases(time)
        kh = torch.arange(1, self.hour_harmonics + 1, dtype=th.dtype, device=th.device)
        kd = torch.arange(1, self.weekday_harmonics + 1, dtype=th.dtype, device=th.device)
        ah, ad = th[..., None] * kh, td[..., None] * kd
        return torch.cat([ah.cos(), ah.sin(), ad.cos(), ad.sin(), hol[..., None]], dim=-1)

    def forward(self, time: Tensor) -> Tensor:
        return self.lin(self.features(time))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.dim}, hour_harmonics={self.hour_harmonics}, "
                f"weekday_harmonics={self.weekday_harmonics}, "
                f"hour_period={self.hour_period:g}, weekday_period={self.weekday_period:g}, "
                f"encoding={self.encoding!r})")


class ExternalEmbedding(nn.Module):
    r"""Embedding of external covariates (weather, temperature, humidity, ...), the
    external-feature term of DiffRecon's point embedding (eq. 14 of
    `arXiv:2410.05323 <https://arxiv.org/abs/2410.05323>`_), as a two-layer MLP:

    .. math::
        e = W_2\,\mathrm{SiLU}(W_1 x + b_1) + b_2

    Covariates should be standardised beforehand. NaN/inf inputs raise a ``ValueError``.

    Args:
        in_features (int): number of covariates :math:`F_\text{ext}`.
        dim (int): output size.
        hidden (int, optional): hidden width. (default: ``dim``)

    Shapes:
        - **input:** ``[..., in_features]``
        - **output:** ``[..., dim]``
    """

    def __init__(self, in_features: int, dim: int, hidden: Optional[int] = None):
        super().__init__()
        if int(in_features) < 1 or int(dim) < 1:
            raise ValueError(f"'in_features' and 'dim' must be positive (got {in_features}, "
                             f"{dim})")
        self.in_features = int(in_features)
        self.dim = int(dim)
        self.hidden = int(hidden) if hidden is not None else self.dim
        self.lin1 = nn.Linear(self.in_features, self.hidden)
        self.act = nn.SiLU()
        self.lin2 = nn.Linear(self.hidden, self.dim)
        self.reset_parameters()

    def reset_parameters(self):
        self.lin1.reset_parameters()
        self.lin2.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        x = torch.as_tensor(x)
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"'x' must have shape [..., {self.in_features}] (external "
                             f"covariates; got {tuple(x.shape)})")
        _check_finite("x", x)
        x = x.to(self.lin1.weight.dtype)
        return self.lin2(self.act(self.lin1(x)))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_features}, {self.dim}, hidden={self.hidden})"
