import pickle
import warnings

import h5py
import numpy as np
import pytest
import torch

from torch_stgen.data.grid import coarsen
from torch_stgen.data.readers import (parse_freq, read_dcrnn, read_deepst_h5, read_npz,
                                      read_urbanfm, write_npz)
from torch_stgen.data.series import GraphSeries, GridSeries


# ----------------------------------------------------------------- real data (fixtures)
def test_bikenyc_real(bikenyc_root):
    g = read_deepst_h5(bikenyc_root)
    assert g.shape == (4392, 2, 16, 8)
    assert g.timestamps[0] == np.datetime64("2014-04-01T00:00")
    assert g.timestamps[-1] == np.datetime64("2014-09-30T23:00")
    assert (np.diff(g.timestamps) == np.timedelta64(60, "m")).all()
    assert g.meta["freq_minutes"] == 60
    assert g.mask.all() and (g.data >= 0).all()
    fine = g.data.double()
    for f, size in ((4, (4, 2)), (2, (8, 4))):
        c = coarsen(fine, f)
        assert c.shape[-2:] == size
        assert c.sum() == fine.sum()                     # mass kept exactly


def test_metr_la_real(metr_la_root):
    s = read_dcrnn(metr_la_root)
    assert s.shape == (2016, 207, 1)
    assert s.lat.shape == (207,) and s.lon.shape == (207,)
    assert (s.lat > 33).all() and (s.lat < 35).all() and (s.lon < -117).all()
    assert int((s.adj != 0).sum()) == 1722
    assert s.timestamps[0] == np.datetime64("2012-03-01T00:00")
    assert s.timestamps[-1] == np.datetime64("2012-03-07T23:55")
    ids = (metr_la_root / "graph_sensor_ids.txt").read_text().strip().split(",")
    assert s.node_ids == ids
    # column order of the CSV equals the pickle's order: first row, first sensor
    first = (metr_la_root / "los_speed.csv").read_text().splitlines()[1].split(",")
    assert s.data[0, :5, 0].tolist() == pytest.approx([float(v) for v in first[:5]])


# ----------------------------------------------------------------- DeepST, synthetic
def _write_deepst(path, T=6, slot_start=1):
    data = np.arange(T * 2 * 4 * 2, dtype=np.float64).reshape(T, 2, 4, 2)
    dates = [f"20150101{s:02d}".encode() for s in range(slot_start, slot_start + T)]
    with h5py.File(path, "w") as f:
        f["data"] = data
        f["date"] = np.array(dates)
    return data


def test_deepst_half_hourly_from_filename(tmp_path):
    data = _write_deepst(tmp_path / "BJ15_M4x2_T30_InOut.h5", T=4, slot_start=45)
    g = read_deepst_h5(tmp_path)
    assert g.meta["freq_minutes"] == 30
    # slot 45 of 48 starts at 22:00, slot 48 at 23:30
    assert g.timestamps[0] == np.datetime64("2015-01-01T22:00")
    assert g.timestamps[-1] == np.datetime64("2015-01-01T23:30")
    assert torch.equal(g.data, torch.from_numpy(data).float())
    # without the _T30_ hint the largest slot (48) tells half-hourly; freq overrides
    (tmp_path / "BJ15_M4x2_T30_InOut.h5").rename(tmp_path / "plain.h5")
    assert read_deepst_h5(tmp_path).meta["freq_minutes"] == 30
    hourly = read_deepst_h5(tmp_path / "plain.h5", freq="15min")
    assert hourly.timestamps[0] == np.datetime64("2015-01-01T11:00")


def test_deepst_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no DeepST '\*.h5' file found in folder"):
        read_deepst_h5(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        read_deepst_h5(tmp_path, filename="NYC14_M16x8_T60_NewEnd.h5")
    assert "NYC14_M16x8_T60_NewEnd.h5" in str(err.value) and str(tmp_path) in str(err.value)
    _write_deepst(tmp_path / "x_T60.h5", T=3, slot_start=23)   # slot 25 > 24
    with pytest.raises(ValueError, match="slots must be in 1..24"):
        read_deepst_h5(tmp_path)


# ----------------------------------------------------------------- DCRNN, synthetic
def _write_dcrnn(folder, T=4):
    ids = ["101", "102", "103"]
    adj = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.2, 0.0, 1.0]], dtype=np.float32)
    with open(folder / "adj_mx.pkl", "wb") as f:
        pickle.dump((ids, {s: i for i, s in enumerate(ids)}, adj), f, protocol=2)
    # locations in another order, with the DCRNN header
    (folder / "graph_sensor_locations.csv").write_text(
        "index,sensor_id,latitude,longitude\n0,103,34.3,-118.3\n1,101,34.1,-118.1\n"
        "2,102,34.2,-118.2\n")
    # speeds with columns in another order; a 0 reading is missing
    speeds = np.array([[60.0, 50.0, 0.0], [61.0, 51.0, 41.0],
                       [62.0, 52.0, 42.0], [63.0, 53.0, 43.0]])[:T]   # columns 103,101,102
    lines = ["103,101,102"] + [",".join(f"{v:g}" for v in row) for row in speeds]
    (folder / "los_speed.csv").write_text("\n".join(lines) + "\n")
    return ids, adj, speeds


def test_dcrnn_csv(tmp_path):
    ids, adj, speeds = _write_dcrnn(tmp_path)
    s = read_dcrnn(tmp_path, start="2020-01-01T06:00", freq="15min")
    assert s.node_ids == ids
    assert torch.equal(s.adj, torch.from_numpy(adj))
    assert s.lat.tolist() == [34.1, 34.2, 34.3]
    assert s.data[:, :, 0].tolist() == speeds[:, [1, 2, 0]].tolist()   # reordered 101,102,103
    # the 0 reading of sensor 102 at step 0 is missing, everything else observed
    assert s.mask[0, :, 0].tolist() == [1.0, 0.0, 1.0]
    assert s.mask.sum().item() == 11
    assert s.timestamps[1] == np.datetime64("2020-01-01T06:15")
    assert read_dcrnn(tmp_path, zero_is_missing=False).mask.all()


def test_dcrnn_pandas_fixed_h5(tmp_path):
    ids, adj, _ = _write_dcrnn(tmp_path)
    values = np.array([[1.0, 2.0, 3.0], [4.0, 0.0, 6.0]])            # columns 102, 103, 101
    stamps = np.array(["2012-03-01T00:00", "2012-03-01T00:05"], dtype="datetime64[ns]")
    with h5py.File(tmp_path / "metr-la.h5", "w") as f:
        g = f.create_group("df")
        g["axis0"] = np.array([b"102", b"103", b"101"])
        g["axis1"] = stamps.astype(np.int64)
        g["block0_items"] = np.array([b"102", b"103", b"101"])
        g["block0_values"] = values
    s = read_dcrnn(tmp_path, speeds="metr-la.h5")
    assert s.data[:, :, 0].tolist() == [[3.0, 1.0, 2.0], [6.0, 4.0, 0.0]]
    assert s.mask[1, 2, 0] == 0 and s.mask.sum() == 5
    assert s.timestamps[1] == np.datetime64("2012-03-01T00:05")


def test_dcrnn_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        read_dcrnn(tmp_path)
    assert "adj_mx.pkl" in str(err.value) and str(tmp_path) in str(err.value)
    _write_dcrnn(tmp_path)
    (tmp_path / "los_speed.csv").unlink()
    with pytest.raises(FileNotFoundError, match="los_speed.csv.*found in folder"):
        read_dcrnn(tmp_path)
    with pytest.raises(FileNotFoundError, match="'speeds.csv' not found in folder"):
        read_dcrnn(tmp_path, speeds="speeds.csv")


def test_dcrnn_wrong_columns(tmp_path):
    _write_dcrnn(tmp_path)
    (tmp_path / "los_speed.csv").write_text("101,102,999\n1,2,3\n")
    with pytest.raises(ValueError, match="columns must be the 3 sensor ids"):
        read_dcrnn(tmp_path)


# ----------------------------------------------------------------- UrbanFM
def test_urbanfm(tmp_path):
    split = tmp_path / "valid"
    split.mkdir()
    y = np.random.default_rng(0).integers(0, 9, (5, 1, 8, 8)).astype(np.float32)
    x = coarsen(torch.from_numpy(y), 4).numpy()
    ext = np.ones((5, 7), dtype=np.float32)
    np.save(split / "X.npy", x)
    np.save(split / "Y.npy", y)
    np.save(split / "ext.npy", ext)
    coarse, fine = read_urbanfm(tmp_path, split="valid")
    assert coarse.shape == (5, 1, 2, 2) and fine.shape == (5, 1, 8, 8)
    assert fine.meta["factor"] == 4 and fine.ext.shape == (5, 7)
    assert torch.equal(coarsen(fine.data, 4), coarse.data)
    with pytest.raises(FileNotFoundError) as err:
        read_urbanfm(tmp_path, split="test")
    assert "X.npy" in str(err.value) and "test" in str(err.value)


# ----------------------------------------------------------------- npz
def test_npz_roundtrip_grid_with_nan(tmp_path):
    data = np.arange(2 * 1 * 2 * 3, dtype=np.float32).reshape(2, 1, 2, 3)
    data[1, 0, 1, 2] = np.nan
    np.savez(tmp_path / "city.npz", data=data, start="2014-04-01T00:00", freq="60min",
             lat=np.ones((2, 3)), lon=np.zeros((2, 3)), ext=np.ones((2, 4)))
    g = read_npz(tmp_path / "city.npz")
    assert isinstance(g, GridSeries) and g.shape == (2, 1, 2, 3)
    assert g.data[1, 0, 1, 2] == 0 and g.mask[1, 0, 1, 2] == 0 and g.mask.sum() == 11
    assert torch.isfinite(g.data).all()
    assert g.timestamps[1] == np.datetime64("2014-04-01T01:00")
    path = write_npz(tmp_path / "again.npz", g)
    h = read_npz(path)
    assert torch.equal(h.data, g.data) and torch.equal(h.mask, g.mask)
    assert (h.timestamps == g.timestamps).all() and torch.equal(h.ext, g.ext)
    assert torch.equal(h.lat, g.lat) and h.name == g.name


def test_npz_roundtrip_graph(tmp_path):
    data = np.random.default_rng(1).random((4, 3)).astype(np.float32)
    np.savez(tmp_path / "roads.npz", data=data, lat=[1.0, 2.0, 3.0], lon=[4.0, 5.0, 6.0],
             adj=np.eye(3), node_ids=np.array(["a", "b", "c"]),
             timestamps=np.array(["2020-01-01T00:00", "2020-01-01T00:05",
                                  "2020-01-01T00:10", "2020-01-01T00:15"]))
    s = read_npz(tmp_path / "roads.npz")
    assert isinstance(s, GraphSeries) and s.shape == (4, 3, 1)
    assert s.node_ids == ["a", "b", "c"]
    assert s.timestamps[3] == np.datetime64("2020-01-01T00:15")
    t = read_npz(write_npz(tmp_path / "out.npz", s))
    assert torch.equal(t.data, s.data) and torch.equal(t.adj, s.adj)
    assert t.node_ids == s.node_ids and (t.timestamps == s.timestamps).all()


def test_npz_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        read_npz(tmp_path / "nothere.npz")
    assert "nothere.npz" in str(err.value) and str(tmp_path) in str(err.value)
    np.savez(tmp_path / "bad.npz", values=np.zeros(3))
    with pytest.raises(ValueError, match="must contain a 'data' array"):
        read_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "bad2.npz", data=np.zeros(3))
    with pytest.raises(ValueError, match=r"'data' must have shape \(T, C, H, W\)"):
        read_npz(tmp_path / "bad2.npz")
    np.savez(tmp_path / "bad3.npz", data=np.zeros((2, 1, 2, 2)), lat=np.zeros(4),
             lon=np.zeros(4))
    with pytest.raises(ValueError, match=r"'lat' must have shape \(H, W\)"):
        read_npz(tmp_path / "bad3.npz")


def test_npz_that_is_not_an_archive_of_plain_arrays_is_named(tmp_path):
    """numpy's own message for a text file blamed 'pickled (object) data'."""
    (tmp_path / "text.npz").write_text("node,value\n")
    with pytest.raises(ValueError, match=r"'.*text.npz' is not a .npz archive"):
        read_npz(tmp_path / "text.npz")
    np.save(tmp_path / "one.npy", np.zeros((4, 3)))
    (tmp_path / "one.npy").rename(tmp_path / "one.npz")
    with pytest.raises(ValueError, match="holds a single .npy array"):
        read_npz(tmp_path / "one.npz")
    np.savez(tmp_path / "obj.npz", data=np.zeros((4, 3)), name=np.array([{}], dtype=object))
    with pytest.raises(ValueError, match="cannot be read without pickle"):
        read_npz(tmp_path / "obj.npz")


def test_npz_warns_about_keys_it_does_not_read(tmp_path):
    stamps = np.datetime64("2024-01-01T00:00") + np.arange(4) * np.timedelta64(60, "m")
    np.savez(tmp_path / "typo.npz", data=np.zeros((4, 3)), timestamp=stamps)
    with pytest.warns(UserWarning, match=r"ignoring key\(s\) \['timestamp'\]"):
        g = read_npz(tmp_path / "typo.npz")
    assert g.timestamps is None
    np.savez(tmp_path / "ok.npz", data=np.zeros((4, 3)), timestamps=stamps)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_npz(tmp_path / "ok.npz").timestamps is not None


def test_npz_warns_when_integers_lose_digits_in_float32(tmp_path):
    np.savez(tmp_path / "big.npz", data=np.array([[1, 2], [2 ** 24 + 1, 3]], dtype=np.int64))
    with pytest.warns(UserWarning, match=r"1 integer value\(s\) above 2\*\*24 .*16777217"):
        g = read_npz(tmp_path / "big.npz")
    assert float(g.data[1, 0]) == 2 ** 24
    np.savez(tmp_path / "fine.npz", data=np.array([[1, 2], [2 ** 24, 3]], dtype=np.int64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(read_npz(tmp_path / "fine.npz").data[1, 0]) == 2 ** 24


def test_parse_freq():
    assert parse_freq("5min") == np.timedelta64(5, "m")
    assert parse_freq("30T") == np.timedelta64(30, "m")
    assert parse_freq("1h") == np.timedelta64(60, "m")
    assert parse_freq("1d") == np.timedelta64(1440, "m")
    assert parse_freq(15) == np.timedelta64(15, "m")
    with pytest.raises(ValueError, match="'freq'"):
        parse_freq("5 fortnights")


def test_deepst_malformed_files_are_named(tmp_path):
    with h5py.File(tmp_path / "a_T60.h5", "w") as f:
        f.create_group("data")
        f["date"] = np.array([b"2015010101"])
    with pytest.raises(ValueError, match="'a_T60.h5' entry 'data' must be a dataset"):
        read_deepst_h5(tmp_path)
    (tmp_path / "a_T60.h5").unlink()
    with h5py.File(tmp_path / "b_T60.h5", "w") as f:
        f["data"] = np.zeros((0, 2, 4, 2))
        f["date"] = np.array([], dtype="S10")
    with pytest.raises(ValueError, match=r"with T >= 1 \(got \(0, 2, 4, 2\)\)"):
        read_deepst_h5(tmp_path)
    (tmp_path / "b_T60.h5").unlink()
    with h5py.File(tmp_path / "c_T60.h5", "w") as f:
        f["data"] = np.zeros((2, 2, 4, 2))
        f["date"] = np.array([b"2015010101", b"2015130101"])
    with pytest.raises(ValueError, match="'c_T60.h5' 'date' entry '2015130101' is not a "
                                         "calendar day"):
        read_deepst_h5(tmp_path)
    (tmp_path / "c_T60.h5").unlink()
    _write_deepst(tmp_path / "d_T60.h5", T=3)
    with h5py.File(tmp_path / "d_T60.h5", "r+") as f:          # step 2 repeats step 1
        f["date"][2] = f["date"][1]
    with pytest.raises(ValueError, match="'timestamps' must be unique at minute resolution "
                                         ".*: 1 repeated, first 2015-01-01T01:00"):
        read_deepst_h5(tmp_path)


def test_dcrnn_refuses_repeated_ids_and_short_location_rows(tmp_path):
    _write_dcrnn(tmp_path)
    ids = ["101", "101", "103"]                      # a repeated id would drop a column
    with open(tmp_path / "adj_mx.pkl", "wb") as f:
        pickle.dump((ids, {}, np.eye(3, dtype=np.float32)), f, protocol=2)
    with pytest.raises(ValueError, match=r"sensor_ids must be unique \(repeated: \['101'\]\)"):
        read_dcrnn(tmp_path)
    _write_dcrnn(tmp_path)
    (tmp_path / "graph_sensor_locations.csv").write_text(
        "index,sensor_id,latitude,longitude\n0,103,34.3,-118.3\n\n1,101\n2,102,34.2,-118.2\n")
    with pytest.raises(ValueError, match=r"line 4 must hold a sensor id, a latitude and a "
                                         r"longitude \(got \['1', '101'\]\)"):
        read_dcrnn(tmp_path)


def test_npz_refuses_values_it_would_lose(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, data=np.array([[1.0, 1e300], [2.0, 3.0]]))       # beyond float32
    with pytest.raises(ValueError, match="1 finite values beyond the float32 range"):
        read_npz(path)
    np.savez(path, data=np.ones((3, 2), dtype=np.complex64))
    with pytest.raises(ValueError, match="'data' must hold real numbers"):
        read_npz(path)
    np.savez(path, data=np.array(1.0), start="2020-01-01", freq="1h")
    with pytest.raises(ValueError, match=r"'data' must have shape .* with T >= 1"):
        read_npz(path)
    np.savez(path, data=np.array([[1.0, np.inf], [2.0, 3.0]]))     # inf: missing, as documented
    assert read_npz(path).mask.sum() == 3
