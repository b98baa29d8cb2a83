import numpy as np
import pytest
import torch

from torch_stgen.data.scalers import MinMaxScaler, StandardScaler


def _data():
    x = torch.randn(20, 5, 3) * torch.tensor([1.0, 10.0, 100.0]) + torch.tensor([0.0, 5.0, -50.0])
    mask = (torch.rand(20, 5, 3) > 0.3).float()
    x_missing = x * mask                  # missing stored as 0
    return x, x_missing, mask


def test_standard_scaler_uses_observed_only():
    _, x, mask = _data()
    s = StandardScaler().fit(x, mask, channel_dim=-1)
    assert s.mean.shape == (3,) and s.std.shape == (3,)
    xn, mn = x.numpy().astype(np.float64), mask.numpy().astype(bool)
    for c in range(3):
        vals = xn[..., c][mn[..., c]]
        assert s.mean[c].item() == pytest.approx(vals.mean(), rel=1e-9)
        assert s.std[c].item() == pytest.approx(vals.std(), rel=1e-9)
    # zeros of missing entries would pull the mean of channel 2 (about -50) towards 0
    assert s.mean[2].item() < -40
    z = s.transform(x, mask)
    assert (z[mask == 0] == 0).all()
    zo = z[..., 2][mask[..., 2].bool()]
    assert zo.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert zo.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)


def test_standard_scaler_inverse_and_broadcast_to_batches():
    x, _, _ = _data()
    s = StandardScaler().fit(x, channel_dim=-1)
    batch = x.unsqueeze(0).repeat(2, 1, 1, 1)          # [B, T, N, C]
    assert torch.allclose(s.inverse_transform(s.transform(batch)), batch, atol=1e-4)
    assert torch.allclose(s.transform(batch)[1], s.transform(x))
    g = StandardScaler().fit(x)                         # one global statistic
    assert g.mean.dim() == 0
    assert g.mean.item() == pytest.approx(x.double().mean().item(), rel=1e-9)
    # grid layout [T, C, H, W], per channel along dim 1 -> [C, 1, 1]
    img = torch.randn(6, 2, 4, 4) + torch.tensor([3.0, -3.0]).view(1, 2, 1, 1)
    si = StandardScaler().fit(img, channel_dim=1)
    assert si.mean.shape == (2, 1, 1)
    assert torch.allclose(si.transform(img.unsqueeze(0))[0], si.transform(img))


def test_standard_scaler_nan_is_missing_and_constant_channel():
    x = torch.tensor([[1.0, 5.0], [float("nan"), 5.0], [3.0, 5.0]])
    s = StandardScaler().fit(x, channel_dim=-1)
    assert s.mean.tolist() == [2.0, 5.0]
    assert s.std.tolist() == [1.0, 1.0]                # constant channel: std 1, no 0-division
    assert s.transform(torch.tensor([[2.0, 5.0]])).tolist() == [[0.0, 0.0]]


def test_minmax_scaler_range_and_inverse():
    _, x, mask = _data()
    s = MinMaxScaler(feature_range=(-1, 1)).fit(x, mask, channel_dim=-1)
    y = s.transform(x, mask)
    obs = mask.bool()
    for c in range(3):
        vals = y[..., c][obs[..., c]]
        assert vals.min().item() == pytest.approx(-1.0, abs=1e-6)
        assert vals.max().item() == pytest.approx(1.0, abs=1e-6)
        assert s.data_min[c].item() == pytest.approx(x[..., c][obs[..., c]].min().item())
    assert torch.allclose(s.inverse_transform(y, mask), x, atol=1e-4)
    assert "feature_range=(-1.0, 1.0)" in repr(s)


def test_state_dict_roundtrip():
    x, _, _ = _data()
    s = StandardScaler().fit(x, channel_dim=-1)
    t = StandardScaler().load_state_dict(s.state_dict())
    assert torch.equal(t.transform(x), s.transform(x))


def test_errors():
    x, _, mask = _data()
    with pytest.raises(RuntimeError, match="not fitted"):
        StandardScaler().transform(x)
    with pytest.raises(RuntimeError, match="not fitted"):
        MinMaxScaler().inverse_transform(x)
    with pytest.raises(ValueError, match="'mask'"):
        StandardScaler().fit(x, torch.ones(4, 4))
    empty = mask.clone()
    empty[..., 1] = 0
    with pytest.raises(ValueError, match="'mask' leaves no observed value"):
        StandardScaler().fit(x, empty, channel_dim=-1)
    with pytest.raises(ValueError, match="'channel_dim'"):
        StandardScaler().fit(x, channel_dim=3)
    with pytest.raises(ValueError, match="'feature_range'"):
        MinMaxScaler(feature_range=(1, 0))


def test_minmax_state_keeps_its_range_and_masks_are_checked():
    """MinMaxScaler's state lacked ``feature_range``: a reloaded scaler mapped to [0, 1]."""
    x = torch.tensor([0.0, 5.0, 10.0])
    mm = MinMaxScaler((-1, 1), eps=1e-3).fit(x)
    back = MinMaxScaler().load_state_dict(mm.state_dict())
    assert back.feature_range == (-1.0, 1.0) and back.eps == 1e-3
    assert torch.equal(back.transform(x), mm.transform(x))
    old = {k: v for k, v in mm.state_dict().items() if k in ("data_min", "data_max")}
    assert MinMaxScaler((-1, 1)).load_state_dict(old).feature_range == (-1.0, 1.0)
    for bad in (0.5, float("nan"), -1.0):
        with pytest.raises(ValueError, match=r"'mask' must contain only 0 and 1"):
            StandardScaler().fit(x, torch.tensor([1.0, bad, 1.0]))
    with pytest.raises(ValueError, match="'eps' must be >= 0"):
        StandardScaler(eps=-1.0)
    with pytest.raises(ValueError, match="'feature_range' must be"):
        MinMaxScaler().load_state_dict(dict(mm.state_dict(),
                                            feature_range=torch.tensor([1.0, 0.0])))
    with pytest.raises(ValueError, match="'eps' must be >= 0"):
        MinMaxScaler().load_state_dict(dict(mm.state_dict(), eps=torch.tensor(-1.0)))
