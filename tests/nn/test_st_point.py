import math

import pytest
import torch
import torch.nn.functional as F

from torch_stgen.nn import STPointAttention, STPointEmbedding, STPointFormer, stack_subregions


def _reference_attention(layer, h, key_mask):
    """Eqs. 15-23 written out in float64 with an explicit -inf mask."""
    layer = layer.double()
    h = h.double()
    B, P, d = h.shape
    M = layer.num_heads
    q, k, v = layer.qkv(h).view(B, P, 3, M, d // M).permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // M)
    scores = scores.masked_fill(~key_mask.view(B, 1, 1, P), float("-inf"))
    att = torch.softmax(scores, -1) @ v
    a = layer.out_proj(att.transpose(1, 2).reshape(B, P, d))
    h1 = layer.norm1(h + a)
    return layer.norm2(h1 + layer.lin2(torch.relu(layer.lin1(h1))))


def test_st_point_attention_repr_and_reference():
    layer = STPointAttention(16, num_heads=4, dim_feedforward=32)
    assert str(layer) == "STPointAttention(16, num_heads=4, dim_feedforward=32, dropout=0.0)"
    h = torch.randn(3, 11, 16)
    key_mask = torch.rand(3, 11) > 0.4
    key_mask[:, 0] = True
    out = layer(h, key_mask)
    assert out.shape == (3, 11, 16)
    ref = _reference_attention(layer, h, key_mask)
    assert torch.allclose(out.double(), ref, atol=1e-5)
    # no mask == all observed
    full = torch.ones(3, 11, dtype=torch.bool)
    assert torch.allclose(layer.float()(h), layer(h, full), atol=1e-6)


def test_observed_outputs_invariant_to_missing_values():
    layer = STPointAttention(16, num_heads=2, dim_feedforward=24).eval()
    h = torch.randn(2, 30, 16)
    key_mask = torch.rand(2, 30) > 0.5
    key_mask[:, :2] = True
    key_mask[:, 2] = False
    out = layer(h, key_mask)
    h2 = h.clone()
    h2[~key_mask] = 1e3 * torch.randn(int((~key_mask).sum()), 16)
    out2 = layer(h2, key_mask)
    diff = (out - out2)[key_mask].abs().max().item()
    assert diff <= 1e-6
    # control: the same perturbation does change the observed outputs without the mask,
    # and changing an observed point changes the others
    assert (layer(h) - layer(h2))[key_mask].abs().max() > 1e-2
    h3 = h.clone()
    h3[:, 0] += 5.0
    assert (layer(h3, key_mask) - out)[:, 1].abs().max() > 1e-4


def test_permutation_equivariance():
    layer = STPointAttention(8, num_heads=2, dim_feedforward=16).eval()
    h = torch.randn(2, 17, 8)
    key_mask = torch.rand(2, 17) > 0.3
    perm = torch.randperm(17)
    out = layer(h, key_mask)
    out_p = layer(h[:, perm], key_mask[:, perm])
    assert torch.allclose(out[:, perm], out_p, atol=1e-5)


def test_sample_without_observed_points():
    layer = STPointAttention(8, num_heads=2, dim_feedforward=16)
    h = torch.randn(2, 9, 8, requires_grad=True)
    key_mask = torch.zeros(2, 9, dtype=torch.bool)
    key_mask[1, :4] = True
    out = layer(h, key_mask)
    assert torch.isfinite(out).all()
    # documented output: zero attention message -> position-wise block on LN1(h)
    h1 = layer.norm1(h[0])
    expected = layer.norm2(h1 + layer.lin2(torch.relu(layer.lin1(h1))))
    assert torch.allclose(out[0], expected, atol=1e-6)
    # the other sample is unaffected by sharing the batch
    assert torch.allclose(out[1], layer(h[1:], key_mask[1:])[0], atol=1e-6)
    out.pow(2).sum().backward()
    assert torch.isfinite(h.grad).all()


def test_attention_errors():
    layer = STPointAttention(8, num_heads=2)
    with pytest.raises(ValueError, match="'h' must have shape"):
        layer(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="'key_mask' must have shape"):
        layer(torch.randn(2, 5, 8), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="'key_mask' must be a bool"):
        layer(torch.randn(2, 5, 8), torch.ones(2, 5))
    with pytest.raises(ValueError, match="'num_heads'"):
        STPointAttention(10, num_heads=3)


def _grid_inputs(B=2, T=3, I=4, J=6, F_=2, E=3, p_missing=0.4):
    x = torch.randn(B, T, I * J, F_)
    mask = torch.rand(B, T, I * J, 1) > p_missing
    return x, mask, torch.randn(B, T, E)


def test_former_invariant_to_missing_values_and_nan():
    model = STPointFormer(2, d_model=16, num_layers=2, num_heads=4, history=3, grid=(4, 6),
                          ext_features=3, down=(2, 3)).eval()
    x, mask, ext = _grid_inputs()
    out = model(x, mask, ext)
    assert out.shape == (2, 3, 24, 16)
    x2 = torch.where(mask, x, torch.full_like(x, float("nan")))
    x3 = torch.where(mask, x, 1e4 * torch.randn_like(x))
    # every output (missing points included) is independent of what sits at missing points
    assert torch.equal(out, model(x2, mask, ext))
    assert (out - model(x3, mask, ext)).abs().max() <= 1e-6
    # NaN is treated as missing
    assert torch.equal(model(x2, None, ext), out)
    # control: an observed value matters
    x4 = x.clone()
    b, t, n = mask[..., 0].nonzero()[0].tolist()
    x4[b, t, n] += 3.0
    assert (model(x4, mask, ext) - out).abs().max() > 1e-4


def test_former_gradient_reaches_all_parameters():
    model = STPointFormer(2, d_model=16, num_layers=2, num_heads=4, history=3, grid=(4, 6),
                          ext_features=3, down=(2, 3), out_channels=5, pos_features=2,
                          node_table=True)
    x, mask, ext = _grid_inputs()
    pos = torch.randn(24, 2)
    z = model.stack(model(x, mask, ext, pos))
    assert z.shape == (2, 5, 2, 3)
    (z * torch.randn_like(z)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("time_pool", ["mean", "last", "flatten"])
def test_stack_layout(time_pool):
    B, T, I, J, d = 2, 3, 4, 6, 8
    model = STPointFormer(1, d_model=d, num_layers=1, num_heads=2, history=T, grid=(I, J),
                          down=(2, 3), time_pool=time_pool)
    z = torch.randn(B, T, I * J, d)
    out = model.stack(z)
    ri, rj = 2, 2
    C = d * (T if time_pool == "flatten" else 1)
    assert out.shape == (B, C * ri * rj, 2, 3) == (B, model.stacked_channels(), 2, 3)
    grid = z.view(B, T, I, J, d)
    for c in range(C):
        for a in range(ri):
            for e in range(rj):
                for p in range(2):
                    for q in range(3):
                        i, j = p * ri + a, q * rj + e
                        if time_pool == "mean":
                            want = grid[:, :, i, j, c].mean(1)
                        elif time_pool == "last":
                            want = grid[:, -1, i, j, c]
                        else:
                            want = grid[:, c // d, i, j, c % d]
                        got = out[:, c * ri * rj + a * rj + e, p, q]
                        assert torch.allclose(got, want, atol=1e-6)


def test_stack_subregions_matches_pixel_unshuffle():
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(stack_subregions(x, (3, 3)), F.pixel_unshuffle(x, 2))
    assert stack_subregions(torch.randn(1, 2, 4, 6), (4, 2)).shape == (1, 6, 4, 2)
    with pytest.raises(ValueError, match="'down'"):
        stack_subregions(x, (4, 3))


def test_node_set_positions_are_equivariant():
    N, T = 7, 2
    model = STPointFormer(1, d_model=8, num_layers=1, num_heads=2, history=T, num_nodes=N,
                          pos_features=2, node_table=False).eval()
    x = torch.randn(2, T, N, 1)
    mask = torch.rand(2, T, N, 1) > 0.3
    pos = torch.rand(N, 2) * 10 + 40.0  # lat/lon-like coordinates
    out = model(x, mask, pos=pos)
    perm = torch.randperm(N)
    out_p = model(x[:, :, perm], mask[:, :, perm], pos=pos[perm])
    assert torch.allclose(out[:, :, perm], out_p, atol=1e-5)
    # positions matter: moving the nodes changes the encoding
    assert (model(x, mask, pos=pos.flip(0)) - out).abs().max() > 1e-4
    with pytest.raises(ValueError, match="'down' needs 'grid'"):
        STPointFormer(1, 8, history=T, num_nodes=N, down=(1, 1))
    with pytest.raises(ValueError, match="stacking needs 'grid'"):
        model.stack(out)


def test_embedding_positions_and_errors():
    emb = STPointEmbedding(1, 4, history=2, grid=(2, 3))
    assert "grid=(2, 3)" in str(emb)
    pe = emb.position()
    # factorised grid position: time + row + column tables, node n = i * J + j
    assert torch.allclose(pe[1, 1 * 3 + 2], emb.time_emb[1] + emb.row_emb[1] + emb.col_emb[2])
    table = STPointEmbedding(1, 4, history=2, grid=(2, 3), grid_position="table")
    assert table.position().shape == (2, 6, 4) and table.time_emb is None
    h, key_mask = emb(torch.randn(5, 2, 6, 1), torch.ones(5, 2, 6, 1))
    assert h.shape == (5, 12, 4) and key_mask.all()
    with pytest.raises(ValueError, match=r"'x' must have shape \[B, T, N, F\]"):
        emb(torch.randn(5, 3, 6, 1))
    with pytest.raises(ValueError, match="'mask' must have shape"):
        emb(torch.randn(5, 2, 6, 1), torch.ones(5, 2, 6, 2))
    with pytest.raises(ValueError, match="'ext' was given"):
        emb(torch.randn(5, 2, 6, 1), ext=torch.randn(5, 2, 1))
    with pytest.raises(ValueError, match="needs a position"):
        STPointEmbedding(1, 4, history=2, num_nodes=3, node_table=False)
    with pytest.raises(ValueError, match="'pos'"):
        STPointEmbedding(1, 4, history=2, num_nodes=3, pos_features=2)(torch.randn(1, 2, 3, 1))
    with pytest.raises(ValueError, match="'ext' must have shape"):
        STPointFormer(1, 8, history=2, grid=(2, 3), ext_features=2)(torch.randn(1, 2, 6, 1))


def test_dropout_training_mode_runs_and_eval_is_deterministic():
    model = STPointFormer(2, d_model=8, num_layers=1, num_heads=2, history=3, grid=(4, 6),
                          ext_features=3, dropout=0.2)
    x, mask, ext = _grid_inputs()
    model.train()
    assert torch.isfinite(model(x, mask, ext)).all()
    model.eval()
    assert torch.equal(model(x, mask, ext), model(x, mask, ext))


def test_mask_is_broadcast_not_pairwise(monkeypatch):
    """The key mask reaches sdpa as [B, 1, 1, P] (memory linear in P), never as [P, P]."""
    import torch_stgen.nn.st_point as st_point
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        seen.append(None if attn_mask is None else (tuple(attn_mask.shape), attn_mask.dtype))
        return sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(st_point.F, "scaled_dot_product_attention", spy)
    model = STPointFormer(1, d_model=8, num_layers=2, num_heads=2, history=3, grid=(2, 5))
    model(torch.randn(4, 3, 10, 1), torch.rand(4, 3, 10, 1) > 0.5)
    assert seen == [((4, 1, 1, 30), torch.bool)] * 2


def test_embedding_refuses_non_finite_external_features():
    """One NaN in ``ext`` used to turn every point of its sample into NaN."""
    emb = STPointEmbedding(1, 4, history=2, grid=(2, 3), ext_features=2)
    ext = torch.randn(3, 2, 2)
    h, _ = emb(torch.randn(3, 2, 6, 1), ext=ext)
    assert torch.isfinite(h).all()
    ext[1, 0, 1] = float("nan")
    with pytest.raises(ValueError, match="'ext' contains NaN or infinite values"):
        emb(torch.randn(3, 2, 6, 1), ext=ext)
