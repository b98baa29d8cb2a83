import math

import pytest
import torch

from torch_stgen.nn import GeometryMoEConv


def tiny_kg(num_nodes=7, num_edges=24, num_relations=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=g)
    edge_type = torch.randint(0, num_relations, (num_edges,), generator=g)
    return edge_index, edge_type


def rel_err(a, b):
    return float((a - b).detach().norm() / b.detach().norm())


# ---- independent float64 references for the stereographic model of curvature k ----------
def tan_k(x, k):
    s = math.sqrt(abs(k))
    return torch.tan(s * x) / s if k > 0 else torch.tanh(s * x) / s


def artan_k(x, k):
    s = math.sqrt(abs(k))
    return torch.atan(s * x) / s if k > 0 else torch.atanh(s * x) / s


def exp0(u, k):
    n = u.norm(dim=-1, keepdim=True)
    return tan_k(n, k) * u / n


def log0(y, k):
    n = y.norm(dim=-1, keepdim=True)
    return artan_k(n, k) * y / n


def mobius_add(x, y, k):
    xy = (x * y).sum(-1, keepdim=True)
    x2, y2 = (x * x).sum(-1, keepdim=True), (y * y).sum(-1, keepdim=True)
    num = (1 - 2 * k * xy - k * y2) * x + (1 + k * x2) * y
    return num / (1 - 2 * k * xy + k ** 2 * x2 * y2)


def test_repr_and_shapes():
    conv = GeometryMoEConv(8, 5, num_relations=3)
    s = str(conv)
    assert s.startswith("GeometryMoEConv(8, 5, num_relations=3")
    assert "experts=('E', 'H', 'S')" in s and "variant='mobius_add'" in s
    assert "k_H=-1" in s and "k_S=1" in s and "act=tanh" in s
    assert conv.lin.in_features == 24 and conv.lin.out_features == 5
    edge_index, edge_type = tiny_kg()
    x = torch.randn(7, 8) * 0.3
    assert conv(x, edge_index, edge_type).shape == (7, 5)
    xb = torch.randn(3, 7, 8) * 0.3  # node_dim=-2: batched sequences without reshaping
    out = conv(xb, edge_index, edge_type)
    assert out.shape == (3, 7, 5)
    torch.testing.assert_close(out[2], conv(xb[2], edge_index, edge_type), atol=1e-6, rtol=0)
    conv_paper = GeometryMoEConv(4, num_relations=2, variant="paper", experts=("S", "E"))
    assert str(conv_paper) == ("GeometryMoEConv(4, 4, num_relations=2, experts=('E', 'S'), "
                               "variant='paper', k_S=1, act=tanh)")
    assert conv_paper.translation is None and set(conv_paper.manifolds) == {"S"}


def test_forward_is_mean_of_expert_messages_then_linear_tail_to_head():
    torch.manual_seed(1)
    conv = GeometryMoEConv(6, 4, num_relations=3, bias=True)
    edge_index, edge_type = tiny_kg(num_nodes=5, num_edges=9)
    x = torch.randn(5, 6) * 0.4
    out = conv(x, edge_index, edge_type)
    msgs = conv.edge_messages(x[edge_index[0]], edge_type)  # row 0 = tail = source
    cat = torch.cat([msgs["E"], msgs["H"], msgs["S"]], dim=-1)
    for i in range(5):
        incoming = edge_index[1] == i  # row 1 = head = target
        mean = cat[incoming].mean(0) if incoming.any() else torch.zeros(18)
        ref = torch.tanh(conv.lin.weight @ mean + conv.lin.bias)
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k1,k2", [(-1.0, 1.0), (-0.3, 2.5)])
def test_paper_variant_collapses_to_euclidean(k1, k2):
    """Eqs. 13-14 as printed: log0(r (x)_k exp0(t)) = r * t for every k (pinned identity)."""
    conv = GeometryMoEConv(16, num_relations=4, variant="paper", init_curvature=(k1, k2))
    edge_index, edge_type = tiny_kg(num_nodes=9, num_edges=40, num_relations=4)
    x = torch.randn(9, 16) * 0.15  # inside the spherical injectivity radius
    x_j = x[edge_index[0]]
    msgs = conv.edge_messages(x_j, edge_type)
    expected = conv.relation.weight[edge_type] * x_j
    torch.testing.assert_close(msgs["E"], expected)
    assert rel_err(msgs["H"], expected) < 1e-5
    assert rel_err(msgs["S"], expected) < 1e-5
    # ... so the curvatures get (numerically) no gradient: they learn nothing
    conv(x, edge_index, edge_type).square().sum().backward()
    for m in conv.manifolds.values():
        assert abs(float(m.raw_k.grad)) < 1e-4


@pytest.mark.parametrize("variant", ["paper", "mobius_add"])
def test_flat_limit_experts_agree_with_euclidean_of_same_variant(variant):
    conv = GeometryMoEConv(16, num_relations=3, variant=variant, init_curvature=(-1e-6, 1e-6))
    torch.testing.assert_close(conv.curvatures["H"].detach(), torch.tensor(-1e-6))
    torch.testing.assert_close(conv.curvatures["S"].detach(), torch.tensor(1e-6))
    edge_index, edge_type = tiny_kg(num_nodes=9, num_edges=40)
    x_j = torch.randn(40, 16) * 0.5
    msgs = conv.edge_messages(x_j, edge_type)
    e_ref = conv.relation.weight[edge_type] * x_j
    if variant == "mobius_add":
        e_ref = e_ref + conv.translation.weight[edge_type]
    torch.testing.assert_close(msgs["E"], e_ref)
    torch.testing.assert_close(msgs["H"], msgs["E"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(msgs["S"], msgs["E"], atol=1e-4, rtol=1e-4)


def test_default_variant_depends_on_curvature_and_matches_reference():
    conv = GeometryMoEConv(16, num_relations=3, init_curvature=(-1.0, 1.0))
    edge_index, edge_type = tiny_kg(num_nodes=9, num_edges=40)
    x_j = torch.randn(40, 16) * 0.1
    msgs = conv.edge_messages(x_j, edge_type)
    r = conv.relation.weight[edge_type].detach().double()
    b = conv.translation.weight[edge_type].detach().double()
    t = x_j.double()
    assert float(((r * t).norm(dim=-1) + b.norm(dim=-1)).max()) < 1.5  # no clipping here
    for name, k in (("H", -1.0), ("S", 1.0)):
        # r (x)_k exp0(t) = exp0(r * t) by definition of the Mobius point-wise product
        ref = log0(mobius_add(exp0(r * t, k), exp0(b, k), k), k)
        torch.testing.assert_close(msgs[name].double(), ref, atol=2e-5, rtol=1e-4)
        assert rel_err(msgs[name], msgs["E"]) > 0.02  # curvature changes the message
    # opposite curvatures bend in opposite directions
    assert rel_err(msgs["H"], msgs["S"]) > 0.02
    conv(x_j[:9], edge_index, edge_type).sum().backward()
    for m in conv.manifolds.values():
        assert m.raw_k.grad is not None and abs(float(m.raw_k.grad)) > 1e-6


def test_curvature_keeps_sign_under_large_learning_rate():
    torch.manual_seed(0)
    conv = GeometryMoEConv(8, num_relations=2)
    edge_index, edge_type = tiny_kg(num_nodes=6, num_edges=16, num_relations=2)
    x_j = torch.randn(16, 8)
    target = torch.randn(16, 8)
    opt = torch.optim.Adam(conv.parameters(), lr=1.0)
    for step in range(200):
        opt.zero_grad()
        k = conv.curvatures
        msgs = conv.edge_messages(x_j, edge_type)  # the curvatures' whole gradient path
        # a data term plus a term that pulls both curvatures across zero
        loss = sum((m - target).square().mean() for m in msgs.values()) - k["H"] + k["S"]
        loss.backward()
        opt.step()
    k = {n: float(v.detach()) for n, v in conv.curvatures.items()}
    assert k["H"] < 0 < k["S"]
    # a pure push across zero: softplus underflows, the floor keeps the sign strict
    opt = torch.optim.Adam(conv.manifolds.parameters(), lr=1.0)
    for step in range(200):
        opt.zero_grad()
        k = conv.curvatures
        (k["S"] - k["H"]).backward()
        opt.step()
    k = {n: float(v.detach()) for n, v in conv.curvatures.items()}
    assert -1e-6 < k["H"] < 0 < k["S"] < 1e-6  # driven to the flat limit, never across
    with torch.no_grad():  # even where softplus underflows, the floor keeps the sign
        for m in conv.manifolds.values():
            m.raw_k.fill_(-200.0)
    k = {n: float(v.detach()) for n, v in conv.curvatures.items()}
    assert k["H"] < 0 < k["S"]
    assert all(torch.isfinite(p).all() for p in conv.parameters())
    assert torch.isfinite(conv(torch.randn(6, 8), edge_index, edge_type)).all()


@pytest.mark.parametrize("variant", ["paper", "mobius_add"])
@pytest.mark.parametrize("scale", [0.0, 1e-6, 1e-2, 1.0, 1e2, 1e3])
def test_finite_outputs_and_gradients_for_extreme_norms(variant, scale):
    conv = GeometryMoEConv(8, num_relations=3, variant=variant)
    edge_index, edge_type = tiny_kg()
    x = (torch.randn(7, 8) * scale / math.sqrt(8)).requires_grad_()
    out = conv(x, edge_index, edge_type)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in conv.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    # large tangents are clipped into the chart: no wrap-around on the sphere
    if scale >= 1e2:
        msgs = conv.edge_messages(x[edge_index[0]].detach(), edge_type)
        assert float(msgs["S"].detach().norm(dim=-1).max()) <= conv.max_tangent_norm + 1e-3
        assert float(msgs["H"].detach().norm(dim=-1).max()) <= conv.max_tangent_norm + 1e-3


def test_expert_ablations_and_relation_override():
    edge_index, edge_type = tiny_kg()
    x = torch.randn(7, 8) * 0.3
    for experts in (("E",), ("H",), ("S",), ("E", "H"), ("H", "S")):
        conv = GeometryMoEConv(8, 3, num_relations=3, experts=experts)
        assert conv.experts == experts
        assert conv.lin.in_features == 8 * len(experts)
        assert set(conv.manifolds) == set(experts) - {"E"}
        assert set(conv.edge_messages(x[:4], edge_type[:4])) == set(experts)
        assert conv(x, edge_index, edge_type).shape == (7, 3)
    conv = GeometryMoEConv(8, num_relations=3)
    rel = torch.randn(3, 8)
    out = conv(x, edge_index, edge_type, relation=rel)
    with torch.no_grad():
        conv.relation.weight.copy_(rel)
    torch.testing.assert_close(out, conv(x, edge_index, edge_type))


def test_curvature_parameters_train_and_move():
    conv = GeometryMoEConv(4, num_relations=2, init_curvature=(-0.5, 2.0))
    names = dict(conv.named_parameters())
    assert names["manifolds.H.raw_k"].requires_grad and names["manifolds.S.raw_k"].requires_grad
    torch.testing.assert_close(conv.curvatures["H"].detach(), torch.tensor(-0.5))
    torch.testing.assert_close(conv.curvatures["S"].detach(), torch.tensor(2.0))
    conv = conv.double()
    assert conv.curvatures["H"].dtype == torch.float64
    frozen = GeometryMoEConv(4, num_relations=2, learn_curvature=False)
    assert not any(p.requires_grad for p in frozen.manifolds.parameters())
    edge_index, edge_type = tiny_kg(num_nodes=5, num_edges=8, num_relations=2)
    out = conv(torch.randn(5, 4, dtype=torch.float64) * 0.3, edge_index, edge_type)
    assert out.dtype == torch.float64


def test_bad_input_messages():
    with pytest.raises(ValueError, match="variant"):
        GeometryMoEConv(4, num_relations=2, variant="murp")
    with pytest.raises(ValueError, match="experts"):
        GeometryMoEConv(4, num_relations=2, experts=("E", "X"))
    with pytest.raises(ValueError, match="experts"):
        GeometryMoEConv(4, num_relations=2, experts=())
    with pytest.raises(ValueError, match="init_curvature"):
        GeometryMoEConv(4, num_relations=2, init_curvature=(1.0, 1.0))
    with pytest.raises(ValueError, match="max_tangent_norm"):
        GeometryMoEConv(4, num_relations=2, max_tangent_norm=2.0)
    with pytest.raises(ValueError, match="num_relations"):
        GeometryMoEConv(4, num_relations=0)
    with pytest.raises(ValueError, match="act"):
        GeometryMoEConv(4, num_relations=2, act="swish")
    conv = GeometryMoEConv(4, num_relations=2)
    edge_index, edge_type = tiny_kg(num_nodes=5, num_edges=8, num_relations=2)
    x = torch.randn(5, 4)
    with pytest.raises(ValueError, match=r"'x' must have shape \[\*, N, 4\]"):
        conv(torch.randn(5, 3), edge_index, edge_type)
    with pytest.raises(ValueError, match=r"'edge_index' must have shape \[2, E\]"):
        conv(x, edge_index.t(), edge_type)
    with pytest.raises(ValueError, match=r"'edge_type' must have shape \[E\]"):
        conv(x, edge_index, edge_type[:3])
    with pytest.raises(ValueError, match=r"'edge_type' values must lie in \[0, 2\)"):
        conv(x, edge_index, edge_type + 5)
    with pytest.raises(ValueError, match="'edge_index' values"):
        conv(x[:2], edge_index, edge_type)
    with pytest.raises(ValueError, match=r"'relation' must have shape"):
        conv(x, edge_index, edge_type, relation=torch.randn(3, 4))
    # a boolean edge_type was used as a boolean index (silently wrong when E equals
    # num_relations): relation ids must be integers
    sq = GeometryMoEConv(4, num_relations=8)
    with pytest.raises(TypeError, match="'edge_type' must be an integer tensor of relation ids"):
        sq(x, edge_index, torch.ones(8, dtype=torch.bool))
    with pytest.raises(ValueError, match="'message_norm' needs in_channels >= 2"):
        GeometryMoEConv(1, num_relations=2, message_norm=True)


def test_message_norm_puts_every_expert_on_one_scale():
    """message_norm: each expert's per-edge message is layer-normalised before W_m, so the
    Euclidean message (which grows with the embedding) and the chart-bounded curved ones
    reach W_m at the same scale; forward is still the per-node mean of what
    edge_messages returns, then W_m and tanh."""
    torch.manual_seed(3)
    plain = GeometryMoEConv(16, 4, num_relations=3)
    normed = GeometryMoEConv(16, 4, num_relations=3, message_norm=True)
    normed.load_state_dict(plain.state_dict())
    assert "message_norm=True" in str(normed) and "message_norm" not in str(plain)
    edge_index, edge_type = tiny_kg(num_nodes=9, num_edges=40)
    x = torch.randn(9, 16) * 1.5  # norm ~6: the curved experts saturate
    x_j = x[edge_index[0]]
    raw = plain.edge_messages(x_j, edge_type)
    ratio = float((raw["E"].norm(dim=-1).mean() / raw["H"].norm(dim=-1).mean()).detach())
    assert ratio > 2.5  # the imbalance the option is for
    msgs = normed.edge_messages(x_j, edge_type)
    for name in ("E", "H", "S"):
        m = msgs[name].double()
        torch.testing.assert_close(m.mean(-1), torch.zeros(40, dtype=torch.float64),
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(m.var(-1, unbiased=False),
                                   torch.ones(40, dtype=torch.float64), atol=1e-3, rtol=0)
        ref = (raw[name] - raw[name].mean(-1, keepdim=True)) / \
            (raw[name].var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
        torch.testing.assert_close(msgs[name], ref, atol=1e-5, rtol=1e-5)
    out = normed(x, edge_index, edge_type)
    cat = torch.cat([msgs["E"], msgs["H"], msgs["S"]], dim=-1)
    for i in range(9):
        incoming = edge_index[1] == i
        mean = cat[incoming].mean(0) if incoming.any() else torch.zeros(48)
        torch.testing.assert_close(out[i], torch.tanh(normed.lin.weight @ mean),
                                   atol=1e-5, rtol=1e-5)
    assert rel_err(out, plain(x, edge_index, edge_type)) > 0.05
    out.square().sum().backward()  # the curvatures still learn through the norm
    for m in normed.manifolds.values():
        assert m.raw_k.grad is not None and abs(float(m.raw_k.grad)) > 1e-8


def test_message_norm_makes_clipped_edges_curvature_free():
    """The documented caveat: an edge beyond the chart is rescaled to the chart radius, so
    its curved message is |k|^(-1/2) times a curvature-free function; message_norm removes
    that factor, and the curvature no longer changes the message. Inside the chart it
    does."""
    edge_index, edge_type = tiny_kg(num_nodes=9, num_edges=40)
    g = torch.Generator().manual_seed(4)
    big = torch.randn(40, 16, generator=g) * 3.0     # norm ~12: every edge clipped
    small = big / big.norm(dim=-1, keepdim=True) * 0.8  # inside both charts
    msgs = {}
    for k1, k2 in ((-1.0, 1.0), (-0.4, 2.5)):
        conv = GeometryMoEConv(16, num_relations=3, message_norm=True,
                               init_curvature=(k1, k2))
        conv.relation.weight.data.copy_(torch.ones(3, 16) * 1.1)
        torch.nn.init.normal_(conv.translation.weight, std=0.02,
                              generator=torch.Generator().manual_seed(5))
        msgs[k1] = (conv.edge_messages(big, edge_type), conv.edge_messages(small, edge_type))
    for name in ("H", "S"):
        torch.testing.assert_close(msgs[-1.0][0][name], msgs[-0.4][0][name],
                                   atol=2e-4, rtol=1e-4)
        assert rel_err(msgs[-1.0][1][name], msgs[-0.4][1][name]) > 0.02


@pytest.mark.parametrize("variant,message_norm", [("mobius_add", False), ("mobius_add", True),
                                                  ("paper", False)])
def test_per_relation_forward_is_the_sum_of_per_relation_calls(variant, message_norm):
    """One pass with per-relation means equals R message-passing calls summed (same
    messages, same per-slot summation order); nodes without edges of a relation and
    relations absent from the edges contribute nothing. Equal up to float32 round-off: W_m
    as one matmul over [*, N, R, m] and as R matmuls over [*, N, m] round alike on some CPUs
    (bit-identical on the AVX2 machines of sessions 1-12) but not on AVX-512 ones."""
    torch.manual_seed(3)
    conv = GeometryMoEConv(6, 4, num_relations=5, variant=variant, act="tanh", bias=True,
                           message_norm=message_norm)
    x = 0.5 * torch.randn(2, 9, 6)                               # batched [B, N, d]
    edge_index = torch.randint(0, 8, (2, 30))                    # node 8 receives nothing
    edge_type = torch.randint(0, 4, (30,))                       # relation 4 never occurs
    want = torch.zeros(2, 9, 4)
    for r in torch.unique(edge_type).tolist():
        sel = edge_type == r
        has_r = torch.zeros(9, 1, dtype=torch.bool)
        has_r[edge_index[1, sel]] = True
        want = want + torch.where(has_r, conv(x, edge_index[:, sel], edge_type[sel]), 0.0)
    got = conv(x, edge_index, edge_type, per_relation=True)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    # even with a bias, a node without edges of a relation gets nothing from it (it got
    # act(bias) from every relation present anywhere in the batch)
    assert got[:, 8].eq(0).all()
    assert not torch.allclose(got, conv(x, edge_index, edge_type), atol=1e-3)


@pytest.mark.parametrize("act,bias", [("tanh", True), (torch.sigmoid, False)])
def test_per_relation_output_does_not_depend_on_the_batch(act, bias):
    """Graph A's output changed once graph B (another relation) joined its batch: every
    node got act(lin(0)) from each relation present anywhere in the batch."""
    torch.manual_seed(0)
    conv = GeometryMoEConv(4, num_relations=2, act=act, bias=bias)
    xa, xb = torch.randn(2, 4), torch.randn(2, 4)
    ei = torch.tensor([[0], [1]])
    alone = conv(xa, ei, torch.tensor([0]), per_relation=True)
    batched = conv(torch.cat([xa, xb]), torch.cat([ei, ei + 2], 1), torch.tensor([0, 1]),
                   per_relation=True)
    assert torch.equal(batched[:2], alone)


@pytest.mark.parametrize("expert", ["H", "S"])
@pytest.mark.parametrize("variant", ["mobius_add", "paper"])
def test_curved_experts_have_true_gradients_at_zero_rows(expert, variant):
    """geoopt's r (x)_k has a zero derivative where r * t = 0, so an all-zero tail
    embedding (a ReLU output, zero padding) or relation row got a zero gradient; and its
    log0 at exactly 0 (the paper variant's message of such a row) is 5 % off at k = -1."""
    torch.manual_seed(1)
    conv = GeometryMoEConv(3, num_relations=2, experts=(expert,), act="identity",
                           variant=variant).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    x[0] = 0.0
    ei, et = torch.tensor([[0, 2, 0], [1, 3, 3]]), torch.tensor([0, 1, 1])
    assert torch.autograd.gradcheck(lambda v: conv(v, ei, et), (x.requires_grad_(),))
    rel = conv.relation.weight.detach().clone()
    rel[1] = 0.0
    assert torch.autograd.gradcheck(lambda r: conv(x.detach(), ei, et, relation=r),
                                    (rel.requires_grad_(),))


def test_reset_parameters_resets_curvatures_and_frozen_curvatures_stay_frozen():
    conv = GeometryMoEConv(6, num_relations=3, init_curvature=(-0.5, 2.0))
    with torch.no_grad():
        for m in conv.manifolds.values():
            m.raw_k += 3.0
    conv.reset_parameters()
    assert {k: round(float(v.detach()), 6) for k, v in conv.curvatures.items()} == \
        {"H": -0.5, "S": 2.0}
    frozen = GeometryMoEConv(6, num_relations=3, learn_curvature=False)
    frozen.requires_grad_(True)                     # e.g. unfreezing a whole model
    assert all(not m.raw_k.requires_grad for m in frozen.manifolds.values())
    assert "raw_k" not in "".join(n for n, _ in frozen.named_parameters())
    assert sorted(frozen.state_dict()) == sorted(conv.state_dict())   # same keys


def test_architecture_fingerprint_ignores_the_learnt_curvature():
    """The fingerprint read the live curvature from the manifold's repr, so a KGDiff that
    had trained refused its own checkpoint ('belongs to a different run')."""
    from torch_stgen.train.checkpoint import architecture_fingerprint
    conv = GeometryMoEConv(6, num_relations=3)
    before = architecture_fingerprint(conv)
    with torch.no_grad():
        conv.manifolds["H"].raw_k += 1.0
    assert architecture_fingerprint(conv) == before
    assert "k_H=-1.74" in repr(conv)              # the repr still shows the learnt value
    other = GeometryMoEConv(6, num_relations=3, init_curvature=(-2.0, 1.0))
    assert architecture_fingerprint(other) != before


def test_identity_activation_pickles_and_int32_ids_are_accepted(tmp_path):
    import io
    import pickle
    conv = GeometryMoEConv(6, 4, num_relations=3, act="identity")
    clone = pickle.loads(pickle.dumps(conv))
    buf = io.BytesIO()
    torch.save(conv, buf)
    x = torch.randn(5, 6)
    ei, et = torch.randint(0, 5, (2, 9)), torch.randint(0, 3, (9,))
    assert torch.equal(clone(x, ei, et), conv(x, ei, et))
    for per_relation in (False, True):
        assert torch.equal(conv(x, ei.int(), et.int(), per_relation=per_relation),
                           conv(x, ei, et, per_relation=per_relation))
    with pytest.raises(TypeError, match="'edge_index' must be an integer tensor"):
        conv(x, ei.float(), et)


def test_a_manifold_pickled_without_the_new_attributes_still_works():
    """A module saved whole before the curvature settings were stored lost repr,
    reset_parameters and its fingerprint after loading."""
    import pickle
    conv = GeometryMoEConv(6, num_relations=3, init_curvature=(-0.5, 2.0))
    for m in conv.manifolds.values():
        for attr in ("learnable", "_raw_init", "_k_init"):
            del m.__dict__[attr]                     # the state an old pickle carries
    old = pickle.loads(pickle.dumps(conv))
    assert "k_H=-0.5" in repr(old)
    with torch.no_grad():
        old.manifolds["S"].raw_k += 1.0
    old.reset_parameters()
    assert round(float(old.curvatures["S"].detach()), 6) == 2.0
