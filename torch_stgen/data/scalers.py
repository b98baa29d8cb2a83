r"""Scalers fitted on **observed** training values only.

Statistics are computed over the entries where ``mask == 1`` (and the value is finite), so
missing values, stored as 0, never bias them (the tsl habit: fit the scaler on the training
slice and on observed values only).

Statistics broadcast **from the right**: they keep the shape of the input from the first
non-reduced dimension on, with reduced dimensions set to 1. A scaler fitted per channel on
``[T, N, C]`` holds ``[C]`` statistics; one fitted on ``[T, C, H, W]`` with ``channel_dim=1``
holds ``[C, 1, 1]``; so the same scaler applies to batched tensors ``[B, T, N, C]`` /
``[B, T, C, H, W]`` with extra leading dimensions.
"""
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .._checks import check_binary_mask

__all__ = ["StandardScaler", "MinMaxScaler"]

Dims = Union[int, Sequence[int], None]


class _Scaler:
    """Shared fitting logic; subclasses define the statistics and the affine map."""

    _stat_names: Tuple[str, ...] = ()

    def __init__(self, eps: float = 1e-8):
        if not float(eps) >= 0:
            raise ValueError(f"'eps' must be >= 0 (got {eps!r})")
        self.eps = float(eps)
        for name in self._stat_names:
            setattr(self, name, None)

    # ---------------------------------------------------------------- helpers
    @property
    def fitted(self) -> bool:
        return all(getattr(self, n) is not None for n in self._stat_names)

    def _check_fitted(self):
        if not self.fitted:
            raise RuntimeError(f"{self.__class__.__name__} is not fitted: call "
                               f"fit(x, mask) on the training data first")

    @staticmethod
    def _reduce_dims(x: Tensor, dim: Dims, channel_dim: Optional[int]) -> Tuple[int, ...]:
        nd = x.dim()
        if channel_dim is not None:
            if dim is not None:
                raise ValueError("give either 'dim' or 'channel_dim', not both")
            if not -nd <= channel_dim < nd:
                raise ValueError(f"'channel_dim'={channel_dim} is out of range for 'x' of "
                                 f"shape {tuple(x.shape)}")
            c = channel_dim % nd
            return tuple(d for d in range(nd) if d != c)
        if dim is None:
            return tuple(range(nd))
        dims = (dim,) if isinstance(dim, int) else tuple(dim)
        for d in dims:
            if not -nd <= d < nd:
                raise ValueError(f"'dim'={d} is out of range for 'x' of shape "
                                 f"{tuple(x.shape)}")
        return tuple(sorted({d % nd for d in dims}))

    @staticmethod
    def _trim(stat: Tensor, reduced: Tuple[int, ...]) -> Tensor:
        """Drop the leading reduced (size-1) dims so the statistics broadcast from the
        right over inputs with extra leading dimensions."""
        lead = 0
        while lead < stat.dim() and lead in reduced:
            lead += 1
        return stat.reshape(stat.shape[lead:])

    def _observed(self, x: Tensor, mask: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        if not isinstance(x, Tensor):
            x = torch.as_tensor(x)
        x = x.detach().to(torch.float64)
        obs = torch.isfinite(x)
        if mask is not None:
            mask = torch.as_tensor(mask, device=x.device)
            try:
                mask = torch.broadcast_to(mask, x.shape)
            except RuntimeError:
                raise ValueError(f"'mask' must have the shape of 'x' {tuple(x.shape)} "
                                 f"(got {tuple(mask.shape)})") from None
            check_binary_mask("mask", mask)     # 0.5 or NaN would count as observed
            obs = obs & mask.bool()
        return torch.where(obs, x, torch.zeros((), dtype=x.dtype, device=x.device)), obs

    def _apply_mask(self, y: Tensor, mask: Optional[Tensor]) -> Tensor:
        if mask is None:
            return y
        keep = torch.as_tensor(mask, device=y.device) != 0
        # where, not a product: a NaN at a missing entry must become 0 too
        return torch.where(keep, y, torch.zeros((), dtype=y.dtype, device=y.device))

    # ---------------------------------------------------------------- API
    def fit(self, x: Tensor, mask: Optional[Tensor] = None, dim: Dims = None,
            channel_dim: Optional[int] = None):
        r"""Fit the statistics on the observed entries of ``x``.

        Args:
            x (Tensor): data of any shape (NaN / inf count as missing).
            mask (Tensor, optional): observed mask broadcastable to ``x`` (1 observed).
                (default: all finite entries)
            dim (int or tuple, optional): dimensions to reduce; ``None`` = all (a single
                global statistic). (default: ``None``)
            channel_dim (int, optional): per-channel statistics: reduce every dimension but
                this one (e.g. ``-1`` for ``[T, N, C]``, ``1`` for ``[T, C, H, W]``).
                Exclusive with ``dim``. (default: ``None``)

        Returns:
            ``self``.
        """
        xv, obs = self._observed(x, mask)
        reduced = self._reduce_dims(xv, dim, channel_dim)
        count = obs.sum(dim=reduced, keepdim=True)
        if (count == 0).any():
            raise ValueError(f"'mask' leaves no observed value for some statistic of "
                             f"{self.__class__.__name__} (reduced dims {reduced})")
        stats = self._compute(xv, obs, reduced, count)
        for name, value in stats.items():
            setattr(self, name, self._trim(value, reduced))
        return self

    def fit_transform(self, x: Tensor, mask: Optional[Tensor] = None, dim: Dims = None,
                      channel_dim: Optional[int] = None) -> Tensor:
        """:meth:`fit` then :meth:`transform` (missing entries stay 0 when ``mask`` is
        given)."""
        return self.fit(x, mask, dim=dim, channel_dim=channel_dim).transform(x, mask)

    def _stat(self, name: str, like: Tensor) -> Tensor:
        return getattr(self, name).to(device=like.device, dtype=like.dtype)

    def _settings(self) -> Dict[str, Tensor]:
        """Constructor settings the map depends on (saved with the statistics)."""
        return {"eps": torch.tensor(self.eps, dtype=torch.float64)}

    def state_dict(self) -> Dict[str, Tensor]:
        """The fitted statistics and the settings of the map (``eps``; MinMaxScaler's
        ``feature_range``), so that a reloaded scaler maps exactly as this one."""
        self._check_fitted()
        return {**{n: getattr(self, n).clone() for n in self._stat_names},
                **self._settings()}

    def load_state_dict(self, state: Dict[str, Tensor]):
        missing = [n for n in self._stat_names if n not in state]
        if missing:
            raise ValueError(f"'state' lacks {missing} for {self.__class__.__name__}")
        for n in self._stat_names:
            setattr(self, n, torch.as_tensor(state[n], dtype=torch.float64))
        self._load_settings(state)       # a state without them (older files) keeps ours
        return self

    def _load_settings(self, state: Dict[str, Tensor]) -> None:
        if "eps" in state:
            eps = float(state["eps"])
            if not eps >= 0:
                raise ValueError(f"state 'eps' must be >= 0 (got {eps})")
            self.eps = eps

    def _check_input(self, x: Tensor) -> Tensor:
        self._check_fitted()
        if not isinstance(x, Tensor):
            x = torch.as_tensor(x)
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        stat = getattr(self, self._stat_names[0])
        if stat.dim() > x.dim():
            raise ValueError(f"'x' of shape {tuple(x.shape)} has fewer dimensions than the "
                             f"fitted statistics {tuple(stat.shape)}")
        return x


class StandardScaler(_Scaler):
    r"""Standardisation with statistics of the observed values.

    .. math::
        \mu = \frac{\sum m\,x}{\sum m}, \qquad
        \sigma = \sqrt{\frac{\sum m\,(x - \mu)^2}{\sum m}}, \qquad
        \tilde x = \frac{x - \mu}{\sigma}

    (population standard deviation; a :math:`\sigma` below ``eps`` is replaced by 1 so that
    constant data maps to 0 instead of dividing by zero).

    Args:
        eps (float, optional): smallest standard deviation used as is. (default: ``1e-8``)

    Example::

        >>> s = StandardScaler().fit(torch.tensor([[1., 9.], [3., 0.]]),
        ...                          mask=torch.tensor([[1, 0], [1, 0]]))
        >>> s.mean, s.std
        (tensor(2., dtype=torch.float64), tensor(1., dtype=torch.float64))
    """

    _stat_names = ("mean", "std")

    def _compute(self, x, obs, reduced, count):
        w = obs.to(x.dtype)
        mean = (x * w).sum(dim=reduced, keepdim=True) / count
        var = (((x - mean) * w) ** 2).sum(dim=reduced, keepdim=True) / count
        std = var.sqrt()
        std = torch.where(std < self.eps, torch.ones_like(std), std)
        return {"mean": mean, "std": std}

    def transform(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        r""":math:`(x - \mu) / \sigma`; entries with ``mask == 0`` are set to 0 when
        ``mask`` is given."""
        x = self._check_input(x)
        y = (x - self._stat("mean", x)) / self._stat("std", x)
        return self._apply_mask(y, mask)

    def inverse_transform(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        r""":math:`\tilde x \sigma + \mu` (the exact inverse of :meth:`transform`)."""
        x = self._check_input(x)
        y = x * self._stat("std", x) + self._stat("mean", x)
        return self._apply_mask(y, mask)

    def __repr__(self) -> str:
        if not self.fitted:
            return "StandardScaler(fitted=False)"
        return f"StandardScaler(shape={tuple(self.mean.shape)})"


class MinMaxScaler(_Scaler):
    r"""Min-max scaling of the observed values to ``feature_range = (a, b)``.

    .. math::
        \tilde x = a + (x - x_{min}) \frac{b - a}{x_{max} - x_{min}}

    over observed entries (``mask == 1``); a range :math:`x_{max} - x_{min}` below ``eps``
    is replaced by 1 (constant data maps to ``a``). Values outside the fitted range are
    mapped linearly, not clipped.

    Args:
        feature_range (tuple, optional): ``(a, b)`` with ``a < b``. (default: ``(0, 1)``)
        eps (float, optional): smallest range used as is. (default: ``1e-8``)
    """

    _stat_names = ("data_min", "data_max")

    def __init__(self, feature_range: Tuple[float, float] = (0.0, 1.0), eps: float = 1e-8):
        a, b = (float(v) for v in feature_range)
        if not a < b:
            raise ValueError(f"'feature_range' must be (a, b) with a < b "
                             f"(got {feature_range!r})")
        self.feature_range = (a, b)
        super().__init__(eps)

    def _settings(self) -> Dict[str, Tensor]:
        return dict(super()._settings(),
                    feature_range=torch.tensor(self.feature_range, dtype=torch.float64))

    def _load_settings(self, state: Dict[str, Tensor]) -> None:
        super()._load_settings(state)
        if "feature_range" in state:
            a, b = (float(v) for v in state["feature_range"])
            if not a < b:
                raise ValueError(f"state 'feature_range' must be (a, b) with a < b "
                                 f"(got {(a, b)})")
            self.feature_range = (a, b)

    def _compute(self, x, obs, reduced, count):
        inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
        lo = torch.where(obs, x, inf).amin(dim=reduced, keepdim=True)
        hi = torch.where(obs, x, -inf).amax(dim=reduced, keepdim=True)
        return {"data_min": lo, "data_max": hi}

    def _scale(self, like: Tensor) -> Tensor:
        rng = self._stat("data_max", like) - self._stat("data_min", like)
        rng = torch.where(rng < self.eps, torch.ones_like(rng), rng)
        a, b = self.feature_range
        return (b - a) / rng

    def transform(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Map to ``feature_range``; entries with ``mask == 0`` set to 0 when given."""
        x = self._check_input(x)
        y = (x - self._stat("data_min", x)) * self._scale(x) + self.feature_range[0]
        return self._apply_mask(y, mask)

    def inverse_transform(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """The exact inverse of :meth:`transform`."""
        x = self._check_input(x)
        y = (x - self.feature_range[0]) / self._scale(x) + self._stat("data_min", x)
        return self._apply_mask(y, mask)

    def __repr__(self) -> str:
        fitted = "" if self.fitted else ", fitted=False"
        return f"MinMaxScaler(feature_range={self.feature_range}{fitted})"
