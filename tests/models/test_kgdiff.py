"""KGDiff (torch_stgen.models.kgdiff) and its deterministic baselines
(torch_stgen.models.kg_baselines), on tiny KGs built here."""
import math

import pytest
import torch

from torch_stgen.data import UrbanKG
from torch_stgen.models.kg_baselines import (GlobalMeanProfile, NearestNeighbourProfile,
                                             node_profiles)
from torch_stgen.models.kgdiff import KGDiff
from torch_stgen.nn.geometry_moe import GeometryMoEConv


def tiny_kg(n_per_class=6, n_unseen=2):
    """Nodes ``s<i>`` linked to one of two class entities (+ a ring of 'near' links)."""
    triples, nodes = [], []
    n = 2 * (n_per_class + n_unseen)
    for i in range(n):
        cls = "class_a" if i % 2 == 0 else "class_b"
        triples.append((f"s{i}", "is_a", cls))
        triples.append((f"s{i}", "near", f"s{(i + 1) % n}"))
        nodes.append(f"s{i}")
    triples.append(("poi_0", "in", "class_a"))  # an entity that is not a node
    kg = UrbanKG.from_triples(triples, name="tiny")
    kg.set_node_entities(nodes)
    return kg


def make(kg=None, length=16, stride=4, window=4, **kw):
    kg = kg or tiny_kg()
    torch.manual_seed(0)
    emb = torch.randn(kg.num_entities, 8)
    opts = dict(dim=8, model_channels=8, channel_mult=(1, 2))
    opts.update(kw)
    return KGDiff(kg, emb, length, stride, window, **opts)


def test_repr_and_ablation_switches():
    m = make()
    assert "length=16, stride=4, window=4" in str(m) and "meta_pattern=True" in str(m)
    moe = [l for l in m.encoder.layers if isinstance(l, GeometryMoEConv)]
    assert len(moe) == 2 and moe[0].experts == ("E", "H", "S")
    assert m.precond.raw_net.unet.cond_dim == 8
    assert make(experts=("E", "S")).encoder.layers[0].experts == ("E", "S")
    assert make(variant="paper").encoder.layers[0].variant == "paper"
    no_moe = make(geometry_moe=False)
    assert len(no_moe.encoder.layers) == 0 and no_moe.pattern_head is not None
    no_meta = make(meta_pattern=False)
    assert no_meta.pattern_head is None and no_meta.diffusion.aux_weight == 0.0
    uncond = make(guidance=False)
    assert uncond.encoder is None and uncond.pattern_head is None
    assert uncond.precond.raw_net.unet.cond_dim == 0
    assert uncond.guidance(torch.tensor([0, 1])) is None


def test_bad_inputs_name_the_argument():
    kg = tiny_kg()
    with pytest.raises(ValueError, match="'entity_embedding' must have shape"):
        KGDiff(kg, torch.randn(3, 8), 16, 4, 4)
    with pytest.raises(ValueError, match="'experts'"):
        make(experts=("E", "X"))
    with pytest.raises(ValueError, match="cannot cover"):
        make(length=40, stride=4, window=4)
    m = make().set_scaler(0.0, 1.0)
    with pytest.raises(ValueError, match=r"'x' must have shape \[B, L=16\]"):
        m.loss(torch.zeros(2, 15), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="'nodes' must be node indices in"):
        m.generate(torch.tensor([99]))
    with pytest.raises(KeyError, match="nowhere"):
        m.generate(["nowhere"])
    with pytest.raises(ValueError, match="'sampler'"):
        m.generate([0], sampler="euler")
    with pytest.raises(RuntimeError, match="set_scaler"):
        make().loss(torch.zeros(2, 16), torch.tensor([0, 1]))


def test_loss_backpropagates_into_embeddings_moe_and_pattern():
    m = make(finetune_embedding=True).set_scaler(5.0, 2.0)
    x = 5.0 + 2.0 * torch.randn(6, 16)
    mask = torch.ones(6, 16)
    mask[0, :8] = 0
    # the U-Net output and the pattern head start at zero (no gradient to the guidance
    # yet): a few joint steps first
    m.fit(x, torch.arange(6), mask, steps=3, batch_size=6, progress=False)
    loss, diff, pat = m.loss(x, torch.arange(6), mask, return_parts=True,
                             generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and torch.allclose(loss, diff + pat)
    loss.backward()
    enc = m.encoder
    assert enc.entity.grad is not None and enc.entity.grad.abs().sum() > 0   # joint fine-tuning
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in enc.layers[0].parameters())
    head_w = m.pattern_head.net[-1].weight
    assert head_w.grad is not None and head_w.grad.abs().sum() > 0


@pytest.mark.parametrize("garbage", [1e6, float("nan")])
def test_missing_values_do_not_change_the_loss(garbage):
    m = make().set_scaler(0.0, 1.0)
    x = torch.randn(4, 16)
    mask = torch.ones(4, 16)
    mask[:, 3] = 0
    y = x.clone()
    y[:, 3] = garbage                                  # garbage under mask 0
    g1, g2 = (torch.Generator().manual_seed(1) for _ in range(2))
    a = m.loss(x, torch.arange(4), mask, generator=g1)
    b = m.loss(y, torch.arange(4), mask, generator=g2)
    assert torch.isfinite(b) and torch.allclose(a, b)


def test_nan_at_missing_entries_trains_exactly_as_zeros():
    """sigma_data, the scaler and every training loss ignore what a missing entry holds."""
    x, nodes = two_level_series()
    mask = torch.ones_like(x)
    mask[::3, 5:9] = 0
    runs = []
    for fill in (0.0, float("nan")):
        m = make()
        hist = m.fit(torch.where(mask > 0, x, torch.full_like(x, fill)), nodes, mask,
                     steps=3, batch_size=8, progress=False)["loss"]
        runs.append((m.precond.sigma_data, float(m.scale_mean), hist))
    assert all(math.isfinite(v) for v in runs[1][2])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("sampler,steps", [("edm", 100), ("ddpm", None), ("ddim", 50)])
def test_samplers_reproduce_the_gaussian_the_fresh_model_denoises_optimally(sampler, steps):
    # a fresh model has F = 0 (zero-initialised U-Net output) and f = 0, so its denoiser is
    # D(y; s) = c_skip(s) y = s_d^2 / (s^2 + s_d^2) y: the exact posterior mean for
    # y ~ N(0, s_d^2). Every correct sampler must then return N(mean, (s_d * std)^2)
    # values (U = V: no overlapping windows, every step is one image entry). EDM Heun needs
    # many steps here: with N = 18 its error on this ODE is 5.5% (0.14% with N = 100).
    m = make(sigma_data=0.5).set_scaler(10.0, 2.0)
    out = m.generate(torch.arange(4), num_samples=50, sampler=sampler, num_steps=steps,
                     seed=3)
    assert out.shape == (50, 4, 16)
    assert abs(float(out.mean()) - 10.0) < 0.05
    assert float(out.std()) == pytest.approx(0.5 * 2.0, rel=0.04)


def test_edm_generation_matches_the_closed_form_ode_solution():
    # with D = c_skip y the probability-flow ODE dy/ds = s y / (s^2 + s_d^2) has the
    # solution y(s) / sqrt(s^2 + s_d^2) = const, so y(0) = eps s_max s_d / sqrt(s_max^2 + s_d^2)
    m = make(sigma_data=0.5).set_scaler(1.0, 3.0)
    out = m.generate(torch.tensor([0, 1, 2]), num_samples=2, num_steps=100, seed=7)
    gen = torch.Generator().manual_seed(7)
    eps = torch.randn(6, 1, 4, 4, generator=gen)
    y0 = eps * 80.0 * 0.5 / math.sqrt(80.0 ** 2 + 0.25)
    want = m.delay.inverse(y0[:, 0]).reshape(2, 3, 16) * 3.0 + 1.0
    assert torch.allclose(out, want, atol=1e-2)          # Heun error 0.14% at N = 100
    assert not torch.allclose(out, want, atol=1e-5)      # ... but not zero: a real ODE solve


def test_generate_any_kg_entity_and_batching_is_consistent():
    m = make().set_scaler(0.0, 1.0)
    by_index = m.generate(torch.tensor([0, 3]), num_samples=3, num_steps=4, seed=1)
    by_name = m.generate(["s0", "s3"], num_samples=3, num_steps=4, seed=1)
    small = m.generate(torch.tensor([0, 3]), num_samples=3, num_steps=4, seed=1, batch_size=2)
    assert torch.allclose(by_index, by_name) and torch.allclose(by_index, small, atol=1e-5)
    poi = m.generate(["poi_0"], num_samples=2, num_steps=4)        # not a spatio-temporal node
    assert poi.shape == (2, 1, 16) and torch.isfinite(poi).all()


def test_unseen_nodes_get_their_class_pattern_from_the_kg():
    # class_a nodes run at +1, class_b nodes at -1 (all steps); every node has the same
    # (frozen) embedding, so only the KG messages (is_a class, near neighbour) tell them
    # apart. Train on 12 nodes; the meta pattern of 4 held-out nodes must follow their class.
    kg = tiny_kg(n_per_class=6, n_unseen=2)
    train = torch.arange(12)
    unseen = torch.arange(12, 16)
    level = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(16)])
    torch.manual_seed(0)
    emb = torch.randn(kg.num_entities, 8)
    emb[kg.node2entity] = emb[kg.node2entity[0]].clone()
    m = KGDiff(kg, emb, 16, 4, 4, dim=8, model_channels=8, num_moe_layers=1)
    assert not m.encoder.entity.requires_grad            # frozen by default
    x = level[train].repeat(4).unsqueeze(1) + 0.1 * torch.randn(48, 16)
    hist = m.fit(x, train.repeat(4), steps=60, batch_size=24, lr=1e-2, progress=False)
    assert sum(hist["loss"][-20:]) < sum(hist["loss"][:20])
    f = m.pattern(unseen).mean(1)                       # original units
    sign = level[unseen]
    assert bool(((f * sign) > 0.5).all()), f


def test_global_mean_and_knn_baselines():
    prof = torch.tensor([[1.0, 1.0], [3.0, 3.0], [10.0, 10.0], [12.0, 12.0]])
    lat = torch.tensor([0.0, 0.01, 1.0, 1.01])
    lon = torch.zeros(4)
    g = GlobalMeanProfile().fit(prof)
    assert torch.allclose(g.generate(2, 3), torch.full((3, 2, 2), 6.5))
    knn = NearestNeighbourProfile(k=2).fit(prof, lat, lon)
    assert torch.allclose(knn.predict(torch.tensor([1.02]), torch.tensor([0.0])),
                          torch.tensor([[11.0, 11.0]]))
    # tuning on validation node 3 (predicted from 0..2): k=1 -> 10 (err 2), k=2 -> 6.5, ...
    tuned = NearestNeighbourProfile().tune(prof, lat, lon, torch.tensor([3]),
                                          candidates=(1, 2, 3))
    assert tuned.k == 1 and tuned.validation == pytest.approx({1: 2.0, 2: 5.5, 3: 7.3333},
                                                              abs=1e-3)
    assert tuned.profiles.shape[0] == 4                 # refitted on all training nodes
    with pytest.raises(ValueError, match="'val_idx'"):
        NearestNeighbourProfile().tune(prof, lat, lon, torch.arange(4))


def test_node_profiles_use_observed_values_only():
    v = torch.tensor([[[1.0, 2.0]], [[3.0, 100.0]]])     # [D=2, N=1, L=2]
    m = torch.tensor([[[1.0, 1.0]], [[1.0, 0.0]]])
    assert torch.allclose(node_profiles(v, m), torch.tensor([[2.0, 2.0]]))
    with pytest.raises(ValueError, match=r"'values' must have shape \[D, N, L\]"):
        node_profiles(torch.ones(2, 2))


@pytest.mark.parametrize("aggregation", ["mean", "relation"])
def test_receptive_field_pruning_gives_the_same_guidance(aggregation):
    m = make(aggregation=aggregation)
    full = m.entity_guidance()
    targets = m.node2entity[torch.tensor([0, 5])]
    pruned = m.entity_guidance(targets=targets)
    assert torch.allclose(full[targets], pruned[targets], atol=1e-6)
    assert not torch.allclose(full, pruned)             # other rows were skipped


def two_level_series():
    """Two nodes at levels 10 and 20 (+ N(0, 1)), 40 days of 16 steps each: standardised
    std ~ 5.1, residual std ~ 1."""
    torch.manual_seed(0)
    x = torch.cat([torch.full((40, 16), 10.0), torch.full((40, 16), 20.0)])
    return x + torch.randn_like(x), torch.cat([torch.zeros(40), torch.ones(40)]).long()


def test_fit_sets_scaler_and_residual_sigma_data():
    x, nodes = two_level_series()
    m = make()
    m.fit(x, nodes, steps=1, batch_size=4, progress=False)
    assert float(m.scale_mean) == pytest.approx(float(x.mean()))
    assert float(m.scale_std) == pytest.approx(float(x.std()))
    assert m.precond.sigma_data == pytest.approx(1.0 / float(x.std()), rel=0.05)
    fixed = make(meta_pattern=False)
    fixed.fit(x, nodes, steps=1, batch_size=4, progress=False)
    assert fixed.precond.sigma_data == 1.0


def test_sigma_data_target_rule_measures_the_shrunk_target():
    """With pattern_shrink = 0.5 the diffusion's target is z - 0.5 * f, f ~ the node's mean
    day; the only measure fit() had was the spread around the mean day (the lambda = 1
    target), about 0.2 here against 0.53 for the actual target."""
    x, nodes = two_level_series()
    z = (x - x.mean()) / x.std()
    node_mean = torch.stack([z[nodes == k].mean(0) for k in (0, 1)])[nodes]
    for rule, shrink in (("target", 0.5), ("node-residual", 1.0)):
        m = make(sigma_data=rule, pattern_shrink=0.5)
        m.fit(x, nodes, steps=1, batch_size=4, progress=False)
        expected = float((z - shrink * node_mean).pow(2).mean().sqrt())
        assert m.precond.sigma_data == pytest.approx(expected, rel=1e-4), rule
    assert make().sigma_data_rule == "node-residual"                 # the default
    full = make(sigma_data="target", pattern_shrink=1.0)
    full.fit(x, nodes, steps=1, batch_size=4, progress=False)
    assert full.precond.sigma_data == pytest.approx(1.0 / float(x.std()), rel=0.05)
    plain = make(sigma_data="target", meta_pattern=False)
    plain.fit(x, nodes, steps=1, batch_size=4, progress=False)
    assert plain.precond.sigma_data == 1.0
    fixed = make(sigma_data=0.3)
    fixed.fit(x, nodes, steps=1, batch_size=4, progress=False)
    assert fixed.precond.sigma_data == 0.3 and fixed.sigma_data_rule is None
    for bad in ("residual", -1.0, 0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="'sigma_data' must be a positive number or one "
                                             "of"):
            make(sigma_data=bad)


def test_imagentime_delay_layout_trains_and_generates():
    x, nodes = two_level_series()
    m = make(stride=2, window=8, delay_layout="imagentime", delay_inverse="last")
    # L=16, U=2, V=8: 5 windows inside the series and a shorter one at 10, then zeros
    assert m.delay.image_mask.any(0).tolist() == [True] * 6 + [False] * 2
    m.fit(x, nodes, steps=2, batch_size=4, progress=False)
    out = m.generate(torch.arange(2), num_samples=3, seed=0)
    assert out.shape == (3, 2, 16) and bool(torch.isfinite(out).all())
    with pytest.raises(ValueError, match="'layout' must be one of"):
        make(delay_layout="full")


def test_a_trained_model_reruns_its_own_checkpoint(tmp_path):
    """The architecture fingerprint held the learnt curvatures, so re-running fit() on the
    same object (a notebook cell run twice) refused its own checkpoint."""
    x, nodes = two_level_series()
    m = make()
    ck = tmp_path / "kg.pt"
    kw = dict(steps=3, batch_size=4, lr=0.05, progress=False, checkpoint=ck)
    first = m.fit(x, nodes, **kw)["loss"]
    assert f"{m.encoder.layers[0].curvatures['H'].item():.4g}" != "-1"     # trained
    again = m.fit(x, nodes, **kw)["loss"]
    assert again == first                                   # the finished run, reloaded


def test_a_float64_model_is_refused_by_name():
    """After .double(), fit trained in float64 but generate returned float32 samples."""
    x, nodes = two_level_series()
    m = make().double()
    for call in (lambda: m.fit(x, nodes, steps=1, batch_size=4, progress=False),
                 lambda: m.loss(x[:4], nodes[:4]),
                 lambda: m.generate(torch.arange(2), num_samples=1, seed=0)):
        with pytest.raises(TypeError, match="KGDiff runs in float32, but its parameters are "
                                            "torch.float64"):
            call()


def test_sigma_data_setting_is_part_of_the_architecture_and_takes_any_real():
    """A 'target' model resumed a default run's checkpoint silently (the rule was not in
    the fingerprint); numpy / 0-d tensor values were refused once the rules came in."""
    import numpy as np
    from torch_stgen.train.checkpoint import architecture_fingerprint
    base = architecture_fingerprint(make())
    assert architecture_fingerprint(make(sigma_data="node-residual")) == base
    assert architecture_fingerprint(make(sigma_data="target")) != base
    assert architecture_fingerprint(make(sigma_data=0.3)) not in (
        base, architecture_fingerprint(make(sigma_data=0.4)))
    for value in (np.float32(0.25), torch.tensor(0.25), 1):
        assert make(sigma_data=value).precond.sigma_data == pytest.approx(float(value))


def test_a_partly_float64_model_is_refused_too():
    x, nodes = two_level_series()
    m = make()
    m.precond.double()
    with pytest.raises(TypeError, match="KGDiff runs in float32"):
        m.fit(x, nodes, steps=1, batch_size=4, progress=False)


def test_relation_aggregation_is_the_sum_of_per_relation_layers():
    m = make(num_moe_layers=1)
    assert m.aggregation == "relation"                  # the default
    enc = m.encoder
    phi = m.entity_guidance()                 # first pass: initialises the input scale
    h0 = enc.in_proj(enc.entity)
    x0 = h0 * enc.input_scales[0]             # moe_input_scale (default): the layer input
    want = h0.clone()
    for r in range(m.edge_type.max().item() + 1):
        sel = m.edge_type == r
        want = want + enc.layers[0](x0, m.edge_index[:, sel], m.edge_type[sel])
    assert torch.allclose(phi, enc.norm(want), atol=1e-6)
    mean = make(num_moe_layers=1, aggregation="mean")
    assert not torch.allclose(mean.entity_guidance(), m.entity_guidance(), atol=1e-3)
    with pytest.raises(ValueError, match="'aggregation'"):
        make(aggregation="max")


def test_pattern_shrink_centres_the_diffusion_on_a_shrunk_pattern():
    """pattern_shrink = lambda: the diffusion is centred on lambda * f (training and
    sampling) while the pattern term keeps fitting the unscaled f; the default is
    lambda = 0.5, bit for bit."""
    x = 5.0 + 2.0 * torch.randn(6, 16)
    nodes = torch.arange(6)
    base = make().set_scaler(5.0, 2.0)
    base.fit(x, nodes, steps=3, batch_size=6, progress=False)
    with torch.no_grad():                                          # a clearly non-zero f
        base.pattern_head.net[-1].weight.normal_(0.0, 0.5)
        base.pattern_head.net[-1].bias.normal_(0.0, 0.5)
    state = base.state_dict()
    parts = {}
    for lam in (1.0, 0.5):
        m = make(pattern_shrink=lam).set_scaler(5.0, 2.0)
        m.load_state_dict(state)
        m.eval()
        parts[lam] = m.loss(x, nodes, return_parts=True,
                            generator=torch.Generator().manual_seed(0))
        # the sampler is centred on lambda * f (standardised units)
        centres = []
        sample = m.diffusion.edm_sample

        def spy(denoiser, f_img, latents, **kw):
            centres.append(f_img.clone())
            return sample(denoiser, f_img, latents, **kw)

        m.diffusion.edm_sample = spy
        m.generate(nodes[:2], num_samples=1, num_steps=2, seed=0)
        f_std = (m.pattern(nodes[:2]) - 5.0) / 2.0
        expected = m.delay(lam * f_std).unsqueeze(1)
        assert f_std.abs().max() > 0.1
        torch.testing.assert_close(centres[0], expected)
    ref = make().set_scaler(5.0, 2.0)
    ref.load_state_dict(state)
    ref.precond.sigma_data = base.precond.sigma_data
    ref.eval()
    default = ref.loss(x, nodes, return_parts=True, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(default, parts[0.5]))  # default 0.5
    assert torch.allclose(parts[0.5][2], parts[1.0][2])               # same pattern term
    assert not torch.allclose(parts[0.5][1], parts[1.0][1])           # other residual
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="'pattern_shrink'"):
            make(pattern_shrink=bad)


def test_message_norm_reaches_every_geometry_moe_layer():
    """message_norm=True (the default) turns on GeometryMoEConv's per-expert message
    normalisation in every layer (and changes the guidance); it is meaningless (off)
    without the Geometry MoE."""
    base = make(message_norm=False)
    assert not base.message_norm and "message_norm" not in repr(base)
    assert all(not layer.message_norm for layer in base.encoder.layers)
    assert make().message_norm                                    # on by default
    normed = make(message_norm=True)
    assert normed.message_norm and "message_norm=True" in repr(normed)
    assert len(normed.encoder.layers) == 2
    assert all(layer.message_norm for layer in normed.encoder.layers)
    normed.load_state_dict(base.state_dict())
    assert not torch.allclose(normed.entity_guidance(), base.entity_guidance(), atol=1e-3)
    assert not make(geometry_moe=False, message_norm=True).message_norm


def test_moe_input_scale_sets_unit_mean_norm_once():
    """moe_input_scale (default): each Geometry MoE layer sees s_l h with the constant s_l
    set at the first forward pass so that the mean entity norm is 1 (ActNorm-style
    initialisation), then kept (not re-estimated, not trained) and saved in the state
    dict; off, the layer sees h itself."""
    m = make()
    enc = m.encoder
    assert m.moe_input_scale and "moe_input_scale=True" in repr(m)
    assert not enc.scales_set and torch.equal(enc.input_scales, torch.zeros(2))
    seen = []
    hooks = [layer.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
             for layer in enc.layers]
    m.entity_guidance()
    assert enc.scales_set
    first = seen[0]                                    # layer 0, relation 0: all entities
    assert first.norm(dim=-1).mean().item() == pytest.approx(1.0, rel=1e-5)
    h0 = enc.in_proj(enc.entity).detach()
    raw = h0.norm(dim=-1).mean().item()
    assert abs(raw - 1.0) > 0.3                         # the raw scale it corrects
    assert enc.input_scales[0].item() == pytest.approx(1.0 / raw, rel=1e-5)
    scale = enc.input_scales.clone()
    state = m.state_dict()
    assert "encoder.input_scales" in state and bool((state["encoder.input_scales"] > 0).all())
    fresh = make()
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.entity_guidance(), m.entity_guidance())
    assert "input_scales" not in dict(m.named_parameters())
    x = 5.0 + 2.0 * torch.randn(6, 16)
    m.set_scaler(5.0, 2.0).fit(x, torch.arange(6), steps=3, batch_size=6, progress=False)
    assert torch.equal(enc.input_scales, scale)        # kept through training
    for h in hooks:
        h.remove()
    off = make(moe_input_scale=False)
    assert not off.moe_input_scale and not hasattr(off.encoder, "input_scales")
    seen.clear()
    off.encoder.layers[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    off.entity_guidance()
    torch.testing.assert_close(seen[0], off.encoder.in_proj(off.encoder.entity))
    assert not make(geometry_moe=False).moe_input_scale


def test_moe_input_scale_comes_from_a_full_pass_even_when_targets_come_first():
    """The first call of fit's loss asks for the guidance of a batch's entities only; the
    input scales must still be those of the full pass over all edges."""
    full, part = make(), make()
    part.load_state_dict(full.state_dict())
    full.entity_guidance()
    part.entity_guidance(targets=part.node2entity[:2])
    torch.testing.assert_close(part.encoder.input_scales, full.encoder.input_scales)
    torch.testing.assert_close(part.entity_guidance(), full.entity_guidance())


def test_state_dict_carries_the_fitted_sigma_data():
    """sigma_data=None fits sigma_d from the data; a model reloaded from state_dict() must
    precondition, and so generate, exactly as the trained one (it used to fall back to the
    default 0.5 and generate different series)."""
    x, nodes = two_level_series()
    trained = make()
    trained.fit(x, nodes, steps=3, batch_size=4, progress=False)
    assert trained.precond.sigma_data != 0.5                         # fitted, not the default
    state = trained.state_dict()
    assert state["precond._extra_state"] == {"sigma_data": trained.precond.sigma_data}
    fresh = make()
    fresh.load_state_dict(state)
    fresh.eval()
    assert fresh.precond.sigma_data == trained.precond.sigma_data
    a = trained.generate(torch.arange(4), num_samples=2, seed=1)
    b = fresh.generate(torch.arange(4), num_samples=2, seed=1)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a state dict written before sigma_data was saved: loads, warns, keeps the value
    legacy = {k: v for k, v in state.items() if k != "precond._extra_state"}
    old = make()
    with pytest.warns(UserWarning, match="keeping sigma_data=0.5"):
        old.load_state_dict(legacy)
    assert old.precond.sigma_data == 0.5


# ------------------------------------------------------------ the user's conditioners
def _rain_conditioner(record=None):
    from torch_stgen.nn import Conditioner

    class Rain(Conditioner):
        """The day's rain flag as a vector (a user-written conditioner)."""
        vector_dim = 4

        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(2, self.vector_dim)

        def forward(self, batch):
            if record is not None:
                record.append({k: v.clone() for k, v in batch.items()})
            return {"vector": self.embed(batch["rain"].long() % 2)}
    return Rain()


def test_a_user_conditioner_steers_generation():
    # every node runs at 0 on dry days and at +3 on rainy days, and every node sees both
    # kinds of day; the unconditional model (no KG guidance) can only learn this through
    # the rain conditioner
    torch.manual_seed(0)
    nodes = torch.arange(12).repeat(8)
    rain = (torch.arange(96) // 12 % 2).double()       # float64, as from numpy
    x = 3.0 * rain[:, None].float() + 0.2 * torch.randn(96, 16)
    m = make(guidance=False, conditioners=[_rain_conditioner()])
    assert m.precond.raw_net.unet.cond_dim == 4          # the rain vector alone
    m.fit(x, nodes, steps=150, batch_size=32, lr=5e-3, progress=False,
          inputs={"rain": rain})
    unseen = torch.tensor([12, 13, 14])
    days = {flag: m.generate(unseen, num_samples=6, num_steps=8, seed=0,
                             inputs={"rain": torch.full((6, 3), float(flag))})
            for flag in (0, 1)}
    gap = float((days[1] - days[0]).mean())
    assert 2.0 < gap < 4.0, gap
    assert abs(float(days[0].mean())) < 1.0


def test_the_conditioner_batch_holds_the_inputs_and_the_entity():
    seen = []
    m = make(conditioners=_rain_conditioner(seen))
    assert m.precond.raw_net.unet.cond_dim == 8 + 4        # [phi; rain vector]
    nodes = torch.arange(6).repeat(3)
    tag = torch.arange(18, dtype=torch.float64)             # one value per training row
    m.fit(torch.randn(18, 16), nodes, steps=3, batch_size=5, progress=False,
          inputs={"rain": tag})
    for batch in seen:                                      # each row its own series' tag
        assert sorted(batch) == ["entity", "rain"] and batch["rain"].dtype == torch.float32
        rows = batch["rain"].long()
        assert torch.equal(batch["entity"], m.node2entity[nodes[rows]])
    assert len(seen) == 3
    seen.clear()
    S, gen_nodes = 3, torch.tensor([5, 3, 4])
    tags = torch.arange(S * 3, dtype=torch.float32).reshape(S, 3)   # [num_samples, n]
    out = m.generate(gen_nodes, num_samples=S, num_steps=2, batch_size=4,
                     inputs={"rain": tags}, sampler="ddim")
    assert out.shape == (S, 3, 16) and [len(b["rain"]) for b in seen] == [4, 4, 1]
    # every batch, in sample-major order s * n + j, pairs sample s of node j with tags[s, j]
    assert torch.cat([b["rain"] for b in seen]).tolist() == tags.reshape(-1).tolist()
    assert torch.equal(torch.cat([b["entity"] for b in seen]),
                       m.node2entity[gen_nodes].repeat(S))


def test_conditioner_misuse_is_refused_by_name(tmp_path):
    from torch_stgen.nn import ObservedMapConditioner
    with pytest.raises(ValueError, match="only a 'vector'.*ObservedMapConditioner"):
        make(conditioners=[ObservedMapConditioner(channels=1)])
    with pytest.raises(TypeError, match="'conditioners' must be"):
        make(conditioners=[torch.nn.Linear(2, 2)])
    x, nodes = torch.randn(12, 16), torch.arange(12)
    with pytest.raises(ValueError, match="no conditioners to read them"):
        make().fit(x, nodes, steps=1, progress=False, inputs={"rain": torch.zeros(12)})
    m = make(conditioners=_rain_conditioner())
    with pytest.raises(ValueError, match=r"'inputs\['rain'\]' must be a tensor \[S, "
                                         r"...\] with \[S\] = \[12\]"):
        m.fit(x, nodes, steps=1, progress=False, inputs={"rain": torch.zeros(11)})
    with pytest.raises(ValueError, match="'entity' is a built-in batch key"):
        m.fit(x, nodes, steps=1, progress=False, inputs={"entity": torch.zeros(12)})
    with pytest.raises(KeyError, match="Rain reads batch key 'rain'.*KGDiff: inputs"):
        m.fit(x, nodes, steps=1, progress=False)
    m.train()
    with pytest.raises(ValueError, match=r"\[num_samples, n\] = \[2, 3\]"):
        m.generate(torch.arange(3), num_samples=2, inputs={"rain": torch.zeros(3)})
    with pytest.raises(KeyError, match="Rain reads batch key 'rain'"):
        m.generate(torch.arange(3), num_samples=2, num_steps=2)
    assert m.training                              # a refused call leaves the mode as it was
    # a checkpoint records the inputs' contents: other inputs (even of the same sum) are
    # another run
    path = tmp_path / "kg.pt"
    flags = torch.tensor([0.0, 1.0] * 6)
    m.fit(x, nodes, steps=2, progress=False, inputs={"rain": flags}, checkpoint=path)
    with pytest.raises(ValueError, match="different run.*inputs"):
        make(conditioners=_rain_conditioner()).fit(
            x, nodes, steps=2, progress=False, inputs={"rain": flags.roll(1)},
            checkpoint=path)


def test_generate_churn_noise_follows_the_seed():
    """EDM's churn noise comes from ``generate``'s generator, not the global RNG."""
    m = make().set_scaler(0.0, 1.0)
    draws = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        draws.append(m.generate([0, 1], num_samples=2, num_steps=3, seed=5, S_churn=5.0))
    assert torch.equal(draws[0], draws[1])
    other = m.generate([0, 1], num_samples=2, num_steps=3, seed=6, S_churn=5.0)
    assert not torch.equal(draws[0], other)
    plain = m.generate([0, 1], num_samples=2, num_steps=3, seed=5)
    assert not torch.equal(draws[0], plain)          # the churn does act


def test_generate_takes_a_boolean_node_mask():
    m = make().set_scaler(0.0, 1.0)
    N = m.node2entity.numel()
    mask = torch.zeros(N, dtype=torch.bool)
    mask[[1, 4]] = True
    assert torch.equal(m.generate(mask, num_samples=2, num_steps=2, seed=0),
                       m.generate([1, 4], num_samples=2, num_steps=2, seed=0))
    assert torch.equal(m.pattern(mask), m.pattern(torch.tensor([1, 4])))
    with pytest.raises(ValueError, match=rf"boolean 'nodes' mask must have shape \[N={N}\]"):
        m.generate(torch.tensor([True, False]))
    with pytest.raises(ValueError, match="not a boolean mask"):        # one node per series
        m.loss(torch.zeros(2, 16), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="integer node index"):
        m.fit(torch.zeros(2, 16), torch.tensor([0.7, 1.9]), steps=1)


def test_generate_refuses_options_it_would_ignore():
    m = make().set_scaler(0.0, 1.0)
    with pytest.raises(ValueError, match="'num_steps' must be a positive integer"):
        m.generate([0], num_steps=0)
    for sampler in ("ddpm", "ddim"):        # the one step would be t = 0: noise returned
        with pytest.raises(ValueError, match=r"'num_steps'=1 with sampler=.*starting noise"):
            m.generate([0], sampler=sampler, num_steps=1)
    with pytest.raises(ValueError, match="'eta' is DDIM's"):
        m.generate([0], eta=0.5)
    with pytest.raises(ValueError, match="'eta' is DDIM's"):
        m.generate([0], sampler="ddpm", num_steps=2, eta=0.5)
    with pytest.raises(ValueError, match=r"'seed' must be an integer in \[0, 2\*\*63\)"):
        m.generate([0], num_steps=2, seed=2 ** 64)
    with pytest.raises(ValueError, match=r"'seed' must be an integer"):
        m.fit(torch.zeros(2, 16), [0, 1], steps=1, seed=-1)
    m.generate([0], sampler="ddim", num_steps=2, eta=0.5)


def test_fit_checks_the_values_of_x_and_mask():
    m = make()
    x = torch.randn(4, 16)
    nodes = torch.tensor([0, 1, 2, 3])
    bad = x.clone()
    bad[0, 3] = float("nan")
    with pytest.raises(ValueError, match="'x' has NaN or inf at observed entries"):
        m.fit(bad, nodes, steps=1)
    mask = torch.ones_like(x)
    mask[0, 3] = 0
    m.fit(bad, nodes, mask=mask, steps=1, batch_size=2)      # flagged missing: fine
    with pytest.raises(ValueError, match=r"'mask' must contain only 0 and 1"):
        make().fit(x, nodes, mask=torch.full_like(x, 0.5), steps=1)
    with pytest.raises(ValueError, match="'x' must hold real numbers"):
        make().fit(x > 0, nodes, steps=1)
    # float64 and integer series train as float32 (they used to fail deep inside torch)
    a = make().fit(x.double(), nodes, steps=2, batch_size=2, seed=0)["loss"]
    b = make().fit(x, nodes, steps=2, batch_size=2, seed=0)["loss"]
    assert a == b
    make().fit(x.round().long(), nodes, steps=1, batch_size=2)


def test_baselines_leave_never_observed_training_slots_out():
    # node 1 never observed slot 1: its profile there is 0, not a measured value
    v = torch.tensor([[[1.0, 5.0], [3.0, 0.0], [10.0, 7.0]]])          # [D=1, N=3, L=2]
    m = torch.tensor([[[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]]])
    prof, obs = node_profiles(v, m, return_observed=True)
    assert obs.tolist() == [[True, True], [True, False], [True, True]]
    g = GlobalMeanProfile().fit(prof, obs)
    assert torch.allclose(g.profile, torch.tensor([14.0 / 3, 6.0]))     # slot 1: (5 + 7) / 2
    lat, lon = torch.tensor([0.0, 1.0, 3.0]), torch.zeros(3)
    knn = NearestNeighbourProfile(k=1).fit(prof, lat, lon, obs)
    # closest to lat 1.1 is node 1 at slot 0; at slot 1 node 1 has nothing, node 0 is next
    assert torch.allclose(knn.predict(torch.tensor([1.1]), torch.tensor([0.0])),
                          torch.tensor([[3.0, 5.0]]))
    # every slot observed: the plain means, to the bit
    full = torch.ones_like(obs)
    assert torch.equal(GlobalMeanProfile().fit(prof, full).profile, prof.mean(0))
    assert torch.equal(NearestNeighbourProfile(k=2).fit(prof, lat, lon, full).predict(lat, lon),
                       NearestNeighbourProfile(k=2).fit(prof, lat, lon).predict(lat, lon))
    # tuning scores observed validation slots only: node 1's slot 1 is not compared with 0
    tuned = NearestNeighbourProfile().tune(prof, lat, lon, torch.tensor([1]), candidates=(1,),
                                          observed=obs)
    assert tuned.validation == pytest.approx({1: 2.0})                  # |1 - 3| at slot 0
    with pytest.raises(ValueError, match="no training node was observed at slot"):
        GlobalMeanProfile().fit(prof, torch.zeros_like(obs))
    with pytest.raises(ValueError, match="'observed' must have the shape"):
        GlobalMeanProfile().fit(prof, obs[:, :1])
