import pytest
import torch

from torch_stgen.nn.delay import DelayEmbedding


@pytest.mark.parametrize("L,U,V", [(48, 3, 16), (288, 9, 32), (24, 3, 8)])
def test_round_trip(L, U, V):
    emb = DelayEmbedding(L, U, V)
    x = torch.randn(2, 3, L, dtype=torch.float64)
    img = emb(x)
    assert img.shape == (2, 3, V, V)
    assert bool(emb.covered_mask.all())
    torch.testing.assert_close(emb.inverse(img), x, rtol=0, atol=1e-12)
    # a single series (no leading dims) works too
    torch.testing.assert_close(emb.inverse(emb(x[0, 0])), x[0, 0], rtol=0, atol=1e-12)


def test_layout_columns_are_windows_and_padding_is_zero():
    L, U, V = 24, 3, 8
    emb = DelayEmbedding(L, U, V)
    x = torch.arange(1, L + 1, dtype=torch.float32)  # nonzero so padding is visible
    img = emb(x)
    for j in range(V):
        for i in range(V):
            expected = x[j * U + i] if j * U + i < L else 0.0
            assert img[i, j] == expected
    assert int(emb.image_mask.sum()) == int((img != 0).sum())
    # column 0 is the first window, column 1 starts U steps later
    torch.testing.assert_close(img[:, 0], x[:V])
    torch.testing.assert_close(img[:, 1], x[U:U + V])


def test_inverse_averages_overlaps():
    L, U, V = 24, 3, 8
    emb = DelayEmbedding(L, U, V)
    img = torch.zeros(V, V)
    # step 3 appears at (3, 0) and (0, 1); give those two entries different values
    img[3, 0], img[0, 1] = 1.0, 3.0
    series = emb.inverse(img)
    copies = int(emb.counts[3])
    assert copies == 2  # (i, j) with 3*j + i == 3 and i < 8: (3, 0), (0, 1)
    assert series[3] == pytest.approx((1.0 + 3.0) / copies)
    assert series.abs().sum() == pytest.approx(2.0)


def test_non_finite_does_not_leak_into_padding():
    emb = DelayEmbedding(24, 3, 8)
    x = torch.zeros(24)
    x[0] = float("nan")
    img = emb(x)
    assert int(torch.isnan(img).sum()) == int(emb.counts[0])  # only the copies of step 0


def test_gradient_flows_through_both_directions():
    emb = DelayEmbedding(48, 3, 16)
    x = torch.randn(4, 48, requires_grad=True)
    emb.inverse(emb(x) * 2).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 2.0))


def test_errors_name_the_failing_condition():
    with pytest.raises(ValueError, match=r"cannot cover.*\(V-1\)\*U\+V = 29 < L=48"):
        DelayEmbedding(48, 3, 8)
    with pytest.raises(ValueError, match="stride U=9 is larger than window V=8"):
        DelayEmbedding(48, 9, 8)
    with pytest.raises(ValueError, match="positive"):
        DelayEmbedding(0, 3, 8)
    emb = DelayEmbedding(48, 3, 16)
    with pytest.raises(ValueError, match=r"'x' must have shape \[\.\.\., 48\]"):
        emb(torch.zeros(2, 47))
    with pytest.raises(ValueError, match=r"'img' must have shape \[\.\.\., 16, 16\]"):
        emb.inverse(torch.zeros(2, 16, 8))


def test_partial_coverage_is_flagged():
    emb = DelayEmbedding(48, 3, 8, allow_partial=True)  # covers steps 0..28
    assert emb.covered_mask.tolist() == [True] * 29 + [False] * 19
    x = torch.randn(48)
    back = emb.inverse(emb(x))
    torch.testing.assert_close(back[:29], x[:29])
    assert bool((back[29:] == 0).all())
    gaps = DelayEmbedding(20, 5, 3, allow_partial=True)
    assert gaps.covered_mask.tolist()[:6] == [True, True, True, False, False, True]


def test_repr_and_module_buffers():
    emb = DelayEmbedding(288, 9, 32)
    assert str(emb) == "DelayEmbedding(length=288, stride=9, window=32)"
    assert emb.state_dict() == {}  # index buffers are derived, not saved


def test_imagentime_layout_and_last_inverse():
    """The two choices the papers leave open, as options: ImagenTime's columns (the
    windows inside the series, one with the rest, then zeros) and its inverse (each step
    read from the last column that holds it)."""
    x = torch.arange(48.0)
    img = DelayEmbedding(48, 3, 16, layout="imagentime")(x)
    for j in range(11):                                   # (48 - 16) // 3 + 1 full windows
        assert torch.equal(img[:, j], x[3 * j:3 * j + 16])
    assert torch.equal(img[:15, 11], x[33:]) and img[15, 11] == 0     # the rest
    assert img[:, 12:].eq(0).all()
    assert torch.equal(DelayEmbedding(48, 3, 16)(x)[:, :11], img[:, :11])
    series = torch.randn(4, 48, dtype=torch.float64)
    for layout in ("sliding", "imagentime"):
        for inverse in ("mean", "last"):
            emb = DelayEmbedding(48, 3, 16, layout=layout, inverse=inverse)
            torch.testing.assert_close(emb.inverse(emb(series)), series, rtol=0, atol=1e-12)
    # on an image whose copies of a step disagree, 'last' reads the last column
    g = torch.randn(16, 16)
    for layout, columns in (("sliding", 16), ("imagentime", 12)):
        ref = torch.zeros(48)
        for j in range(columns):
            for i in range(16):
                if 3 * j + i < 48:
                    ref[3 * j + i] = g[i, j]
        last = DelayEmbedding(48, 3, 16, layout=layout, inverse="last")
        assert torch.equal(last.inverse(g), ref)
        mean = DelayEmbedding(48, 3, 16, layout=layout)
        assert not torch.allclose(mean.inverse(g), ref)
    assert "layout='imagentime', inverse='last'" in repr(
        DelayEmbedding(48, 3, 16, layout="imagentime", inverse="last"))


def test_layout_and_inverse_errors():
    with pytest.raises(ValueError, match="'layout' must be one of"):
        DelayEmbedding(48, 3, 16, layout="full")
    with pytest.raises(ValueError, match="'inverse' must be one of"):
        DelayEmbedding(48, 3, 16, inverse="first")
    # 33 windows fit inside 48 steps at stride 1, and ImagenTime adds a shorter one at 33
    with pytest.raises(ValueError, match=r"needs 34 columns \(33 windows inside the series "
                                         r"and a shorter one\)"):
        DelayEmbedding(48, 1, 16, layout="imagentime")
    with pytest.raises(ValueError, match="leaves gaps"):
        DelayEmbedding(48, 20, 16, layout="imagentime")
    part = DelayEmbedding(48, 1, 16, layout="imagentime", allow_partial=True)
    assert part.covered_mask.sum() == 31 and part.inverse(part(torch.ones(48)))[31:].eq(0).all()
