r"""Deterministic baselines for generating daily series at unseen nodes (KGDiff setting).

KGDiff (Wang et al., AAAI 2026) trains on the series of the training nodes and generates
series for nodes never seen (the southern band of a latitude split). Two baselines need no
learning and set the scale of the task:

* :class:`GlobalMeanProfile` - every unseen node gets the mean daily profile of all
  training nodes,

  .. math:: \hat p_v(\ell) = \frac{1}{|\mathcal V_{tr}|} \sum_{u \in \mathcal V_{tr}}
      \bar x_u(\ell), \qquad
      \bar x_u(\ell) = \frac{\sum_d m_{d,u,\ell}\, x_{d,u,\ell}}{\sum_d m_{d,u,\ell}}

* :class:`NearestNeighbourProfile` - the mean profile of the :math:`k` geographically
  closest training nodes (great-circle distance), with :math:`k` chosen on *validation*
  nodes carved out of the training nodes (:meth:`NearestNeighbourProfile.tune`), never on
  the test nodes:

  .. math:: \hat p_v(\ell) = \frac{1}{k} \sum_{u \in \mathrm{kNN}_k(v)} \bar x_u(\ell)

A slot :math:`\ell` that a training node never observed has no profile value
:math:`\bar x_u(\ell)`. Pass ``observed`` (``[N_train, L]``, from
``node_profiles(..., return_observed=True)``) and such slots are left out: the global mean
averages, at each slot, the nodes observed there, and :math:`\mathrm{kNN}_k(v)` is taken,
at each slot, among the nodes observed there. Without it every slot counts as observed.

Both are deterministic: as a *generator* they return the profile for every requested
sample (:meth:`generate`), so their distribution metrics measure a point mass.

(The two diffusion baselines of the benchmark, unconditional diffusion and the
TuckER-conditioned "DiffWave-con"-like model, are :class:`~torch_stgen.models.KGDiff`
configurations: ``guidance=False`` and ``geometry_moe=False, meta_pattern=False``.)
"""
from typing import Dict, Optional, Sequence

import torch
from torch import Tensor

from ..data.sensor import haversine_distances

__all__ = ["node_profiles", "GlobalMeanProfile", "NearestNeighbourProfile"]


def node_profiles(values: Tensor, mask: Optional[Tensor] = None,
                  return_observed: bool = False):
    r"""Per-node mean daily profile from observed values:
    :math:`\bar x_u(\ell) = \sum_d m_{d,u,\ell} x_{d,u,\ell} / \sum_d m_{d,u,\ell}`
    (0 where a slot is never observed: not a measured value).

    Args:
        return_observed (bool, optional): also return which slots were observed at least
            once (``[N, L]`` bool), to pass to the baselines' ``fit`` / ``tune`` as
            ``observed``. (default: ``False``)

    Shapes:
        ``values``, ``mask``: ``[D, N, L]`` -> ``[N, L]`` (and ``[N, L]`` bool)
    """
    if not isinstance(values, Tensor) or values.dim() != 3:
        raise ValueError(f"'values' must have shape [D, N, L] "
                         f"(got {tuple(getattr(values, 'shape', ()))})")
    m = torch.ones_like(values) if mask is None else mask.to(values.dtype)
    if m.shape != values.shape:
        raise ValueError(f"'mask' must have the shape of 'values' {tuple(values.shape)} "
                         f"(got {tuple(m.shape)})")
    v = torch.where(m > 0, values, torch.zeros_like(values))
    prof = (v * m).sum(0) / m.sum(0).clamp(min=1)
    return (prof, m.sum(0) > 0) if return_observed else prof


def _check_profiles(profiles: Tensor) -> Tensor:
    if not isinstance(profiles, Tensor) or profiles.dim() != 2:
        raise ValueError(f"'profiles' must have shape [N_train, L] "
                         f"(got {tuple(getattr(profiles, 'shape', ()))})")
    if profiles.shape[0] < 1 or not bool(torch.isfinite(profiles).all()):
        raise ValueError("'profiles' must hold at least one finite training profile")
    return profiles


def _check_observed(observed, profiles: Tensor) -> Optional[Tensor]:
    """``None`` when every slot is observed (the plain means), else a bool ``[N, L]``."""
    if observed is None:
        return None
    obs = torch.as_tensor(observed)
    if obs.shape != profiles.shape:
        raise ValueError(f"'observed' must have the shape of 'profiles' "
                         f"{tuple(profiles.shape)} (got {tuple(obs.shape)})")
    if obs.dtype != torch.bool:
        if not bool(((obs == 0) | (obs == 1)).all()):
            raise ValueError("'observed' must be boolean or 0/1")
        obs = obs != 0
    obs = obs.to(profiles.device)
    if not bool(obs.any(0).all()):
        slots = (~obs.any(0)).nonzero().flatten()[:10].tolist()
        raise ValueError(f"'observed': no training node was observed at slot(s) {slots}; "
                         f"there is nothing to predict them from")
    return None if bool(obs.all()) else obs


class GlobalMeanProfile:
    r"""Baseline (a): the mean daily profile of the training nodes for every node
    (module docstring).

    Example:
        >>> base = GlobalMeanProfile().fit(train_profiles)     # [N_train, L]
        >>> base.generate(num_nodes=3, num_samples=5).shape    # [5, 3, L]
    """

    name = "global-mean"

    def __init__(self):
        self.profile: Optional[Tensor] = None

    def fit(self, profiles: Tensor, observed: Optional[Tensor] = None) -> "GlobalMeanProfile":
        """``profiles`` ``[N_train, L]`` and optionally ``observed`` ``[N_train, L]`` (see
        :func:`node_profiles`): each slot averages the nodes observed there."""
        profiles = _check_profiles(profiles)
        obs = _check_observed(observed, profiles)
        if obs is None:
            self.profile = profiles.mean(0)
        else:
            w = obs.to(profiles.dtype)
            self.profile = (profiles * w).sum(0) / w.sum(0)
        return self

    def predict(self, num_nodes: int) -> Tensor:
        """``[num_nodes, L]``: the global profile repeated."""
        if self.profile is None:
            raise RuntimeError("call fit() first")
        return self.profile.unsqueeze(0).expand(int(num_nodes), -1).clone()

    def generate(self, num_nodes: int, num_samples: int) -> Tensor:
        """``[num_samples, num_nodes, L]`` (a point mass at the profile)."""
        return self.predict(num_nodes).unsqueeze(0).expand(int(num_samples), -1, -1).clone()

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}()"


class NearestNeighbourProfile:
    r"""Baseline (b): the mean profile of the ``k`` geographically closest training nodes
    (module docstring); ``k`` is set by :meth:`tune` on validation nodes.

    Args:
        k (int, optional): number of neighbours. (default: ``3``)

    Shapes:
        ``profiles`` ``[N_train, L]``, ``lat``/``lon`` ``[N_train]``; ``predict`` ``lat``/``lon``
        ``[n]`` -> ``[n, L]``.
    """

    name = "knn"

    def __init__(self, k: int = 3):
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"'k' must be a positive integer (got {k!r})")
        self.k = int(k)
        self.profiles: Optional[Tensor] = None
        self.observed: Optional[Tensor] = None
        self.lat = self.lon = None
        self.validation: Dict[int, float] = {}

    @staticmethod
    def _coords(lat, lon, n: int, what: str):
        lat = torch.as_tensor(lat, dtype=torch.float64).reshape(-1)
        lon = torch.as_tensor(lon, dtype=torch.float64).reshape(-1)
        if lat.numel() != n or lon.numel() != n:
            raise ValueError(f"'{what}' lat/lon must have {n} values each "
                             f"(got {lat.numel()}, {lon.numel()})")
        return lat, lon

    def fit(self, profiles: Tensor, lat, lon,
            observed: Optional[Tensor] = None) -> "NearestNeighbourProfile":
        """``profiles`` ``[N_train, L]``, ``lat`` / ``lon`` ``[N_train]`` and optionally
        ``observed`` ``[N_train, L]``: at each slot the neighbours are the closest nodes
        observed there."""
        self.profiles = _check_profiles(profiles)
        self.observed = _check_observed(observed, self.profiles)
        self.lat, self.lon = self._coords(lat, lon, self.profiles.shape[0], "training")
        return self

    def predict(self, lat, lon, k: Optional[int] = None) -> Tensor:
        if self.profiles is None:
            raise RuntimeError("call fit() first")
        k = self.k if k is None else int(k)
        lat_q = torch.as_tensor(lat, dtype=torch.float64).reshape(-1)
        lat_q, lon_q = self._coords(lat_q, lon, lat_q.numel(), "query")
        n_tr = self.profiles.shape[0]
        d = haversine_distances(torch.cat([lat_q, self.lat]),
                                torch.cat([lon_q, self.lon]))[:lat_q.numel(), lat_q.numel():]
        if self.observed is None:
            nn_idx = torch.argsort(d, dim=1, stable=True)[:, :min(k, n_tr)]
            return self.profiles[nn_idx].mean(1)
        # per slot: the k closest nodes observed there ([L, n, N_train] distances)
        obs = self.observed.t().unsqueeze(1)                            # [L, 1, N_train]
        d_l = d.unsqueeze(0).masked_fill(~obs, float("inf"))
        order = torch.argsort(d_l, dim=2, stable=True)[..., :min(k, n_tr)]  # [L, n, k]
        keep = torch.gather(obs.expand_as(d_l), 2, order).to(self.profiles.dtype)
        prof_t = self.profiles.t()                                       # [L, N_train]
        vals = torch.gather(prof_t.unsqueeze(1).expand(-1, order.shape[1], -1), 2, order)
        return ((vals * keep).sum(2) / keep.sum(2)).t()                  # [n, L]

    def tune(self, profiles: Tensor, lat, lon, val_idx: Tensor,
             candidates: Sequence[int] = (1, 2, 3, 5, 10, 20),
             observed: Optional[Tensor] = None) -> "NearestNeighbourProfile":
        r"""Choose :math:`k` by the profile MAE on validation nodes ``val_idx`` (indices into
        ``profiles``) predicted from the *other* training nodes, then fit on all of them.
        With ``observed``, the MAE covers the validation slots observed, and the
        predictions use the observed slots of the other nodes only.

        The MAE of every candidate is kept in :attr:`validation`; ties go to the smaller k.
        """
        profiles = _check_profiles(profiles)
        obs = _check_observed(observed, profiles)
        n = profiles.shape[0]
        lat, lon = self._coords(lat, lon, n, "training")
        val = torch.as_tensor(val_idx, dtype=torch.long).reshape(-1)
        if val.numel() == 0 or val.numel() >= n:
            raise ValueError(f"'val_idx' must select between 1 and {n - 1} training nodes "
                             f"(got {val.numel()})")
        rest = torch.ones(n, dtype=torch.bool)
        rest[val] = False
        inner = NearestNeighbourProfile(1).fit(profiles[rest], lat[rest], lon[rest],
                                               None if obs is None else obs[rest])
        self.validation = {}
        for k in candidates:
            if k > int(rest.sum()):
                continue
            err = (inner.predict(lat[val], lon[val], k=int(k)) - profiles[val]).abs()
            if obs is None:
                self.validation[int(k)] = float(err.mean())
            else:
                self.validation[int(k)] = float(err[obs[val]].mean())
        self.k = min(self.validation, key=lambda c: (self.validation[c], c))
        return self.fit(profiles, lat, lon, obs)

    def generate(self, lat, lon, num_samples: int) -> Tensor:
        """``[num_samples, n, L]`` (a point mass at each node's profile)."""
        return self.predict(lat, lon).unsqueeze(0).expand(int(num_samples), -1, -1).clone()

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(k={self.k})"
