"""CI smoke test of the DiffRecon benchmark's --quick mode on a tiny synthetic city, and of
a user's own grid .npz running through the same code path."""
import json

import pytest
import torch

from torch_stgen.data import SyntheticCity, write_npz
from torch_stgen.experiments.diffrecon import (ALL_PATTERNS, build_parser, format_table,
                                               merge_rows, print_table, run)

TINY = ["--city-size", "8", "--city-days", "6", "--steps", "4", "--joint-steps", "2",
        "--joint-refresh", "2", "--baseline-steps", "3", "--samples", "2",
        "--sampling-steps", "2", "--batch-size", "8", "--history-c", "3", "--history-f",
        "6", "--model-channels", "8", "--d-model", "8", "--no-progress"]
KEYS = {"dataset", "method", "pattern", "ratio", "mae", "rmse", "seconds"}


def test_quick_synthetic_rows_json_and_table(tmp_path, capsys):
    out, png = tmp_path / "quick.json", tmp_path / "quick.png"
    args = build_parser().parse_args(["--quick", "--out", str(out), "--plot", str(png)]
                                     + TINY)
    rows = run(args)
    assert png.read_bytes()[:4] == b"\x89PNG"                 # the --plot figure
    assert args.patterns == "random:0.4"                      # --quick: one pattern
    assert [r["method"] for r in rows] == ["interp", "srcnn", "urbanfm", "diffrecon"]
    for r in rows:
        assert KEYS <= set(r)
        assert r["dataset"] == "synthetic" and r["pattern"] == "random:0.4"
        assert r["ratio"] == pytest.approx(0.375, abs=1e-9)   # round(0.4 * 16) = 6 of 16
        assert 0 < r["mae"] <= r["rmse"] < float("inf")
        assert r["clipped"] is True                           # flow counts are >= 0
    saved = json.loads(out.read_text())
    assert saved["rows"] == rows and saved["args"]["quick"] is True
    assert merge_rows([out]) == rows
    print_table(rows)
    text = capsys.readouterr().out
    assert "| diffrecon |" in text and "DiffRecon vs best baseline" in text


def test_user_npz_grid_runs_through_the_same_script(tmp_path):
    city = SyntheticCity(seed=1, height=4, width=4, days=5)
    path = tmp_path / "mycity.npz"
    write_npz(path, city.grid)
    args = build_parser().parse_args(["--dataset", str(path), "--patterns", "block",
                                      "--methods", "interp,diffrecon"] + TINY)
    rows = run(args)
    assert [(r["dataset"], r["method"], r["pattern"]) for r in rows] == [
        ("mycity", "interp", "block"), ("mycity", "diffrecon", "block")]
    assert rows[0]["ratio"] == pytest.approx(0.25)            # lower-right quarter of 2x2


def test_second_pass_options_reach_the_model(tmp_path):
    """--completion-mask / --inter-init / --val-condition / --joint-mix / --joint-mode / --joint-series reach DiffRecon, --mass-consistent
    proportional the reconstruction (the JSON records them)."""
    import torch_stgen.experiments.diffrecon as bench
    out = tmp_path / "opts.json"
    args = build_parser().parse_args(
        ["--patterns", "block", "--methods", "diffrecon", "--completion-mask",
         "--inter-init", "identity", "--early-stopping", "--val-condition", "completed", "--val-every", "1",
         "--joint-mix", "0.5", "--joint-mode", "end_to_end", "--joint-series", "1", "--joint-sampler", "ddpm",
         "--mass-consistent",
         "proportional", "--reduce", "median", "--out", str(out)] + TINY)
    models = []
    train = bench._train

    def spy(*a, **kw):
        predict = train(*a, **kw)
        models.append(predict.model)
        return predict

    bench._train = spy
    try:
        rows = run(args)
    finally:
        bench._train = train
    model = models[0]
    assert model.stage_f.completion_mask and bool(model.f_saw_completions)
    assert [s.denoiser.unet.inter_init for s in (model.stage_c, model.stage_f)] == \
        ["identity", "identity"]
    assert build_parser().parse_args([]).inter_init == "default"
    # --early-stopping: checks after every iteration (TINY trains 4 + 2)
    assert [c[0] for c in model.history_log["val_curve"]] == [1, 2, 3, 4, 5, 6]
    assert rows[0]["best_iter_f"] == model.history_log["best_iter_f"] in range(1, 7)
    assert not build_parser().parse_args([]).early_stopping
    assert model.history_log["val_condition"] == "completed"
    assert build_parser().parse_args([]).val_condition == "truth"
    assert model.history_log["joint_mix"] == 0.5
    assert model.history_log["joint_mode"] == "end_to_end"
    assert model.history_log["joint_series"] == 1
    assert model.history_log["joint_sampler"] == "ddpm"
    assert build_parser().parse_args([]).joint_series == 3
    saved = json.loads(out.read_text())["args"]
    assert saved["mass_consistent"] == "proportional" and saved["reduce"] == "median"
    assert 0 < rows[0]["mae"] < float("inf")
    assert build_parser().parse_args(["--mass-consistent"]).mass_consistent == "additive"
    assert build_parser().parse_args([]).mass_consistent is None


def test_super_resolution_fine_stage_ablation_keeps_the_full_diffusion_c():
    """diffrecon-sr-f: the paper's "Diffusion-F replaced by a super-resolution network".
    It trains the full model (same Diffusion-C weights as --methods diffrecon) and scores
    UrbanFM on Diffusion-C's completions."""
    import torch_stgen.experiments.diffrecon as bench
    from torch_stgen.models.baselines import UrbanFM
    args = build_parser().parse_args(["--patterns", "fixed:0.4", "--methods",
                                      "diffrecon,diffrecon-sr-f"] + TINY)
    predictors = []
    train = bench._train

    def spy(*a, **kw):
        predictors.append(train(*a, **kw))
        return predictors[-1]

    bench._train = spy
    try:
        rows = run(args)
    finally:
        bench._train = train
    assert [r["method"] for r in rows] == ["diffrecon", "diffrecon-sr-f"]
    assert all(0 < r["mae"] < float("inf") for r in rows) and rows[0]["mae"] != rows[1]["mae"]
    full, sr = (p.model for p in predictors)
    for k, v in full.stage_c.state_dict().items():
        torch.testing.assert_close(sr.stage_c.state_dict()[k], v, rtol=0, atol=0)
    assert isinstance(predictors[1].upsampler, UrbanFM)
    assert not hasattr(predictors[0], "upsampler") and "diffrecon-sr-f" in bench.ABLATIONS


def test_defaults_and_bad_arguments():
    args = build_parser().parse_args([])
    assert args.patterns is None and args.dataset == "synthetic"
    with pytest.raises(ValueError, match="--methods"):
        run(build_parser().parse_args(["--methods", "bicubic"] + TINY))
    with pytest.raises(ValueError, match="--dataset"):
        run(build_parser().parse_args(["--dataset", "taxibj"] + TINY))
    assert ALL_PATTERNS.count(",") == 8                       # the paper's nine settings


def test_format_table_gain_row():
    rows = [{"dataset": "d", "method": m, "pattern": p, "mae": v, "rmse": v}
            for m, p, v in (("interp", "a", 2.0), ("urbanfm", "a", 1.0),
                            ("diffrecon", "a", 0.8), ("interp", "b", 1.0),
                            ("urbanfm", "b", 2.0), ("diffrecon", "b", 1.1))]
    text = format_table(rows)
    assert "| diffrecon | 0.800 | 1.100 | 0.950 |" in text
    assert "| +20.0% | -10.0% | +5.0% |" in text
    assert "worse than the best baseline in 1 of 2 settings" in text


def test_stage_diagnosis_script(tmp_path, capsys):
    """benchmarks/diffrecon_stages.py: per variant, split and pattern (plus 'none', nothing
    missing) Diffusion-C's completion error on missing cells and the fine MAE."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "diffrecon_stages.py"
    spec = importlib.util.spec_from_file_location("diffrecon_stages", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "stages.json"
    assert mod.main(["--methods", "diffrecon,diffrecon-no-joint", "--patterns", "fixed:0.4",
                     "--window", "20", "--out", str(out)] + TINY) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["method"], r["split"], r["pattern"]) for r in rows[:4]] == [
        ("diffrecon", "train", "fixed:0.4"), ("diffrecon", "train", "none"),
        ("diffrecon", "val", "fixed:0.4"), ("diffrecon", "val", "none")]
    assert len(rows) == 8
    for r in rows:
        assert 0 < r["fine_mae"] < float("inf")
        if r["pattern"] == "none":
            assert r["coarse_missing_mae"] is None
        else:
            assert 0 < r["coarse_missing_mae"] < float("inf")
    assert "| diffrecon-no-joint | val |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        mod.main(["--methods", "srcnn"] + TINY)


def test_steps_per_day_and_covariate_standardisation_helpers():
    import numpy as np
    import torch
    from torch_stgen.experiments.diffrecon import standardise_ext, steps_per_day_of
    t0 = np.datetime64("2014-04-01T00:00")
    assert steps_per_day_of(t0 + np.arange(3) * np.timedelta64(60, "m")) == 24
    assert steps_per_day_of(t0 + np.arange(3) * np.timedelta64(5, "m")) == 288
    assert steps_per_day_of(t0 + np.arange(3) * np.timedelta64(7, "m")) == 24   # no fit
    assert steps_per_day_of(None) == 24 and steps_per_day_of([t0]) == 24
    ext = torch.tensor([[1.0, 5.0], [3.0, 5.0], [10.0, 5.0]])
    z = standardise_ext(ext, slice(0, 2))
    torch.testing.assert_close(z[:2, 0], torch.tensor([-1.0, 1.0]) / 2 ** 0.5)
    torch.testing.assert_close(z[:, 1], torch.zeros(3))     # constant column: unit scale
    assert standardise_ext(None, slice(0, 2)) is None


def test_early_stopping_reaches_the_baselines():
    args = build_parser().parse_args(["--patterns", "block", "--methods", "interp,srcnn",
                                      "--early-stopping", "--val-every", "1"] + TINY)
    rows = run(args)
    assert "best_step" not in rows[0]                      # interp has nothing to stop
    assert rows[1]["best_step"] in (1, 2, 3)               # --baseline-steps 3


def test_checkpoint_dir_makes_a_rerun_load_the_finished_training(tmp_path, monkeypatch):
    import torch_stgen.models.diffrecon as dr
    common = ["--patterns", "block", "--methods", "diffrecon", "--checkpoint-dir",
              str(tmp_path / "ckpt"), "--checkpoint-every", "2"] + TINY
    first = run(build_parser().parse_args(common))
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["synthetic_diffrecon_seed0.pt"]
    # the re-run trains nothing (any training loss would raise) and scores the same
    monkeypatch.setattr(dr._Stage, "loss", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("trained again")))
    second = run(build_parser().parse_args(common))
    assert [r["mae"] for r in second] == [r["mae"] for r in first]


def test_checkpoint_dir_covers_the_learned_baselines(tmp_path, monkeypatch):
    import torch.nn.functional as F
    import torch_stgen.models.baselines as bl
    common = ["--patterns", "block", "--methods", "srcnn,urbanfm,diffrecon-sr-f",
              "--checkpoint-dir", str(tmp_path / "ckpt")] + TINY
    first = run(build_parser().parse_args(common))
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["synthetic_diffrecon-sr-f_seed0.pt",
                     "synthetic_diffrecon-sr-f_seed0_urbanfm.pt",
                     "synthetic_srcnn_seed0.pt", "synthetic_urbanfm_seed0.pt"]
    # the re-run trains no baseline (their training loss would raise) and scores the same
    monkeypatch.setattr(bl, "F", type("NoTraining", (), {
        "mse_loss": staticmethod(lambda *a, **k: (_ for _ in ()).throw(
            AssertionError("trained again"))), "__getattr__": lambda s, n: getattr(F, n)})())
    second = run(build_parser().parse_args(common))
    assert [r["mae"] for r in second] == [r["mae"] for r in first]
    # the training time is the recorded one, not the re-run's few milliseconds
    assert all(q["train_seconds"] >= 0.5 * r["train_seconds"] > 0
               for r, q in zip(first, second))
