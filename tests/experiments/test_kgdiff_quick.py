"""CI smoke test of the KGDiff benchmark (torch_stgen.experiments.kgdiff) in --quick mode on
a tiny synthetic city, a user's own graph .npz through the same code path, and the
benchmark's metric / merge helpers."""
import json

import numpy as np
import pytest
import torch

from torch_stgen.data import GraphSeries, write_npz
from torch_stgen.experiments.kgdiff import (METHODS, build_parser, delay_settings, evaluate,
                                           load_data, print_table, run)

KEYS = {"dataset", "method", "mae", "rmse", "mmd", "jsd", "seconds"}


def tiny(tmp_path):
    return ["--sensors", "16", "--city-days", "7", "--city-size", "8", "--steps", "2",
            "--batch-size", "4", "--sampling-steps", "2", "--tucker-epochs", "1",
            "--tucker-dim", "8", "--dim", "8", "--model-channels", "8", "--no-progress",
            "--tucker-cache", str(tmp_path / "tucker")]


def test_quick_synthetic_rows_json_and_table(tmp_path, capsys):
    out, png = tmp_path / "rows.json", tmp_path / "profiles.png"
    args = build_parser().parse_args(["--quick", "--methods", "main", "--out", str(out),
                                      "--plot", str(png)] + tiny(tmp_path))
    rows = run(args)
    assert png.read_bytes()[:4] == b"\x89PNG"                 # the --plot figure
    assert [r["method"] for r in rows] == ["global-mean", "knn", "uncond", "tucker-con",
                                           "kgdiff"]
    for r in rows:
        assert KEYS <= set(r) and r["dataset"] == "synthetic"
        assert all(np.isfinite(r[k]) and r[k] >= 0 for k in ("mae", "rmse", "mmd", "jsd"))
        assert r["rmse"] >= r["mae"]
    assert json.loads(out.read_text()) == rows
    # the global-mean row, recomputed independently from the data
    data = load_data(args)
    tr, te = data["train"], data["test"]
    prof = data["values"] * data["mask"]
    prof = prof.sum(0) / data["mask"].sum(0).clamp(min=1)          # [N, L]
    err = prof[te] - prof[tr].mean(0)
    assert rows[0]["mae"] == pytest.approx(float(err.abs().mean()), rel=1e-5)
    assert rows[0]["rmse"] == pytest.approx(float(err.pow(2).mean().sqrt()), rel=1e-5)
    # test nodes are the southern band
    assert float(data["lat"][te].max()) <= float(data["lat"][tr].min())
    assert set(data["val"].tolist()) < set(tr.tolist())
    text = print_table(rows)
    assert "| synthetic | KGDiff |" in text and "avg rank" in capsys.readouterr().out


def test_user_npz_graph_with_and_without_kg_file(tmp_path):
    rng = np.random.default_rng(0)
    N, days, L = 12, 7, 24
    lat = 40.0 + 0.01 * np.arange(N)
    lon = -74.0 + 0.002 * rng.random(N)
    base = np.sin(np.linspace(0, 2 * np.pi, L))[None, :] * (1 + np.arange(N)[:, None] % 3)
    data = np.concatenate([base.T + 0.1 * rng.standard_normal((L, N)) for _ in range(days)])
    series = GraphSeries(data=torch.tensor(data, dtype=torch.float32), lat=lat, lon=lon,
                         timestamps=np.datetime64("2024-01-01T00:00")
                         + np.arange(days * L) * np.timedelta64(60, "m"),
                         node_ids=[f"n{i}" for i in range(N)])
    path = write_npz(tmp_path / "mine.npz", series)
    common = ["--dataset", str(path), "--methods", "global-mean,knn,kgdiff-no-moe"] \
        + tiny(tmp_path)
    rows = run(build_parser().parse_args(common))
    assert [r["dataset"] for r in rows] == ["mine"] * 3
    # a user's KG triples file: node entities named by node_ids
    kg_file = tmp_path / "kg.txt"
    kg_file.write_text("".join(f"n{i}\tkind\tk{i % 3}\n" for i in range(N)))
    args = build_parser().parse_args(common + ["--kg", str(kg_file)])
    data = load_data(args)
    assert data["kg"].num_relations == 1 and data["length"] == 24
    assert data["kg"].entities[int(data["kg"].node2entity[4])] == "n4"
    assert len(run(args)) == 3
    # the same file with a column-name line and a comment
    kg_head = tmp_path / "kg_head.txt"
    kg_head.write_text("# my KG\nhead\trelation\ttail\n" + kg_file.read_text())
    again = load_data(build_parser().parse_args(
        common + ["--kg", str(kg_head), "--kg-header", "--kg-comment", "#"]))
    assert again["kg"] == data["kg"]


def test_evaluate_metrics():
    torch.manual_seed(0)
    real = torch.randn(6, 3, 10) + 5
    same = evaluate(real, real)
    assert same["mae"] == 0 and same["rmse"] == 0 and same["jsd"] == 0
    assert same["mmd"] == pytest.approx(0, abs=1e-12)
    shifted = evaluate(real + 2.0, real)
    assert shifted["mae"] == pytest.approx(2.0) and shifted["rmse"] == pytest.approx(2.0)
    assert shifted["mmd"] > 0.1 and shifted["jsd"] > 0.1
    mask = torch.ones_like(real)
    mask[0, 0, 0] = 0
    garbage = real.clone()
    garbage[0, 0, 0] = 1e6                            # unobserved: ignored by every metric
    assert evaluate(real, garbage, mask)["jsd"] == pytest.approx(
        evaluate(real, real, mask)["jsd"])
    with pytest.raises(ValueError, match="must agree"):
        evaluate(real[:, :2], real)


def test_delay_settings_cover_the_day():
    assert delay_settings(48) == (3, 16) and delay_settings(288) == (9, 32)
    for L in (24, 96, 144, 1440):
        U, V = delay_settings(L)
        assert 1 <= U <= V and (V - 1) * U + V >= L


def test_methods_and_merge(tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        run(build_parser().parse_args(["--methods", "magic"] + tiny(tmp_path)))
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    row = {"dataset": "d", "method": "kgdiff", "mae": 1.0, "rmse": 1.0, "mmd": 0.1,
           "jsd": 0.1, "seconds": 1.0, "seed": 0}
    a.write_text(json.dumps([row, dict(row, method="knn")]))
    b.write_text(json.dumps([dict(row, mae=0.5)]))
    merged = run(build_parser().parse_args(["--merge", str(a), str(b), "--out",
                                            str(tmp_path / "m.json")]))
    assert {r["method"]: r["mae"] for r in merged} == {"kgdiff": 0.5, "knn": 1.0}
    assert set(METHODS) >= {"uncond", "tucker-con", "kgdiff-paper", "kgdiff-no-meta"}


def test_validation_mode_never_uses_test_nodes(tmp_path):
    base = build_parser().parse_args(tiny(tmp_path))
    val = build_parser().parse_args(tiny(tmp_path) + ["--eval-nodes", "val", "--tag", "+x"])
    d_test, d_val = load_data(base), load_data(val)
    test_nodes = set(d_test["test"].tolist())
    used = set(d_val["train"].tolist()) | set(d_val["test"].tolist())
    assert not used & test_nodes
    assert set(d_val["test"].tolist()) == set(d_test["val"].tolist())
    rows = run(build_parser().parse_args(tiny(tmp_path) + ["--eval-nodes", "val", "--tag",
                                                           "+x", "--methods", "global-mean"]))
    assert rows[0]["dataset"] == "synthetic[val]" and rows[0]["method"] == "global-mean+x"


def test_sigma_data_pattern_shrink_and_message_norm_flags_reach_the_model(tmp_path):
    from torch_stgen.experiments.kgdiff import build_kgdiff
    args = build_parser().parse_args(["--quick"] + tiny(tmp_path))
    data = load_data(args)
    entity = torch.zeros(data["kg"].num_entities, 8)
    auto = build_kgdiff(data, entity, args)
    assert args.sigma_data is None and auto.auto_sigma_data
    assert auto.pattern_shrink == 0.5 and auto.message_norm       # the model's defaults
    assert auto.moe_input_scale
    assert all(layer.message_norm for layer in auto.encoder.layers)
    args = build_parser().parse_args(["--quick", "--sigma-data", "0.7", "--pattern-shrink",
                                      "1", "--message-norm", "0", "--moe-input-scale", "0"]
                                     + tiny(tmp_path))
    paper = build_kgdiff(data, entity, args)
    assert not paper.auto_sigma_data and paper.precond.sigma_data == pytest.approx(0.7)
    assert paper.pattern_shrink == 1.0 and not paper.message_norm
    assert not paper.moe_input_scale
    assert not any(layer.message_norm for layer in paper.encoder.layers)
    args = build_parser().parse_args(["--quick", "--sigma-data", "target"] + tiny(tmp_path))
    assert build_kgdiff(data, entity, args).sigma_data_rule == "target"
    args = build_parser().parse_args(["--quick", "--delay-layout", "imagentime",
                                      "--delay-inverse", "last"] + tiny(tmp_path))
    delay = build_kgdiff(data, entity, args).delay
    assert (delay.layout, delay.inverse_mode) == ("imagentime", "last")
    assert (auto.delay.layout, auto.delay.inverse_mode) == ("sliding", "mean")


def test_checkpoint_dir_makes_a_rerun_load_the_finished_training(tmp_path, monkeypatch):
    import torch_stgen.models.kgdiff as kd
    common = ["--quick", "--methods", "kgdiff", "--checkpoint-dir", str(tmp_path / "ckpt")] \
        + tiny(tmp_path)
    first = run(build_parser().parse_args(common))
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["synthetic_kgdiff_seed0.pt"]
    monkeypatch.setattr(kd.KGDiff, "loss", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("trained again")))
    second = run(build_parser().parse_args(common))
    assert [r["mae"] for r in second] == [r["mae"] for r in first]
