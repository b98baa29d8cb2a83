import pytest
import torch

from torch_stgen.data import SparsePattern, coarsen
from torch_stgen.models.baselines import (SRCNN, InterpolationUpsampling, UrbanFM,
                                          fit_upsampler, nearest_fill)
from torch_stgen.models.diffrecon import (DiffRecon, DiffusionC, DiffusionF,
                                          STPointFormerConditioner, TPatternConditioner)
from torch_stgen.nn import Conditioner

from _grids import daily_grid_series as _series


def _tiny(**kw):
    args = dict(channels=2, coarse_size=(4, 2), factor=2, history_c=3, history_f=6,
                model_channels=8, d_model=8, num_train_timesteps=50)
    args.update(kw)
    return DiffRecon(**args)


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    fine, time = _series()
    model = _tiny().fit(fine, time=time, patterns=["random:0.4", "block"],
                        pretrain_steps=6, joint_steps=4, joint_refresh=2, batch_size=8,
                        joint_sampling_steps=2)
    return model, fine, time


# ----------------------------------------------------------------------- conditioners
def test_stpointformer_conditioner_shape_and_masking():
    cond = STPointFormerConditioner(2, (4, 2), history=3, down=(2, 1), out_channels=5,
                                    d_model=8)
    assert cond.kind == ("features",) and cond.feature_channels == 5
    x = torch.randn(3, 3, 2, 4, 2)
    m = (torch.rand(3, 3, 2, 4, 2) > 0.5).float()
    out = cond({"hist": x, "hist_mask": m})["features"]
    assert out.shape == (3, 5, 2, 1)
    # values at missing points (even NaN) never reach the features
    x2 = torch.where(m.bool(), x, torch.full_like(x, float("nan")))
    torch.testing.assert_close(cond({"hist": x2, "hist_mask": m})["features"], out)
    with pytest.raises(ValueError, match="history=3"):
        cond({"hist": x[:, :2], "hist_mask": m[:, :2]})
    with pytest.raises(ValueError, match=r"\[B, T, C, h, w\]"):
        cond({"hist": x[..., 0], "hist_mask": m})


def test_tpattern_conditioner_shape_and_cell_order():
    cond = TPatternConditioner(2, (4, 2), history=6, down=(2, 1), out_channels=7, d_model=8)
    assert cond.kind == ("features",) and cond.feature_channels == 7
    x = torch.randn(2, 6, 2, 4, 2)
    assert cond({"series": x})["features"].shape == (2, 7, 2, 1)
    # no down-stacking when the bottleneck does not divide the grid
    cond2 = TPatternConditioner(1, (3, 3), history=6, out_channels=4, d_model=8)
    assert cond2({"series": torch.randn(2, 6, 1, 3, 3)})["features"].shape == (2, 4, 3, 3)


def test_stage_denoisers_are_composed_from_public_conditioners():
    c = DiffusionC(2, (4, 2), history=3, model_channels=8, d_model=8, position_channels=4)
    names = [type(k).__name__ for k in c.denoiser.conditioner.conditioners]
    assert names == ["ObservedMapConditioner", "PositionConditioner", "ExternalConditioner",
                     "STPointFormerConditioner"]
    assert c.denoiser.unet.in_channels == 2 + 4 + 4      # data + observed map, mask + pos.
    f = DiffusionF(2, (4, 2), 2, history=6, model_channels=8, d_model=8,
                   position_channels=4)
    names = [type(k).__name__ for k in f.denoiser.conditioner.conditioners]
    assert names == ["ObservedMapConditioner", "PositionConditioner", "ExternalConditioner",
                     "TPatternConditioner"]
    assert f.denoiser.unet.in_channels == 2 + 2 + 4      # data + upsampled coarse + pos.
    assert DiffusionF(2, (4, 2), 2, model_channels=8,                 # default: no map
                      d_model=8).denoiser.unet.in_channels == 4
    pos = f.denoiser.conditioner.conditioners[1]
    assert pos({"coarse": torch.zeros(3, 2, 4, 2)})["map"].shape == (3, 4, 8, 4)
    c0 = DiffusionC(2, (4, 2), use_stpointformer=False, model_channels=8)
    assert c0.denoiser.unet.inter_channels == 0
    f0 = DiffusionF(2, (4, 2), 2, use_tpatternnet=False, model_channels=8)
    assert f0.denoiser.unet.inter_channels == 0
    assert "stpointformer=True" in repr(c) and "tpatternnet=False" in repr(f0)
    # inter_init reaches both stages' U-Nets: each starts as its inter-encoder ablation
    model = DiffRecon(2, (4, 2), 2, history_c=3, history_f=6, model_channels=8, d_model=8,
                      inter_init="identity")
    for stage in (model.stage_c, model.stage_f):
        unet = stage.denoiser.unet
        w = unet.inter_proj.weight[:, :, 0, 0]
        ch = unet.inter_proj.out_channels
        assert w.shape == (ch, ch + unet.inter_channels)
        torch.testing.assert_close(w[:, :ch], torch.eye(ch))
        assert bool((w[:, ch:] == 0).all())
    assert DiffRecon(2, (4, 2), 2, model_channels=8,
                     d_model=8).stage_c.denoiser.unet.inter_init == "default"


# ----------------------------------------------------------------------- DiffRecon
def test_fit_schedule_and_ablation_budgets():
    fine, time = _series(T=30)
    m = _tiny().fit(fine, time=time, pretrain_steps=2, joint_steps=1, joint_refresh=1,
                    batch_size=4, joint_sampling_steps=2)
    assert (m.history_log["pretrain_steps"], m.history_log["joint_steps"]) == (2, 1)
    losses = m.history_log["train_losses"]              # one value per iteration and stage
    assert sorted(losses) == ["loss_c", "loss_f"] and len(losses["loss_f"]) == 3
    assert m.history_log["final_loss_f"] == losses["loss_f"][-1] > 0
    m = _tiny().fit(fine, time=time, pretrain_steps=2, joint_steps=1, joint=False,
                    batch_size=4)
    assert (m.history_log["pretrain_steps"], m.history_log["joint_steps"]) == (3, 0)
    m = _tiny().fit(fine, time=time, pretrain_steps=2, joint_steps=1, pretrain=False,
                    joint_refresh=10, batch_size=4, joint_sampling_steps=2)
    assert (m.history_log["pretrain_steps"], m.history_log["joint_steps"]) == (0, 3)
    # scalers: per-channel statistics of the training fine maps / their coarse sums
    torch.testing.assert_close(m.fine_mean, fine.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(m.coarse_mean, coarsen(fine, 2).mean(dim=(0, 2, 3)))


def _spy_f_loss(model, key):
    """Record ``batch[key]`` of every Diffusion-F training batch of ``model``."""
    seen = []
    loss_f = model.stage_f.loss

    def spy(batch, target, gen):
        seen.append(batch[key].clone())
        return loss_f(batch, target, gen)

    model.stage_f.loss = spy
    return seen


@pytest.mark.parametrize("mix", [0.0, 0.5, 1.0])
def test_joint_mix_conditions_diffusion_f_on_truth_or_completions(mix):
    """joint_mix: share of joint-phase Diffusion-F conditions taken from Diffusion-C's
    completions (the rest are the pseudo-complete truth)."""
    fine, time = _series(T=30)
    model = _tiny()
    seen = _spy_f_loss(model, "coarse")
    model.fit(fine, time=time, patterns=["fixed:0.8"], pretrain_steps=1, joint_steps=4,
              joint_refresh=10, batch_size=16, joint_sampling_steps=2, joint_mix=mix)
    assert model.history_log["joint_mix"] == mix
    zc = model._scale(coarsen(fine, 2), model.coarse_mean, model.coarse_std)
    joint = torch.cat(seen[1:])                                       # 4 joint iterations
    is_truth = torch.stack([(joint == z).all(dim=(1, 2, 3)) for z in zc]).any(0)
    share = 1.0 - is_truth.float().mean().item()
    if mix == 0.0:
        assert share == 0.0
    elif mix == 1.0:
        assert share == 1.0   # 80 % of the cells missing: a completion never equals truth
    else:
        assert 0.25 < share < 0.75
    with pytest.raises(ValueError, match="'joint_mix'"):
        _tiny().fit(fine, time=time, pretrain_steps=1, joint_steps=1, joint_mix=1.5)


@pytest.mark.parametrize("kw, match", [(dict(pretrain_steps=-1), "'pretrain_steps'"),
                                       (dict(joint_steps=1.5), "'joint_steps'"),
                                       (dict(batch_size=0), "'batch_size'"),
                                       (dict(joint_sampling_steps=0), "'joint_sampling_steps'"),
                                       (dict(joint_refresh=0), "'joint_refresh'"),
                                       (dict(seed=2 ** 64), "'seed'"),
                                       (dict(seed=1.5), "'seed'")])
def test_fit_refuses_bad_step_counts_by_name(kw, match):
    fine, time = _series(T=30)
    with pytest.raises(ValueError, match=match + " must be a"):
        _tiny().fit(fine, time=time, **dict(dict(pretrain_steps=1, joint_steps=1), **kw))


def test_fit_refuses_a_run_that_trains_nothing_and_takes_one_pattern_string():
    fine, time = _series(T=30)
    with pytest.raises(ValueError, match="'pretrain' and 'joint' are both False"):
        _tiny().fit(fine, time=time, pretrain=False, joint=False)
    one = _tiny().fit(fine, time=time, patterns="random:0.4", pretrain_steps=1,
                      joint_steps=0, batch_size=4)        # was parsed letter by letter
    assert one.history_log["patterns"] == ["random:0.4"]
    with pytest.raises(ValueError, match="'ext' was given but the model was built with "
                                         "ext_features=0"):
        _tiny().fit(fine, time=time, ext=torch.zeros(len(fine), 2), pretrain_steps=1)


def test_fit_stops_on_a_non_finite_loss():
    fine, time = _series(T=30)
    model = _tiny()
    real, calls = model.stage_f.loss, []

    def nan_on_third(*args, **kwargs):
        calls.append(1)
        out = real(*args, **kwargs)
        return out * float("nan") if len(calls) == 3 else out
    model.stage_f.loss = nan_on_third
    with pytest.raises(FloatingPointError, match=r"DiffRecon fit diverged at iteration 2 "
                                                 r".*'loss_f': nan.*lower 'lr' \(peak 0.001"):
        model.fit(fine, time=time, pretrain_steps=4, joint_steps=0, batch_size=4)
    assert len(calls) == 3


def test_joint_completions_keep_observed_truth(fitted):
    model, fine, time = fitted
    zc = model._scale(coarsen(fine, 2), model.coarse_mean, model.coarse_std)
    from torch_stgen.data import SparsePattern
    from torch_stgen.models.diffrecon import _calendar_inputs
    _, _, feats = _calendar_inputs(time, None, fine.shape[0], True, 0)
    comp, mask = model._complete_series(zc, [SparsePattern("block")], time, None, feats,
                                        torch.Generator().manual_seed(0), 2, 16)
    assert comp.shape == mask.shape == (1,) + zc.shape
    assert bool((mask[0, :, :, :2] == 1).all()) and bool((mask[0, :, :, 2:, 1] == 0).all())
    torch.testing.assert_close(comp[0, :, :, :2], zc[:, :, :2])       # observed rows
    assert not torch.allclose(comp[0, :, :, 2:, 1], zc[:, :, 2:, 1])  # block is sampled


def test_a_float64_model_is_refused_by_name(fitted):
    """After .double(), fit and reconstruct failed deep inside ST-PointFormer with 'mat1
    and mat2 must have the same dtype' (the model casts its inputs to float32)."""
    import copy
    model, fine, time = fitted
    double = copy.deepcopy(model).double()
    coarse = coarsen(fine, 2)
    mask = torch.ones(coarse.shape[0], 1, 4, 2)
    with pytest.raises(TypeError, match="DiffRecon runs in float32, but its parameters are "
                                        "torch.float64"):
        double.reconstruct(coarse, mask, history=5, time=time, steps=2)
    with pytest.raises(TypeError, match="DiffRecon runs in float32"):
        _tiny().double().fit(fine, time=time, pretrain_steps=1)
    with pytest.raises(TypeError, match="DiffRecon runs in float32"):
        double.complete(coarse, mask, history=5, time=time, steps=2)


def test_reconstruct_shapes_determinism_and_batch_independence(fitted):
    model, fine, time = fitted
    coarse = coarsen(fine, 2)
    mask = (torch.rand(coarse.shape[0], 1, 4, 2, generator=torch.Generator().manual_seed(1))
            > 0.4).float()
    kw = dict(history=5, time=time, num_samples=3, steps=4)
    a = model.reconstruct(coarse, mask, seed=7, **kw)
    assert a.fine.shape == (35, 2, 8, 4) and a.spread.shape == (35, 2, 8, 4)
    assert a.coarse.shape == (35, 2, 4, 2) and a.samples is None
    assert bool((a.spread > 0).all())
    b = model.reconstruct(coarse, mask, seed=7, batch_size=4, return_samples=True, **kw)
    torch.testing.assert_close(a.fine, b.fine, atol=1e-4, rtol=1e-4)
    assert b.samples.shape == (3, 35, 2, 8, 4)
    torch.testing.assert_close(b.samples.mean(0), b.fine)
    c = model.reconstruct(coarse, mask, seed=8, **kw)
    assert (a.fine - c.fine).abs().max() > 1e-3
    # observed coarse cells keep their values in the completion
    obs = mask[5:].expand(-1, 2, -1, -1).bool()
    torch.testing.assert_close(a.coarse[obs], coarse[5:][obs])
    # missing values never leak: NaN / garbage at missing entries changes nothing
    junk = torch.where(mask.bool().expand_as(coarse), coarse, torch.full_like(coarse, 1e6))
    torch.testing.assert_close(model.reconstruct(junk, mask, seed=7, **kw).fine, a.fine)
    nan = torch.where(mask.bool().expand_as(coarse), coarse, torch.full_like(coarse,
                                                                            float("nan")))
    torch.testing.assert_close(model.reconstruct(nan, mask, seed=7, **kw).fine, a.fine)


def test_complete_is_reconstructions_first_stage(fitted):
    model, fine, time = fitted
    coarse = coarsen(fine, 2)
    mask = (torch.rand(coarse.shape[0], 1, 4, 2, generator=torch.Generator().manual_seed(1))
            > 0.4).float()
    kw = dict(history=5, time=time, num_samples=3, steps=4, seed=7)
    comp, spread = model.complete(coarse, mask, **kw)
    assert comp.shape == spread.shape == (35, 2, 4, 2)
    torch.testing.assert_close(comp, model.reconstruct(coarse, mask, **kw).coarse,
                               rtol=0, atol=0)
    obs = mask[5:].expand(-1, 2, -1, -1).bool()
    torch.testing.assert_close(comp[obs], coarse[5:][obs])
    assert bool((spread[obs] == 0).all()) and bool((spread[~obs] > 0).all())
    median, _ = model.complete(coarse, mask, reduce="median", **kw)
    assert not torch.equal(median, comp)
    with pytest.raises(ValueError, match="'history' must be an integer in"):
        model.complete(coarse, mask, history=40, time=time)


def test_reconstruct_mass_consistent_and_median(fitted):
    model, fine, time = fitted
    coarse = coarsen(fine, 2)
    mask = torch.ones(coarse.shape[0], 1, 4, 2)
    out = model.reconstruct(coarse, mask, history=10, time=time, num_samples=3, steps=3,
                            mass_consistent=True, return_samples=True, sampler="ddpm")
    torch.testing.assert_close(coarsen(out.samples, 2),
                               coarse[10:].expand(3, -1, -1, -1, -1), atol=1e-3, rtol=1e-4)
    prop = model.reconstruct(coarse, mask, history=10, time=time, num_samples=3, steps=3,
                             mass_consistent="proportional", return_samples=True)
    torch.testing.assert_close(coarsen(prop.samples, 2),
                               coarse[10:].expand(3, -1, -1, -1, -1), atol=1e-3, rtol=1e-4)
    assert prop.samples.min() >= 0
    with pytest.raises(ValueError, match="'mass_consistent'"):
        model.reconstruct(coarse, mask, time=time, steps=2, mass_consistent="exact")
    med = model.reconstruct(coarse, mask, history=10, time=time, num_samples=3, steps=3,
                            reduce="median", return_samples=True)
    torch.testing.assert_close(med.fine, med.samples.median(0).values)


def test_reconstruct_errors(fitted):
    model, fine, time = fitted
    coarse = coarsen(fine, 2)
    mask = torch.ones_like(coarse)
    with pytest.raises(ValueError, match="'coarse' must have shape"):
        model.reconstruct(coarse[:, :1], mask, time=time)
    with pytest.raises(ValueError, match="'mask' must have shape"):
        model.reconstruct(coarse, mask[:5], time=time)
    with pytest.raises(ValueError, match="'time' must have shape"):
        model.reconstruct(coarse, mask)
    with pytest.raises(ValueError, match="'history'"):
        model.reconstruct(coarse, mask, history=len(coarse), time=time)
    with pytest.raises(ValueError, match="'sampler'"):
        model.reconstruct(coarse, mask, time=time, sampler="heun", steps=2)
    bad = coarse.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="observed entries"):
        model.reconstruct(bad, mask, time=time, steps=2)
    with pytest.raises(RuntimeError, match="not fitted"):
        _tiny().reconstruct(coarse, mask, time=time)
    for value in (0.5, -1.0, float("nan")):        # each was silently "observed"
        odd = mask.clone()
        odd[3, 0, 1, 1] = value
        with pytest.raises(ValueError, match=r"'mask' must contain only 0 and 1"):
            model.reconstruct(coarse, odd, time=time, steps=2)
        with pytest.raises(ValueError, match=r"'mask' must contain only 0 and 1"):
            model.complete(coarse, odd, time=time, steps=2)
    with pytest.raises(ValueError, match="'steps' must be an integer >= 2"):
        model.reconstruct(coarse, mask, time=time, steps=0)
    with pytest.raises(ValueError, match="'steps' must be an integer >= 2 .*starting noise"):
        model.complete(coarse, mask, time=time, steps=1)     # its only step would be t = 0
    with pytest.raises(ValueError, match="'ext' was given"):
        model.reconstruct(coarse, mask, time=time, ext=torch.zeros(len(coarse), 1), steps=2)
    with pytest.raises(ValueError, match=r"'seed' must be an integer in \[0, 2\*\*63\)"):
        model.complete(coarse, mask, time=time, steps=2, seed=2 ** 64)
    with pytest.raises(ValueError, match="'fine' must have shape"):
        _tiny().fit(fine[:, :, :4], time=time)
    nan_fine = fine.clone()
    nan_fine[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="complete"):
        _tiny().fit(nan_fine, time=time)


# ----------------------------------------------------------------------- baselines b, c
def test_srcnn_and_urbanfm_shapes_and_mass():
    s = SRCNN(2, (4, 2), 2, widths=(8, 4))
    u = UrbanFM(2, (4, 2), 2, cond_features=3, width=8, num_blocks=2)
    s.fit_scale(torch.rand(5, 2, 8, 4) + 1)
    u.fit_scale(torch.rand(5, 2, 8, 4) + 1)
    filled = torch.rand(3, 2, 4, 2) * 10
    assert s(filled).shape == (3, 2, 8, 4)
    shares = u.shares(filled, torch.randn(3, 3))
    torch.testing.assert_close(coarsen(shares, 2), torch.ones(3, 2, 4, 2))
    # UrbanFM's N^2-normalisation keeps the filled coarse mass exactly
    pred = u.predict(filled, torch.ones(3, 1, 4, 2), torch.randn(3, 3))
    torch.testing.assert_close(coarsen(pred, 2), filled, atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="'cond' must have shape"):
        u.predict(filled, torch.ones(3, 1, 4, 2))
    with pytest.raises(RuntimeError, match="not fitted"):
        SRCNN(2, (4, 2), 2).predict(filled, torch.ones(3, 1, 4, 2))
    assert "UrbanFM(2, coarse_size=(4, 2), factor=2, cond_features=3" in repr(u)


def test_urbanfm_learns_time_dependent_shares():
    # the fine split of each coarse cell depends on the hour: fixed mean shares (baseline
    # (a)) cannot express it, a trained UrbanFM with the external vector can
    T = 96
    hour = torch.arange(T) % 24
    day = (hour >= 12).float()
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(T, 1, 2, 2, generator=g) * 10 + 5
    s = torch.stack([day, 1 - day, 1 - day, day], 1).view(T, 1, 1, 1, 2, 2) * 0.4 + 0.1
    fine = (coarse[..., None, None] * s).permute(0, 1, 2, 4, 3, 5).reshape(T, 1, 4, 4)
    cond = torch.stack([day, 1 - day], 1)
    net = fit_upsampler(UrbanFM(1, (2, 2), 2, cond_features=2, width=8, num_blocks=1),
                        fine, cond, patterns=["random:0.0"], steps=150, batch_size=16,
                        lr=1e-2)
    ones = torch.ones(T, 1, 2, 2)
    err_u = (net.predict(coarse, ones, cond) - fine).abs().mean()
    err_a = (InterpolationUpsampling(2).fit(fine).predict(coarse, ones) - fine).abs().mean()
    assert err_u < 0.3 * err_a


def test_fit_upsampler_inputs_are_filled_incomplete_maps():
    fine, _ = _series(T=20)
    net = fit_upsampler(SRCNN(2, (4, 2), 2, widths=(4, 4)), fine, patterns=["block"],
                        steps=2, batch_size=4)
    assert net.train_seconds >= 0 and not net.training
    coarse = coarsen(fine, 2)
    mask = torch.ones(20, 1, 4, 2)
    mask[:, :, 2:, 1:] = 0
    # predict() fills before the network: equal to running it on nearest_fill by hand
    want = net(nearest_fill(coarse * mask, mask.expand_as(coarse))) * net.scale[:, None, None]
    torch.testing.assert_close(net.predict(coarse, mask), want)
    with pytest.raises(ValueError, match="'patterns' must not be empty"):
        fit_upsampler(SRCNN(2, (4, 2), 2), fine, patterns=[], steps=1)


@pytest.mark.parametrize("joint", [True, False])
def test_completion_mask_reaches_diffusion_f_only_after_joint_training(joint):
    """completion_mask: Diffusion-F sees 1 at observed and 0 at completed coarse cells in
    the joint phase and at inference -- unless it never saw completions (no joint phase),
    then it gets the all-ones mask it was trained with."""
    fine, time = _series(T=30)
    model = _tiny(completion_mask=True)
    assert "completion_mask=True" in repr(model.stage_f)
    seen = _spy_f_loss(model, "observed")
    model.fit(fine, time=time, patterns=["fixed:0.8"], pretrain_steps=2, joint_steps=2,
              joint_refresh=10, batch_size=8, joint_sampling_steps=2, joint=joint)
    assert bool(model.f_saw_completions) == joint
    assert bool((seen[0] == 1).all())                        # pre-training: the truth
    if joint:
        assert bool((torch.cat(seen[2:]) == 0).any())        # joint: completed cells flagged
    coarse = coarsen(fine, 2)
    mask = torch.ones(coarse.shape[0], 1, 4, 2)
    mask[:, :, 0, 0] = 0
    got = []
    generate = model.stage_f.generate

    def spy_generate(batch, *a, **kw):
        got.append(batch["observed"].clone())
        return generate(batch, *a, **kw)

    model.stage_f.generate = spy_generate
    model.reconstruct(coarse, mask, history=6, time=time, num_samples=2, steps=2)
    obs = torch.cat(got)
    assert obs.shape == (2 * 24, 2, 4, 2)
    if joint:
        assert bool((obs[:, :, 0, 0] == 0).all()) and bool((obs[:, :, 1:] == 1).all())
    else:
        assert bool((obs == 1).all())


def test_end_to_end_joint_trains_diffusion_c_through_diffusion_f():
    """joint_mode='end_to_end': Diffusion-F is conditioned on Diffusion-C's differentiable
    one-step x0 at missing cells (observed cells keep the truth), so L_F reaches C."""
    fine, time = _series(T=30)
    model = _tiny(prediction_type="sample", completion_mask=True)
    grads, flagged = [], []
    loss_f = model.stage_f.loss

    def f_only_grad(batch, target, gen):  # gradient of L_F alone w.r.t. Diffusion-C
        loss = loss_f(batch, target, gen)
        if batch["coarse"].requires_grad:
            flagged.append(float((batch["observed"] == 0).float().mean()))
            g = torch.autograd.grad(loss, list(model.stage_c.parameters()),
                                    retain_graph=True, allow_unused=True)
            grads.append(sum(float(x.abs().sum()) for x in g if x is not None))
        return loss

    model.stage_f.loss = f_only_grad
    model.fit(fine, time=time, patterns=["fixed:0.8"], pretrain_steps=1, joint_steps=3,
              batch_size=8, joint_mode="end_to_end")
    assert model.history_log["joint_mode"] == "end_to_end"
    assert len(grads) == 3 and min(grads) > 0              # every joint step reaches C
    assert min(flagged) > 0.5                               # fixed:0.8 -> most cells completed
    with pytest.raises(ValueError, match="'joint_mode'"):
        _tiny().fit(fine, time=time, pretrain_steps=1, joint_steps=1, joint_mode="unrolled")
    with pytest.raises(ValueError, match="epsilon"):
        _tiny(prediction_type="epsilon").fit(fine, time=time, pretrain_steps=1,
                                             joint_steps=1, joint_mode="end_to_end")


def test_state_dict_round_trip_and_checkpoint_without_completion_flag(fitted):
    model, fine, time = fitted
    coarse = coarsen(fine, 2)
    mask = torch.ones(coarse.shape[0], 1, 4, 2)
    kw = dict(history=5, time=time, num_samples=2, steps=3, seed=3)
    ref = model.reconstruct(coarse, mask, **kw).fine
    state = model.state_dict()
    assert bool(state["f_saw_completions"])               # the fixture ran a joint phase
    clone = _tiny()
    clone.load_state_dict(state)
    torch.testing.assert_close(clone.reconstruct(coarse, mask, **kw).fine, ref)
    # a snapshot saved before the flag existed still loads strictly (flag -> False)
    old = {k: v for k, v in state.items() if k != "f_saw_completions"}
    clone = _tiny()
    clone.f_saw_completions.fill_(True)
    clone.load_state_dict(old, strict=True)
    assert not bool(clone.f_saw_completions)
    torch.testing.assert_close(clone.reconstruct(coarse, mask, **kw).fine, ref)
    assert "f_saw_completions" not in old                  # the caller's dict is untouched


@pytest.mark.parametrize("joint_series,expected", [(None, 3), (1, 1), (2, 2)])
def test_joint_completions_cover_the_training_patterns(joint_series, expected):
    """``joint_series=n``: n completion series per refresh, drawn from the training
    patterns without repeats; ``None``: one per pattern (the mask mixture of pre-training)."""
    fine, time = _series(T=30)
    model = _tiny()
    calls = []
    complete = model._complete_series

    def spy(zc, patterns, *args):
        calls.append(sorted(p.name for p in patterns))
        return complete(zc, patterns, *args)

    model._complete_series = spy
    pats = ["fixed:0.4", "random:0.8", "block"]
    model.fit(fine, time=time, patterns=pats, pretrain_steps=1, joint_steps=4,
              joint_refresh=2, batch_size=4, joint_sampling_steps=2,
              joint_series=joint_series)
    assert len(calls) == 2                                   # refreshes at joint its 0, 2
    assert all(len(c) == expected and set(c) <= set(pats) for c in calls)
    if joint_series is None:
        assert calls == [sorted(pats)] * 2
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="'joint_series'"):
            _tiny().fit(fine, time=time, pretrain_steps=1, joint_steps=1, joint_series=bad)


def test_joint_sampler_reaches_the_completions():
    """joint_sampler picks the sampler of Diffusion-C's joint-phase completions; DDPM
    (ancestral) completions differ from DDIM's for the same seed."""
    fine, time = _series(T=30)
    kinds, outs = [], []
    for sampler in ("ddim", "ddpm"):
        torch.manual_seed(0)
        model = _tiny()
        generate = model.stage_c.generate

        def spy(batch, x_T, kind="ddim", *args, _g=generate):
            kinds.append(kind)
            return _g(batch, x_T, kind, *args)

        model.stage_c.generate = spy
        seen = _spy_f_loss(model, "coarse")
        model.fit(fine, time=time, patterns=["fixed:0.8"], pretrain_steps=1, joint_steps=1,
                  joint_refresh=10, batch_size=4, joint_sampling_steps=3,
                  joint_sampler=sampler, seed=0)
        assert model.history_log["joint_sampler"] == sampler
        outs.append(seen[-1])
    assert set(kinds[:len(kinds) // 2]) == {"ddim"} and set(kinds[len(kinds) // 2:]) == {"ddpm"}
    assert not torch.allclose(outs[0], outs[1])
    with pytest.raises(ValueError, match="'joint_sampler'"):
        _tiny().fit(fine, time=time, pretrain_steps=1, joint_steps=1, joint_sampler="heun")


# ----------------------------------------------------------------------- early stopping
def _fit_es(model, fine, time, **kw):
    args = dict(patterns=["random:0.4", "block"], pretrain_steps=5, joint_steps=3,
                joint_refresh=2, batch_size=6, joint_sampling_steps=2, seed=3)
    args.update(kw)
    return model.fit(fine[:30], time=time[:30], **args)


def test_early_stopping_keeps_each_stage_at_its_best_check():
    fine, time = _series(T=48)
    torch.manual_seed(0)
    model = _fit_es(_tiny(), fine, time, val_fine=fine[30:], val_time=time[30:],
                    val_every=2, val_maps=12)
    log = model.history_log
    its = [c[0] for c in log["val_curve"]]
    assert its == [2, 4, 6, 8]                     # every 2 iterations and after the last
    lc = min(c[1] for c in log["val_curve"])
    lf = min(c[2] for c in log["val_curve"])
    assert log["best_iter_c"] == [c[0] for c in log["val_curve"] if c[1] == lc][0]
    assert log["best_iter_f"] == [c[0] for c in log["val_curve"] if c[2] == lf][0]
    # the kept weights are the ones that scored the minimum (same fixed validation set)
    pats = [SparsePattern.parse(p) for p in ("random:0.4", "block")]
    val = model._validation_set(fine[30:], time[30:], None, pats, 12, 3)
    got_c, got_f = model._validation_losses(val)
    assert got_c == pytest.approx(lc, rel=1e-5) and got_f == pytest.approx(lf, rel=1e-5)
    assert bool(model.f_saw_completions) == (log["best_iter_f"] > 5)


def test_early_stopping_leaves_the_training_stream_unchanged():
    """With a single check after the last iteration the result is the model trained
    without validation, bit for bit."""
    fine, time = _series(T=48)
    torch.manual_seed(0)
    a = _fit_es(_tiny(), fine, time)
    torch.manual_seed(0)
    b = _fit_es(_tiny(), fine, time, val_fine=fine[30:], val_time=time[30:], val_every=100)
    assert [c[0] for c in b.history_log["val_curve"]] == [8]
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)


def test_completion_conditioned_early_stopping():
    """val_condition='completed': Diffusion-C's criterion is unchanged; Diffusion-F's is
    its loss on the current Diffusion-C's completions of the held-out series."""
    fine, time = _series(T=48)
    runs = {}
    for cond in ("truth", "completed"):
        torch.manual_seed(0)
        runs[cond] = _fit_es(_tiny(), fine, time, val_fine=fine[30:], val_time=time[30:],
                             val_every=2, val_maps=12, val_condition=cond).history_log
    assert runs["completed"]["val_condition"] == "completed"
    assert [c[:2] for c in runs["completed"]["val_curve"]] == \
        [c[:2] for c in runs["truth"]["val_curve"]]
    assert [c[2] for c in runs["completed"]["val_curve"]] != \
        [c[2] for c in runs["truth"]["val_curve"]]
    # the conditioning Diffusion-F is scored on: completions that keep the observed cells
    torch.manual_seed(0)
    model = _tiny()
    model.fit_scalers(fine[:30])
    pats = [SparsePattern.parse(p) for p in ("random:0.4", "block")]
    val = model._validation_set(fine[30:], time[30:], None, pats, 12, 3, "completed", 2)
    seen = []
    loss = model.stage_f.loss
    model.stage_f.loss = lambda b, y, g: seen.append((b, y)) or loss(b, y, g)
    model._validation_losses(val, steps=2)
    (b, y), truth = seen[0], val["b_f"]
    assert val["masks"].shape == (2, 18, 2, 4, 2) and b["coarse"].shape == (12, 2, 4, 2)
    order = torch.cat([torch.arange(0, 12, 2), torch.arange(1, 12, 2)])
    torch.testing.assert_close(y, val["y_f"][order])            # targets follow the rows
    obs = torch.cat([val["masks"][0][val["idx"][0::2]], val["masks"][1][val["idx"][1::2]]])
    torch.testing.assert_close(b["coarse"][obs.bool()], truth["coarse"][order][obs.bool()])
    assert (b["coarse"] - truth["coarse"][order])[~obs.bool()].abs().max() > 1e-3
    assert b["series"].shape == truth["series"].shape
    torch.testing.assert_close(b["time"], truth["time"][order])
    with pytest.raises(ValueError, match="'val_condition' must be 'truth' or 'completed'"):
        _fit_es(_tiny(), fine, time, val_condition="completion")
    # fewer held-out maps than mask series: one series per map. With three series and one
    # map, series 2 started past the maps and torch.arange crashed ("upper bound and
    # lower bound inconsistent with step sign")
    three = [SparsePattern.parse(p) for p in ("random:0.4", "block", "fixed:0.4")]
    few = model._validation_set(fine[30:], time[30:], None, three, 1, 3, "completed", 3)
    assert len(few["idx"]) == 1 and few["masks"].shape[0] == 1
    assert model._validation_losses(few, steps=2)[1] > 0


def test_early_stopping_errors():
    fine, time = _series(T=48)
    with pytest.raises(ValueError, match="'val_fine' must have shape"):
        _fit_es(_tiny(), fine, time, val_fine=fine[30:, :1], val_time=time[30:])
    with pytest.raises(ValueError, match="val_time"):
        _fit_es(_tiny(), fine, time, val_fine=fine[30:])
    with pytest.raises(ValueError, match="'val_every'"):
        _fit_es(_tiny(), fine, time, val_fine=fine[30:], val_time=time[30:], val_every=0)
    with pytest.raises(ValueError, match="T_v=3"):
        _fit_es(_tiny(), fine, time, val_fine=fine[30:33], val_time=time[30:33])


def test_fit_upsampler_early_stopping():
    fine, time = _series(T=48)
    torch.manual_seed(0)
    net = SRCNN(2, (4, 2), 2)
    fit_upsampler(net, fine[:30], patterns=["random:0.4"], steps=6, batch_size=4,
                  val_fine=fine[30:], val_every=2)
    assert net.best_step in (2, 4, 6)
    with pytest.raises(ValueError, match="'val_fine' must have shape"):
        fit_upsampler(SRCNN(2, (4, 2), 2), fine[:30], steps=1, val_fine=fine[30:, :1])
    torch.manual_seed(0)
    plain = fit_upsampler(SRCNN(2, (4, 2), 2), fine[:30], patterns=["random:0.4"], steps=6,
                          batch_size=4)
    torch.manual_seed(0)
    late = fit_upsampler(SRCNN(2, (4, 2), 2), fine[:30], patterns=["random:0.4"], steps=6,
                         batch_size=4, val_fine=fine[30:], val_every=50)
    assert late.best_step == 6
    for va, vb in zip(plain.state_dict().values(), late.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=0, atol=0)


def test_independent_stages_make_the_pretrained_diffusion_f_independent_of_diffusion_c():
    """With independent_stages, removing ST-PointFormer leaves Diffusion-F's initial weights
    and its whole pre-training unchanged (same init seed, same random stream, own gradient
    clip); without it, both differ."""
    fine, time = _series()
    kw = dict(patterns=["random:0.4", "block"], pretrain_steps=5, joint=False, joint_steps=0,
              batch_size=8)

    def pair(independent):
        out = []
        for use_st in (True, False):
            torch.manual_seed(7)
            m = _tiny(use_stpointformer=use_st, independent_stages=independent)
            init = {k: v.clone() for k, v in m.stage_f.state_dict().items()}
            m.fit(fine, time=time, **kw)
            out.append((init, m.stage_f.state_dict(), m))
        return out

    (i_full, f_full, full), (i_abl, f_abl, abl) = pair(True)
    assert "independent_stages=True" in repr(full)
    assert all(torch.equal(i_full[k], i_abl[k]) for k in i_full)
    assert all(torch.equal(f_full[k], f_abl[k]) for k in f_full)       # same Diffusion-F
    c_full, c_abl = full.stage_c.state_dict(), abl.stage_c.state_dict()
    assert set(c_abl) < set(c_full)                                     # C really differs
    (i_full, f_full, _), (i_abl, f_abl, _) = pair(False)
    assert not all(torch.equal(i_full[k], i_abl[k]) for k in i_full)  # coupled: init shifts
    assert not all(torch.equal(f_full[k], f_abl[k]) for k in f_full)


def test_independent_stages_make_diffusion_c_independent_of_diffusion_f():
    """The mirror image, through the joint phase too: with independent_stages, removing
    T-PatternNet leaves Diffusion-C's whole training (and so every completion) unchanged."""
    fine, time = _series()
    kw = dict(patterns=["random:0.4", "block"], pretrain_steps=4, joint_steps=4,
              joint_refresh=2, joint_sampling_steps=2, batch_size=8)
    states = []
    for use_tp in (True, False):
        torch.manual_seed(7)
        m = _tiny(use_tpatternnet=use_tp, independent_stages=True).fit(fine, time=time, **kw)
        states.append((m.stage_c.state_dict(), m.stage_f.state_dict()))
    (c_full, f_full), (c_abl, f_abl) = states
    assert all(torch.equal(c_full[k], c_abl[k]) for k in c_full)       # same Diffusion-C
    assert set(f_abl) < set(f_full)                                     # F really differs


def test_tpatternnet_sizes_reach_the_timesblocks():
    """DESIGN's reference T-PatternNet (top_k 5, num_kernels 6, d_ff 64) is reachable from
    DiffRecon; the defaults stay 3 / 3 / d_model."""
    from torch_stgen.nn import TimesBlock
    ref = DiffRecon(channels=2, coarse_size=(4, 2), factor=2, history_f=24, d_model=16,
                    top_k=5, num_kernels=6, d_ff=64)
    blocks = [m for m in ref.stage_f.modules() if isinstance(m, TimesBlock)]
    assert blocks and all(b.top_k == 5 for b in blocks)
    assert all(b.num_kernels == 6 and b.d_ff == 64 for b in blocks)
    plain = DiffRecon(channels=2, coarse_size=(4, 2), factor=2, history_f=24, d_model=16)
    blocks = [m for m in plain.stage_f.modules() if isinstance(m, TimesBlock)]
    assert all(b.top_k == 3 and b.num_kernels == 3 and b.d_ff == 16 for b in blocks)


class _StepConditioner(Conditioner):
    """A user's conditioner: a per-step scalar as a vector; records what it was given."""

    vector_dim = 4

    def __init__(self, key):
        super().__init__()
        self.key = key
        self.proj = torch.nn.Linear(1, self.vector_dim)
        self.seen = []

    def forward(self, batch):
        value = batch[self.key].float()
        self.seen.append(value.detach().cpu().clone())
        return {"vector": self.proj(value[:, None] / 100.0)}


def test_user_conditioners_plug_into_both_stages():
    fine, time = _series()                                  # T = 40
    val, val_time = _series(T=30, seed=1)
    c_c, c_f = _StepConditioner("rain"), _StepConditioner("rain")
    torch.manual_seed(0)
    model = DiffRecon(channels=2, coarse_size=(4, 2), factor=2, history_c=3, history_f=6,
                      model_channels=8, d_model=8, num_train_timesteps=50,
                      conditioners_c=[c_c], conditioners_f=[c_f])
    assert c_c in model.stage_c.modules() and c_f in model.stage_f.modules()
    rain = torch.arange(40).float()                         # value = the step index
    model.fit(fine, time=time, patterns=["random:0.4"], pretrain_steps=4, joint_steps=4,
              joint_refresh=4, batch_size=4, joint_sampling_steps=2, val_fine=val,
              val_time=val_time, val_every=4, val_maps=6,
              step_inputs={"rain": rain},
              val_step_inputs={"rain": 1000 + torch.arange(30).float()})
    for cond in (c_c, c_f):
        seen = torch.cat(cond.seen)
        train = seen[seen < 1000]
        # step indices of the training series (the joint phase completes all of it)
        assert train.numel() and bool(((train >= 0) & (train < 40)).all())
        assert torch.equal(train, train.round())
        assert bool((seen >= 1000).any())                   # validation used its own
    # reconstruction: the batch of step t holds step_inputs[key][t]
    coarse = coarsen(fine, 2)
    mask = SparsePattern.parse("random:0.4", seed=0)(40, 4, 2)[:, None]
    kw = dict(history=10, time=time, num_samples=1, steps=2, seed=0)
    c_f.seen.clear()
    a = model.reconstruct(coarse * mask, mask, step_inputs={"rain": rain}, **kw).fine
    assert sorted(set(torch.cat(c_f.seen).tolist())) == list(range(10, 40))
    b = model.reconstruct(coarse * mask, mask, step_inputs={"rain": rain}, **kw).fine
    c = model.reconstruct(coarse * mask, mask, step_inputs={"rain": rain * 0}, **kw).fine
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_user_conditioner_inputs_are_checked_by_name():
    fine, time = _series()
    model = DiffRecon(channels=2, coarse_size=(4, 2), factor=2, history_c=3, history_f=6,
                      model_channels=8, d_model=8, num_train_timesteps=50,
                      conditioners_f=[_StepConditioner("rain")])
    kw = dict(time=time, pretrain_steps=1, joint_steps=0, batch_size=2)
    with pytest.raises(ValueError, match=r"'step_inputs\['rain'\]' must be a tensor \[T, "
                                         r"\.\.\.\] with \[T\] = \[40\]"):
        model.fit(fine, step_inputs={"rain": torch.zeros(39)}, **kw)
    with pytest.raises(ValueError, match="'time' is a built-in batch key"):
        model.fit(fine, step_inputs={"time": torch.zeros(40)}, **kw)
    with pytest.raises(ValueError, match=r"'val_step_inputs' must have the keys"):
        model.fit(fine, step_inputs={"rain": torch.zeros(40)}, val_fine=fine[:30],
                  val_time=time[:30], **kw)
    with pytest.raises(ValueError, match="'val_step_inputs' needs 'val_fine'"):
        model.fit(fine, step_inputs={"rain": torch.zeros(40)},
                  val_step_inputs={"rain": torch.zeros(30)}, **kw)
    with pytest.raises(KeyError, match="_StepConditioner reads batch key 'rain'.*step_inputs"):
        model.fit(fine, **kw)                          # the conditioner's input is missing
    plain = DiffRecon(channels=2, coarse_size=(4, 2), factor=2, history_c=3, history_f=6,
                      model_channels=8, d_model=8, num_train_timesteps=50)
    with pytest.raises(ValueError, match="'step_inputs' \\['rain'\\] given, but the model "
                                         "has no conditioners_c / conditioners_f"):
        plain.fit(fine, step_inputs={"rain": torch.zeros(40)}, **kw)
    assert model._steps == {}                          # nothing kept after a failed call
    model.fit(fine, step_inputs={"rain": torch.zeros(40)}, **kw)
    assert model._steps == {}                          # ... nor after a finished one
    lone = DiffRecon(channels=2, coarse_size=(4, 2), factor=2,
                     conditioners_c=_StepConditioner("wind"))    # one conditioner, no list
    assert any(isinstance(m, _StepConditioner) for m in lone.stage_c.modules())
    with pytest.raises(TypeError, match="Conditioner instances"):
        DiffRecon(channels=2, coarse_size=(4, 2), factor=2,
                  conditioners_c=[torch.nn.Linear(1, 1)])
