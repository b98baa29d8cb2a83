import numpy as np
import pytest
import torch

from torch_stgen.data.kg import UrbanKG
from torch_stgen.data.series import GraphSeries, GridSeries
from torch_stgen.data.synthetic import SyntheticCity


@pytest.fixture(scope="module")
def city():
    return SyntheticCity(seed=0)


def _r2(y, pred, baseline):
    """1 - SS_res / SS_tot with SS_tot taken around ``baseline``."""
    return 1.0 - ((y - pred) ** 2).sum() / ((y - baseline) ** 2).sum()


def _kg_category_counts(kg: UrbanKG, heads, via: str, categories):
    """From the triples only: for each head entity, count the categories of the POIs it
    reaches through ``via`` (head -via-> POI -has_category-> category), or that reach it
    (POI -via-> head) when ``via`` is 'located_in'."""
    trip = kg.triples.numpy()
    rel = kg.relation2id
    cat_pos = {kg.entity2id[c]: k for k, c in enumerate(categories)}
    poi_cat = {h: cat_pos[t] for h, r, t in trip if r == rel["has_category"]}
    pos = {int(e): i for i, e in enumerate(heads)}
    out = np.zeros((len(pos), len(categories)))
    for h, r, t in trip:
        if r != rel[via]:
            continue
        if via == "located_in" and h in poi_cat and t in pos:
            out[pos[t], poi_cat[h]] += 1
        elif via != "located_in" and h in pos and t in poi_cat:
            out[pos[h], poi_cat[t]] += 1
    return out


def _weekday_profiles(series: torch.Tensor, days: int, is_weekend: np.ndarray):
    """``[T, ...]`` -> mean working-day profile ``[steps_per_day, ...]``."""
    x = series.numpy().reshape(days, -1, *series.shape[1:])
    return x[~is_weekend].mean(0)


def test_determinism_and_seed():
    kw = dict(height=6, width=5, days=3, num_sensors=7, num_pois=40)
    a, b, c = SyntheticCity(seed=3, **kw), SyntheticCity(seed=3, **kw), SyntheticCity(seed=4, **kw)
    assert torch.equal(a.grid.data, b.grid.data) and torch.equal(a.roads.data, b.roads.data)
    assert torch.equal(a.grid.ext, b.grid.ext) and torch.equal(a.roads.adj, b.roads.adj)
    assert a.kg.fingerprint() == b.kg.fingerprint()
    assert not torch.equal(a.grid.data, c.grid.data)
    assert not torch.equal(a.roads.data, c.roads.data)
    assert a.kg.fingerprint() != c.kg.fingerprint()
    # independent streams: more sensors leave the grid and the POIs unchanged
    d = SyntheticCity(seed=3, **{**kw, "num_sensors": 9})
    assert torch.equal(a.grid.data, d.grid.data)
    assert torch.equal(a.ground_truth["poi_cell"], d.ground_truth["poi_cell"])


def test_shapes_types_and_ranges(city):
    T = 28 * 24
    assert isinstance(city.grid, GridSeries) and isinstance(city.roads, GraphSeries)
    assert city.grid.shape == (T, 2, 16, 16)
    assert city.roads.shape == (28 * 48, 40, 1)
    assert city.grid.ext.shape == (T, 2) and city.roads.ext.shape == (28 * 48, 2)
    assert city.grid.meta["ext_names"] == ["temperature", "rain"]
    assert set(city.grid.ext[:, 1].unique().tolist()) == {0.0, 1.0}
    assert str(city.grid.timestamps[0]) == "2024-01-01T00:00"
    assert str(city.grid.timestamps[1] - city.grid.timestamps[0]) == "60 minutes"
    assert str(city.roads.timestamps[1] - city.roads.timestamps[0]) == "30 minutes"
    # non-negative integer counts with noise around the Poisson means
    g = city.grid.data
    assert g.min() >= 0 and torch.equal(g, g.round()) and g.max() > 20
    assert bool(city.grid.mask.bool().all())
    mean = city.ground_truth["grid_mean"].float()
    assert torch.allclose(g.mean(), mean.mean(), rtol=0.01)
    assert (g - mean).abs().mean() > 0.5  # noisy, not the mean itself
    # speeds positive, below free flow plus noise
    v = city.roads.data[..., 0]
    assert v.min() > 0 and v.max() < 75
    # coordinates: row 0 is north, sensors inside the box
    lat_min, lat_max, lon_min, lon_max = city.bbox
    assert city.grid.lat.shape == (16, 16) and bool((city.grid.lat[:-1] > city.grid.lat[1:]).all())
    assert bool((city.grid.lon[:, 1:] > city.grid.lon[:, :-1]).all())
    for t, lo, hi in ((city.roads.lat, lat_min, lat_max), (city.roads.lon, lon_min, lon_max)):
        assert bool(((t >= lo) & (t <= hi)).all())
    # holidays are working days marked in meta
    hol = city.grid.meta["holidays"]
    assert len(hol) == 2 and city.grid.meta["is_holiday"].sum() == 2 * 24
    # other sizes as parameters, including extra random categories and 5-minute roads
    small = SyntheticCity(seed=1, height=6, width=10, days=3, steps_per_day=48,
                          road_steps_per_day=288, num_sensors=5, num_categories=7)
    assert small.grid.shape == (144, 2, 6, 10) and small.roads.shape == (864, 5, 1)
    assert small.ground_truth["road_weights"].shape == (5, 7)
    assert small.category_names[5:] == ["category_5", "category_6"]


def test_kg_structure_and_mappings(city):
    kg = city.kg
    assert set(kg.relations) >= {"adjacent_to", "located_in", "has_category", "near_poi",
                                 "road_adjacent", "road_class", "in_region"}
    assert kg.node2entity is None
    assert city.grid_node2entity.shape == (256,) and city.road_node2entity.shape == (40,)
    assert kg.entities[int(city.grid_node2entity[17])] == "cell_1_1"  # row-major
    assert kg.entities[int(city.road_node2entity[3])] == city.roads.node_ids[3] == "sensor_3"
    assert set(city.category_names) <= set(kg.entities)
    # the road adjacency is symmetric, without self-loops, and mirrored in the KG
    adj = city.roads.adj
    assert torch.equal(adj, adj.T) and bool((adj.diagonal() == 0).all()) and adj.min() >= 0
    ra = kg.triples[kg.triples[:, 1] == kg.relation2id["road_adjacent"]]
    pos = {int(e): i for i, e in enumerate(city.road_node2entity)}
    from_kg = {(pos[h], pos[t]) for h, _, t in ra.tolist()}
    assert from_kg == {tuple(p) for p in torch.nonzero(adj > 0).tolist()}
    # each sensor reaches exactly pois_per_sensor POIs, whose categories give its weights
    counts = _kg_category_counts(kg, city.road_node2entity, "near_poi", city.category_names)
    assert (counts.sum(1) == city.pois_per_sensor).all()
    np.testing.assert_allclose(counts / counts.sum(1, keepdims=True),
                               city.ground_truth["road_weights"].numpy())


def test_kg_explains_road_profiles(city):
    """Working-day speed profiles of held-out (southern) sensors are predicted from KG
    features alone: the road class and the categories of the linked POIs."""
    kg, S = city.kg, city.num_sensors
    w = _kg_category_counts(kg, city.road_node2entity, "near_poi", city.category_names)
    w = w / w.sum(1, keepdims=True)
    highway = np.array([kg.neighbours(int(e), "road_class") == ["road_highway"]
                        for e in city.road_node2entity], dtype=float)
    prof = _weekday_profiles(city.roads.data[..., 0], city.days,
                             city.ground_truth["day_is_weekend"].numpy()).T  # [S, L]
    order = np.argsort(-city.roads.lat.numpy())  # train north, test south (as KGDiff)
    tr, te = order[:28], order[28:]
    cls = np.stack([highway, 1 - highway], 1)
    x = np.concatenate([cls, w], 1)
    beta = np.linalg.lstsq(x[tr], prof[tr], rcond=None)[0]
    class_only = cls[te] @ np.linalg.lstsq(cls[tr], prof[tr], rcond=None)[0]
    r2_full = _r2(prof[te], x[te] @ beta, prof[te].mean(0))
    r2_beyond_class = _r2(prof[te], x[te] @ beta, class_only)
    assert r2_full > 0.95
    assert r2_beyond_class > 0.8
    # negative control: the same regression with the KG weights shuffled across sensors
    rng = np.random.default_rng(0)
    xs = np.concatenate([cls, w[rng.permutation(S)]], 1)
    bs = np.linalg.lstsq(xs[tr], prof[tr], rcond=None)[0]
    assert _r2(prof[te], xs[te] @ bs, class_only) < 0.5 * r2_beyond_class
    # sensors sharing their dominant POI category have more similar congestion shapes
    deficit = prof - prof.max(1, keepdims=True)  # removes the road-class speed level
    dist = np.linalg.norm(deficit[:, None] - deficit[None], axis=-1)
    dom = w.argmax(1)
    off = ~np.eye(S, dtype=bool)
    same = (dom[:, None] == dom[None]) & off
    assert same.sum() > 20
    assert dist[same].mean() < 0.75 * dist[off].mean()
    # rush-hour dips: residential/office-heavy sensors are slowest around 8h or 17-18h
    busy = (w[:, 0] + w[:, 1]) > 0.5
    slowest_hour = deficit[busy].argmin(1) * 24 / city.road_steps_per_day
    assert busy.sum() >= 3
    assert np.all(((slowest_hour >= 7) & (slowest_hour <= 9.5))
                  | ((slowest_hour >= 16.5) & (slowest_hour <= 19)))


def test_kg_explains_grid_profiles(city):
    """Cell in/out-flow profiles follow the categories of the POIs located in the cell and
    its adjacent cells (read from the KG)."""
    kg, N = city.kg, city.height * city.width
    own = _kg_category_counts(kg, city.grid_node2entity, "located_in", city.category_names)
    adj = np.zeros((N, N))
    pos = {int(e): i for i, e in enumerate(city.grid_node2entity)}
    for h, r, t in kg.triples.tolist():
        if r == kg.relation2id["adjacent_to"]:
            adj[pos[h], pos[t]] = 1.0
    feat = np.concatenate([np.ones((N, 1)), own + 0.25 * adj @ own], 1)
    g = city.grid.data.reshape(city.grid.num_steps, 2, N)
    prof = _weekday_profiles(g, city.days, city.ground_truth["day_is_weekend"].numpy())
    y = prof.transpose(2, 0, 1).reshape(N, -1)  # [N, 24 * 2]
    perm = np.random.default_rng(1).permutation(N)
    tr, te = perm[: N // 2], perm[N // 2:]
    beta = np.linalg.lstsq(feat[tr], y[tr], rcond=None)[0]
    assert _r2(y[te], feat[te] @ beta, y[te].mean(0)) > 0.9


def test_cycles_weekends_holidays_and_weather(city):
    tot = city.grid.data.sum((1, 2, 3)).numpy()
    spd = city.steps_per_day

    def corr(lag):
        return np.corrcoef(tot[:-lag], tot[lag:])[0, 1]

    assert corr(spd) > 0.7 and corr(7 * spd) > 0.8 and corr(spd // 2) < 0
    daily = tot.reshape(city.days, spd)
    weekend = city.ground_truth["day_is_weekend"].numpy()
    holiday = city.day_is_holiday
    sat_sun = weekend & ~holiday
    wd, we, hol = daily[~weekend].mean(0), daily[sat_sun].mean(0), daily[holiday].mean(0)
    assert np.linalg.norm(wd - we) > 0.1 * np.linalg.norm(wd)  # a weekly cycle
    assert np.linalg.norm(hol - we) < 0.5 * np.linalg.norm(hol - wd)  # holidays ~ weekends
    assert (city.day_of_week[holiday] < 5).all()
    # rain lowers the flow relative to the same hour of the same day type
    ref = np.where(weekend[:, None], daily[weekend].mean(0), daily[~weekend].mean(0))
    rain = city.grid.ext[:, 1].numpy().reshape(city.days, spd) > 0
    ratio = daily / ref
    assert rain.sum() > 10
    assert ratio[rain].mean() < 0.9 < ratio[~rain].mean()
    # temperature has a daily cycle peaking in the afternoon
    temp = city.grid.ext[:, 0].numpy().reshape(city.days, spd).mean(0)
    assert 12 <= temp.argmax() <= 18 and temp.argmin() <= 6


def test_bad_parameters():
    with pytest.raises(ValueError, match="'steps_per_day' must divide 1440"):
        SyntheticCity(steps_per_day=7)
    with pytest.raises(ValueError, match="'pois_per_sensor'"):
        SyntheticCity(num_pois=4, pois_per_sensor=8)
    with pytest.raises(ValueError, match="'height'"):
        SyntheticCity(height=0)
    with pytest.raises(ValueError, match="'bbox'"):
        SyntheticCity(bbox=(41.0, 40.0, -74.0, -73.9))
    with pytest.raises(ValueError, match="'rush_drop'"):
        SyntheticCity(rush_drop=50.0)


def test_one_holiday_string_is_one_date():
    """A single date string was iterated character by character (a raw numpy error)."""
    from torch_stgen.data import SyntheticCity
    city = SyntheticCity(seed=0, height=4, width=4, days=7, holidays="2024-01-02")
    assert city.holidays.astype(str).tolist() == ["2024-01-02"]
    with pytest.raises(ValueError, match="'holidays' must be dates"):
        SyntheticCity(seed=0, height=4, width=4, days=7, holidays=["not a date"])
