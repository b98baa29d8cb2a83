import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from torch_stgen.data.datasets import (DailyDataset, WindowDataset, chronological_split,
                                       split_nodes_by_latitude, time_features)
from torch_stgen.data.grid import grid_to_image
from torch_stgen.data.patterns import SparsePattern
from torch_stgen.data.scalers import StandardScaler
from torch_stgen.data.series import GraphSeries, GridSeries


def _hourly(T, start="2024-01-01T00:00"):        # 2024-01-01 is a Monday
    return np.datetime64(start, "m") + np.arange(T) * np.timedelta64(60, "m")


# ----------------------------------------------------------------- splits
def test_chronological_split():
    tr, va, te = chronological_split(4392)
    assert (len(tr), len(va), len(te)) == (2196, 1098, 1098)
    assert tr.stop == va.start and va.stop == te.start and te.stop == 4392
    tr, va, te = chronological_split(10, (0.7, 0.1, 0.2))
    assert (len(tr), len(va), len(te)) == (7, 1, 2)
    assert len(chronological_split(5, (1, 0, 1))[1]) == 0
    with pytest.raises(ValueError, match="'ratios'"):
        chronological_split(10, (1, -1, 1))
    with pytest.raises(ValueError, match="'ratios'"):
        chronological_split(10, (1, 1))
    with pytest.raises(ValueError, match="'T'"):
        chronological_split(0)


def test_split_nodes_by_latitude():
    lat = torch.tensor([40.5, 40.1, 40.9, 40.3, 40.7, 40.2, 40.8, 40.4, 40.6, 40.0])
    train, test = split_nodes_by_latitude(lat, test_frac=0.3)
    assert test.tolist() == [1, 5, 9]                    # 40.1, 40.2, 40.0 = southernmost
    assert lat[test].max() < lat[train].min()
    assert sorted(train.tolist() + test.tolist()) == list(range(10))
    train, test = split_nodes_by_latitude(lat, test_frac=0.2, direction="north")
    assert test.tolist() == [2, 6]
    train, val, test = split_nodes_by_latitude(lat, test_frac=0.3, val_frac=0.2)
    assert test.tolist() == [1, 5, 9] and val.tolist() == [3, 7]
    assert lat[val].max() < lat[train].min()
    with pytest.raises(ValueError, match="'direction'"):
        split_nodes_by_latitude(lat, direction="east")
    with pytest.raises(ValueError, match="'test_frac'"):
        split_nodes_by_latitude(lat, test_frac=1.2)
    with pytest.raises(ValueError, match="'lat'"):
        split_nodes_by_latitude(torch.tensor([1.0, float("nan")]))


# ----------------------------------------------------------------- time features
def test_time_features_cyclic_and_onehot():
    ts = np.array(["2024-01-01T06:00", "2024-01-06T18:30", "2024-01-07T00:00"],
                  dtype="datetime64[m]")                 # Monday, Saturday, Sunday
    f = time_features(ts, holidays=["2024-01-01"])
    assert f.shape == (3, 5) and f.dtype == torch.float32
    assert f[0].tolist() == pytest.approx([1.0, 0.0, 0.0, 1.0, 1.0], abs=1e-6)
    a = 2 * np.pi * (18 * 60 + 30) / 1440
    b = 2 * np.pi * 5 / 7
    assert f[1].tolist() == pytest.approx([np.sin(a), np.cos(a), np.sin(b), np.cos(b), 0.0],
                                          abs=1e-6)
    o = time_features(ts, holidays=np.array([False, False, True]), encoding="onehot")
    assert o.shape == (3, 32)
    assert o.sum(dim=1).tolist() == [2.0, 2.0, 3.0]
    assert o[1, 18] == 1 and o[1, 24 + 5] == 1 and o[2, 0] == 1 and o[2, 24 + 6] == 1
    assert o[:, 31].tolist() == [0.0, 0.0, 1.0]
    assert torch.equal(time_features(ts, holidays=[])[:, 4], torch.zeros(3))
    with pytest.raises(ValueError, match="'encoding'"):
        time_features(ts, encoding="fourier")
    with pytest.raises(ValueError, match=r"'holidays' flags must have shape \(T=3,\)"):
        time_features(ts, holidays=np.array([True, False]))


# ----------------------------------------------------------------- windows
def _grid(T=40, C=2, H=4, W=4):
    data = torch.arange(T * C * H * W, dtype=torch.float32).reshape(T, C, H, W)
    return GridSeries(data, timestamps=_hourly(T), ext=torch.randn(T, 3))


def test_window_dataset_grid_layout_and_shapes():
    g = _grid()
    ds = WindowDataset(g, history=6, horizon=2)
    assert len(ds) == 40 - 6 - 2 + 1
    s = ds[3]
    assert s["x"].shape == (6, 16, 2) and s["y"].shape == (2, 16, 2)
    assert s["time_x"].shape == (6, 5) and s["ext_y"].shape == (2, 3)
    # node i*W + j, feature c of step t is data[t, c, i, j]
    assert s["x"][0, 1 * 4 + 2, 1] == g.data[3, 1, 1, 2]
    assert torch.equal(s["y"][1], g.data[3 + 6 + 1].permute(1, 2, 0).reshape(16, 2))
    assert torch.equal(s["ext_x"], g.ext[3:9])
    batch = next(iter(DataLoader(ds, batch_size=5)))
    assert batch["x"].shape == (5, 6, 16, 2)
    img = grid_to_image(batch["x"], 4, 4)
    assert torch.equal(img[0], g.data[0])                # back to the map of step 0


def test_window_dataset_splits_do_not_leak():
    g = _grid(T=40)                                      # 20 / 10 / 10 steps
    tr = WindowDataset(g, history=4, horizon=2, split="train")
    va = WindowDataset(g, history=4, horizon=2, split="val")
    te = WindowDataset(g, history=4, horizon=2, split="test")
    ends = lambda ds: [int(s) + 4 + 2 for s in ds.starts]                   # noqa: E731
    firsts = lambda ds: [int(s) + 4 for s in ds.starts]                     # noqa: E731
    assert max(ends(tr)) <= 20 and min(firsts(va)) >= 20 and max(ends(va)) <= 30
    assert min(firsts(te)) >= 30 and max(ends(te)) == 40
    assert len(tr) == 20 - 6 + 1 and len(va) == 10 - 2 + 1 and len(te) == 9
    # nowcasting: the target is the last history step
    now = WindowDataset(g, history=3, horizon=1, delay=-1)
    s = now[0]
    assert torch.equal(s["y"][0], s["x"][2])
    with pytest.raises(ValueError, match="'delay'"):
        WindowDataset(g, history=3, delay=-4)
    with pytest.raises(ValueError, match="'split'"):
        WindowDataset(g, history=3, split="training")
    with pytest.raises(ValueError, match="'history'"):
        WindowDataset(g, history=0)


def test_window_dataset_masks_with_pattern():
    data = torch.rand(30, 5, 1) + 1.0
    data[2, 1, 0] = float("nan")                         # really missing
    s = GraphSeries(data)
    ds = WindowDataset(s, history=3, horizon=1, delay=-1, pattern="fixed:0.4",
                       eval_on="missing")
    keep = SparsePattern("fixed", 0.4).node_mask(30, 5)[0]            # [5]
    item = ds[0]                                          # steps 0..2, target = step 2
    assert item["mask"][0, :, 0].tolist() == keep.tolist()
    assert (item["x"][item["mask"] == 0] == 0).all()
    assert item["y_mask"][0, :, 0].tolist() == (keep * torch.tensor([1., 0, 1, 1, 1])).tolist()
    # eval on the hidden nodes whose truth exists (node 1 at step 2 has no truth)
    expected = (1 - keep) * torch.tensor([1., 0, 1, 1, 1])
    assert item["eval_mask"][0, :, 0].tolist() == expected.tolist()
    assert torch.isfinite(item["y"]).all() and item["y"][0, 1, 0] == 0
    assert "time_x" not in item
    with pytest.raises(ValueError, match="node_mask"):
        WindowDataset(s, history=3, pattern="block")


def test_window_dataset_scaler_fitted_on_observed_train_only():
    T = 40
    data = torch.zeros(T, 3, 2)
    data[:20] = torch.randn(20, 3, 2) + 5.0              # train range
    data[20:] = 1000.0                                   # val/test: must not affect the fit
    mask = torch.ones(T, 3, 2)
    mask[:10, 0, 0] = 0                                  # unobserved training entries
    data[:10, 0, 0] = -1e6
    s = GraphSeries(data, mask=mask)
    scaler = StandardScaler()
    ds = WindowDataset(s, history=4, split="test", scaler=scaler)
    obs = mask[:20].bool()
    ref = data[:20][..., 0][obs[..., 0]].double()
    assert scaler.mean[0].item() == pytest.approx(ref.mean().item(), rel=1e-6)
    item = ds[0]
    assert torch.allclose(scaler.inverse_transform(item["y"]), data[item["index"] + 4][None],
                          rtol=1e-5)
    # a fitted scaler is reused as is
    again = WindowDataset(s, history=4, split="train", scaler=scaler)
    assert again.scaler is scaler and scaler.mean[0].item() == pytest.approx(ref.mean().item())
    assert (again[0]["x"][:, 0, 0] == 0).all()           # unobserved stays 0 after scaling


# ----------------------------------------------------------------- days
def test_daily_dataset():
    steps = 24
    T = 9 * steps + 5                                    # 9 full days + 5 steps of a 10th
    start = "2024-01-01T00:00"                           # Monday
    t = torch.arange(T, dtype=torch.float32)
    N = 4
    data = torch.stack([t + 1000 * n for n in range(N)], dim=1)     # [T, N]
    data[30, 2] = float("nan")
    lat = torch.tensor([1.0, 2.0, 3.0, 4.0])
    s = GraphSeries(data, lat=lat, lon=lat, timestamps=_hourly(T, start))
    ds = DailyDataset(s)
    assert ds.steps_per_day == 24 and ds.freq_minutes == 60
    assert ds.num_days == 9                              # the partial 10th day is dropped
    assert ds.values.shape == (9, N, 24) and len(ds) == 9 * N
    assert torch.equal(ds.values[1, 3], torch.arange(24, 48).float() + 3000)
    assert ds.mask[1, 2, 6] == 0 and ds.values[1, 2, 6] == 0
    item = ds[1 * N + 2]
    assert int(item["day"]) == 1 and int(item["node"]) == 2 and int(item["weekday"]) == 1
    wk = DailyDataset(s, weekdays="weekday")
    assert wk.num_days == 5 + 2                          # Mon-Fri, then Mon-Tue
    assert wk.weekday.tolist() == [0, 1, 2, 3, 4, 0, 1]
    we = DailyDataset(s, weekdays="weekend", holidays=["2024-01-06"])
    assert we.dates.astype(str).tolist() == ["2024-01-07"]
    train, test = split_nodes_by_latitude(lat, test_frac=0.25)
    sub = DailyDataset(s, nodes=train)
    assert len(sub) == 9 * 3 and set(sub.samples[:, 1].tolist()) == {1, 2, 3}
    prof, count = sub.profiles()
    assert prof.shape == (3, 24)
    hours = torch.arange(24).float()
    assert torch.allclose(prof[0], hours + 24 * 4 + 1000)            # mean day index 4
    assert count[1, 6] == 8 and count[0, 6] == 9
    with pytest.raises(ValueError, match="'weekdays'"):
        DailyDataset(s, weekdays=[7])
    with pytest.raises(ValueError, match="timestamps"):
        DailyDataset(GraphSeries(data))


# ----------------------------------------------------------------- real data
def test_bikenyc_windows(bikenyc_root):
    from torch_stgen.data.readers import read_deepst_h5
    g = read_deepst_h5(bikenyc_root)
    tr = WindowDataset(g, history=6, horizon=1, delay=-1, split="train",
                       pattern="random:0.4", scaler=StandardScaler())
    assert len(tr) == 2196 - 6 + 1
    item = tr[0]
    assert item["x"].shape == (6, 128, 2) and item["time_x"].shape == (6, 5)
    assert ((1 - item["mask"]).sum(dim=(1, 2)) == 2 * round(0.4 * 128)).all()
    te = WindowDataset(g, history=6, horizon=1, delay=-1, split="test", scaler=tr.scaler)
    assert len(te) == 1098 and int(te.starts[0]) + 5 == 3294


def test_metr_la_days_and_spatial_split(metr_la_root):
    from torch_stgen.data.readers import read_dcrnn
    s = read_dcrnn(metr_la_root)
    train, test = split_nodes_by_latitude(s.lat, test_frac=0.3)
    assert len(test) == round(0.3 * 207) and len(train) == 207 - len(test)
    assert s.lat[test].max() <= s.lat[train].min()
    ds = DailyDataset(s, nodes=train, weekdays="weekday")
    assert ds.steps_per_day == 288 and ds.freq_minutes == 5
    # 2012-03-01 is a Thursday: Thu, Fri, Mon, Tue, Wed
    assert ds.dates.astype(str).tolist() == ["2012-03-01", "2012-03-02", "2012-03-05",
                                             "2012-03-06", "2012-03-07"]
    assert len(ds) == 5 * len(train) and ds[0]["x"].shape == (288,)


def test_window_graph_and_repr_and_daily_on_grid():
    g = _grid(T=48, C=1, H=2, W=3)
    ds = WindowDataset(g, history=4, split="train")
    data = ds.graph(connectivity=4)
    assert data.num_nodes == 6 and data.edge_index.shape[1] == 2 * (2 * 6 - 2 - 3)
    assert repr(ds) == ("WindowDataset('grid', split='train', history=4, horizon=1, "
                        "delay=0, windows=20)")   # 24 training steps - 5 + 1
    roads = GraphSeries(torch.rand(10, 3), adj=torch.tensor([[0., 1, 0], [1, 0, 0],
                                                              [0, 0, 0]]))
    assert WindowDataset(roads, history=2).graph().edge_index.tolist() == [[0, 1], [1, 0]]
    days = DailyDataset(g)
    assert days.values.shape == (2, 6, 24)
    # cell (row 1, col 2) = node 5 of day 1, hour 3 is map value of step 27
    assert days.values[1, 5, 3] == g.data[27, 0, 1, 2]


def test_raw_time_features_are_diffrecons_calendar():
    from torch_stgen.experiments.diffrecon import calendar
    ts = np.array(["2024-07-04T00:00", "2024-07-04T13:30", "2024-07-06T23:00"],
                  dtype="datetime64[m]")
    raw = time_features(ts, holidays=["2024-07-04"], encoding="raw")
    assert raw.tolist() == [[0.0, 3.0, 1.0], [13.5, 3.0, 1.0], [23.0, 5.0, 0.0]]
    assert torch.equal(calendar(ts, ["2024-07-04"]), raw)
    with pytest.raises(ValueError, match="'cyclic', 'onehot' or 'raw'"):
        time_features(ts, encoding="hours")


def test_daily_dataset_nodes_as_a_boolean_mask_or_indices():
    T, N = 48, 4
    s = GraphSeries(torch.arange(T * N, dtype=torch.float32).reshape(T, N),
                    timestamps=_hourly(T))
    mask = torch.tensor([True, False, True, False])
    assert DailyDataset(s, nodes=mask).nodes.tolist() == [0, 2]
    assert DailyDataset(s, nodes=[3, 1]).nodes.tolist() == [3, 1]
    with pytest.raises(ValueError, match=r"boolean 'nodes' mask must have shape \[N=4\]"):
        DailyDataset(s, nodes=torch.tensor([True, False]))
    with pytest.raises(ValueError, match="'nodes' must be 1-D integer node indices"):
        DailyDataset(s, nodes=torch.tensor([0.7, 1.9]))          # no silent truncation
    with pytest.raises(ValueError, match=r"'nodes' must be node indices in \[0, 4\)"):
        DailyDataset(s, nodes=[4])
    assert len(DailyDataset(s, nodes=[])) == 0           # torch reads [] as float32


def test_series_refuse_repeated_timestamps_and_non_binary_masks():
    T, N = 5, 2
    stamps = _hourly(T)
    stamps[3] = stamps[2]                  # a day cut would silently keep one reading
    with pytest.raises(ValueError, match="GraphSeries 'timestamps' must be unique at minute "
                                         "resolution"):
        GraphSeries(torch.ones(T, N), timestamps=stamps)
    seconds = np.datetime64("2024-01-01T00:00:00") + np.arange(T) * np.timedelta64(30, "s")
    with pytest.raises(ValueError, match=r"stored as datetime64\[m\]\): 2 repeated"):
        GraphSeries(torch.ones(T, N), timestamps=seconds)    # 30 s apart: merged by the cast
    for bad in (float("nan"), -1.0, 2.0, 0.5):
        mask = torch.ones(T, N)
        mask[1, 1] = bad
        with pytest.raises(ValueError, match=r"'GraphSeries.mask' must contain only 0 and 1"):
            GraphSeries(torch.ones(T, N), mask=mask)
        with pytest.raises(ValueError, match=r"'GridSeries.mask' must contain only 0 and 1"):
            GridSeries(torch.ones(T, 1, 1, N), mask=mask.reshape(T, 1, 1, N))
    ok = GraphSeries(torch.ones(T, N), mask=torch.ones(T, N, dtype=torch.bool))
    assert ok.mask.dtype == torch.float32 and ok.mask.all()


def test_graph_series_graph_from_adjacency_or_coordinates():
    adj = torch.tensor([[0., 0.5, 0], [0.5, 0, 0], [0, 0, 0]])
    roads = GraphSeries(torch.rand(4, 3), adj=adj, node_ids=["a", "b", "c"])
    data = roads.graph()
    assert data.edge_index.tolist() == [[0, 1], [1, 0]] and data.edge_weight.tolist() == [0.5, 0.5]
    assert data.node_ids == ["a", "b", "c"]
    lat = torch.tensor([34.0, 34.001, 35.0])           # two sensors 111 m apart, one far
    lon = torch.tensor([-118.0, -118.0, -118.0])
    near = GraphSeries(torch.rand(4, 3), lat=lat, lon=lon).graph(sigma=1.0, threshold=0.5)
    assert near.edge_index.tolist() == [[0, 1], [1, 0]]       # the far one is unlinked
    with pytest.raises(ValueError, match="has no 'adj' and no 'lat' / 'lon'"):
        GraphSeries(torch.rand(4, 3)).graph()


def test_window_dataset_series_too_short_and_numpy_ints():
    g = _grid(T=40)
    for kw in ({"history": 41}, {"history": 40}, {"history": 38, "horizon": 3},
               {"history": 38, "horizon": 1, "delay": 2}):
        with pytest.raises(ValueError, match=r"spans \d+ steps, more than the series' T=40"):
            WindowDataset(g, **kw)
    assert len(WindowDataset(g, history=38, horizon=2)) == 1            # exactly fits
    assert len(WindowDataset(g, history=40, horizon=1, delay=-1)) == 1  # nowcast the last step
    # an empty split stays legitimate (no validation range here)
    assert len(WindowDataset(g, history=4, split="val", ratios=(3, 0, 1))) == 0
    ds = WindowDataset(g, history=np.int64(4), horizon=np.int32(2), delay=np.int64(1),
                       stride=np.int64(3))
    ref = WindowDataset(g, history=4, horizon=2, delay=1, stride=3)
    assert type(ds.history) is int and repr(ds) == repr(ref)
    assert torch.equal(ds.starts, ref.starts) and torch.equal(ds[2]["y"], ref[2]["y"])
    for bad in (4.0, np.float64(4.0), True, "4"):
        with pytest.raises(ValueError, match="'history' must be an integer >= 1"):
            WindowDataset(g, history=bad)
    with pytest.raises(ValueError, match="'delay' must be an integer >= -history"):
        WindowDataset(g, history=4, delay=0.5)


def test_time_inputs_refuse_numbers_timezones_and_2d_latitudes():
    with pytest.raises(ValueError, match="not numbers"):           # epoch seconds, read as
        time_features(np.array([1704067200, 1704070800]))           # minutes before
    pd = pytest.importorskip("pandas")
    idx = pd.date_range("2024-01-01 08:00", periods=2, freq="h", tz="US/Eastern")
    with pytest.raises(ValueError, match="timezone-aware"):         # numpy made them UTC
        time_features(idx, encoding="raw")
    naive = time_features(idx.tz_localize(None), encoding="raw")
    assert naive[:, 0].tolist() == [8.0, 9.0]
    for aware in (list(idx), np.array(["2024-01-01T08:00-05:00", "2024-01-01T09:00-05:00"])):
        with pytest.raises(ValueError, match="timezone-aware"):
            time_features(aware, encoding="raw")
    # the containers check as well: their timestamps feed every day cut and calendar
    with pytest.raises(ValueError, match="GraphSeries 'timestamps' are timezone-aware"):
        GraphSeries(torch.ones(2, 3), timestamps=idx)
    with pytest.raises(ValueError, match="GraphSeries 'timestamps' must be .*not numbers"):
        GraphSeries(torch.ones(2, 3), timestamps=np.array([1704067200, 1704070800]))
    with pytest.raises(ValueError, match=r"'lat' must have shape \[N\].*reshape\(-1\)"):
        split_nodes_by_latitude(torch.tensor([[1., 10.], [2., 20.], [3., 30.]]), 0.3)
