"""Masked diffusion losses: what a missing entry (mask 0) holds, NaN included, never
reaches the model's input or the loss."""
import pytest
import torch

from torch_stgen.data import MinMaxScaler, StandardScaler
from torch_stgen.diffusion import (DDPMScheduler, MetaPatternDiffusion, diffusion_loss,
                                   edm_loss)


def _batches(garbage):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 5, generator=g)
    mask = torch.ones_like(x)
    mask[0, 1, 2:] = 0
    mask[2, :, 0] = 0
    y = torch.where(mask > 0, x, torch.full_like(x, garbage))
    return x, y, mask


class _Recorder:
    """A model that records its input and returns a fixed function of it."""

    def __init__(self):
        self.inputs = []

    def __call__(self, x, t, **cond):
        self.inputs.append(x.clone())
        return 0.5 * x


def _run(loss_fn, x, mask):
    rec = _Recorder()
    loss = loss_fn(rec, x, mask, torch.Generator().manual_seed(7))
    return loss, rec.inputs[0]


LOSSES = {
    "ddpm": lambda m, x, k, g: diffusion_loss(m, x, DDPMScheduler(50), generator=g, mask=k),
    "edm": lambda m, x, k, g: edm_loss(m, x, mask=k, generator=g, sigma_data=0.5),
    "meta": lambda m, x, k, g: MetaPatternDiffusion(DDPMScheduler(50), aux_weight=1.0).loss(
        m, x, f=torch.full_like(x, 0.3), mask=k, generator=g),
    "meta-edm": lambda m, x, k, g: MetaPatternDiffusion(DDPMScheduler(50), aux_weight=1.0).edm_loss(
        m, x, f=torch.full_like(x, 0.3), mask=k, generator=g, sigma_data=0.5),
}


@pytest.mark.parametrize("kind", sorted(LOSSES))
@pytest.mark.parametrize("garbage", [float("nan"), 1e4])
def test_missing_entries_never_reach_the_model(kind, garbage):
    x, y, mask = _batches(garbage)
    ref_loss, ref_in = _run(LOSSES[kind], torch.where(mask > 0, x, torch.zeros_like(x)),
                            mask)
    loss, seen = _run(LOSSES[kind], y, mask)
    assert torch.isfinite(loss) and torch.isfinite(seen).all()
    torch.testing.assert_close(seen, ref_in, rtol=0, atol=0)
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=0)
    # observed entries still matter
    other, _ = _run(LOSSES[kind], torch.where(mask > 0, x + 1, x), mask)
    assert not torch.allclose(other, loss)


def test_a_bad_mask_shape_is_named():
    with pytest.raises(ValueError, match="'mask' must broadcast to"):
        LOSSES["edm"](_Recorder(), torch.zeros(2, 3), torch.ones(4, 1),
                      torch.Generator().manual_seed(0))


@pytest.mark.parametrize("scaler", [StandardScaler, MinMaxScaler])
def test_scalers_return_zero_at_missing_entries_even_for_nan(scaler):
    x = torch.tensor([[1.0, 4.0], [float("nan"), 6.0], [3.0, 8.0]])
    mask = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    s = scaler().fit(x, mask, channel_dim=-1)
    z = s.transform(x, mask)
    assert torch.isfinite(z).all() and z[1, 0] == 0
    assert torch.isfinite(s.fit_transform(x, mask, channel_dim=-1)).all()


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("bad", [float("nan"), -1.0, 2.0, 0.5])
def test_a_mask_holds_only_zeros_and_ones(name, bad):
    """A NaN mask gave a NaN loss and a -1 mask a negative one: both are refused."""
    x, _, mask = _batches(0.0)
    mask[1, 0, 3] = bad
    with pytest.raises(ValueError, match=r"'mask' must contain only 0 and 1"):
        _run(LOSSES[name], x, mask)
    loss, _ = _run(LOSSES[name], x, mask.bool() | True)      # a boolean mask is fine
    assert torch.isfinite(loss)


def test_diffusion_loss_refuses_what_it_would_bend():
    model = lambda x, t: x       # noqa: E731
    sch = DDPMScheduler(10)
    with pytest.raises(ValueError, match="'x0' must be a floating tensor"):
        diffusion_loss(model, torch.ones(2, 3, dtype=torch.long), sch)
    with pytest.raises(ValueError, match="'timesteps' must be an integer tensor"):
        diffusion_loss(model, torch.ones(2, 3), sch, timesteps=torch.tensor([1.7, 2.2]))
    with pytest.raises(ValueError, match=r"'x0' is an empty batch \(B = 0\)"):
        diffusion_loss(model, torch.ones(0, 3), sch)
    meta = MetaPatternDiffusion(sch)
    f = torch.zeros(3)
    with pytest.raises(ValueError, match="'t' must be an integer tensor"):
        meta.loss(model, torch.ones(2, 3), f=f, t=torch.tensor([1.7, 2.2]))
    with pytest.raises(ValueError, match="'x0' must be a floating tensor"):
        meta.loss(model, torch.ones(2, 3, dtype=torch.long), f=f)
