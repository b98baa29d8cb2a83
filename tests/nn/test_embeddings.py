import math

import pytest
import torch

from torch_stgen.nn.embeddings import (ExternalEmbedding, SinusoidalEmbedding,
                                       TimeFeatureEmbedding, TimestepEmbedding)


def test_sinusoidal_matches_formula():
    emb = SinusoidalEmbedding(6, max_period=100.0)
    t = torch.tensor([0, 1, 7])
    out = emb(t)
    assert out.shape == (3, 6) and out.dtype == torch.float32
    for b, tv in enumerate(t.tolist()):
        for k in range(3):
            w = 100.0 ** (-k / 3)
            assert out[b, k].item() == pytest.approx(math.cos(tv * w), abs=1e-6)
            assert out[b, 3 + k].item() == pytest.approx(math.sin(tv * w), abs=1e-6)


def test_sinusoidal_floats_scale_odd_dim_and_scalar():
    emb = SinusoidalEmbedding(5, scale=1000.0)
    c_noise = torch.tensor([-1.2, 0.3], dtype=torch.float64)  # EDM ln(sigma)/4
    out = emb(c_noise)
    assert out.shape == (2, 5) and out.dtype == torch.float64
    assert bool((out[:, -1] == 0).all())  # odd dim: trailing zero column
    assert out[0, 0].item() == pytest.approx(math.cos(-1200.0), abs=1e-9)
    # distinct noise levels get distinct embeddings; a scalar is one row
    assert (out[0] - out[1]).abs().max() > 0.1
    assert emb(3.0).shape == (1, 5)


def test_sinusoidal_errors():
    with pytest.raises(ValueError, match="'dim' must be >= 2"):
        SinusoidalEmbedding(1)
    emb = SinusoidalEmbedding(4)
    with pytest.raises(ValueError, match=r"'t' must have shape \[B\]"):
        emb(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="NaN"):
        emb(torch.tensor([float("nan")]))


def test_timestep_embedding_shapes_and_mlp():
    emb = TimestepEmbedding(8, hidden=16, freq_dim=4)
    assert str(emb) == "TimestepEmbedding(8, hidden=16, freq_dim=4)"
    out = emb(torch.tensor([0, 10, 999]))
    assert out.shape == (3, 8)
    ref = emb.lin2(torch.nn.functional.silu(emb.lin1(emb.sinusoidal(torch.tensor([0, 10, 999])))))
    torch.testing.assert_close(out, ref)
    assert (out[0] - out[1]).abs().max() > 0
    assert TimestepEmbedding(8).hidden == 32
    out.sum().backward()
    assert emb.lin1.weight.grad is not None


def test_time_feature_embedding_is_periodic_and_accepts_floats():
    emb = TimeFeatureEmbedding(8)
    assert emb.in_features == 2 * (6 + 3) + 1
    f = emb.features(torch.tensor([[0, 0, 0], [23.5, 6, 1], [12, 3, 0]]))
    # the phase wraps: hour 0 and hour 24 would coincide, hour 23.5 is close to 0
    f24 = emb.features(torch.tensor([[23.999, 0, 0]]))
    assert (f24[0] - f[0]).abs().max() < 0.01
    assert (f[2] - f[0]).abs().max() > 1.0
    assert f[1, -1] == 1 and f[0, -1] == 0
    # integer and float encodings of the same instants give the same features
    ints = torch.tensor([[13, 2, 1]])
    emb01 = TimeFeatureEmbedding(8, hour_period=1.0, weekday_period=1.0)
    emb01.load_state_dict(emb.state_dict())
    torch.testing.assert_close(emb(ints), emb01(torch.tensor([[13 / 24, 2 / 7, 1.0]])))
    assert emb(torch.zeros(2, 5, 3)).shape == (2, 5, 8)


def test_time_feature_encodings_agree():
    # the same instants in the raw, cyclic (sin/cos of minute-of-day and weekday) and
    # onehot encodings of torch_stgen.data.time_features give the same embedding
    emb = TimeFeatureEmbedding(8)
    minute = torch.tensor([0.0, 30.0, 13 * 60.0, 23 * 60.0 + 30, 7 * 60.0])
    day = torch.tensor([0.0, 6.0, 2.0, 4.0, 5.0])
    hol = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0])
    raw = torch.stack([minute / 60, day, hol], -1)
    a, b = 2 * math.pi * minute / 1440, 2 * math.pi * day / 7
    cyclic = torch.stack([a.sin(), a.cos(), b.sin(), b.cos(), hol], -1)
    torch.testing.assert_close(emb(cyclic), emb(raw), atol=1e-5, rtol=0)
    whole = minute % 60 == 0
    onehot = torch.zeros(5, 32)
    onehot[torch.arange(5), (minute // 60).long()] = 1
    onehot[torch.arange(5), 24 + day.long()] = 1
    onehot[:, 31] = hol
    torch.testing.assert_close(emb(onehot)[whole], emb(raw)[whole], atol=1e-5, rtol=0)
    assert (emb(raw)[0] - emb(raw)[1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="unit norm"):
        emb(cyclic * 2)
    with pytest.raises(ValueError, match="exactly one 1"):
        emb(torch.zeros(1, 32))
    with pytest.raises(ValueError, match=r"'time' must have shape \[\.\.\., 5\] \(cyclic"):
        TimeFeatureEmbedding(8, encoding="cyclic")(raw)


def test_time_feature_weekday_harmonics_separate_all_days():
    emb = TimeFeatureEmbedding(4, weekday_harmonics=3)
    days = torch.stack([torch.zeros(7), torch.arange(7.0), torch.zeros(7)], dim=-1)
    f = emb.features(days)[:, 2 * 6:2 * 6 + 6]
    # full rank on the 7 weekdays together with a constant: any weekday effect is linear
    design = torch.cat([torch.ones(7, 1), f.double()], dim=1)
    assert torch.linalg.matrix_rank(design) == 7


def test_time_feature_errors():
    emb = TimeFeatureEmbedding(4)
    with pytest.raises(ValueError, match=r"'time' must have shape \[\.\.\., 3\]"):
        emb(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"hour values must lie in \[0, 24\)"):
        emb(torch.tensor([[24.0, 0, 0]]))
    with pytest.raises(ValueError, match=r"weekday values must lie in \[0, 7\)"):
        emb(torch.tensor([[1.0, -1, 0]]))
    with pytest.raises(ValueError, match="holiday"):
        emb(torch.tensor([[1.0, 1, 2]]))
    with pytest.raises(ValueError, match="NaN"):
        emb(torch.tensor([[float("nan"), 1, 0]]))


def test_external_embedding():
    emb = ExternalEmbedding(3, 8)
    assert str(emb) == "ExternalEmbedding(3, 8, hidden=8)"
    x = torch.randn(2, 5, 3)
    out = emb(x)
    assert out.shape == (2, 5, 8)
    torch.testing.assert_close(out[1, 2], emb(x[1, 2]))
    with pytest.raises(ValueError, match=r"'x' must have shape \[\.\.\., 3\]"):
        emb(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="NaN"):
        emb(torch.tensor([[0.0, float("inf"), 1.0]]))
