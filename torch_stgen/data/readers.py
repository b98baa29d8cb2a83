r"""Readers for real spatio-temporal formats, from a local folder (never downloads).

* :func:`read_deepst_h5` - the DeepST grid layout (ST-ResNet, Zhang et al., AAAI 2017,
  https://arxiv.org/abs/1610.00081): BikeNYC, TaxiBJ.
* :func:`read_dcrnn` - the DCRNN sensor layout (Li et al., ICLR 2018,
  https://arxiv.org/abs/1707.01926): METR-LA, PeMS-Bay (and T-GCN's ``los_speed.csv``).
* :func:`read_urbanfm` - the UrbanFM coarse/fine layout (Liang et al., KDD 2019,
  https://arxiv.org/abs/1902.05377).
* :func:`read_npz` / :func:`write_npz` - a documented ``.npz`` schema for users' own data.

A missing file raises :class:`FileNotFoundError` naming the file and the folder searched.
"""
import csv
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch

from ..typing import require
from .series import GraphSeries, GridSeries, as_minutes

__all__ = ["read_deepst_h5", "read_dcrnn", "read_urbanfm", "read_npz", "write_npz",
           "parse_freq"]

PathLike = Union[str, Path]

_FREQ_UNITS = {"min": 1, "m": 1, "t": 1, "h": 60, "d": 1440}


def parse_freq(freq) -> np.timedelta64:
    """A step length as ``numpy.timedelta64`` in minutes: ``'5min'``, ``'30T'``, ``'60min'``,
    ``'1h'``, ``'1d'``, an integer number of minutes or a ``timedelta64``."""
    if isinstance(freq, np.timedelta64):
        minutes = freq / np.timedelta64(1, "m")
    elif isinstance(freq, (int, np.integer)) and not isinstance(freq, bool):
        minutes = int(freq)
    elif isinstance(freq, str):
        m = re.fullmatch(r"\s*(\d*)\s*([a-zA-Z]+)\s*", freq)
        unit = m.group(2).lower() if m else None
        if unit not in _FREQ_UNITS:
            raise ValueError(f"'freq' must look like '5min', '30T', '1h' or '1d' "
                             f"(got {freq!r})")
        minutes = int(m.group(1) or 1) * _FREQ_UNITS[unit]
    else:
        raise TypeError(f"'freq' must be a string like '5min', minutes or a timedelta64 "
                        f"(got {type(freq).__name__})")
    if minutes != int(minutes) or minutes <= 0:
        raise ValueError(f"'freq' must be a positive whole number of minutes (got {freq!r})")
    return np.timedelta64(int(minutes), "m")


def _regular_timestamps(start, freq, T: int) -> np.ndarray:
    try:
        t0 = np.datetime64(start, "m")
    except ValueError:
        raise ValueError(f"'start' must be an ISO date-time like '2012-03-01T00:00' "
                         f"(got {start!r})") from None
    return t0 + np.arange(T) * parse_freq(freq)


def _find(root: PathLike, name: PathLike, what: str = "file") -> Path:
    """``root/name`` (``name`` itself when absolute), or FileNotFoundError naming both."""
    path = Path(name)
    if not path.is_absolute():
        path = Path(root) / path
    if not path.is_file():
        raise FileNotFoundError(f"{what} '{Path(name).name}' not found in folder "
                                f"'{path.parent.resolve()}'; place the file there (this "
                                f"reader never downloads)")
    return path


# --------------------------------------------------------------------------- DeepST
def _as_float32(what: str, values) -> np.ndarray:
    """``values`` as float32, refused when they are not real numbers or when a finite
    value lies beyond float32's range (it would turn into inf, i.e. a missing reading)."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{what} must hold real numbers (got dtype {arr.dtype})")
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 4:
        big = np.isfinite(arr) & (np.abs(arr) > np.finfo(np.float32).max)
        if big.any():
            raise ValueError(f"{what} holds {int(big.sum())} finite values beyond the float32 "
                             f"range (e.g. {arr[big].flat[0]!r}): rescale the data")
    if arr.dtype.kind in "iu" and arr.size:
        out = arr.astype(np.float32)
        lost = out.astype(np.float64) != arr.astype(np.float64)   # exact beyond 2**24 only
        if lost.any():
            warnings.warn(f"{what}: {int(lost.sum())} integer value(s) above 2**24 "
                          f"(e.g. {arr[lost].flat[0]!r}) are rounded to float32 "
                          f"(to {out[lost].flat[0]!r}); rescale the data to keep them exact",
                          stacklevel=3)
        return out
    return arr.astype(np.float32)


def read_deepst_h5(root: PathLike, filename: Optional[str] = None,
                   freq=None, name: Optional[str] = None) -> GridSeries:
    r"""Read a DeepST HDF5 file (BikeNYC ``NYC14_M16x8_T60_NewEnd.h5``, TaxiBJ
    ``BJ16_M32x32_T30_InOut.h5``, ...).

    Layout: dataset ``data`` ``(T, 2, H, W)`` (in/new flow, out/end flow) and ``date``
    ``(T,)`` bytes ``YYYYMMDDss`` where the slot ``ss`` runs ``01..S`` per day (``S = 24``
    hourly, ``48`` half-hourly). Slot ``s`` starts at ``(s - 1) * 1440 / S`` minutes after
    midnight:

    .. math::
        t = \mathrm{YYYY\text{-}MM\text{-}DD} + (s - 1)\,\Delta, \qquad \Delta = 1440 / S
        \text{ minutes}.

    :math:`\Delta` comes from ``freq`` when given, else from the ``_T<minutes>_`` part of
    the file name (``T60``, ``T30``), else from the largest slot in the file (``<= 24`` ->
    60 min, else 30 min).

    Args:
        root (str or Path): folder holding the file, or the file itself.
        filename (str, optional): file name in ``root``; by default the only ``*.h5`` file
            of the folder. (default: ``None``)
        freq (str, optional): slot length, e.g. ``'60min'``. (default: inferred)
        name (str, optional): series name. (default: the file stem)

    Returns:
        :class:`GridSeries` with ``data`` ``[T, 2, H, W]`` float32, ``timestamps``
        (``datetime64[m]``) and ``meta['freq_minutes']``, ``meta['source']``.
    """
    import h5py
    root = Path(root)
    if root.is_file() and filename is None:
        path = root
    elif filename is not None:
        path = _find(root, filename, "DeepST file")
    else:
        if not root.is_dir():
            raise FileNotFoundError(f"folder '{root}' does not exist (looking for a DeepST "
                                    f"'*.h5' file)")
        found = sorted(root.glob("*.h5"))
        if not found:
            raise FileNotFoundError(f"no DeepST '*.h5' file found in folder "
                                    f"'{root.resolve()}'")
        if len(found) > 1:
            raise ValueError(f"folder '{root}' holds several .h5 files "
                             f"{[p.name for p in found]}: pass 'filename'")
        path = found[0]
    with h5py.File(path, "r") as f:
        for key in ("data", "date"):
            if key not in f:
                raise ValueError(f"'{path.name}' lacks the DeepST dataset '{key}' "
                                 f"(has {list(f.keys())})")
            if not isinstance(f[key], h5py.Dataset):
                raise ValueError(f"'{path.name}' entry '{key}' must be a dataset "
                                 f"(got a {type(f[key]).__name__})")
        data = _as_float32(f"'{path.name}' dataset 'data'", f["data"][()])
        date = np.asarray(f["date"][()])
    if data.ndim != 4 or data.shape[0] == 0:
        raise ValueError(f"'{path.name}' dataset 'data' must have shape (T, C, H, W) with "
                         f"T >= 1 (got {data.shape})")
    if date.shape != (data.shape[0],):
        raise ValueError(f"'{path.name}' dataset 'date' must have shape (T={data.shape[0]},) "
                         f"(got {date.shape})")
    text = np.array([d.decode() if isinstance(d, bytes) else str(d) for d in date])
    if not all(len(s) == 10 and s.isdigit() for s in text):
        bad = next(s for s in text if not (len(s) == 10 and s.isdigit()))
        raise ValueError(f"'{path.name}' 'date' entries must be YYYYMMDDss (got '{bad}')")
    slots = np.array([int(s[8:]) for s in text])
    if freq is not None:
        step = parse_freq(freq)
    else:
        m = re.search(r"_T(\d+)(?:_|\.|$)", path.name)
        if m:
            step = parse_freq(int(m.group(1)))
        else:
            step = np.timedelta64(60 if slots.max() <= 24 else 30, "m")
    per_day = int(np.timedelta64(1440, "m") / step)
    if slots.min() < 1 or slots.max() > per_day:
        raise ValueError(f"'{path.name}' slots must be in 1..{per_day} for "
                         f"{int(step / np.timedelta64(1, 'm'))}-minute steps "
                         f"(got {slots.min()}..{slots.max()})")
    try:
        days = np.array([f"{s[:4]}-{s[4:6]}-{s[6:8]}" for s in text], dtype="datetime64[D]")
    except ValueError:
        bad = next(s for s in text if not _valid_day(s[:8]))
        raise ValueError(f"'{path.name}' 'date' entry '{bad}' is not a calendar day "
                         f"(YYYYMMDDss)") from None
    timestamps = days.astype("datetime64[m]") + (slots - 1) * step
    return GridSeries(torch.from_numpy(data), timestamps=timestamps,
                      name=name or path.stem,
                      meta={"source": str(path),
                            "freq_minutes": int(step / np.timedelta64(1, "m"))})


# --------------------------------------------------------------------------- DCRNN
_SPEED_FILES = ("los_speed.csv", "metr-la.h5", "pems-bay.h5")


def _valid_day(yyyymmdd: str) -> bool:
    try:
        np.datetime64(f"{yyyymmdd[:4]}-{yyyymmdd[4:6]}-{yyyymmdd[6:8]}", "D")
    except ValueError:
        return False
    return True


def read_dcrnn(root: PathLike, speeds: Optional[str] = None,
               start: str = "2012-03-01T00:00", freq: str = "5min",
               adj_file: str = "adj_mx.pkl",
               locations_file: Optional[str] = "graph_sensor_locations.csv",
               zero_is_missing: bool = True, name: Optional[str] = None) -> GraphSeries:
    r"""Read a DCRNN-style sensor dataset (METR-LA, PeMS-Bay).

    Files in ``root``:

    * ``adj_file``: pickled ``(sensor_ids, sensor_id_to_ind, adj_mx)``, written by Python 2
      (loaded with ``pickle.load(f, encoding='latin1')``; a pickle can run code, so only
      read files you trust). ``adj_mx[i, j]`` is the Gaussian-kernel weight of ``i -> j``.
      The sensor order of this file is the node order of the result.
    * ``locations_file``: CSV ``index,sensor_id,latitude,longitude`` with a header, or
      ``sensor_id,latitude,longitude`` without one (PeMS-Bay); ``None`` to skip.
    * ``speeds``: either a CSV whose header is the sensor ids and whose rows are the steps
      (T-GCN's ``los_speed.csv``; it has no timestamps, so they are ``start + k * freq``,
      by default 2012-03-01 00:00 every 5 minutes, which is right for that file), or a
      pandas HDF5 file in the ``metr-la.h5`` / ``pems-bay.h5`` layout (timestamps from its
      index). The fixed pandas layout (group ``df``: ``axis0`` column labels, ``axis1``
      int64 nanoseconds, ``block0_values`` ``(T, N)``) is read with ``h5py``; any other
      layout goes through ``pandas.read_hdf`` (optional pandas + PyTables). Default: the
      first of ``los_speed.csv``, ``metr-la.h5``, ``pems-bay.h5`` found in ``root``.

    A reading of 0 is missing (mask 0) when ``zero_is_missing`` (the METR-LA convention).

    Args:
        root (str or Path): the folder.
        speeds (str, optional): speeds file name or path. (default: ``None``)
        start (str, optional): first timestamp of a CSV. (default: ``'2012-03-01T00:00'``)
        freq (str, optional): step of a CSV. (default: ``'5min'``)
        adj_file (str, optional): (default: ``'adj_mx.pkl'``)
        locations_file (str, optional): (default: ``'graph_sensor_locations.csv'``)
        zero_is_missing (bool, optional): (default: ``True``)
        name (str, optional): series name. (default: the folder name)

    Returns:
        :class:`GraphSeries` ``[T, N, 1]`` with ``adj`` ``[N, N]``, ``lat``/``lon``,
        ``node_ids`` (sensor ids as strings) and ``timestamps``.
    """
    root = Path(root)
    adj_path = _find(root, adj_file, "DCRNN adjacency pickle")
    with open(adj_path, "rb") as f:
        content = pickle.load(f, encoding="latin1")
    if not (isinstance(content, (tuple, list)) and len(content) == 3):
        raise ValueError(f"'{adj_path.name}' must hold (sensor_ids, sensor_id_to_ind, adj_mx)")
    try:
        sensor_ids = [str(s) for s in content[0]]
    except TypeError:
        raise ValueError(f"'{adj_path.name}' sensor_ids must be a list (got "
                         f"{type(content[0]).__name__})") from None
    if len(set(sensor_ids)) != len(sensor_ids):
        dup = sorted({s for s in sensor_ids if sensor_ids.count(s) > 1})
        raise ValueError(f"'{adj_path.name}' sensor_ids must be unique (repeated: {dup[:5]})")
    adj = _as_float32(f"'{adj_path.name}' adj_mx", content[2])
    n = len(sensor_ids)
    if adj.shape != (n, n):
        raise ValueError(f"'{adj_path.name}' adj_mx must have shape [N, N] = [{n}, {n}] "
                         f"(got {adj.shape})")

    lat = lon = None
    if locations_file is not None:
        lat, lon = _read_locations(_find(root, locations_file, "sensor locations file"),
                                   sensor_ids)

    if speeds is None:
        for cand in _SPEED_FILES:
            if (root / cand).is_file():
                speeds = cand
                break
        else:
            raise FileNotFoundError(f"no speeds file ({', '.join(_SPEED_FILES)}) found in "
                                    f"folder '{root.resolve()}'; pass 'speeds'")
    speed_path = _find(root, speeds, "speeds file")
    if speed_path.suffix.lower() == ".csv":
        values, columns = _read_speed_csv(speed_path)
        timestamps = _regular_timestamps(start, freq, values.shape[0])
    elif speed_path.suffix.lower() in (".h5", ".hdf5", ".hdf"):
        values, columns, timestamps = _read_pandas_h5(speed_path)
    else:
        raise ValueError(f"'speeds' must be a .csv or .h5 file (got '{speed_path.name}')")

    index = {c: i for i, c in enumerate(columns)}
    absent = [s for s in sensor_ids if s not in index]
    if absent or len(columns) != n:
        raise ValueError(f"'{speed_path.name}' columns must be the {n} sensor ids of "
                         f"'{adj_path.name}' (missing: {absent[:5]}, got {len(columns)} "
                         f"columns)")
    values = values[:, [index[s] for s in sensor_ids]]
    mask = np.isfinite(values)
    if zero_is_missing:
        mask &= values != 0
    return GraphSeries(torch.from_numpy(values.astype(np.float32)),
                       mask=torch.from_numpy(mask.astype(np.float32)),
                       lat=lat, lon=lon, adj=torch.from_numpy(adj), timestamps=timestamps,
                       node_ids=sensor_ids, name=name or root.resolve().name,
                       meta={"source": str(speed_path), "adj_source": str(adj_path)})


def _read_locations(path: Path, sensor_ids):
    with open(path, newline="") as f:
        reader = csv.reader(f)
        rows, lines = [], []            # non-blank rows and their line numbers
        for r in reader:
            if r:
                rows.append(r)
                lines.append(reader.line_num)
    if not rows:
        raise ValueError(f"'{path.name}' is empty")
    header = [c.strip().lower() for c in rows[0]]
    table = {}
    if "latitude" in header and "longitude" in header:
        id_col = header.index("sensor_id") if "sensor_id" in header else 0
        la, lo = header.index("latitude"), header.index("longitude")
        body, lines = rows[1:], lines[1:]
    else:
        width = len(rows[0])
        if width not in (3, 4):
            raise ValueError(f"'{path.name}' must have columns (sensor_id, latitude, "
                             f"longitude) or (index, sensor_id, latitude, longitude)")
        id_col, la, lo = (0, 1, 2) if width == 3 else (1, 2, 3)
        body = rows
    for line, r in zip(lines, body):
        try:
            table[_norm_id(r[id_col])] = (float(r[la]), float(r[lo]))
        except (IndexError, ValueError):
            raise ValueError(f"'{path.name}' line {line} must hold a sensor id, a latitude "
                             f"and a longitude (got {r})") from None
    absent = [s for s in sensor_ids if s not in table]
    if absent:
        raise ValueError(f"'{path.name}' lacks the locations of {len(absent)} sensors "
                         f"(e.g. {absent[:5]})")
    lat = torch.tensor([table[s][0] for s in sensor_ids], dtype=torch.float64)
    lon = torch.tensor([table[s][1] for s in sensor_ids], dtype=torch.float64)
    return lat, lon


def _norm_id(s) -> str:
    s = s.decode() if isinstance(s, bytes) else str(s)
    s = s.strip()
    return s[:-2] if s.endswith(".0") and s[:-2].isdigit() else s


def _read_speed_csv(path: Path):
    with open(path, newline="") as f:
        header = next(csv.reader(f), None)
    if not header:
        raise ValueError(f"'{path.name}' is empty")
    values = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    if values.shape[1] != len(header):
        raise ValueError(f"'{path.name}' rows have {values.shape[1]} values but the header "
                         f"names {len(header)} sensors")
    return values, [_norm_id(h) for h in header]


def _read_pandas_h5(path: Path):
    import h5py
    with h5py.File(path, "r") as f:
        keys = list(f.keys())
        g = f[keys[0]] if len(keys) == 1 else None
        fixed = (g is not None and isinstance(g, h5py.Group)
                 and all(k in g for k in ("axis0", "axis1", "block0_values"))
                 and "block1_values" not in g)
        if fixed:
            columns = [_norm_id(c) for c in g["axis0"][()]]
            items = [_norm_id(c) for c in g["block0_items"][()]] if "block0_items" in g \
                else columns
            values = np.asarray(g["block0_values"][()], dtype=np.float64)
            stamps = np.asarray(g["axis1"][()])
            if items != columns:
                order = {c: i for i, c in enumerate(items)}
                values = values[:, [order[c] for c in columns]]
            if stamps.dtype.kind in "iu":
                timestamps = stamps.astype("datetime64[ns]").astype("datetime64[m]")
            else:
                timestamps = stamps.astype("datetime64[m]")
            return values, columns, timestamps
    pd = require("pandas", "reading pandas HDF5 speed files")
    df = pd.read_hdf(path)
    timestamps = np.asarray(df.index.values).astype("datetime64[m]")
    return df.to_numpy(dtype=np.float64), [_norm_id(c) for c in df.columns], timestamps


# --------------------------------------------------------------------------- UrbanFM
def read_urbanfm(root: PathLike, split: Optional[str] = "train"
                 ) -> Tuple[GridSeries, GridSeries]:
    r"""Read one split of an UrbanFM dataset (``<root>/<split>/X.npy``, ``Y.npy``,
    ``ext.npy``).

    ``X.npy`` is the coarse map ``(T, 1, h, w)``, ``Y.npy`` the fine map ``(T, 1, H, W)``
    with ``H = N h``, ``W = N w``, and ``ext.npy`` the external factors ``(T, F)`` (optional).
    The files carry no timestamps.

    Args:
        root (str or Path): the dataset folder (e.g. ``UrbanFM/data/P1``).
        split (str, optional): ``'train'``, ``'valid'``, ``'test'`` sub-folder, or ``None``
            for files directly in ``root``. (default: ``'train'``)

    Returns:
        ``(coarse, fine)`` :class:`GridSeries` pair sharing ``ext``; ``fine.meta['factor']``
        is the magnification ``N``.
    """
    folder = Path(root) if split is None else Path(root) / split
    x = np.load(_find(folder, "X.npy", "UrbanFM coarse file"))
    y = np.load(_find(folder, "Y.npy", "UrbanFM fine file"))
    ext = np.load(folder / "ext.npy") if (folder / "ext.npy").is_file() else None
    if x.ndim != 4 or y.ndim != 4:
        raise ValueError(f"UrbanFM 'X.npy' and 'Y.npy' must have shape (T, C, h, w) / "
                         f"(T, C, H, W) (got {x.shape} and {y.shape})")
    if x.shape[0] != y.shape[0] or x.shape[1] != y.shape[1]:
        raise ValueError(f"UrbanFM 'X.npy' {x.shape} and 'Y.npy' {y.shape} must have the "
                         f"same T and C")
    factor = y.shape[2] // x.shape[2]
    if factor < 1 or y.shape[2] != factor * x.shape[2] or y.shape[3] != factor * x.shape[3]:
        raise ValueError(f"UrbanFM fine size {y.shape[2:]} must be an integer multiple N of "
                         f"the coarse size {x.shape[2:]}")
    ext_t = None if ext is None else torch.from_numpy(np.asarray(ext, dtype=np.float32))
    meta = {"source": str(folder), "factor": factor, "split": split}
    coarse = GridSeries(torch.from_numpy(x.astype(np.float32)), ext=ext_t,
                        name=f"urbanfm_coarse_{split}", meta=dict(meta))
    fine = GridSeries(torch.from_numpy(y.astype(np.float32)), ext=ext_t,
                      name=f"urbanfm_fine_{split}", meta=dict(meta))
    return coarse, fine


# --------------------------------------------------------------------------- npz
_NPZ_KEYS = frozenset({"data", "mask", "lat", "lon", "adj", "node_ids", "timestamps", "start",
                       "freq", "ext", "name"})


def read_npz(path: PathLike) -> Union[GridSeries, GraphSeries]:
    r"""Read a user's own series from an ``.npz`` file.

    Schema (keys of the archive):

    * ``data`` (required): ``(T, C, H, W)`` -> :class:`GridSeries`; ``(T, N)`` or
      ``(T, N, C)`` -> :class:`GraphSeries`. NaN / inf mark missing values (they become
      value 0 with mask 0).
    * ``mask`` (optional): same shape as ``data``, 1 observed / 0 missing.
    * ``lat``, ``lon`` (optional): ``(H, W)`` cell centres for a grid, ``(N,)`` for a graph.
    * ``adj`` (optional, graph only): ``(N, N)`` weighted adjacency.
    * ``node_ids`` (optional, graph only): ``(N,)`` unique strings (integers, and floats
      holding whole numbers, are read as their integer text: ``1000.0`` -> ``'1000'``).
    * timestamps, either ``timestamps`` ``(T,)`` as ``datetime64`` or ISO strings
      (``'2014-04-01T00:00'``), or ``start`` (ISO string) with ``freq`` (``'60min'``,
      ``'30min'``, ``'1h'``, ``'1d'``); optional.
    * ``ext`` (optional): ``(T, F_ext)`` external covariates.
    * ``name`` (optional): a string.

    The archive is read with ``allow_pickle=False``; other keys are ignored with a
    warning that names them.

    Args:
        path (str or Path): the ``.npz`` file.
    """
    path = Path(path)
    path = _find(path.parent, path.name, "npz file")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            npy = fh.read(6) == b"\x93NUMPY"
        raise ValueError(f"'{path}' " + (
            "holds a single .npy array, not a .npz archive with a 'data' array (write it "
            "with numpy.savez(path, data=...))" if npy else
            "is not a .npz archive (a zip of arrays written by numpy.savez / write_npz)"))
    with np.load(path, allow_pickle=False) as z:
        try:
            arrays = {k: z[k] for k in z.files}
        except (ValueError, OSError, zipfile.BadZipFile) as err:
            raise ValueError(f"'{path}': an array cannot be read without pickle or is "
                             f"damaged ({err})") from None
    if "data" not in arrays:
        raise ValueError(f"'{path.name}' must contain a 'data' array (has {sorted(arrays)})")
    unknown = sorted(set(arrays) - _NPZ_KEYS)
    if unknown:         # a misspelt 'timestamps' would drop the calendar without a word
        warnings.warn(f"'{path.name}': ignoring key(s) {unknown} that the schema does not "
                      f"know (it reads {sorted(_NPZ_KEYS)})", stacklevel=2)
    data = _as_float32(f"'{path.name}' 'data'", arrays["data"])
    if data.ndim < 2 or data.shape[0] == 0:
        raise ValueError(f"'{path.name}' 'data' must have shape (T, C, H, W), (T, N) or "
                         f"(T, N, C) with T >= 1 (got {data.shape})")
    timestamps = None
    if "timestamps" in arrays:
        try:
            timestamps = as_minutes(arrays["timestamps"])
        except ValueError as err:
            raise ValueError(f"'{path.name}' {err}") from None
    elif "start" in arrays:
        if "freq" not in arrays:
            raise ValueError(f"'{path.name}' has 'start' but no 'freq' (e.g. '60min')")
        timestamps = _regular_timestamps(str(arrays["start"]), str(arrays["freq"]),
                                         data.shape[0])
    name = str(arrays["name"]) if "name" in arrays else path.stem
    common = dict(mask=arrays.get("mask"), timestamps=timestamps, ext=arrays.get("ext"),
                  name=name, meta={"source": str(path)})
    lat, lon = arrays.get("lat"), arrays.get("lon")
    if data.ndim == 4:
        for key in ("adj", "node_ids"):
            if key in arrays:
                raise ValueError(f"'{path.name}': '{key}' is for graph data (T, N[, C]); "
                                 f"'data' is a grid {data.shape}")
        for key, v in (("lat", lat), ("lon", lon)):
            if v is not None and tuple(v.shape) != tuple(data.shape[2:]):
                raise ValueError(f"'{path.name}' '{key}' must have shape (H, W) = "
                                 f"{tuple(data.shape[2:])} (got {v.shape})")
        return GridSeries(torch.from_numpy(data),
                          lat=None if lat is None else torch.from_numpy(lat.astype(np.float64)),
                          lon=None if lon is None else torch.from_numpy(lon.astype(np.float64)),
                          **common)
    if data.ndim in (2, 3):
        node_ids = None
        if "node_ids" in arrays:
            ids = arrays["node_ids"]
            if ids.dtype.kind == "f":       # numeric ids saved as floats: 1000.0 -> "1000",
                if not np.all(np.isfinite(ids) & (ids == np.round(ids))):   # as in a KG file
                    raise ValueError(f"'{path.name}' 'node_ids' must be strings or whole "
                                     f"numbers (got {ids[:3].tolist()}...)")
                ids = ids.astype(np.int64)
            node_ids = [str(s) for s in ids]
        return GraphSeries(torch.from_numpy(data), lat=lat, lon=lon,
                           adj=arrays.get("adj"), node_ids=node_ids, **common)
    raise ValueError(f"'{path.name}' 'data' must have shape (T, C, H, W), (T, N) or "
                     f"(T, N, C) (got {data.shape})")


def write_npz(path: PathLike, series: Union[GridSeries, GraphSeries],
              compressed: bool = True) -> Path:
    """Write ``series`` in the :func:`read_npz` schema (``data`` with missing entries as
    stored, plus ``mask``, coordinates, ``adj``, ``node_ids``, ``timestamps`` as
    ``datetime64[m]``, ``ext``, ``name``). Returns the path written."""
    if not isinstance(series, (GridSeries, GraphSeries)):
        raise TypeError(f"'series' must be a GridSeries or GraphSeries "
                        f"(got {type(series).__name__})")
    path = Path(path)
    out = {"data": series.data.numpy(), "mask": series.mask.numpy(),
           "name": np.array(series.name)}
    for key in ("lat", "lon", "ext") + (("adj",) if isinstance(series, GraphSeries) else ()):
        v = getattr(series, key)
        if v is not None:
            out[key] = torch.as_tensor(v).detach().cpu().numpy()
    if series.timestamps is not None:
        out["timestamps"] = np.asarray(series.timestamps).astype("datetime64[m]")
    if isinstance(series, GraphSeries) and series.node_ids is not None:
        out["node_ids"] = np.array([str(s) for s in series.node_ids])
    (np.savez_compressed if compressed else np.savez)(path, **out)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
