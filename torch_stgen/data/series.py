"""Containers for spatio-temporal series: a grid (city map) and a graph (sensor network).

Both keep the raw values, the *observed* mask (1 = a real reading, 0 = missing; a missing
value is stored as 0, never NaN) and the timestamps. They are what the readers and the
synthetic city return, and what the windowed datasets consume.
"""
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from .._checks import check_binary_mask

__all__ = ["GridSeries", "GraphSeries", "as_minutes"]


def _nan_to_missing(data: torch.Tensor, mask: Optional[torch.Tensor]):
    """Turn NaN/inf into missing values: value 0 and mask 0 (never a silent NaN)."""
    finite = torch.isfinite(data)
    mask = finite if mask is None else (mask.bool() & finite)
    data = torch.where(mask, data, torch.zeros((), dtype=data.dtype))
    return data, mask.to(data.dtype)


def as_minutes(timestamps) -> np.ndarray:
    """``timestamps`` as a ``(T,)`` ``datetime64[m]`` array of wall-clock times.

    Numbers are refused (epoch seconds would be read as minutes), and so are
    timezone-aware times (pandas' tz-aware index, ``datetime`` objects with ``tzinfo``, ISO
    strings with an offset): numpy converts them to UTC, so a local 8 am would become
    another hour. Pass local times, e.g. ``index.tz_localize(None)``.
    """
    tz_msg = ("'timestamps' are timezone-aware: pass local wall-clock times (e.g. "
              "pandas' index.tz_localize(None)); numpy would convert them to UTC")
    if getattr(timestamps, "tz", None) is not None or getattr(
            getattr(timestamps, "dtype", None), "tz", None) is not None:
        raise ValueError(tz_msg)
    raw = np.asarray(timestamps)
    if raw.size and raw.dtype.kind in "biufc":
        raise ValueError(f"'timestamps' must be datetime64 values or ISO strings, not "
                         f"numbers (got {raw.dtype}); convert epoch seconds with "
                         f"np.asarray(t, dtype='datetime64[s]')")
    if raw.dtype == object and any(getattr(t, "tzinfo", None) is not None
                                   for t in raw.reshape(-1)):
        raise ValueError(tz_msg)
    with warnings.catch_warnings():
        # numpy only warns when it converts an offset ("...T08:00-05:00") to UTC
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("error", DeprecationWarning)
        try:
            ts = raw.astype("datetime64[m]")
        except (UserWarning, DeprecationWarning):
            raise ValueError(tz_msg) from None
        except (ValueError, TypeError):
            raise ValueError("'timestamps' must be datetime64 values or ISO strings") from None
    if ts.ndim != 1:
        raise ValueError(f"'timestamps' must have shape (T,) (got {ts.shape})")
    if np.isnat(ts).any():
        raise ValueError("'timestamps' contains NaT")
    return ts


def _check_time_axis(series) -> None:
    """Validate and convert the per-step attributes ``timestamps`` and ``ext``."""
    kind, T = type(series).__name__, series.data.shape[0]
    if series.timestamps is not None:
        try:
            series.timestamps = as_minutes(series.timestamps)
        except ValueError as err:
            raise ValueError(f"{kind} {err}") from None
        if len(series.timestamps) != T:
            raise ValueError(f"{kind} 'timestamps' must have length T={T} "
                             f"(got {len(series.timestamps)})")
        uniq, counts = np.unique(series.timestamps, return_counts=True)
        if (counts > 1).any():      # a day cut would keep one of the readings silently
            dup = uniq[counts > 1]
            raise ValueError(f"{kind} 'timestamps' must be unique at minute resolution "
                             f"(they are stored as datetime64[m]): {len(dup)} repeated, "
                             f"first {dup[0]} ({int(counts.max())} times at most)")
        back = np.flatnonzero(np.diff(series.timestamps) < np.timedelta64(0, "m"))
        if back.size:               # splits are by row order: they would mix the future in
            i = int(back[0]) + 1
            raise ValueError(f"{kind} 'timestamps' must increase (row {i}, "
                             f"{series.timestamps[i]}, is earlier than row {i - 1}, "
                             f"{series.timestamps[i - 1]}); sort the rows by time")
    if series.ext is not None:
        series.ext = torch.as_tensor(series.ext, dtype=torch.float32)
        if series.ext.dim() != 2 or series.ext.shape[0] != T:
            raise ValueError(f"{kind} 'ext' must have shape [T={T}, F_ext] "
                             f"(got {tuple(series.ext.shape)})")
        bad = ~torch.isfinite(series.ext)
        if bool(bad.any()):         # covariates are inputs at every step: no missing ones
            row, col = (int(i) for i in bad.nonzero()[0])
            raise ValueError(f"{kind} 'ext' has NaN/inf (first at step {row}, column {col}); "
                             f"fill or drop the affected steps")


@dataclass
class GridSeries:
    r"""A gridded spatio-temporal series (a sequence of city maps).

    Attributes:
        data: ``[T, C, H, W]`` float tensor (``C`` flow channels, e.g. in/out flow).
        mask: ``[T, C, H, W]`` observed mask (1 observed, 0 missing). Built from the data's
            finite entries when not given.
        timestamps: ``(T,)`` ``numpy.datetime64[m]`` array, or ``None``.
        ext: optional ``[T, F_ext]`` external covariates (weather, temperature, ...).
        lat / lon: optional ``[H, W]`` cell-centre coordinates.
        name: a short identifier used in tables.
        meta: free-form extra information (e.g. the holiday flags, the source path).
    """

    data: torch.Tensor
    mask: Optional[torch.Tensor] = None
    timestamps: Optional[np.ndarray] = None
    ext: Optional[torch.Tensor] = None
    lat: Optional[torch.Tensor] = None
    lon: Optional[torch.Tensor] = None
    name: str = "grid"
    meta: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.data = torch.as_tensor(self.data, dtype=torch.float32)
        if self.data.dim() != 4:
            raise ValueError(f"GridSeries 'data' must have shape [T, C, H, W] "
                             f"(got {tuple(self.data.shape)})")
        if self.mask is not None:
            self.mask = torch.as_tensor(self.mask)
            if self.mask.shape != self.data.shape:
                raise ValueError(f"GridSeries 'mask' must have the data's shape "
                                 f"{tuple(self.data.shape)} (got {tuple(self.mask.shape)})")
            check_binary_mask("GridSeries.mask", self.mask)
        self.data, self.mask = _nan_to_missing(self.data, self.mask)
        _check_time_axis(self)

    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def num_steps(self) -> int:
        return self.data.shape[0]

    @property
    def height(self) -> int:
        return self.data.shape[2]

    @property
    def width(self) -> int:
        return self.data.shape[3]

    def graph(self, connectivity: int = 4):
        """The grid as a PyG ``Data`` (row-major nodes), see :func:`grid_graph`."""
        from .grid import grid_graph
        return grid_graph(self.height, self.width, connectivity=connectivity,
                          lat=self.lat, lon=self.lon)

    def __repr__(self) -> str:
        span = ""
        if self.timestamps is not None and len(self.timestamps):
            span = f", {self.timestamps[0]} .. {self.timestamps[-1]}"
        return f"GridSeries({self.name!r}, shape={self.shape}{span})"


@dataclass
class GraphSeries:
    r"""A spatio-temporal series on the nodes of a graph (e.g. a sensor network).

    Attributes:
        data: ``[T, N, C]`` float tensor.
        mask: ``[T, N, C]`` observed mask (1 observed, 0 missing).
        lat / lon: ``[N]`` node coordinates (degrees) or ``None``.
        adj: optional ``[N, N]`` weighted adjacency.
        timestamps: ``(T,)`` ``numpy.datetime64[m]`` array, or ``None``.
        node_ids: optional list of ``N`` external node identifiers (e.g. sensor ids).
        ext: optional ``[T, F_ext]`` external covariates.
        name: a short identifier used in tables.
        meta: free-form extra information.
    """

    data: torch.Tensor
    mask: Optional[torch.Tensor] = None
    lat: Optional[torch.Tensor] = None
    lon: Optional[torch.Tensor] = None
    adj: Optional[torch.Tensor] = None
    timestamps: Optional[np.ndarray] = None
    node_ids: Optional[List[str]] = None
    ext: Optional[torch.Tensor] = None
    name: str = "graph"
    meta: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.data = torch.as_tensor(self.data, dtype=torch.float32)
        if self.data.dim() == 2:
            self.data = self.data.unsqueeze(-1)
        if self.data.dim() != 3:
            raise ValueError(f"GraphSeries 'data' must have shape [T, N] or [T, N, C] "
                             f"(got {tuple(self.data.shape)})")
        n = self.data.shape[1]
        if self.mask is not None:
            self.mask = torch.as_tensor(self.mask)
            if self.mask.dim() == 2:
                self.mask = self.mask.unsqueeze(-1)
            if self.mask.shape != self.data.shape:
                raise ValueError(f"GraphSeries 'mask' must have the data's shape "
                                 f"{tuple(self.data.shape)} (got {tuple(self.mask.shape)})")
            check_binary_mask("GraphSeries.mask", self.mask)
        self.data, self.mask = _nan_to_missing(self.data, self.mask)
        for name in ("lat", "lon"):
            v = getattr(self, name)
            if v is not None:
                v = torch.as_tensor(v, dtype=torch.float64).reshape(-1)
                if v.numel() != n:
                    raise ValueError(f"GraphSeries '{name}' must have shape [N={n}] "
                                     f"(got {v.numel()} values)")
                bound = 90.0 if name == "lat" else 180.0
                bad = ~(v.abs() <= bound)        # NaN too
                if bool(bad.any()):              # lat/lon swapped split by longitude
                    raise ValueError(f"GraphSeries '{name}' must be finite degrees in "
                                     f"[-{bound:g}, {bound:g}] (node {int(bad.nonzero()[0])}: "
                                     f"{float(v[bad][0])}; are lat and lon swapped?)")
                setattr(self, name, v)
        if self.adj is not None:
            self.adj = torch.as_tensor(self.adj, dtype=torch.float32)
            if tuple(self.adj.shape) != (n, n):
                raise ValueError(f"GraphSeries 'adj' must have shape [N, N] = [{n}, {n}] "
                                 f"(got {tuple(self.adj.shape)})")
        _check_time_axis(self)
        if self.node_ids is not None and len(self.node_ids) != n:
            raise ValueError(f"GraphSeries 'node_ids' must have N={n} entries "
                             f"(got {len(self.node_ids)})")
        if self.node_ids is not None and len(set(self.node_ids)) != n:
            # two nodes would share one KG entity
            dup = next(i for i, c in Counter(self.node_ids).items() if c > 1)
            raise ValueError(f"GraphSeries 'node_ids' must be unique ({dup!r} repeats)")

    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def num_steps(self) -> int:
        return self.data.shape[0]

    @property
    def num_nodes(self) -> int:
        return self.data.shape[1]

    def graph(self, **kwargs):
        """The sensor network as a PyG ``Data`` with edge weights, see :func:`sensor_graph`:
        from ``adj`` when the series has one, else the Gaussian kernel on the haversine
        distances of ``lat`` / ``lon`` (``kwargs``: ``sigma``, ``threshold``,
        ``self_loops``). Raises ``ValueError`` when the series has neither."""
        from .sensor import sensor_graph
        if self.adj is None and (self.lat is None or self.lon is None):
            raise ValueError(f"GraphSeries {self.name!r} has no 'adj' and no 'lat' / 'lon': "
                             f"there is no graph to build")
        data = sensor_graph(adj=self.adj, lat=self.lat, lon=self.lon, **kwargs)
        if self.node_ids is not None:
            data.node_ids = list(self.node_ids)
        return data

    def __repr__(self) -> str:
        span = ""
        if self.timestamps is not None and len(self.timestamps):
            span = f", {self.timestamps[0]} .. {self.timestamps[-1]}"
        return f"GraphSeries({self.name!r}, shape={self.shape}{span})"
