r"""A small synthetic city whose behaviour is *caused* by its urban knowledge graph.

The city is the library's embedded default data set: deterministic by seed, sized by
parameters, and fast enough for CPU tests. It has

* a grid of ``height x width`` cells with hourly (``steps_per_day``) **in/out flows**
  (a :class:`~torch_stgen.data.GridSeries` ``[T, 2, H, W]``), the DiffRecon setting;
* a **road network** of sensors with speed readings (a
  :class:`~torch_stgen.data.GraphSeries` ``[T_road, S, 1]``), the KGDiff setting;
* an :class:`~torch_stgen.data.UrbanKG` with cells, regions, POIs, POI categories,
  sensors and road classes.

The generative story (every node's behaviour is a function of its KG neighbourhood, so
KG guidance is informative and testable):

1. ``K`` POI categories (residential, office, retail, nightlife, leisure, then random
   ones) each have a daily in-flow and out-flow profile :math:`p^{in}_k, p^{out}_k`
   (sums of periodic Gaussian bumps), one for working days and one for weekends and
   holidays.
2. POIs cluster around districts, each favouring one category; a POI is
   ``located_in`` a cell and ``has_category`` a category.
3. A cell's activity per category counts the POIs in it and (a quarter) in its
   ``adjacent_to`` cells, on top of a uniform background :math:`b`:

   .. math::
       a_{v,k} = b + s\,\Big(n_{v,k} + \tfrac14 \sum_{u \in \mathcal{N}(v)} n_{u,k}\Big),
       \qquad
       \lambda^{in}_{v}(t) = \omega(t) \sum_k a_{v,k}\, p^{in}_k(t)

   and the counts are Poisson, :math:`X^{in}_{v}(t) \sim \mathrm{Poisson}
   (\lambda^{in}_{v}(t))` (same for out-flow); :math:`\omega(t)` is the weather factor
   (rain lowers flows, so do temperatures far from 18 °C). Mixing weights
   :math:`w_{v} = a_v / \sum_k a_{v,k}` and intensities :math:`\sum_k a_{v,k}` are in
   :attr:`SyntheticCity.ground_truth`.
4. A sensor is linked (``near_poi``) to its ``pois_per_sensor`` nearest POIs and has a
   ``road_class`` (highway / arterial, setting the free-flow speed :math:`v^{ff}`).
   Its congestion mixes the categories of its POIs,

   .. math::
       w_{s,k} = \frac{|\{p \in \mathrm{near}(s): \mathrm{cat}(p) = k\}|}
       {|\mathrm{near}(s)|}, \qquad
       v_s(t) = \Big(v^{ff}_s - \Delta \min\big(1, (1 + 0.3\, r(t))
       \sum_k w_{s,k}\, g_k(t)\big)\Big)\, \iota_s(t) + \epsilon_s(t)

   with :math:`g_k = (p^{in}_k + p^{out}_k) / \max` the normalised demand (rush-hour
   dips come from office/residential POIs), :math:`\Delta` the largest congestion drop
   (mph, the same on every road class, so the mean profile is linear in the KG features),
   :math:`r(t)` the rain flag, :math:`\iota`
   incident slow-downs that spill over to ``road_adjacent`` sensors at half strength and
   :math:`\epsilon` AR(1) noise (stationary sd 1.5 mph); speeds are floored at 2 mph.

Time: the series start on ``start`` (default Monday 2024-01-01) at 00:00; a day is a
weekend day on Saturday / Sunday or on a holiday (``meta['holidays']``). External
covariates ``ext`` are ``[temperature (°C), rain (0/1)]``.

Coordinates: the grid covers ``bbox = (lat_min, lat_max, lon_min, lon_max)``; row 0 is
the northern edge and column 0 the western edge (image convention), so cell ``(i, j)`` is
centred at ``lat_max - (i + 0.5) dlat`` and ``lon_min + (j + 0.5) dlon``.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .kg import UrbanKG, _grid_parts, _haversine_km
from .series import GraphSeries, GridSeries

__all__ = ["SyntheticCity"]

#: (mu hour, sigma hours, amplitude) bumps; keys: in/out flow on working days (wd) and
#: on weekends or holidays (we)
_PROTOTYPES: List[Tuple[str, Dict[str, List[Tuple[float, float, float]]]]] = [
    ("residential", {"in_wd": [(18.5, 1.8, 0.9), (13.0, 3.0, 0.2)],
                     "out_wd": [(8.0, 1.2, 1.0)],
                     "in_we": [(19.0, 2.5, 0.5)], "out_we": [(11.0, 2.5, 0.5)]}),
    ("office", {"in_wd": [(8.5, 1.0, 1.0), (13.5, 0.8, 0.25)],
                "out_wd": [(17.5, 1.3, 0.95), (12.3, 0.8, 0.25)],
                "in_we": [(10.0, 2.0, 0.15)], "out_we": [(15.0, 2.0, 0.15)]}),
    ("retail", {"in_wd": [(12.5, 2.5, 0.5), (18.5, 1.8, 0.45)],
                "out_wd": [(14.5, 2.5, 0.5), (20.0, 1.8, 0.45)],
                "in_we": [(13.0, 3.0, 0.75)], "out_we": [(16.0, 3.0, 0.75)]}),
    ("nightlife", {"in_wd": [(21.0, 1.5, 0.5)], "out_wd": [(0.5, 1.5, 0.5)],
                   "in_we": [(22.0, 1.5, 0.9)], "out_we": [(1.5, 1.5, 0.9)]}),
    ("leisure", {"in_wd": [(10.0, 2.0, 0.25), (17.0, 2.0, 0.25)],
                 "out_wd": [(12.0, 2.0, 0.25), (19.0, 2.0, 0.25)],
                 "in_we": [(11.0, 2.5, 0.9)], "out_we": [(15.5, 2.5, 0.9)]}),
]
_BASE_LEVEL = 0.08  # every category's flow floor (night-time trickle)
_ROAD_CLASSES = (("highway", 65.0), ("arterial", 40.0))  # free-flow speed, mph


def _bumps(hours: np.ndarray, bumps: Sequence[Tuple[float, float, float]]) -> np.ndarray:
    out = np.full(hours.shape, _BASE_LEVEL)
    for mu, sigma, amp in bumps:
        d = (hours - mu + 12.0) % 24.0 - 12.0  # periodic distance on the 24 h circle
        out = out + amp * np.exp(-0.5 * (d / sigma) ** 2)
    return out


def _check_int(name: str, value, low: int):
    if isinstance(value, bool) or int(value) != value or value < low:
        raise ValueError(f"'{name}' must be an integer >= {low} (got {value!r})")
    return int(value)


class SyntheticCity:
    r"""A deterministic synthetic city: flow grid, road speeds and the urban KG that causes
    them (see the module documentation for the generative equations).

    Args:
        seed (int, optional): random seed; equal seeds give identical cities.
            (default: ``0``)
        height, width (int, optional): grid size. (default: ``16``, ``16``)
        days (int, optional): number of days. (default: ``28``)
        steps_per_day (int, optional): grid steps per day (must divide 1440).
            (default: ``24``, hourly)
        num_sensors (int, optional): road sensors. (default: ``40``)
        num_categories (int, optional): POI categories ``K``. (default: ``5``)
        num_pois (int, optional): POIs. (default: ``2 * height * width``)
        num_districts (int, optional): POI clusters. (default: ``num_categories``)
        road_steps_per_day (int, optional): speed readings per day (must divide 1440; 288
            = 5 min). (default: ``48``, 30 min, KGDiff's sample length)
        region_size (int, optional): regions are ``region_size x region_size`` blocks of
            cells. (default: ``4``)
        pois_per_sensor (int, optional): POIs linked to each sensor. (default: ``8``)
        flow_per_poi (float, optional): the scale :math:`s`. (default: ``6.0``)
        background (float, optional): the background activity :math:`b` per category.
            (default: ``0.2``)
        rush_drop (float, optional): the congestion drop :math:`\Delta` in mph; must stay
            below the arterial free-flow speed of 40 mph. (default: ``20.0``)
        start (str, optional): first day, ISO date. (default: ``"2024-01-01"``, a Monday)
        holidays (sequence of str, optional): holiday dates; ``None`` draws
            ``max(1, days // 14)`` random working days. (default: ``None``)
        bbox (tuple, optional): ``(lat_min, lat_max, lon_min, lon_max)``.
            (default: a 0.1 x 0.09 degree box in Manhattan)

    Attributes:
        grid (GridSeries): ``[T, 2, H, W]`` in/out flow counts, ``T = days *
            steps_per_day``, ``ext = [temperature, rain]``, cell-centre ``lat``/``lon``.
        roads (GraphSeries): ``[T_road, S, 1]`` speeds (mph), sensor ``lat``/``lon``,
            ``adj`` (Gaussian kernel of the distance over the 3 nearest sensors, symmetric,
            no self-loops), ``node_ids`` = sensor entity names.
        kg (UrbanKG): the city's KG (its ``node2entity`` is left unset; use the two
            mappings below with :meth:`UrbanKG.set_node_entities`).
        grid_node2entity (LongTensor): ``[H*W]`` entity id of each cell (row-major).
        road_node2entity (LongTensor): ``[S]`` entity id of each sensor.
        category_names (list of str): the ``K`` category entity names.
        ground_truth (dict): ``grid_weights`` ``[H*W, K]``, ``grid_intensity`` ``[H*W]``,
            ``grid_mean`` ``[T, 2, H, W]`` (the Poisson means), ``road_weights`` ``[S, K]``,
            ``free_flow`` ``[S]``, ``road_class`` (list), ``speed_mean`` ``[T_road, S]``
            (noise- and incident-free), ``category_profiles`` ``[K, 2 (working day,
            weekend), 2 (in, out), steps_per_day]``, ``congestion_profiles``
            ``[K, 2, road_steps_per_day]``, ``poi_cell`` ``[P]``, ``poi_category`` ``[P]``,
            ``sensor_pois`` ``[S, pois_per_sensor]``, ``incidents`` ``[I, 4]`` (sensor,
            first step, end step, severity), ``day_is_weekend`` ``[days]``.

    Example:
        >>> city = SyntheticCity(seed=0)
        >>> city.grid.shape, city.roads.shape
        ((672, 2, 16, 16), (1344, 40, 1))
    """

    def __init__(self, seed: int = 0, height: int = 16, width: int = 16, days: int = 28,
                 steps_per_day: int = 24, num_sensors: int = 40, num_categories: int = 5,
                 num_pois: Optional[int] = None, num_districts: Optional[int] = None,
                 road_steps_per_day: int = 48, region_size: int = 4,
                 pois_per_sensor: int = 8, flow_per_poi: float = 6.0,
                 background: float = 0.2, rush_drop: float = 20.0,
                 start: str = "2024-01-01", holidays: Optional[Sequence[str]] = None,
                 bbox: Tuple[float, float, float, float] = (40.70, 40.80, -74.02, -73.93)):
        self.seed = _check_int("seed", seed, 0)
        self.height = _check_int("height", height, 1)
        self.width = _check_int("width", width, 1)
        self.days = _check_int("days", days, 1)
        self.steps_per_day = _check_int("steps_per_day", steps_per_day, 1)
        self.road_steps_per_day = _check_int("road_steps_per_day", road_steps_per_day, 1)
        for name, spd in (("steps_per_day", self.steps_per_day),
                          ("road_steps_per_day", self.road_steps_per_day)):
            if 1440 % spd:
                raise ValueError(f"'{name}' must divide 1440 minutes (got {spd})")
        self.num_sensors = _check_int("num_sensors", num_sensors, 1)
        self.num_categories = _check_int("num_categories", num_categories, 1)
        self.num_pois = _check_int("num_pois", 2 * self.height * self.width
                                   if num_pois is None else num_pois, 1)
        self.num_districts = _check_int("num_districts", self.num_categories
                                        if num_districts is None else num_districts, 1)
        self.region_size = _check_int("region_size", region_size, 1)
        self.pois_per_sensor = _check_int("pois_per_sensor", pois_per_sensor, 1)
        if self.pois_per_sensor > self.num_pois:
            raise ValueError(f"'pois_per_sensor' must be <= num_pois={self.num_pois} "
                             f"(got {pois_per_sensor})")
        for name, v in (("flow_per_poi", flow_per_poi), ("background", background)):
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"'{name}' must be a finite number >= 0 (got {v})")
        if flow_per_poi == 0 and background == 0:
            raise ValueError("'flow_per_poi' and 'background' cannot both be 0 (no flow)")
        if not 0 <= rush_drop < _ROAD_CLASSES[1][1]:
            raise ValueError(f"'rush_drop' must lie in [0, {_ROAD_CLASSES[1][1]}) mph "
                             f"(got {rush_drop})")
        if len(bbox) != 4 or not (bbox[0] < bbox[1] and bbox[2] < bbox[3]):
            raise ValueError(f"'bbox' must be (lat_min, lat_max, lon_min, lon_max) with "
                             f"min < max (got {bbox})")
        self.flow_per_poi, self.background = float(flow_per_poi), float(background)
        self.rush_drop = float(rush_drop)
        self.bbox = tuple(float(b) for b in bbox)
        self.start = np.datetime64(start, "D")

        # independent streams, so that e.g. the number of sensors leaves the grid unchanged
        streams = np.random.SeedSequence(self.seed).spawn(7)
        self._rng = {k: np.random.default_rng(s) for k, s in zip(
            ("cat", "layout", "calendar", "weather", "grid", "sensor", "road"), streams)}
        self._make_calendar(holidays)
        self._make_categories()
        self._make_layout()
        self._make_weather()
        self._make_grid()
        self._make_sensors()
        self._make_kg()
        self._make_roads()
        self._collect_truth()

    # ------------------------------------------------------------------ pieces
    def _make_calendar(self, holidays):
        days = self.start + np.arange(self.days)
        dow = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        if holidays is None:
            working = np.nonzero(dow < 5)[0]
            n = min(max(1, self.days // 14), len(working))
            pick = np.sort(self._rng["calendar"].choice(working, size=n, replace=False))
            self.holidays = days[pick]
        else:
            if isinstance(holidays, (str, np.datetime64)):   # one date, not its characters
                holidays = [holidays]
            try:
                self.holidays = np.array(sorted({np.datetime64(h, "D") for h in holidays}),
                                         dtype="datetime64[D]")
            except (TypeError, ValueError):
                raise ValueError(f"'holidays' must be dates (ISO strings or datetime64) "
                                 f"(got {holidays!r})") from None
        self.day_is_holiday = np.isin(days, self.holidays)
        self.day_is_weekend = (dow >= 5) | self.day_is_holiday
        self.day_of_week = dow

    def _make_categories(self):
        rng = self._rng["cat"]
        self.category_names = []
        self._category_bumps = []
        for k in range(self.num_categories):
            if k < len(_PROTOTYPES):
                name, bumps = _PROTOTYPES[k]
            else:  # a random extra category: 1-2 bumps, out-flow later than in-flow
                name, bumps = f"category_{k}", {}
                n = int(rng.integers(1, 3))
                mu, sig = rng.uniform(0, 24, n), rng.uniform(1.0, 3.0, n)
                amp, lag = rng.uniform(0.3, 1.0, n), rng.uniform(2.0, 8.0)
                we = rng.uniform(0.3, 1.5)
                bumps["in_wd"] = list(zip(mu, sig, amp))
                bumps["out_wd"] = list(zip((mu + lag) % 24, sig, amp))
                bumps["in_we"] = list(zip(mu, sig * 1.3, amp * we))
                bumps["out_we"] = list(zip((mu + lag) % 24, sig * 1.3, amp * we))
            self.category_names.append(name)
            self._category_bumps.append(bumps)

    def _profiles(self, steps_per_day: int) -> np.ndarray:
        """``[K, 2 (wd, we), 2 (in, out), steps_per_day]`` at the step starts."""
        hours = np.arange(steps_per_day) * (24.0 / steps_per_day)
        out = np.empty((self.num_categories, 2, 2, steps_per_day))
        for k, b in enumerate(self._category_bumps):
            for d, day in enumerate(("wd", "we")):
                out[k, d, 0] = _bumps(hours, b["in_" + day])
                out[k, d, 1] = _bumps(hours, b["out_" + day])
        return out

    def _make_layout(self):
        rng, H, W, K = self._rng["layout"], self.height, self.width, self.num_categories
        D = self.num_districts
        centres = np.stack([rng.uniform(0.1, 0.9, D) * H, rng.uniform(0.1, 0.9, D) * W], 1)
        favour = np.arange(D) % K
        spread = 0.12 * min(H, W) + 0.3
        dist = rng.integers(0, D, self.num_pois)
        yx = centres[dist] + rng.normal(0.0, spread, (self.num_pois, 2))
        yx[:, 0] = np.clip(yx[:, 0], 0.0, H - 1e-6)
        yx[:, 1] = np.clip(yx[:, 1], 0.0, W - 1e-6)
        own = rng.random(self.num_pois) < 0.7
        cat = np.where(own, favour[dist], rng.integers(0, K, self.num_pois))
        self.poi_yx, self.poi_category = yx, cat
        self.poi_cell = (np.floor(yx[:, 0]).astype(np.int64) * W
                         + np.floor(yx[:, 1]).astype(np.int64))
        self.district_centres, self.district_category = centres, favour

    def _make_weather(self):
        """Temperature (°C) and rain episodes as functions of the minute since start."""
        rng = self._rng["weather"]
        # day-to-day temperature anomaly: AR(1), mean-reverting (stationary sd ~2.5 °C)
        shocks = rng.normal(0.0, 2.5 * math.sqrt(1 - 0.8 ** 2), self.days + 2)
        offset = np.empty(self.days + 2)
        offset[0] = rng.normal(0.0, 2.5)
        for d in range(1, self.days + 2):
            offset[d] = 0.8 * offset[d - 1] + shocks[d]
        self._day_offset = offset
        self._temp_noise_phase = rng.uniform(0, 2 * np.pi)
        n_ep = int(rng.poisson(0.6 * self.days))
        starts = rng.uniform(0, self.days * 1440.0, n_ep)
        self._rain = np.stack([starts, starts + rng.exponential(180.0, n_ep) + 30.0], 1)

    def _weather(self, minutes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        day = minutes / 1440.0
        hour = (minutes % 1440.0) / 60.0
        drift = np.interp(day, np.arange(self.days + 2) - 0.5, self._day_offset)
        temp = 12.0 + 5.0 * np.cos(2 * np.pi * (hour - 15.0) / 24.0) + drift \
            + 0.7 * np.sin(2 * np.pi * day * 2.7 + self._temp_noise_phase)
        rain = np.zeros(minutes.shape, dtype=bool)
        for a, b in self._rain:
            rain |= (minutes >= a) & (minutes < b)
        return temp, rain.astype(np.float64)

    def _timeline(self, steps_per_day: int):
        step = 1440 // steps_per_day
        minutes = np.arange(self.days * steps_per_day, dtype=np.float64) * step
        stamps = self.start.astype("datetime64[m]") + (minutes.astype(np.int64)
                                                       * np.timedelta64(1, "m"))
        day = np.repeat(np.arange(self.days), steps_per_day)
        slot = np.tile(np.arange(steps_per_day), self.days)
        return minutes, stamps, day, slot

    def _make_grid(self):
        H, W, K = self.height, self.width, self.num_categories
        N = H * W
        counts = np.zeros((N, K))
        np.add.at(counts, (self.poi_cell, self.poi_category), 1.0)
        c3 = counts.reshape(H, W, K)
        nb = np.zeros_like(c3)
        nb[1:] += c3[:-1]
        nb[:-1] += c3[1:]
        nb[:, 1:] += c3[:, :-1]
        nb[:, :-1] += c3[:, 1:]
        act = self.background + self.flow_per_poi * (counts + 0.25 * nb.reshape(N, K))
        self.grid_activity = act  # [N, K]
        prof = self._profiles(self.steps_per_day)  # [K, 2, 2, L]
        minutes, stamps, day, slot = self._timeline(self.steps_per_day)
        temp, rain = self._weather(minutes)
        omega = (1.0 - 0.25 * rain) * np.clip(1.0 - 0.012 * np.abs(temp - 18.0), 0.5, 1.0)
        we = self.day_is_weekend[day].astype(np.int64)
        cat_t = prof[:, we, :, slot]  # [T, K, 2]
        mean = np.einsum("tkc,nk->tcn", cat_t, act) * omega[:, None, None]
        mean = mean.reshape(-1, 2, H, W)
        data = self._rng["grid"].poisson(mean).astype(np.float32)
        lat_min, lat_max, lon_min, lon_max = self.bbox
        ii, jj = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
        self._dlat, self._dlon = (lat_max - lat_min) / H, (lon_max - lon_min) / W
        lat = lat_max - (ii + 0.5) * self._dlat
        lon = lon_min + (jj + 0.5) * self._dlon
        is_hol = self.day_is_holiday[day]
        self.grid = GridSeries(
            data=torch.from_numpy(data), timestamps=stamps,
            ext=torch.from_numpy(np.stack([temp, rain], 1).astype(np.float32)),
            lat=torch.from_numpy(lat), lon=torch.from_numpy(lon), name="synthetic_city",
            meta={"channels": ["inflow", "outflow"], "ext_names": ["temperature", "rain"],
                  "holidays": self.holidays.copy(), "is_holiday": is_hol,
                  "seed": self.seed, "units": "counts per step"})
        self._grid_mean = mean
        self._grid_profiles = prof

    def _yx_to_latlon(self, yx: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        lat_min, lat_max, lon_min, lon_max = self.bbox
        return lat_max - yx[:, 0] * self._dlat, lon_min + yx[:, 1] * self._dlon

    def _make_sensors(self):
        rng, H, W, S = self._rng["sensor"], self.height, self.width, self.num_sensors
        yx = np.stack([rng.uniform(0.0, H, S), rng.uniform(0.0, W, S)], 1)
        yx[:, 0] = np.clip(yx[:, 0], 0.0, H - 1e-6)
        yx[:, 1] = np.clip(yx[:, 1], 0.0, W - 1e-6)
        self.sensor_yx = yx
        self.sensor_lat, self.sensor_lon = self._yx_to_latlon(yx)
        self.sensor_cell = (np.floor(yx[:, 0]).astype(np.int64) * W
                            + np.floor(yx[:, 1]).astype(np.int64))
        d = np.linalg.norm(yx[:, None, :] - self.poi_yx[None, :, :], axis=-1)
        self.sensor_pois = np.argsort(d, axis=1, kind="stable")[:, :self.pois_per_sensor]
        w = np.zeros((S, self.num_categories))
        np.add.at(w, (np.repeat(np.arange(S), self.pois_per_sensor),
                      self.poi_category[self.sensor_pois].reshape(-1)), 1.0)
        self.road_weights = w / self.pois_per_sensor
        self.road_class = rng.random(S) < 0.3  # True = highway
        # road adjacency: 3 nearest sensors (km), Gaussian kernel, symmetric, no self-loops
        dist = _haversine_km(self.sensor_lat, self.sensor_lon)
        adj = np.zeros((S, S))
        if S > 1:
            k = min(3, S - 1)
            nn = np.argsort(dist + np.diag(np.full(S, np.inf)), axis=1, kind="stable")[:, :k]
            rows = np.repeat(np.arange(S), k)
            sel = np.zeros((S, S), dtype=bool)
            sel[rows, nn.reshape(-1)] = True
            sel |= sel.T
            sigma = dist[sel].std() if dist[sel].std() > 0 else 1.0
            adj = np.where(sel, np.exp(-(dist / sigma) ** 2), 0.0)
        self.road_adj = adj

    def _make_kg(self):
        H, W, R = self.height, self.width, self.region_size
        ii, jj = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
        regions = (ii // R) * (-(-W // R)) + (jj // R)
        cells, entities, triples = _grid_parts(H, W, regions=regions, pois=self.poi_cell,
                                               poi_categories=[self.category_names[c] for c
                                                               in self.poi_category])
        # every category is an entity even if no POI has it
        entities += [c for c in self.category_names if c not in entities]
        sensors = [f"sensor_{s}" for s in range(self.num_sensors)]
        classes = [f"road_{name}" for name, _ in _ROAD_CLASSES]
        entities += sensors + classes
        for s, name in enumerate(sensors):
            triples.append((name, "located_in", cells[self.sensor_cell[s]]))
            cls = classes[0] if self.road_class[s] else classes[1]
            triples.append((name, "road_class", cls))
            for p in self.sensor_pois[s]:
                triples.append((name, "near_poi", f"poi_{p}"))
        for a, b in zip(*np.nonzero(self.road_adj > 0)):
            triples.append((sensors[a], "road_adjacent", sensors[b]))
        relations = ["adjacent_to", "in_region", "located_in", "has_category", "near_poi",
                     "road_adjacent", "road_class"]
        self.kg = UrbanKG.from_triples(triples, entities=entities, relations=relations,
                                       name="synthetic_city")
        self.grid_node2entity = self.kg.entity_ids(cells)
        self.road_node2entity = self.kg.entity_ids(sensors)
        self._sensor_names = sensors

    def _make_roads(self):
        rng, S, L = self._rng["road"], self.num_sensors, self.road_steps_per_day
        prof = self._profiles(L)  # [K, 2, 2, L]
        demand = prof.sum(2)
        g = demand / demand.max()  # [K, 2, L] in (0, 1]
        minutes, stamps, day, slot = self._timeline(L)
        temp, rain = self._weather(minutes)
        we = self.day_is_weekend[day].astype(np.int64)
        cong = np.einsum("tk,sk->ts", g[:, we, slot].T, self.road_weights)
        cong = np.minimum(1.0, cong * (1.0 + 0.3 * rain)[:, None])
        free = np.where(self.road_class, _ROAD_CLASSES[0][1], _ROAD_CLASSES[1][1])
        speed_mean = free[None, :] - self.rush_drop * cong
        # incidents: a slow-down at one sensor, half as strong at its road neighbours
        T = len(minutes)
        n_inc = int(rng.poisson(0.02 * S * self.days))
        inc = np.zeros((n_inc, 4))
        factor = np.ones((T, S))
        step_min = 1440 // L
        for i in range(n_inc):
            s = int(rng.integers(S))
            t0 = int(rng.integers(T))
            t1 = min(T, t0 + max(1, int(round(rng.exponential(60.0) / step_min))))
            sev = rng.uniform(0.3, 0.6)
            inc[i] = (s, t0, t1, sev)
            factor[t0:t1, s] *= 1.0 - sev
            nbrs = np.nonzero(self.road_adj[s] > 0)[0]
            factor[t0:t1, nbrs] *= 1.0 - sev / 2
        # AR(1) noise, stationary sd 1.5 mph
        phi, sd = 0.8, 1.5
        eps = rng.normal(0.0, sd * math.sqrt(1 - phi ** 2), (T, S))
        noise = np.empty_like(eps)
        noise[0] = rng.normal(0.0, sd, S)
        for t in range(1, T):
            noise[t] = phi * noise[t - 1] + eps[t]
        speed = np.maximum(speed_mean * factor + noise, 2.0)
        self.roads = GraphSeries(
            data=torch.from_numpy(speed.astype(np.float32)).unsqueeze(-1),
            lat=torch.from_numpy(self.sensor_lat), lon=torch.from_numpy(self.sensor_lon),
            adj=torch.from_numpy(self.road_adj), timestamps=stamps,
            node_ids=list(self._sensor_names),
            ext=torch.from_numpy(np.stack([temp, rain], 1).astype(np.float32)),
            name="synthetic_roads",
            meta={"channels": ["speed"], "units": "mph", "ext_names": ["temperature", "rain"],
                  "holidays": self.holidays.copy(), "is_holiday": self.day_is_holiday[day],
                  "seed": self.seed})
        self._speed_mean, self._free, self._incidents = speed_mean, free, inc
        self._congestion = g

    def _collect_truth(self):
        act = self.grid_activity
        self.ground_truth = {
            "category_names": list(self.category_names),
            "grid_weights": torch.from_numpy(act / act.sum(1, keepdims=True)),
            "grid_intensity": torch.from_numpy(act.sum(1)),
            "grid_mean": torch.from_numpy(self._grid_mean),
            "road_weights": torch.from_numpy(self.road_weights),
            "free_flow": torch.from_numpy(self._free),
            "road_class": ["highway" if c else "arterial" for c in self.road_class],
            "speed_mean": torch.from_numpy(self._speed_mean),
            "category_profiles": torch.from_numpy(self._grid_profiles),
            "congestion_profiles": torch.from_numpy(self._congestion),
            "poi_cell": torch.from_numpy(self.poi_cell),
            "poi_category": torch.from_numpy(self.poi_category.astype(np.int64)),
            "sensor_pois": torch.from_numpy(self.sensor_pois.astype(np.int64)),
            "incidents": torch.from_numpy(self._incidents),
            "day_is_weekend": torch.from_numpy(self.day_is_weekend),
        }

    def __repr__(self) -> str:
        return (f"SyntheticCity(seed={self.seed}, grid={self.grid.shape}, "
                f"roads={self.roads.shape}, kg={self.kg.num_entities} entities / "
                f"{self.kg.num_triples} triples)")
