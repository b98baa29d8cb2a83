import math

import pytest
import torch

from torch_stgen.nn import InceptionBlock, TimesBlock, TPatternNet


def _sinusoids(B, T, d, periods, noise=0.05):
    t = torch.arange(T, dtype=torch.float32).view(1, T, 1)
    x = torch.zeros(B, T, d)
    for p in periods:
        amp = 1.0 + torch.rand(B, 1, d)
        phase = 2 * math.pi * torch.rand(B, 1, d)
        x = x + amp * torch.sin(2 * math.pi * t / p + phase)
    return x + noise * torch.randn(B, T, d)


@pytest.mark.parametrize("period_rule", ["ceil", "floor"])
def test_find_periods_24_168(period_rule):
    block = TimesBlock(336, d_model=4, d_ff=4, top_k=2, num_kernels=2, period_rule=period_rule)
    x = _sinusoids(3, 336, 4, [24, 168])
    periods, amplitudes = block.find_periods(x)
    assert set(periods) == {24, 168}
    assert amplitudes.shape == (3, 2)
    # amplitudes are the per-sample channel means of |rFFT| at the chosen frequencies
    amp = torch.fft.rfft(x, dim=1).abs().mean(-1)
    freqs = [336 // p for p in periods]
    assert torch.allclose(amplitudes, amp[:, freqs])


def test_period_rule_ceil_vs_floor():
    # 3 cycles in T = 100 steps: ceil(100 / 3) = 34 (paper), 100 // 3 = 33 (TimesNet code)
    x = _sinusoids(2, 100, 3, [100 / 3], noise=0.0)
    assert TimesBlock(100, 3, 3, top_k=1, period_rule="ceil").find_periods(x)[0] == [34]
    assert TimesBlock(100, 3, 3, top_k=1, period_rule="floor").find_periods(x)[0] == [33]


def test_flat_spectrum_never_selects_dc():
    block = TimesBlock(16, 2, 2, top_k=8)
    periods, _ = block.find_periods(torch.zeros(1, 16, 2))
    assert sorted(periods) == sorted(-(-16 // f) for f in range(1, 9))
    assert torch.equal(block(torch.zeros(1, 16, 2)), torch.zeros(1, 16, 2))


def _reference_block(block, x):
    """TimesBlock written with explicit index arithmetic for the fold/unfold."""
    B, T, d = x.shape
    periods, amplitudes = block.find_periods(x)
    w = torch.softmax(amplitudes, 1)
    out = x.clone()
    for i, p in enumerate(periods):
        rows = math.ceil(T / p)
        xpad = torch.cat([x, x.new_zeros(B, rows * p - T, d)], 1)
        r = torch.arange(rows).view(rows, 1)
        c = torch.arange(p).view(1, p)
        x2d = xpad[:, r * p + c].permute(0, 3, 1, 2)  # X2D[b, ch, r, c] = x[b, r*p+c, ch]
        y2d = block.conv[2].forward_branches(
            torch.nn.functional.gelu(block.conv[0].forward_branches(x2d)))
        y = y2d.permute(0, 2, 3, 1).reshape(B, rows * p, d)[:, :T]
        out = out + w[:, i].view(B, 1, 1) * y
    return out


@pytest.mark.parametrize("T,top_k", [(100, 3), (48, 2)])
def test_times_block_matches_reference_and_keeps_shape(T, top_k):
    block = TimesBlock(T, d_model=6, d_ff=5, top_k=top_k, num_kernels=3)
    assert str(block) == (f"TimesBlock(seq_len={T}, d_model=6, d_ff=5, top_k={top_k}, "
                          f"num_kernels=3, period_rule='ceil')")
    x = _sinusoids(2, T, 6, [7, 24])
    out = block(x)
    assert out.shape == x.shape
    periods, _ = block.find_periods(x)
    if T == 100:
        assert any(T % p for p in periods)  # exercises the zero padding
    assert torch.allclose(out, _reference_block(block, x), atol=1e-5)


def test_zero_inception_is_identity():
    block = TimesBlock(100, d_model=4, d_ff=8, top_k=3, num_kernels=3)
    x = _sinusoids(2, 100, 4, [10, 25])
    assert (block(x) - x).abs().max() > 1e-3  # control
    with torch.no_grad():
        for p in block.parameters():
            p.zero_()
    assert torch.equal(block(x), x)


def test_inception_merged_kernel_equals_branch_average():
    inc = InceptionBlock(3, 5, num_kernels=4)
    assert str(inc) == "InceptionBlock(3, 5, num_kernels=4)"
    with torch.no_grad():
        for conv in inc.kernels:
            conv.bias.normal_()
    assert [c.kernel_size for c in inc.kernels] == [(1, 1), (3, 3), (5, 5), (7, 7)]
    x = torch.randn(2, 3, 6, 9)
    out = inc(x)
    assert out.shape == (2, 5, 6, 9)
    assert torch.allclose(out, inc.forward_branches(x), atol=1e-5)
    for shape in [(1, 9), (2, 3), (7, 1), (1, 1)]:  # thin maps use a cropped kernel
        x = torch.randn(2, 3, *shape)
        assert torch.allclose(inc(x), inc.forward_branches(x), atol=1e-5)
    with pytest.raises(ValueError, match="'x' must have shape"):
        inc(torch.randn(2, 4, 6, 9))


def test_softmax_weights_are_per_sample():
    block = TimesBlock(48, d_model=2, d_ff=2, top_k=2, num_kernels=1)
    t = torch.arange(48.).view(1, 48, 1)
    a = torch.sin(2 * math.pi * t / 12) + 0.2 * torch.sin(2 * math.pi * t / 6)
    b = 0.2 * torch.sin(2 * math.pi * t / 12) + torch.sin(2 * math.pi * t / 6)
    x = torch.cat([a, b]).expand(2, 48, 2).contiguous()
    periods, amplitudes = block.find_periods(x)
    assert set(periods) == {12, 6}
    w = torch.softmax(amplitudes, 1)
    i12 = periods.index(12)
    assert w[0, i12] > 0.5 > w[1, i12]


def test_tpatternnet_shapes_gradients_and_stack_layout():
    B, T, I, J = 2, 12, 4, 6
    net = TPatternNet(I * J, T, d_model=8, d_ff=8, num_layers=2, top_k=2, num_kernels=2,
                      grid=(I, J), down=(2, 3))
    x = torch.randn(B, T, I * J)
    h = net(x)
    assert h.shape == (B, T, 8)
    assert torch.equal(net(x.view(B, T, I * J, 1)), h)  # [B, T, N, F] input
    z = net.stack(h)
    ri, rj = 2, 2
    assert z.shape == (B, T * ri * rj, 2, 3) == (B, net.stacked_channels(), 2, 3)
    cells = net.cell_proj(h).view(B, T, I, J)
    for c in range(T):
        for a in range(ri):
            for e in range(rj):
                assert torch.allclose(z[:, c * ri * rj + a * rj + e],
                                      cells[:, c, a::ri, e::rj], atol=1e-6)
    (z * torch.randn_like(z)).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_tpatternnet_projection_pool_and_errors():
    net = TPatternNet(2 * 16, 10, d_model=8, d_ff=4, num_layers=1, top_k=2, num_kernels=2,
                      grid=(4, 4), down=(2, 2), time_pool="mean", out_channels=7)
    assert net.stack(net(torch.randn(3, 10, 16, 2))).shape == (3, 7, 2, 2)
    assert net.stacked_channels(projected=False) == 2 * 4
    nodes = TPatternNet(5, 10, d_model=8, top_k=2, num_kernels=2)
    assert nodes(torch.randn(1, 10, 5)).shape == (1, 10, 8)
    with pytest.raises(ValueError, match="stacking needs 'grid'"):
        nodes.stack(torch.randn(1, 10, 8))
    with pytest.raises(ValueError, match=r"'x' must have shape \[B, T, C\]"):
        nodes(torch.randn(1, 9, 5))
    with pytest.raises(ValueError, match="'top_k'"):
        TimesBlock(8, top_k=5)
    with pytest.raises(ValueError, match="'period_rule'"):
        TimesBlock(8, top_k=2, period_rule="round")
    with pytest.raises(ValueError, match="'in_channels'"):
        TPatternNet(10, 8, top_k=2, grid=(2, 2))


def test_times_block_refuses_an_empty_or_non_finite_batch():
    """The batch shares one spectrum (eq. 1): a NaN sample would change every sample's
    periods, so it is refused; an empty batch has no spectrum."""
    block = TimesBlock(8, 4, 4, top_k=2, num_kernels=2)
    with pytest.raises(ValueError, match=r"'x' is an empty batch \(B = 0\)"):
        block(torch.randn(0, 8, 4))
    x = torch.randn(3, 8, 4)
    block(x)
    for bad in (float("nan"), float("inf")):
        y = x.clone()
        y[0, 2, 1] = bad
        with pytest.raises(ValueError, match="'x' holds NaN or inf"):
            block(y)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_blocks_run(dtype):
    """A .bfloat16() / .half() TimesBlock raised 'Unsupported dtype BFloat16' from the CPU
    FFT; the period search now runs in float32 and the block stays in its dtype."""
    torch.manual_seed(0)
    block = TimesBlock(12, d_model=8, d_ff=8, top_k=2, num_kernels=2)
    x = torch.randn(2, 12, 8)
    ref = block(x)
    low = block.to(dtype)
    assert low.find_periods(x.to(dtype))[0] == block.find_periods(x)[0]
    out = low(x.to(dtype))
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.05)


def test_period_scope_sample_makes_each_output_independent_of_its_batch():
    torch.manual_seed(0)
    x = torch.cat([_sinusoids(2, 48, 4, [12]), _sinusoids(2, 48, 4, [16]),
                   _sinusoids(1, 48, 4, [6])])
    own = TimesBlock(48, d_model=4, d_ff=4, top_k=1, num_kernels=2, period_scope="sample")
    shared = TimesBlock(48, d_model=4, d_ff=4, top_k=1, num_kernels=2)
    shared.load_state_dict(own.state_dict())
    alone = torch.cat([shared(x[b:b + 1]) for b in range(5)])      # each sample by itself
    torch.testing.assert_close(own(x), alone, atol=1e-6, rtol=0)
    # the batch rule folds every sample with the batch's one period: others differ
    assert (shared(x) - alone).abs().amax() > 1e-2
    # in any order and any batch split, the same rows
    perm = torch.tensor([4, 0, 3, 1, 2])
    torch.testing.assert_close(own(x[perm]), own(x)[perm], atol=1e-6, rtol=0)
    torch.testing.assert_close(own(x[:3]), own(x)[:3], atol=1e-6, rtol=0)
    # the per-sample softmax weights stay differentiable
    xg = x.clone().requires_grad_(True)
    block = TimesBlock(48, 4, 4, top_k=2, num_kernels=2, period_scope="sample")
    block(xg).square().sum().backward()
    assert bool(torch.isfinite(xg.grad).all()) and xg.grad.abs().sum() > 0


def test_period_scope_is_checked_and_shown_only_when_not_the_default():
    with pytest.raises(ValueError, match="'period_scope' must be 'batch' or 'sample'"):
        TimesBlock(24, 2, 2, top_k=2, period_scope="node")
    default = TimesBlock(24, 2, 2, top_k=2)
    assert "period_scope" not in default.extra_repr() + repr(default)   # old fingerprints
    assert "period_scope='sample'" in TimesBlock(24, 2, 2, top_k=2,
                                                 period_scope="sample").extra_repr()
    net = TPatternNet(6, 24, d_model=4, d_ff=4, top_k=2, num_kernels=1, period_scope="sample")
    assert all(b.period_scope == "sample" for b in net.blocks)
    with pytest.raises(ValueError, match="NaN or inf"):
        TimesBlock(24, 2, 2, top_k=2, period_scope="sample")(
            torch.full((2, 24, 2), float("nan")))
