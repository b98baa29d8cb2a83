r"""Windowed and daily datasets over :class:`GridSeries` / :class:`GraphSeries`, time
features and the splits used by the two papers.

* DiffRecon (https://arxiv.org/abs/2410.05323, §V-A) splits each dataset **in time**,
  2:1:1 into train / validation / test (:func:`chronological_split`), and conditions on a
  history of maps plus external and time features (:class:`WindowDataset`).
* KGDiff (AAAI 2026) splits the **nodes** by latitude (:func:`split_nodes_by_latitude`) and
  treats one 24-hour weekday of one node as a sample (:class:`DailyDataset`).

All samples are dicts of tensors in the library's layout: node values ``[T, N, F]``
(grid cells in row-major order), ``mask`` = observed input, ``eval_mask`` = where the
truth is scored; missing values are 0 **and** flagged.
"""
import math
from fractions import Fraction
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .._checks import check_int, is_integer_dtype
from .patterns import SparsePattern
from .series import GraphSeries, GridSeries, as_minutes as _as_minutes

__all__ = ["chronological_split", "time_features", "WindowDataset", "DailyDataset",
           "split_nodes_by_latitude"]

Series = Union[GridSeries, GraphSeries]
_SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------- splits
def chronological_split(T: int, ratios: Sequence[float] = (2, 1, 1)) -> Tuple[range, range,
                                                                              range]:
    r"""Split ``T`` steps in time into train / validation / test index ranges.

    With :math:`c_k` the cumulative ratios and :math:`R` their total, the boundaries are
    :math:`b_k = \lfloor T\, c_k / R \rfloor`; the test range takes the remainder. For
    ``T = 4392`` and ``(2, 1, 1)``: 2196 / 1098 / 1098 steps.

    Args:
        T (int): number of steps.
        ratios (sequence of 3 numbers, optional): train : val : test. (default: ``(2, 1, 1)``)

    Returns:
        ``(train, val, test)`` :class:`range` objects covering ``0..T-1`` in order.
    """
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"'T' must be a positive integer (got {T!r})")
    ratios = tuple(ratios)
    if len(ratios) != 3 or any(not math.isfinite(r) or r < 0 for r in ratios) \
            or sum(ratios) <= 0:
        raise ValueError(f"'ratios' must be three non-negative numbers with a positive sum "
                         f"(got {ratios!r})")
    fr = [Fraction(r).limit_denominator(10 ** 6) for r in ratios]
    total = sum(fr)
    b1 = math.floor(T * fr[0] / total)
    b2 = math.floor(T * (fr[0] + fr[1]) / total)
    return range(0, b1), range(b1, b2), range(b2, int(T))


def split_nodes_by_latitude(lat, test_frac: float = 0.3, direction: str = "south",
                            val_frac: Optional[float] = None):
    r"""KGDiff's spatial split: the southern (or northern) band of nodes is unseen.

    Nodes are sorted by latitude (ties by index); with ``direction='south'`` the
    ``round(test_frac * N)`` lowest-latitude nodes form the test set, and when ``val_frac``
    is given the next ``round(val_frac * N)`` nodes (the band just north of the test band)
    the validation set; ``'north'`` mirrors this from the highest latitude.

    Args:
        lat (Tensor or array): ``[N]`` node latitudes.
        test_frac (float, optional): fraction of test nodes in ``(0, 1)``. (default: ``0.3``)
        direction (str, optional): ``'south'`` or ``'north'``. (default: ``'south'``)
        val_frac (float, optional): fraction of validation nodes; ``None`` for none.
            (default: ``None``)

    Returns:
        ``(train_idx, test_idx)``, or ``(train_idx, val_idx, test_idx)`` when ``val_frac`` is
        given; sorted ``LongTensor`` s partitioning ``0..N-1``.
    """
    lat = torch.as_tensor(np.asarray(lat, dtype=np.float64)) \
        if not isinstance(lat, Tensor) else lat.detach().double().cpu()
    if lat.dim() != 1:      # e.g. pos [N, 2]: flattening it would split 2N "nodes"
        raise ValueError(f"'lat' must have shape [N] (one latitude per node; got "
                         f"{tuple(lat.shape)}); for a grid's [H, W] latitudes pass "
                         f"lat.reshape(-1) (row-major node order)")
    n = lat.numel()
    if n < 2 or not torch.isfinite(lat).all():
        raise ValueError(f"'lat' must be [N >= 2] finite latitudes (got {n} values)")
    if direction not in ("south", "north"):
        raise ValueError(f"'direction' must be 'south' or 'north' (got {direction!r})")
    if not 0.0 < test_frac < 1.0:
        raise ValueError(f"'test_frac' must be in (0, 1) (got {test_frac!r})")
    if val_frac is not None and not (0.0 <= val_frac < 1.0 and test_frac + val_frac < 1.0):
        raise ValueError(f"'val_frac' must be in [0, 1) with test_frac + val_frac < 1 "
                         f"(got {val_frac!r})")
    key = lat if direction == "south" else -lat
    order = torch.from_numpy(np.lexsort((np.arange(n), key.numpy())))
    n_test = max(1, int(round(test_frac * n)))
    n_val = 0 if val_frac is None else int(round(val_frac * n))
    if n_test + n_val >= n:
        raise ValueError(f"'test_frac'/'val_frac' leave no training node among N={n}")
    test = order[:n_test].sort().values
    val = order[n_test:n_test + n_val].sort().values
    train = order[n_test + n_val:].sort().values
    return (train, test) if val_frac is None else (train, val, test)


# --------------------------------------------------------------------------- time
def _weekday(days: np.ndarray) -> np.ndarray:
    """Monday = 0 ... Sunday = 6 for ``datetime64[D]`` values (1970-01-01 was a Thursday)."""
    return (days.astype(np.int64) + 3) % 7


def _holiday_flags(days: np.ndarray, holidays) -> np.ndarray:
    if holidays is None:
        return np.zeros(len(days), dtype=bool)
    arr = np.asarray(holidays)
    if arr.size == 0:
        return np.zeros(len(days), dtype=bool)
    if arr.dtype.kind in "biuf":
        if arr.shape != (len(days),):
            raise ValueError(f"'holidays' flags must have shape (T={len(days)},) "
                             f"(got {arr.shape})")
        return arr.astype(bool)
    try:
        hol = np.unique(arr.astype("datetime64[D]"))
    except (ValueError, TypeError):
        raise ValueError("'holidays' must be dates (datetime64 / ISO strings) or (T,) "
                         "flags") from None
    return np.isin(days, hol)


def time_features(timestamps, holidays=None, encoding: str = "cyclic") -> Tensor:
    r"""Calendar features of each step.

    With :math:`m \in [0, 1440)` the minute of the day, :math:`d \in \{0..6\}` the day of
    the week (Monday = 0) and :math:`h \in \{0, 1\}` the holiday flag:

    * ``encoding='cyclic'`` (5 features):

      .. math::
          \left[\sin\frac{2\pi m}{1440}, \cos\frac{2\pi m}{1440}, \sin\frac{2\pi d}{7},
          \cos\frac{2\pi d}{7}, h\right]

    * ``encoding='onehot'`` (32 features, as in UrbanFM / ST-ResNet's external factors):
      one-hot hour of day :math:`\lfloor m / 60 \rfloor` (24), one-hot day of week (7),
      then :math:`h`.

    * ``encoding='raw'`` (3 features, what :class:`~torch_stgen.models.DiffRecon` takes as
      ``time``; its embeddings encode them): :math:`[m / 60, d, h]`, the hour of the day
      with its fraction, the day of the week and the holiday flag.

    Args:
        timestamps (array): ``(T,)`` ``datetime64`` or ISO strings.
        holidays (optional): holiday dates (iterable of dates / ISO strings; a step is a
            holiday if its calendar day is listed) or ``(T,)`` boolean flags.
            (default: ``None``, no holiday)
        encoding (str, optional): ``'cyclic'``, ``'onehot'`` or ``'raw'``.
            (default: ``'cyclic'``)

    Returns:
        float32 ``[T, 5]``, ``[T, 32]`` or ``[T, 3]``.
    """
    ts = _as_minutes(timestamps)
    days = ts.astype("datetime64[D]")
    minute = (ts - days.astype("datetime64[m]")).astype(np.int64)
    dow = _weekday(days)
    hol = _holiday_flags(days, holidays).astype(np.float64)
    if encoding == "cyclic":
        a, b = 2 * np.pi * minute / 1440.0, 2 * np.pi * dow / 7.0
        feats = np.stack([np.sin(a), np.cos(a), np.sin(b), np.cos(b), hol], axis=1)
    elif encoding == "raw":
        feats = np.stack([minute / 60.0, dow, hol], axis=1)
    elif encoding == "onehot":
        feats = np.zeros((len(ts), 32))
        feats[np.arange(len(ts)), minute // 60] = 1.0
        feats[np.arange(len(ts)), 24 + dow] = 1.0
        feats[:, 31] = hol
    else:
        raise ValueError(f"'encoding' must be 'cyclic', 'onehot' or 'raw' "
                         f"(got {encoding!r})")
    return torch.from_numpy(feats.astype(np.float32))


# --------------------------------------------------------------------------- helpers
def node_index(nodes, num_nodes: int, name: str = "nodes") -> Tensor:
    """``nodes`` as a 1-D long tensor of indices in ``[0, num_nodes)``: integer indices, or
    a boolean ``[num_nodes]`` mask (PyG's ``train_mask`` idiom), on their own device;
    ``None`` is every node. Floating values are refused (a silent ``.long()`` would truncate them)."""
    if nodes is None:
        return torch.arange(num_nodes)
    idx = torch.as_tensor(nodes)
    if idx.numel() == 0:                # an empty list is float32 to torch: no nodes
        return idx.long().reshape(-1)
    if idx.dtype == torch.bool:
        if idx.shape != (num_nodes,):
            raise ValueError(f"a boolean '{name}' mask must have shape [N={num_nodes}] "
                             f"(got {tuple(idx.shape)})")
        return idx.nonzero().reshape(-1)
    if not is_integer_dtype(idx) or idx.dim() > 1:
        raise ValueError(f"'{name}' must be 1-D integer node indices or a boolean [N] mask "
                         f"(got {tuple(idx.shape)}, {idx.dtype})")
    idx = idx.long().reshape(-1)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= num_nodes):
        raise ValueError(f"'{name}' must be node indices in [0, {num_nodes}) (got range "
                         f"[{int(idx.min())}, {int(idx.max())}])")
    return idx


def step_minutes(timestamps) -> Optional[int]:
    """The series' step in minutes: the most common positive gap between consecutive
    ``timestamps`` (a missing stretch or one odd gap does not change it); ``None`` when
    there is no positive gap."""
    gaps = np.diff(_as_minutes(timestamps)).astype(np.int64)
    gaps = gaps[gaps > 0]
    if gaps.size == 0:
        return None
    values, counts = np.unique(gaps, return_counts=True)
    return int(values[np.argmax(counts)])


def _node_view(series: Series) -> Tuple[Tensor, Tensor]:
    """``[T, N, F]`` values and observed mask (grid cells row-major)."""
    if isinstance(series, GridSeries):
        T, C, H, W = series.data.shape
        to_nodes = lambda t: t.permute(0, 2, 3, 1).reshape(T, H * W, C)  # noqa: E731
        return to_nodes(series.data), to_nodes(series.mask.to(series.data.dtype))
    if isinstance(series, GraphSeries):
        return series.data, series.mask.to(series.data.dtype)
    raise TypeError(f"'series' must be a GridSeries or GraphSeries "
                    f"(got {type(series).__name__})")


def _pattern_mask(series: Series, pattern, T: int, N: int) -> Tensor:
    """``[T, N, 1]`` observed pattern mask (1 = the pattern keeps the value)."""
    if isinstance(pattern, str):
        pattern = SparsePattern.parse(pattern)
    if not isinstance(pattern, SparsePattern):
        raise TypeError(f"'pattern' must be a SparsePattern or a spec like 'fixed:0.4' "
                        f"(got {type(pattern).__name__})")
    if isinstance(series, GridSeries):
        m = pattern(T, series.height, series.width).reshape(T, N)
    else:
        m = pattern.node_mask(T, N)
    return m.unsqueeze(-1)


# --------------------------------------------------------------------------- windows
class WindowDataset(Dataset):
    r"""Sliding windows over a :class:`GridSeries` or :class:`GraphSeries`.

    A sample starting at step :math:`s` has a history of :math:`L` steps and a target of
    :math:`H` steps starting :math:`\delta` steps after the history:

    .. math::
        \text{history} = [s, s + L), \qquad
        \text{target} = [s + L + \delta,\; s + L + \delta + H).

    ``delay=0`` forecasts the next ``horizon`` steps; ``delay=-1, horizon=1`` targets the
    last history step itself (reconstruction / nowcasting, DiffRecon's setting: infer the
    current map from its incomplete observation and the history).

    A window belongs to ``split`` when its target lies inside that split's time range
    (:func:`chronological_split` with ``ratios``) and the window does not extend past the
    range's end; the history may reach back into earlier splits (past observations are
    available at inference time), never forward.

    Masks: ``mask`` / ``y_mask`` are the *input* masks, the observed entries of the series
    that the ``pattern`` keeps (:class:`SparsePattern`, broadcast over features; grid
    patterns act on the ``H x W`` cells, graph patterns on the nodes). ``eval_mask`` marks the
    target entries whose truth exists (``eval_on='all'``) or, for imputation scoring, only
    those the pattern hid (``eval_on='missing'``).

    Scaling: if ``scaler`` (:class:`~torch_stgen.data.StandardScaler` /
    :class:`~torch_stgen.data.MinMaxScaler`) is not fitted yet it is fitted per feature on
    the **observed entries of the training range** only, whatever ``split`` is; ``x`` and
    ``y`` are then scaled (missing entries stay 0). Pass the same fitted scaler to the
    validation/test datasets.

    Length: a window covers :math:`\max(L, L + \delta + H)` steps; a series shorter than
    that raises ``ValueError`` (no window could fit in any split). A ``split`` may still be
    empty (e.g. ``ratios=(3, 0, 1)`` has no validation range; a later split shorter than a
    target, :math:`\max(H, -\delta)` steps; or the first split, which has no earlier
    context, shorter than the whole span): its dataset then has no windows.

    Args:
        series (GridSeries or GraphSeries): the data.
        history (int): :math:`L \ge 1`. Integer arguments accept any integer type
            (``numpy.int64`` too); floats such as ``4.0`` are refused.
        horizon (int, optional): :math:`H \ge 1`. (default: ``1``)
        delay (int, optional): :math:`\delta \ge -L`. (default: ``0``)
        split (str, optional): ``'train'``, ``'val'``, ``'test'`` or ``None`` (all windows).
            (default: ``None``)
        ratios (tuple, optional): the chronological split ratios. (default: ``(2, 1, 1)``)
        stride (int, optional): step between window starts. (default: ``1``)
        pattern (SparsePattern or str, optional): sparse observation pattern.
            (default: ``None``)
        eval_on (str, optional): ``'all'`` or ``'missing'``. (default: ``'all'``)
        scaler (optional): a scaler (fitted on the training range when unfitted).
            (default: ``None``)
        holidays (optional): see :func:`time_features`. (default: ``None``)
        time_encoding (str, optional): see :func:`time_features`. (default: ``'cyclic'``)

    Sample (dict of tensors):
        - ``x``: ``[L, N, F]`` history values (0 where not in ``mask``)
        - ``mask``: ``[L, N, F]`` input mask of the history
        - ``y``: ``[H, N, F]`` target truth (0 where missing in the data)
        - ``y_mask``: ``[H, N, F]`` input mask at the target steps (what a model may see)
        - ``eval_mask``: ``[H, N, F]``
        - ``time_x`` / ``time_y``: ``[L, F_t]`` / ``[H, F_t]`` (when timestamps exist)
        - ``ext_x`` / ``ext_y``: ``[L, F_ext]`` / ``[H, F_ext]`` (when the series has ``ext``)
        - ``index``: the start step :math:`s` (long scalar)

        A :class:`torch.utils.data.DataLoader` batches them to ``[B, L, N, F]``; for a grid,
        :func:`~torch_stgen.data.grid_to_image` gives the image view.
    """

    def __init__(self, series: Series, history: int, horizon: int = 1, delay: int = 0,
                 split: Optional[str] = None, ratios: Sequence[float] = (2, 1, 1),
                 stride: int = 1, pattern=None, eval_on: str = "all", scaler=None,
                 holidays=None, time_encoding: str = "cyclic"):
        values, obs = _node_view(series)
        T, N, F = values.shape

        history = check_int("history", history, 1, "")
        horizon = check_int("horizon", horizon, 1, "")
        stride = check_int("stride", stride, 1, "")
        delay = check_int("delay", delay, -history, "-history = ")
        span = max(history, history + delay + horizon)          # steps covered from s
        if span > T:
            raise ValueError(f"a window (history={history}, delay={delay}, "
                             f"horizon={horizon}) spans {span} steps, more than the series' "
                             f"T={T}: no window fits; shorten 'history' / 'horizon'")
        if split is not None and split not in _SPLITS:
            raise ValueError(f"'split' must be one of {_SPLITS} or None (got {split!r})")
        if eval_on not in ("all", "missing"):
            raise ValueError(f"'eval_on' must be 'all' or 'missing' (got {eval_on!r})")
        if eval_on == "missing" and pattern is None:
            raise ValueError("eval_on='missing' needs a 'pattern'")
        self.series, self.history, self.horizon, self.delay = series, history, horizon, delay
        self.split, self.ratios, self.stride, self.eval_on = split, tuple(ratios), stride, eval_on
        ranges = chronological_split(T, ratios)
        self.ranges = dict(zip(_SPLITS, ranges))

        keep = torch.ones(T, N, 1) if pattern is None else _pattern_mask(series, pattern, T, N)
        self.pattern = SparsePattern.parse(pattern) if isinstance(pattern, str) else pattern
        self.truth_mask = obs                                   # data observed
        self.input_mask = obs * keep                            # observed and kept
        self.eval_mask = obs if eval_on == "all" else obs * (1 - keep)

        self.scaler = scaler
        if scaler is not None:
            if not getattr(scaler, "fitted", False):
                tr = self.ranges["train"]
                if len(tr) == 0:
                    raise ValueError("the training range is empty: cannot fit 'scaler'")
                scaler.fit(values[tr.start:tr.stop], obs[tr.start:tr.stop], channel_dim=-1)
            values = scaler.transform(values, obs)
        self.values = values

        self.time = None
        if series.timestamps is not None:
            self.time = time_features(series.timestamps, holidays, encoding=time_encoding)
        self.ext = series.ext

        lo, hi = (0, T) if split is None else (self.ranges[split].start,
                                               self.ranges[split].stop)
        first = max(0, lo - history - delay)
        starts = [s for s in range(first, T, stride)
                  if s + history + delay >= lo and s + span <= hi]
        self.starts = torch.tensor(starts, dtype=torch.long)

    # ---------------------------------------------------------------- Dataset
    def __len__(self) -> int:
        return self.starts.numel()

    def __getitem__(self, i: int) -> Dict[str, Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} windows")
        s = int(self.starts[i])
        h = slice(s, s + self.history)
        t0 = s + self.history + self.delay
        t = slice(t0, t0 + self.horizon)
        m = self.input_mask[h]
        out = {"x": self.values[h] * m, "mask": m,
               "y": self.values[t] * self.truth_mask[t], "y_mask": self.input_mask[t],
               "eval_mask": self.eval_mask[t], "index": torch.tensor(s)}
        if self.time is not None:
            out["time_x"], out["time_y"] = self.time[h], self.time[t]
        if self.ext is not None:
            out["ext_x"], out["ext_y"] = self.ext[h], self.ext[t]
        return out

    # ---------------------------------------------------------------- helpers
    @property
    def num_nodes(self) -> int:
        return self.values.shape[1]

    @property
    def num_features(self) -> int:
        return self.values.shape[2]

    def graph(self, **kwargs):
        """The series' graph: :func:`grid_graph` for a grid, :func:`sensor_graph` from the
        adjacency for a sensor network (``None`` when a graph series has no ``adj``)."""
        if isinstance(self.series, GraphSeries) and self.series.adj is None:
            return None
        return self.series.graph(**kwargs)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.series.name!r}, split={self.split!r}, "
                f"history={self.history}, horizon={self.horizon}, delay={self.delay}, "
                f"windows={len(self)})")


# --------------------------------------------------------------------------- days
class DailyDataset(Dataset):
    r"""One sample = one calendar day of one node (KGDiff's setting: a 24-hour weekday
    profile, 48 steps at 30 minutes, 288 at 5 minutes).

    The step length :math:`\Delta` is the most frequent gap between consecutive timestamps
    and must divide a day; ``steps_per_day = 1440 / Δ``. A step at minute :math:`m` of its
    day goes to slot :math:`m / \Delta`. Days that lack timestamps for some slots are
    dropped when ``complete_days`` (their slots would otherwise be missing, mask 0).

    Args:
        series (GridSeries or GraphSeries): the data (needs ``timestamps``).
        nodes (LongTensor or BoolTensor, optional): node indices to use (e.g. the training
            nodes of :func:`split_nodes_by_latitude`), or a boolean ``[N]`` node mask
            (PyG's ``train_mask`` idiom). (default: all)
        channel (int, optional): feature channel. (default: ``0``)
        weekdays (optional): ``None`` (all days), ``'weekday'`` (Mon-Fri), ``'weekend'``
            or an iterable of day numbers (Monday = 0). (default: ``None``)
        holidays (optional): holiday dates to drop. (default: ``None``)
        complete_days (bool, optional): drop days with missing timestamps. (default: ``True``)
        min_observed (float, optional): drop (day, node) samples with a smaller observed
            fraction. (default: ``0.0``)

    Attributes:
        values / mask: ``[num_days, N, steps_per_day]`` over all nodes of the series.
        dates: ``(num_days,)`` ``datetime64[D]``; weekday: ``[num_days]`` long.

    Sample (dict): ``x`` ``[steps]``, ``mask`` ``[steps]``, ``node`` (index in the series),
    ``day`` (index into ``dates``), ``weekday``.
    """

    def __init__(self, series: Series, nodes=None, channel: int = 0, weekdays=None,
                 holidays=None, complete_days: bool = True, min_observed: float = 0.0):
        values, obs = _node_view(series)
        T, N, F = values.shape
        if not -F <= channel < F:
            raise ValueError(f"'channel' must be in [-{F}, {F}) (got {channel!r})")
        if series.timestamps is None:
            raise ValueError("'series' needs timestamps to be cut into days")
        ts = _as_minutes(series.timestamps)
        step = step_minutes(ts)
        if step is None:
            raise ValueError("'series' timestamps must span at least two distinct steps")
        if 1440 % step:
            raise ValueError(f"the step of {step} minutes does not divide a day")
        S = 1440 // step
        days = ts.astype("datetime64[D]")
        minute = (ts - days.astype("datetime64[m]")).astype(np.int64)
        if (minute % step).any():
            raise ValueError(f"timestamps are not aligned to {step}-minute slots")
        slot = minute // step
        uniq, day_idx = np.unique(days, return_inverse=True)
        D = len(uniq)
        v = torch.zeros(D, N, S)
        m = torch.zeros(D, N, S)
        present = torch.zeros(D, S, dtype=torch.bool)
        di, si = torch.from_numpy(day_idx.astype(np.int64)), torch.from_numpy(slot)
        v[di, :, si] = values[:, :, channel]
        m[di, :, si] = obs[:, :, channel]
        present[di, si] = True

        keep = np.ones(D, dtype=bool)
        if complete_days:
            keep &= present.all(dim=1).numpy()
        wd = _weekday(uniq)
        if weekdays is not None:
            if isinstance(weekdays, str):
                if weekdays not in ("weekday", "weekend"):
                    raise ValueError(f"'weekdays' must be 'weekday', 'weekend' or day "
                                     f"numbers 0..6 (got {weekdays!r})")
                allowed = {0, 1, 2, 3, 4} if weekdays == "weekday" else {5, 6}
            else:
                allowed = {int(d) for d in weekdays}
                if not allowed <= set(range(7)):
                    raise ValueError(f"'weekdays' must be day numbers 0..6 (Monday = 0) "
                                     f"(got {sorted(allowed)})")
            keep &= np.isin(wd, sorted(allowed))
        if holidays is not None:
            keep &= ~_holiday_flags(uniq, holidays)
        kt = torch.from_numpy(keep)
        self.values, self.mask = v[kt] * m[kt], m[kt]
        self.dates = uniq[keep]
        self.weekday = torch.from_numpy(wd[keep].astype(np.int64))
        self.steps_per_day, self.freq_minutes = S, step

        self.nodes = node_index(nodes, N)
        frac = self.mask[:, self.nodes].mean(dim=-1)             # [D, n_sel]
        day, k = torch.nonzero(frac >= min_observed if min_observed > 0 else
                               torch.ones_like(frac, dtype=torch.bool), as_tuple=True)
        self.samples = torch.stack([day, self.nodes[k]], dim=1)  # [num_samples, 2]

    @property
    def num_days(self) -> int:
        return len(self.dates)

    def __len__(self) -> int:
        return self.samples.shape[0]

    def __getitem__(self, i: int) -> Dict[str, Tensor]:
        day, node = (int(v) for v in self.samples[i])
        return {"x": self.values[day, node], "mask": self.mask[day, node],
                "node": torch.tensor(node), "day": torch.tensor(day),
                "weekday": self.weekday[day]}

    def profiles(self) -> Tuple[Tensor, Tensor]:
        r"""Mean daily profile of every selected node over the kept days, from observed
        values only: :math:`\bar x_{n,k} = \sum_d m_{d,n,k} x_{d,n,k} / \sum_d m_{d,n,k}`.

        Returns:
            ``(profile [n_sel, steps], count [n_sel, steps])``; slots never observed get 0
            with count 0.
        """
        v, m = self.values[:, self.nodes], self.mask[:, self.nodes]
        count = m.sum(dim=0)
        prof = (v * m).sum(dim=0) / count.clamp(min=1)
        return prof, count

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(days={self.num_days}, nodes={self.nodes.numel()}, "
                f"steps_per_day={self.steps_per_day}, samples={len(self)})")
