"""torch_stgen.viz: what the figures show (checked on the artists, not on pixels)."""
import pytest
import torch

pytest.importorskip("matplotlib", reason="torch_stgen.viz needs the 'viz' extra (matplotlib)")

from torch_stgen.viz import plot_profiles, plot_reconstruction, save  # noqa: E402


def _maps(T=5, C=2, H=4, W=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, C, H, W, generator=g) * 10


def test_plot_reconstruction_panels_scales_and_errors(tmp_path):
    truth = _maps()
    preds = {"a": truth + 1.0, "b": truth * 0.5}
    coarse = truth.reshape(5, 2, 2, 2, 3, 2).sum((3, 5))              # [T, C, 2, 3]
    mask = torch.ones(5, 1, 2, 3)
    mask[:, :, 0, 1] = 0
    fig = plot_reconstruction(truth, preds, coarse=coarse, mask=mask, channel=1)
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    top = [ax.get_title() for ax in axes[:4]]
    assert top == ["observed coarse\n(17 % missing)", "fine truth", "a", "b"]
    step = int(truth[:, 1].flatten(1).sum(1).argmax())                 # the busiest step
    assert fig._suptitle.get_text() == f"step {step}, channel 1"
    # the predictions share the truth's colour scale
    clim = axes[1].images[0].get_clim()
    assert clim == (float(truth[step, 1].min()), float(truth[step, 1].max()))
    assert axes[2].images[0].get_clim() == clim
    # the missing coarse cell is blank (NaN), the observed ones carry the coarse values
    shown = axes[0].images[0].get_array()
    assert bool(shown.mask[0, 1]) and float(shown[1, 2]) == pytest.approx(
        float(coarse[step, 1, 1, 2]))
    # error panels: |pred - truth|, MAE at the step and over all steps in the title
    err_a = axes[6]
    assert err_a.get_title() == "|error|: MAE 1\n(all steps 1)"
    mae_b = float((preds["b"] - truth).abs()[step].mean())
    assert f"MAE {mae_b:.3g}" in axes[7].get_title()
    path = save(fig, tmp_path / "sub" / "rec.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_reconstruction_errors():
    truth = _maps()
    with pytest.raises(ValueError, match="'truth' must be a tensor with 4 dimensions"):
        plot_reconstruction(truth[0], {"a": truth[0]})
    with pytest.raises(ValueError, match=r"predictions\['a'\] must have the shape"):
        plot_reconstruction(truth, {"a": truth[:, :1]})
    with pytest.raises(ValueError, match="at least one method"):
        plot_reconstruction(truth, {})
    with pytest.raises(ValueError, match="'step' must lie in"):
        plot_reconstruction(truth, {"a": truth}, step=9)
    with pytest.raises(ValueError, match="'channel' must lie in"):
        plot_reconstruction(truth, {"a": truth}, channel=2)


def test_plot_profiles_means_bands_and_histograms():
    g = torch.Generator().manual_seed(1)
    real = torch.rand(6, 5, 24, generator=g) + torch.arange(5.0)[None, :, None]
    mask = torch.ones_like(real)
    mask[0, 2] = 0                                                     # a missing day
    real_with_junk = torch.where(mask > 0, real, torch.full_like(real, 1e6))
    gen = {"m1": real + 0.5, "m2": torch.rand(3, 5, 24, generator=g)}
    fig = plot_profiles(real_with_junk, gen, mask=mask, nodes=[2, 4], steps_per_hour=1.0,
                        node_names=[f"s{i}" for i in range(5)])
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["s2", "s4", "values, all nodes"]
    lines = axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["real", "m1", "m2"]
    # the real mean ignores the masked day (the 1e6 never reaches the plot)
    torch.testing.assert_close(torch.as_tensor(lines[0].get_ydata()).float(),
                               real[1:, 2].mean(0))
    torch.testing.assert_close(torch.as_tensor(lines[1].get_ydata()).float(),
                               (real[:, 2] + 0.5).mean(0))
    assert axes[0].get_xlabel() == "hour of day"
    assert axes[0].get_ylim() == axes[1].get_ylim()               # one scale for all nodes
    assert axes[1].get_ylim()[1] > float(real[:, 4].max())
    # histograms: one outline per series, densities integrate to 1
    patches = axes[2].patches
    assert len(patches) == 3
    assert max(axes[2].get_xlim()) < 1e3


def test_plot_profiles_errors():
    real = torch.rand(4, 3, 8)
    with pytest.raises(ValueError, match=r"generated\['x'\] must have shape \[S, n, L\]"):
        plot_profiles(real, {"x": torch.rand(2, 3, 7)})
    with pytest.raises(ValueError, match="'nodes' must lie in"):
        plot_profiles(real, {"x": real}, nodes=[3])
    with pytest.raises(ValueError, match="'quantiles'"):
        plot_profiles(real, {"x": real}, quantiles=(0.9, 0.1))
    with pytest.raises(ValueError, match="'mask' must have the shape"):
        plot_profiles(real, {"x": real}, mask=torch.ones(4, 3, 7))


def test_plot_paired_differences_points_means_and_errors():
    from torch_stgen.viz import plot_paired_differences
    values = {"full": [2.0, 2.1, 2.2], "no A": [2.1, 2.3, 2.2], "no B": [1.9, 2.1, 2.3]}
    fig = plot_paired_differences(values, reference="full")
    ax = fig.axes[0]
    pts = [c.get_offsets()[:, 1].tolist() for c in ax.collections
           if c.get_offsets().shape[0] == 3]                      # the per-seed points
    assert pts[0] == pytest.approx([0.1, 0.2, 0.0])
    assert pts[1] == pytest.approx([-0.1, 0.0, 0.1], abs=1e-12)
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["+0.100", "+0.000"]                          # the paired means
    assert [t.get_text() for t in ax.get_xticklabels()] == ["no A", "no B"]
    assert "n = 3" in ax.get_title()
    one = plot_paired_differences({"full": [1.0], "x": [1.5]}, reference="full")
    assert one.axes[0].texts[0].get_text() == "+0.500"
    with pytest.raises(ValueError, match="'reference' 'base'"):
        plot_paired_differences(values, reference="base")
    with pytest.raises(ValueError, match=r"values\['no A'\] must have one value per seed"):
        plot_paired_differences({"full": [1, 2], "no A": [1]}, reference="full")
    with pytest.raises(ValueError, match="besides the reference"):
        plot_paired_differences({"full": [1, 2]}, reference="full")


def test_ablation_figure_script(tmp_path, capsys):
    """benchmarks/ablation_figure.py: per-seed JSON files -> paired table and figure."""
    import importlib.util
    import json
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "ablation_figure.py"
    spec = importlib.util.spec_from_file_location("ablation_figure", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    files = {}
    runs = {"full": [(2.0, 2.2), (2.1, 2.1)], "abl": [(2.2, 2.2), (2.0, 2.0)]}
    for name, maes in runs.items():
        files[name] = []
        for seed, pair in enumerate(maes):
            f = tmp_path / f"{name}{seed}.json"
            f.write_text(json.dumps({"rows": [{"mae": m, "rmse": 2 * m} for m in pair]}))
            files[name].append(str(f))
    out = tmp_path / "abl.png"
    assert mod.main(["--group", "full=" + ",".join(files["full"]),
                     "--group", "abl=" + ",".join(files["abl"]), "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    text = capsys.readouterr().out
    # per-seed values are the means over each file's rows: full 2.1, 2.1; abl 2.2, 2.0
    assert "| abl | 2.200, 2.000 | 2.100 | +0.100, -0.100; mean +0.000 ± 0.141 |" in text
    with pytest.raises(SystemExit):
        mod.main(["--group", "full", "--out", str(out)])


def test_plot_reconstruction_missing_truth_is_not_scored():
    truth = _maps() + 100.0 * torch.arange(5.0)[:, None, None, None]   # step 4 the busiest
    truth[4, 0, 0, 0] = float("nan")              # a missing fine value at the busiest step
    truth[1, 0, 2, 2] = float("nan")              # and one at a quiet step (argmax took it)
    truth[0, 0, 1, 1] = float("inf")
    pred = torch.nan_to_num(truth, nan=0.0, posinf=0.0) + 1.0
    fig = plot_reconstruction(truth, {"a": pred})
    assert fig._suptitle.get_text() == "step 4, channel 0"   # busiest over finite values
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    finite = truth[4, 0][torch.isfinite(truth[4, 0])]
    assert axes[0].images[0].get_clim() == (float(finite.min()), float(finite.max()))
    assert axes[1].images[0].get_clim() == axes[0].images[0].get_clim()
    assert bool(axes[0].images[0].get_array().mask[0, 0])   # the missing cell is blank
    # the error is scored where the truth exists: exactly 1 everywhere else
    assert axes[3].get_title() == "|error|: MAE 1\n(all steps 1)"
    assert axes[3].images[0].get_clim() == (0.0, 1.0)
    at0 = plot_reconstruction(truth, {"a": pred}, step=0)
    axes0 = [ax for ax in at0.axes if ax.get_label() != "<colorbar>"]
    lo, hi = axes0[0].images[0].get_clim()
    t0 = truth[0, 0][torch.isfinite(truth[0, 0])]                   # the inf is left out
    assert (lo, hi) == (float(t0.min()), float(t0.max()))
    # a NaN prediction where the truth exists is the method's failure: it shows in the MAE
    bad = pred.clone()
    bad[4, 0, 2, 2] = float("nan")
    axes_b = [ax for ax in plot_reconstruction(truth, {"a": bad}).axes
              if ax.get_label() != "<colorbar>"]
    assert axes_b[3].get_title() == "|error|: MAE nan\n(all steps nan)"
    with pytest.raises(ValueError, match="'truth' has no finite value in channel 1"):
        truth[:, 1] = float("nan")
        plot_reconstruction(truth, {"a": pred}, channel=1)


def test_plot_reconstruction_checks_mask_and_predictions():
    truth = _maps()
    coarse = truth.reshape(5, 2, 2, 2, 3, 2).sum((3, 5))              # [T, C, 2, 3]
    shape = r"'mask' must have shape \[T, C or 1, I, J\] = \[5, 2 or 1, 2, 3\]"
    with pytest.raises(ValueError, match=shape + r" \(got \(1, 1, 2, 3\)\)"):
        plot_reconstruction(truth, {"a": truth}, coarse, torch.ones(1, 1, 2, 3), step=2)
    with pytest.raises(ValueError, match=shape + r" \(got \(5, 1, 3, 3\)\)"):
        plot_reconstruction(truth, {"a": truth}, coarse, torch.ones(5, 1, 3, 3))
    with pytest.raises(ValueError, match=shape):
        plot_reconstruction(truth, {"a": truth}, coarse, torch.ones(5, 3, 2, 3))
    with pytest.raises(ValueError, match="'mask' must contain only 0 and 1"):
        plot_reconstruction(truth, {"a": truth}, coarse, torch.full((5, 1, 2, 3), 0.5))
    with pytest.raises(ValueError, match="'mask' needs 'coarse'"):
        plot_reconstruction(truth, {"a": truth}, mask=torch.ones(5, 1, 2, 3))
    with pytest.raises(TypeError, match="'predictions' must be a mapping"):
        plot_reconstruction(truth, truth)
    fig = plot_reconstruction(truth, {"a": truth}, coarse, torch.ones(5, 2, 2, 3, dtype=torch.bool))
    assert fig.axes[0].get_title() == "observed coarse\n(0 % missing)"


def test_plot_profiles_named_errors():
    real = torch.rand(4, 3, 8)
    nan = torch.full_like(real, float("nan"))
    with pytest.raises(ValueError, match="'real' has no observed value"):
        plot_profiles(nan, {"x": nan})
    with pytest.raises(ValueError, match="'real' has no observed value"):
        plot_profiles(real, {"x": real}, mask=torch.zeros_like(real))
    with pytest.raises(ValueError, match=r"generated\['x'\] has no finite value"):
        plot_profiles(real, {"x": nan})
    with pytest.raises(ValueError, match=r"'node_names' must name the n=3 nodes \(got 1\)"):
        plot_profiles(real, {"x": real}, node_names=["a"])
    # constant values: the histogram gets a unit-wide range instead of zero-width bins
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plot_profiles(torch.zeros(4, 3, 8), {"x": torch.zeros(2, 3, 8)})
    assert fig.axes[-1].get_xlim()[0] < 0.0 < fig.axes[-1].get_xlim()[1]


def test_plot_paired_differences_named_errors():
    from torch_stgen.viz import plot_paired_differences
    with pytest.raises(ValueError, match=r"values\['ref'\] must hold at least one value"):
        plot_paired_differences({"ref": [], "a": []}, "ref")
    with pytest.raises(TypeError, match=r"values\['a'\] must be a sequence of numbers"):
        plot_paired_differences({"ref": [1.0], "a": ["2"]}, "ref")
