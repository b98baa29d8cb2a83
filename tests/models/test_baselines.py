import pytest
import torch

from torch_stgen.data import coarsen
from torch_stgen.models.baselines import (DistributionalUpsampler, InterpolationUpsampling,
                                          nearest_fill)


def test_nearest_fill_takes_nearest_and_averages_ties():
    x = torch.tensor([[1.0, 0.0, 3.0],
                      [0.0, 0.0, 0.0],
                      [7.0, 0.0, 9.0]])
    mask = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 0, 1]])
    out = nearest_fill(x, mask)
    assert out[0, 0] == 1 and out[2, 2] == 9            # observed cells unchanged
    assert out[0, 1] == pytest.approx(2.0)               # tie between 1 and 3
    assert out[1, 0] == pytest.approx(4.0)               # tie between 1 and 7
    assert out[1, 1] == pytest.approx(5.0)               # four corners at distance sqrt(2)


def test_nearest_fill_batched_matches_per_map():
    x = torch.rand(3, 2, 4, 5)
    mask = (torch.rand(3, 2, 4, 5) > 0.5).float()
    mask[..., 0, 0] = 1
    out = nearest_fill(x, mask, chunk=2)
    for b in range(3):
        for c in range(2):
            assert torch.allclose(out[b, c], nearest_fill(x[b, c], mask[b, c]))
    assert torch.equal(out[mask.bool()], x[mask.bool()])


def test_nearest_fill_rejects_vectors():
    with pytest.raises(ValueError, match="'x' must have shape"):
        nearest_fill(torch.ones(4), torch.ones(4))


def test_distributional_upsampler_shares_and_mass():
    torch.manual_seed(0)
    fine = torch.rand(20, 2, 8, 6) * 5
    fine[:, 1, :2, :2] = 0                               # a block with no training mass
    up = DistributionalUpsampler(2).fit(fine)
    assert torch.allclose(coarsen(up.shares, 2), torch.ones(2, 4, 3, dtype=torch.float64))
    assert torch.allclose(up.shares[1, :2, :2], torch.full((2, 2), 0.25, dtype=torch.float64))
    coarse = torch.rand(5, 2, 4, 3)
    pred = up.predict(coarse)
    assert pred.shape == (5, 2, 8, 6)
    assert torch.allclose(coarsen(pred, 2), coarse, atol=1e-6)  # mass preserved exactly
    with pytest.raises(ValueError, match="'coarse' must have shape"):
        up.predict(torch.rand(5, 2, 3, 3))
    with pytest.raises(RuntimeError, match="not fitted"):
        DistributionalUpsampler(2).predict(coarse)


def test_interpolation_upsampling_exact_when_shares_are_constant():
    # fine maps whose within-block shares never change are reconstructed exactly
    # from a complete coarse map
    shares = torch.rand(1, 1, 4, 4)
    base = torch.rand(30, 1, 2, 2) + 0.5
    fine = base.repeat_interleave(2, -2).repeat_interleave(2, -1) * shares
    fine = fine / coarsen(shares, 2).repeat_interleave(2, -2).repeat_interleave(2, -1)
    model = InterpolationUpsampling(2).fit(fine)
    coarse = coarsen(fine, 2)
    assert torch.allclose(model.predict(coarse, torch.ones_like(coarse)), fine, atol=1e-5)


def test_bikenyc_baseline_a_matches_independent_numbers(bikenyc_root):
    """Issue #5 quotes an independent numpy computation of baseline (a) on BikeNYC
    (factor 2, test = last quarter, both channels): block 2.99, random 40% 4.22."""
    from torch_stgen.data import SparsePattern, chronological_split, read_deepst_h5
    from torch_stgen.metrics import mae

    fine = read_deepst_h5(bikenyc_root).data
    train, _, test = chronological_split(fine.shape[0])
    coarse = coarsen(fine, 2)[test]
    model = InterpolationUpsampling(2).fit(fine[train])
    T, C, h, w = coarse.shape
    results = {}
    for spec in ("block", "random:0.4"):
        mask = SparsePattern.parse(spec, seed=0)(T, h, w).unsqueeze(1).expand(T, C, h, w)
        results[spec] = float(mae(model.predict(coarse * mask, mask), fine[test]))
    assert results["block"] == pytest.approx(2.99, abs=0.01)
    assert results["random:0.4"] == pytest.approx(4.22, abs=0.1)


def test_fit_upsampler_stops_on_a_non_finite_loss():
    from _grids import daily_grid_series
    from torch_stgen.models.baselines import SRCNN, fit_upsampler
    fine, _ = daily_grid_series()
    model = SRCNN(2, (4, 2), 2)
    real, calls = model.forward, []

    def nan_on_third(*args):
        calls.append(1)
        out = real(*args)
        return out * float("nan") if len(calls) == 3 else out
    model.forward = nan_on_third
    with pytest.raises(FloatingPointError, match=r"srcnn fit diverged at iteration 2 .*"
                                                 r"lower 'lr' \(peak 0.001"):
        fit_upsampler(model, fine, steps=10, batch_size=4)
    assert len(calls) == 3


def test_upsamplers_refuse_non_finite_inputs_and_take_an_empty_batch():
    from _grids import daily_grid_series
    from torch_stgen.models.baselines import SRCNN, UrbanFM, fit_upsampler
    fine, _ = daily_grid_series()
    T = fine.shape[0]
    bad = fine.clone()
    bad[3, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="'fine' holds NaN or inf"):   # was a silent 0.25 share
        DistributionalUpsampler(2).fit(bad)
    model = UrbanFM(2, (4, 2), 2, cond_features=3)
    cond = torch.randn(T, 3)
    cond[5, 1] = float("nan")
    # a NaN external feature was reported as a divergence ("lower 'lr'")
    with pytest.raises(ValueError, match="'cond' holds NaN or inf"):
        fit_upsampler(model, fine, cond=cond, steps=2, batch_size=4)
    with pytest.raises(ValueError, match=r"'cond' must have shape \[T=.*, 3\]"):
        fit_upsampler(model, fine, cond=cond[:, :2], steps=2, batch_size=4)
    srcnn = SRCNN(2, (4, 2), 2)
    fit_upsampler(srcnn, fine, steps=2, batch_size=4)
    empty = srcnn.predict(torch.zeros(0, 2, 4, 2), torch.ones(0, 2, 4, 2))
    assert empty.shape == (0, 2, 8, 4)
