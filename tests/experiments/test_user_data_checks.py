"""A user's own .npz that follows the documented schema but is degenerate or mis-built is
refused by name before anything trains, or handled without skewing the numbers (found by
running odd user files through both benchmarks)."""
import numpy as np
import pytest
import torch

from torch_stgen.data import GraphSeries, GridSeries, write_npz
from torch_stgen.experiments import diffrecon as dr
from torch_stgen.experiments.kgdiff import build_parser, evaluate, load_data, run
from torch_stgen.metrics import mmd



def tiny(tmp_path):
    return ["--steps", "2", "--batch-size", "4", "--sampling-steps", "2", "--tucker-epochs",
            "1", "--tucker-dim", "8", "--dim", "8", "--model-channels", "8", "--no-progress",
            "--tucker-cache", str(tmp_path / "tucker")]


def graph_npz(tmp_path, days=7, channels=1, dead=None, spread=0.01, name="mine",
              dead_hour=None):
    rng = np.random.default_rng(0)
    N, L = 12, 24
    lat = 40.0 + spread * np.arange(N)
    lon = -74.0 + 0.002 * rng.random(N)
    base = np.sin(np.linspace(0, 2 * np.pi, L))[None, :] * (1 + np.arange(N)[:, None] % 3)
    data = np.concatenate([base.T + 0.1 * rng.standard_normal((L, N)) for _ in range(days)])
    data = np.stack([data + 10 * c for c in range(channels)], -1)
    if dead is not None:
        data[:, dead] = np.nan                        # a sensor that never reported
    if dead_hour is not None:                         # sensors silent at one hour every day
        nodes, hour = dead_hour
        data[hour::L, nodes] = np.nan
    series = GraphSeries(data=torch.tensor(data, dtype=torch.float32), lat=lat, lon=lon,
                         timestamps=np.datetime64("2024-01-01T00:00")
                         + np.arange(days * L) * np.timedelta64(60, "m"),
                         node_ids=[f"n{i}" for i in range(N)])
    return write_npz(tmp_path / f"{name}.npz", series)


def test_a_never_observed_node_is_left_out_of_training_and_scoring(tmp_path, capsys):
    """Its all-zero 'profile' was scored as real (global-mean MAE 5.8 -> 14.2) and averaged
    into the global mean."""
    base = ["--methods", "global-mean"] + tiny(tmp_path)
    clean = run(build_parser().parse_args(["--dataset", str(graph_npz(tmp_path))] + base))
    args = build_parser().parse_args(["--dataset", str(graph_npz(tmp_path, dead=0, name="d"))]
                                     + base)
    data = load_data(args)
    assert data["unobserved"].tolist() == [0]
    assert 0 not in data["test"].tolist() + data["train"].tolist()
    rows = run(args)
    assert "1 node(s) never observed" in capsys.readouterr().out
    assert rows[0]["mae"] == pytest.approx(clean[0]["mae"], rel=0.2)


@pytest.mark.parametrize("method", ["global-mean", "knn"])
def test_baselines_leave_out_training_slots_never_observed(tmp_path, method):
    """Half the training nodes never report at 06:00; their profile there is 0, not a
    measured value, and the baselines averaged it in (MAE +27 % global mean, +23 % k-NN)."""
    base = ["--methods", method, "--channel", "1"] + tiny(tmp_path)  # level ~10, not ~0
    clean = run(build_parser().parse_args(
        ["--dataset", str(graph_npz(tmp_path, channels=2))] + base))
    args = build_parser().parse_args(
        ["--dataset", str(graph_npz(tmp_path, channels=2, dead_hour=(slice(6, 12, 2), 6),
                                    name="h"))] + base)
    data = load_data(args)
    assert not bool(data["mask"][:, data["train"]].sum(0).all())   # the case is exercised
    assert run(args)[0]["mae"] == pytest.approx(clean[0]["mae"], rel=0.02)


def test_evaluate_leaves_out_slots_and_nodes_never_observed():
    torch.manual_seed(0)
    real = torch.randn(4, 3, 10) + 5
    gen = real + 1.0
    mask = torch.ones_like(real)
    mask[:, 1] = 0                                    # node 1 never observed
    mask[:, 2, 7] = 0                                 # one slot of node 2 never observed
    out = evaluate(gen, real, mask)
    assert out["mae"] == pytest.approx(1.0) and out["rmse"] == pytest.approx(1.0)
    keep = torch.tensor([0, 2])
    m2 = mask[:, keep]
    ref = evaluate(gen[:, keep], torch.where(m2 > 0, real[:, keep], 0.0), m2)
    assert out["mmd"] == pytest.approx(ref["mmd"])


def test_channel_flag_picks_the_series(tmp_path, capsys):
    path = graph_npz(tmp_path, channels=2)
    d0 = load_data(build_parser().parse_args(["--dataset", str(path)] + tiny(tmp_path)))
    d1 = load_data(build_parser().parse_args(["--dataset", str(path), "--channel", "1"]
                                             + tiny(tmp_path)))
    torch.testing.assert_close(d1["values"], d0["values"] + 10, atol=1e-4, rtol=0)
    assert d1["channel"] == (1, 2)
    run(build_parser().parse_args(["--dataset", str(path), "--methods", "global-mean"]
                                  + tiny(tmp_path)))
    assert "channel 0 of 2 (--channel)" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"--channel must be in \[-2, 2\)"):
        load_data(build_parser().parse_args(["--dataset", str(path), "--channel", "2"]
                                            + tiny(tmp_path)))


def test_one_weekday_and_a_kg_without_triples_are_refused(tmp_path):
    one = graph_npz(tmp_path, days=1, name="one")
    with pytest.raises(ValueError, match=r"has 1 complete weekday\(s\); the benchmark needs "
                                         r"at least 2"):
        load_data(build_parser().parse_args(["--dataset", str(one)] + tiny(tmp_path)))
    sparse = graph_npz(tmp_path, spread=0.25, name="sparse")      # ~28 km apart
    with pytest.raises(ValueError, match="has no triples, so TuckER has nothing to learn"):
        run(build_parser().parse_args(["--dataset", str(sparse), "--methods", "global-mean,"
                                       "kgdiff"] + tiny(tmp_path)))
    rows = run(build_parser().parse_args(["--dataset", str(sparse), "--methods",
                                          "global-mean,knn"] + tiny(tmp_path)))
    assert len(rows) == 2


def test_mmd_refuses_two_samples_with_a_data_driven_bandwidth():
    """With one sample per set the value was the same constant whatever they were."""
    with pytest.raises(ValueError, match="at least three pooled samples"):
        mmd(torch.zeros(1, 4), torch.ones(1, 4))
    assert float(mmd(torch.zeros(1, 4), torch.ones(1, 4), bandwidth=1.0)) > 0
    assert float(mmd(torch.zeros(2, 4), torch.ones(1, 4))) > 0


def test_series_refuse_swapped_coordinates_duplicate_ids_unsorted_time_and_nan_ext():
    data = torch.zeros(4, 3)
    with pytest.raises(ValueError, match=r"'lat' must be finite degrees in \[-90, 90\].*"
                                         r"swapped"):
        GraphSeries(data=data, lat=[-118.2, -118.3, -118.4], lon=[34.0, 34.1, 34.2])
    with pytest.raises(ValueError, match=r"'node_ids' must be unique \('a' repeats\)"):
        GraphSeries(data=data, node_ids=["a", "b", "a"])
    ts = np.datetime64("2024-01-01T00:00") + np.arange(4) * np.timedelta64(60, "m")
    with pytest.raises(ValueError, match=r"'timestamps' must increase \(row 1"):
        GridSeries(data=torch.zeros(4, 1, 2, 2), timestamps=ts[::-1].copy())
    ext = torch.zeros(4, 2)
    ext[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"'ext' has NaN/inf \(first at step 2, column 1\)"):
        GridSeries(data=torch.zeros(4, 1, 2, 2), timestamps=ts, ext=ext)


def test_steps_per_day_reads_the_most_common_spacing():
    """Hourly data whose first gap is 3 h read as 8 steps a day."""
    t0 = np.datetime64("2024-01-01T00:00")
    ts = np.concatenate([[t0], t0 + np.timedelta64(180, "m")
                         + np.arange(100) * np.timedelta64(60, "m")])
    assert dr.steps_per_day_of(ts) == 24
    assert dr.steps_per_day_of(ts[:2]) == 8 and dr.steps_per_day_of(None) == 24


def test_diffrecon_benchmark_refuses_windows_the_data_cannot_hold_before_training(tmp_path):
    rng = np.random.default_rng(0)
    ts = np.datetime64("2024-01-01") + np.arange(40) * np.timedelta64(1, "D")   # daily data
    series = GridSeries(data=torch.tensor(rng.random((40, 1, 4, 4)), dtype=torch.float32),
                        timestamps=ts)
    path = write_npz(tmp_path / "daily.npz", series)
    args = dr.build_parser().parse_args(["--dataset", str(path), "--quick", "--methods",
                                         "interp,diffrecon", "--no-progress"])
    with pytest.raises(ValueError, match=r"--history-f: T-PatternNet's window of 1 steps "
                                         r"\(one day of this data\)"):
        dr.run(args)
    args = dr.build_parser().parse_args(["--dataset", str(path), "--quick", "--methods",
                                         "diffrecon", "--history-f", "30", "--no-progress"])
    with pytest.raises(ValueError, match=r"the training split has 20 steps"):
        dr.run(args)


def test_diffrecon_table_with_an_exact_baseline():
    rows = [{"dataset": "d", "method": m, "pattern": "block", "ratio": None, "mae": v,
             "rmse": v} for m, v in (("interp", 0.0), ("diffrecon", 0.1))]
    assert "| *DiffRecon vs best baseline* | - |" in dr.format_table(rows)


def test_float_node_ids_read_as_their_integer_text(tmp_path):
    """np.savez of numeric ids as floats gave '1000.0', which matched no KG entity."""
    data = np.zeros((4, 3), dtype=np.float32)
    np.savez(tmp_path / "f.npz", data=data, node_ids=np.array([1000.0, 1001.0, 7.0]))
    from torch_stgen.data import read_npz
    assert read_npz(tmp_path / "f.npz").node_ids == ["1000", "1001", "7"]
    np.savez(tmp_path / "g.npz", data=data, node_ids=np.array([1000.5, 1.0, 2.0]))
    with pytest.raises(ValueError, match="'node_ids' must be strings or whole numbers"):
        read_npz(tmp_path / "g.npz")
