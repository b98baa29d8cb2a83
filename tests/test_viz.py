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
