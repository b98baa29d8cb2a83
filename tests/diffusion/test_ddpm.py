import math

import pytest
import torch

from _diffusion_helpers import normal_quantiles, toy_model
from torch_stgen.diffusion import (DDIMScheduler, DDPMScheduler, diffusion_loss,
                                   make_beta_schedule, sample)

SHAPE = (3, 4, 5, 2)  # [B, T, N, F]
PRED_TYPES = ["epsilon", "sample", "v_prediction"]


def gaussian_model(scheduler, mu, s, prediction_type="epsilon"):
    """Exact model output for data x0 ~ N(mu, s^2): E[eps | x_t], E[x0 | x_t] or E[v | x_t]."""
    ac = scheduler.alphas_cumprod

    def fn(x, t):
        ab = ac[t[0]].item()
        a, b = math.sqrt(ab), math.sqrt(1 - ab)
        var = ab * s * s + 1 - ab
        eps = b * (x - a * mu) / var
        x0 = mu + a * s * s * (x - a * mu) / var
        return {"epsilon": eps, "sample": x0, "v_prediction": a * eps - b * x0}[prediction_type]
    return fn


def with_float64_schedule(ref, ours):
    """Give a diffusers scheduler our float64 schedule (diffusers keeps it in float32)."""
    ref.betas = ours.betas.clone()
    ref.alphas = ours.alphas.clone()
    ref.alphas_cumprod = ours.alphas_cumprod.clone()
    ref.one = torch.tensor(1.0, dtype=torch.float64)
    if hasattr(ref, "final_alpha_cumprod"):
        ref.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    return ref


# --------------------------------------------------------------------------- API
def test_config_is_frozen_and_repr():
    sched = DDPMScheduler(num_train_timesteps=100, beta_schedule="quadratic",
                          prediction_type="v_prediction")
    c = sched.config
    assert c.num_train_timesteps == 100 and c["prediction_type"] == "v_prediction"
    assert c.beta_start == pytest.approx(1e-4) and c.beta_end == pytest.approx(0.5)
    assert c.clip_sample is False and c.variance_type == "fixed_small"
    with pytest.raises(AttributeError, match="frozen"):
        c.prediction_type = "epsilon"
    assert len(sched) == 100
    assert str(sched) == ("DDPMScheduler(num_train_timesteps=100, beta_schedule='quadratic', "
                          "prediction_type='v_prediction', num_inference_steps=None)")
    assert DDIMScheduler().config.eta == 0.0


def test_trained_betas_and_cosine():
    betas = make_beta_schedule("cosine", 20)
    sched = DDPMScheduler(trained_betas=betas)
    assert sched.config.num_train_timesteps == 20 and sched.config.beta_schedule == "custom"
    torch.testing.assert_close(sched.alphas_cumprod, torch.cumprod(1 - betas, 0))
    assert torch.equal(DDPMScheduler(20, beta_schedule="cosine").betas, betas)


def test_timesteps():
    sched = DDPMScheduler()
    assert torch.equal(sched.timesteps, torch.arange(999, -1, -1))
    sched.set_timesteps(50)
    assert torch.equal(sched.timesteps, torch.arange(980, -1, -20))
    assert sched.previous_timestep(980) == 960 and sched.previous_timestep(0) == -1
    sched = DDIMScheduler(timestep_spacing="trailing")
    sched.set_timesteps(4)
    assert sched.timesteps.tolist() == [999, 749, 499, 249]
    sched = DDIMScheduler(timestep_spacing="linspace")
    sched.set_timesteps(4)
    assert sched.timesteps.tolist() == [999, 666, 333, 0]
    sched.set_timesteps(timesteps=[900, 10])
    assert sched.previous_timestep(900) == 10
    with pytest.raises(ValueError, match="'num_inference_steps' must be an int in"):
        sched.set_timesteps(1001)
    with pytest.raises(ValueError, match="strictly descending"):
        sched.set_timesteps(timesteps=[10, 900])
    with pytest.raises(ValueError, match="not one of the scheduler's timesteps"):
        sched.previous_timestep(11)


def test_add_noise_velocity_and_targets():
    sched = DDPMScheduler(prediction_type="v_prediction")
    x0, noise = torch.randn(SHAPE), torch.randn(SHAPE)
    t = torch.tensor([0, 500, 999])
    ab = sched.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(sched.add_noise(x0, noise, t), ab.sqrt() * x0 + (1 - ab).sqrt()
                               * noise)
    v = ab.sqrt() * noise - (1 - ab).sqrt() * x0
    torch.testing.assert_close(sched.get_velocity(x0, noise, t), v)
    torch.testing.assert_close(sched.training_target(x0, noise, t), v)
    assert DDPMScheduler().training_target(x0, noise, t) is noise
    assert DDPMScheduler(prediction_type="sample").training_target(x0, noise, t) is x0
    # a scalar timestep applies to the whole batch
    torch.testing.assert_close(sched.add_noise(x0, noise, 7),
                               sched.add_noise(x0, noise, torch.tensor([7, 7, 7])))
    with pytest.raises(ValueError, match=r"'timesteps' must have shape \[B\] with B = 3"):
        sched.add_noise(x0, noise, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"'timesteps' must be integers in \[0, 999\]"):
        sched.add_noise(x0, noise, torch.tensor([1, 2, 1000]))
    with pytest.raises(ValueError, match="'noise' must have the shape"):
        sched.add_noise(x0, noise[:2], t)


def test_step_epsilon_is_ddpm_eq_11():
    sched = DDPMScheduler()
    x, eps, z = torch.randn(SHAPE), torch.randn(SHAPE), torch.randn(SHAPE)
    t = 600
    a, ab, b = sched.alphas[t].item(), sched.alphas_cumprod[t].item(), sched.betas[t].item()
    ab_prev = sched.alphas_cumprod[t - 1].item()
    sigma = math.sqrt((1 - ab_prev) / (1 - ab) * b)
    expected = (x - b / math.sqrt(1 - ab) * eps) / math.sqrt(a) + sigma * z  # eq. 11
    prev, x0 = sched.step(eps, t, x, variance_noise=z)
    torch.testing.assert_close(prev, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x0, (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab))
    # no noise at t = 0
    prev0, x00 = sched.step(eps, 0, x, variance_noise=z)
    torch.testing.assert_close(prev0, x00)
    big = DDPMScheduler(variance_type="fixed_large").step(eps, t, x, variance_noise=z)[0]
    torch.testing.assert_close(big - prev, (math.sqrt(b) - sigma) * z, rtol=1e-4, atol=1e-5)


def test_no_clipping_by_default():
    x = torch.full((2, 3), 5.0)
    for sched in (DDPMScheduler(prediction_type="sample"), DDIMScheduler(prediction_type="sample")):
        sched.set_timesteps(10)
        _, x0 = sched.step(x, sched.timesteps[0], x, generator=torch.Generator().manual_seed(0))
        assert torch.equal(x0, x)  # unclipped
    clip = DDIMScheduler(prediction_type="sample", clip_sample=True, clip_sample_range=2.0)
    clip.set_timesteps(10)
    assert torch.equal(clip.step(x, clip.timesteps[0], x)[1], torch.full((2, 3), 2.0))


def test_ddim_eta_one_equals_ddpm_step():
    """DDIM eq. 16 with eta = 1 gives DDPM's posterior (eqs. 6-7), also for strided steps."""
    for pred in PRED_TYPES:
        ddpm, ddim = DDPMScheduler(prediction_type=pred), DDIMScheduler(prediction_type=pred)
        for n in (None, 20):
            if n:
                ddpm.set_timesteps(n)
                ddim.set_timesteps(n)
            for t in ddim.timesteps.tolist()[::7]:
                x, out, z = torch.randn(SHAPE), torch.randn(SHAPE), torch.randn(SHAPE)
                a = ddpm.step(out, t, x, variance_noise=z)
                b = ddim.step(out, t, x, eta=1.0, variance_noise=z)
                torch.testing.assert_close(a.prev_sample, b.prev_sample, rtol=1e-4, atol=1e-4)
                torch.testing.assert_close(a.pred_original_sample, b.pred_original_sample)


def test_step_errors():
    sched = DDPMScheduler()
    x = torch.randn(SHAPE)
    with pytest.raises(ValueError, match="'model_output' must have the shape of 'sample'"):
        sched.step(x[:1], 5, x)
    with pytest.raises(ValueError, match="either 'generator' or 'variance_noise'"):
        sched.step(x, 5, x, generator=torch.Generator(), variance_noise=x)
    with pytest.raises(ValueError, match="one timestep shared by the batch"):
        sched.step(x, torch.tensor([1, 2, 3]), x)
    with pytest.raises(ValueError, match="'prediction_type' must be one of"):
        DDPMScheduler(prediction_type="score")
    with pytest.raises(ValueError, match="'variance_type' must be one of"):
        DDPMScheduler(variance_type="learned")
    with pytest.raises(ValueError, match="'eta' must be >= 0"):
        DDIMScheduler(eta=-1.0)
    ddim = DDIMScheduler()
    ddim.set_timesteps(10)
    with pytest.raises(ValueError, match="'eta'=3.0 is too large"):
        ddim.step(x, 900, x, eta=3.0)


# --------------------------------------------------------------------------- diffusers parity
@pytest.mark.parametrize("pred", PRED_TYPES)
def test_ddpm_matches_diffusers(pred):
    diffusers = pytest.importorskip("diffusers")
    worst = 0.0
    for spacing in ("leading", "linspace", "trailing"):
        for n in (None, 50, 7):
            ours = DDPMScheduler(prediction_type=pred, timestep_spacing=spacing)
            ref = with_float64_schedule(diffusers.DDPMScheduler(
                prediction_type=pred, clip_sample=False, timestep_spacing=spacing), ours)
            if n:
                ours.set_timesteps(n)
                ref.set_timesteps(n)
            assert torch.equal(ours.timesteps, ref.timesteps)
            ts = ours.timesteps.tolist()
            for t in ts[:3] + ts[len(ts) // 2:len(ts) // 2 + 2] + ts[-3:]:
                x = torch.randn(SHAPE, dtype=torch.float64)
                out = torch.randn(SHAPE, dtype=torch.float64)
                # the variance noise comes from the same generator state
                a = ref.step(out, t, x, generator=torch.Generator().manual_seed(t),
                             return_dict=False)
                b = ours.step(out, t, x, generator=torch.Generator().manual_seed(t))
                for u, v in zip(a, b):
                    worst = max(worst, (u - v).abs().max().item())
    assert worst < 1e-5  # measured ~6e-14


@pytest.mark.parametrize("pred", PRED_TYPES)
def test_ddim_matches_diffusers(pred):
    diffusers = pytest.importorskip("diffusers")
    worst = 0.0
    for eta in (0.0, 0.5, 1.0):
        for n in (50, 7):
            ours = DDIMScheduler(prediction_type=pred)
            ref = with_float64_schedule(diffusers.DDIMScheduler(prediction_type=pred,
                                                                clip_sample=False), ours)
            ours.set_timesteps(n)
            ref.set_timesteps(n)
            assert torch.equal(ours.timesteps, ref.timesteps)
            for t in ours.timesteps.tolist():
                x = torch.randn(SHAPE, dtype=torch.float64)
                out = torch.randn(SHAPE, dtype=torch.float64)
                a = ref.step(out, t, x, eta=eta, generator=torch.Generator().manual_seed(t),
                             return_dict=False)
                b = ours.step(out, t, x, eta=eta, generator=torch.Generator().manual_seed(t))
                for u, v in zip(a, b):
                    worst = max(worst, (u - v).abs().max().item())
    assert worst < 1e-5


def test_float32_parity_with_stock_diffusers():
    """Against diffusers' own float32 schedule: agreement to float32 precision."""
    diffusers = pytest.importorskip("diffusers")
    x0, noise = torch.randn(8, 3, 4, 2), torch.randn(8, 3, 4, 2)
    t = torch.randint(0, 1000, (8,))
    ref, ours = diffusers.DDPMScheduler(), DDPMScheduler()
    torch.testing.assert_close(ours.add_noise(x0, noise, t), ref.add_noise(x0, noise, t),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.get_velocity(x0, noise, t), ref.get_velocity(x0, noise, t),
                               rtol=1e-5, atol=1e-5)
    for pred in PRED_TYPES:
        pairs = [(diffusers.DDPMScheduler(prediction_type=pred, clip_sample=False),
                  DDPMScheduler(prediction_type=pred), {}),
                 (diffusers.DDIMScheduler(prediction_type=pred, clip_sample=False),
                  DDIMScheduler(prediction_type=pred), {"eta": 1.0})]
        for ref, ours, kw in pairs:
            ref.set_timesteps(50)
            ours.set_timesteps(50)
            for t in ours.timesteps.tolist()[::5]:
                x, out = torch.randn(SHAPE), torch.randn(SHAPE)
                a = ref.step(out, t, x, generator=torch.Generator().manual_seed(t),
                             return_dict=False, **kw)
                b = ours.step(out, t, x, generator=torch.Generator().manual_seed(t), **kw)
                for u, v in zip(a, b):
                    torch.testing.assert_close(v, u, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- loss
def test_diffusion_loss():
    x0 = torch.randn(SHAPE)
    noise, t = torch.randn(SHAPE), torch.tensor([3, 400, 999])
    for pred in PRED_TYPES:
        sched = DDPMScheduler(prediction_type=pred)
        target = sched.training_target(x0, noise, t)

        def oracle(x_t, tt):
            assert tt.dtype == torch.long and torch.equal(tt, t)
            torch.testing.assert_close(x_t, sched.add_noise(x0, noise, t))
            return target
        assert diffusion_loss(oracle, x0, sched, timesteps=t, noise=noise).item() == 0.0
        zero = diffusion_loss(lambda x_t, tt: torch.zeros_like(x_t), x0, sched, timesteps=t,
                              noise=noise)
        torch.testing.assert_close(zero, (target ** 2).mean())
    # mask: only observed entries count, averaged over them
    mask = (torch.rand(SHAPE) > 0.5).float()
    sched = DDPMScheduler()
    loss = diffusion_loss(lambda x_t, tt: torch.zeros_like(x_t), x0, sched, timesteps=t,
                          noise=noise, mask=mask)
    torch.testing.assert_close(loss, (noise ** 2 * mask).sum() / mask.sum())
    empty = diffusion_loss(lambda x_t, tt: x_t, x0, sched, mask=torch.zeros(SHAPE))
    assert empty.item() == 0.0
    # generator reproducibility, with random t and noise
    model = torch.nn.Linear(2, 2)
    a = diffusion_loss(lambda x_t, tt: model(x_t), x0, sched, generator=torch.Generator()
                       .manual_seed(3))
    b = diffusion_loss(lambda x_t, tt: model(x_t), x0, sched, generator=torch.Generator()
                       .manual_seed(3))
    assert torch.equal(a, b) and a.requires_grad
    with pytest.raises(ValueError, match="'mask' must broadcast to"):
        diffusion_loss(lambda x_t, tt: x_t, x0, sched, mask=torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match="model output must have the shape"):
        diffusion_loss(lambda x_t, tt: x_t[:1], x0, sched)


# --------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("kind,steps,eta", [("ddpm", None, None), ("ddim", 200, 0.0),
                                            ("ddim", 500, 1.0)])
def test_exact_gaussian_sampling(kind, steps, eta):
    """With the exact epsilon of N(mu, s^2) data, samples have the data's mean and std."""
    mu, s = 2.0, 1.0
    sched = DDPMScheduler() if kind == "ddpm" else DDIMScheduler()
    g = torch.Generator().manual_seed(0)
    x = sample(gaussian_model(sched, mu, s), sched, (20000, 1), num_inference_steps=steps,
               generator=g, eta=eta)
    assert x.shape == (20000, 1) and x.dtype == torch.float32
    assert abs(x.mean().item() - mu) / mu < 0.02
    assert abs(x.std().item() - s) / s < 0.02


def test_prediction_types_sample_identically():
    """The exact model in the three parameterisations gives the same DDIM trajectory."""
    mu, s = -1.0, 0.7
    z = normal_quantiles(512)
    outs = []
    for pred in PRED_TYPES:
        sched = DDIMScheduler(prediction_type=pred)
        outs.append(sample(gaussian_model(sched, mu, s, pred), sched, x_T=z,
                           num_inference_steps=50))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(outs[0], outs[2], rtol=1e-4, atol=1e-4)


def test_sample_arguments():
    sched = DDPMScheduler(num_train_timesteps=10)
    calls = []

    def model(x, t):
        calls.append(t.clone())
        return torch.zeros_like(x)
    x_T = torch.randn(2, 3)
    a = sample(model, sched, x_T=x_T, generator=torch.Generator().manual_seed(1))
    assert len(calls) == 10 and calls[0].tolist() == [9, 9] and calls[-1].tolist() == [0, 0]
    # x_T is drawn from the generator first
    b = sample(model, sched, (2, 3), generator=torch.Generator().manual_seed(1))
    c = sample(model, sched, x_T=torch.randn(2, 3, generator=torch.Generator().manual_seed(1)),
               generator=_advanced(torch.Generator().manual_seed(1), (2, 3)))
    assert torch.equal(b, c) and not torch.equal(a, b)
    with pytest.raises(ValueError, match="pass 'shape' or 'x_T'"):
        sample(model, sched)
    with pytest.raises(ValueError, match="'x_T' must have shape"):
        sample(model, sched, (4, 3), x_T=x_T)
    with pytest.raises(ValueError, match="'eta' is only used by DDIMScheduler"):
        sample(model, sched, (2, 3), eta=0.5)


def _advanced(gen, shape):
    torch.randn(shape, generator=gen)
    return gen


# --------------------------------------------------------------------------- golden numbers
# Sums of the final samples of a fixed-seed loop with `toy_model`, computed once from the
# implementation after the checks above passed (the diffusers habit).
GOLDEN = {
    ("ddpm", None): 16.851415851153433,
    ("ddim", 0.0): 63.15353183657862,
    ("ddim", 1.0): 16.851361730135977,
}


@pytest.mark.parametrize("kind,eta", list(GOLDEN))
def test_golden_sampler_sums(kind, eta):
    sched = DDPMScheduler() if kind == "ddpm" else DDIMScheduler()
    x = sample(toy_model, sched, SHAPE, num_inference_steps=50,
               generator=torch.Generator().manual_seed(2024), eta=eta)
    assert x.double().sum().item() == pytest.approx(GOLDEN[(kind, eta)], abs=1e-4)


@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler])
def test_trailing_spacing_gives_exactly_n_timesteps(cls):
    """round(T - k T / n) - 1, k = 0..n-1: the float arange picked up an (n+1)-th
    timestep, -1, for 62 of the 1000 values of n at T = 1000 (e.g. 61), and sampling
    crashed after the whole chain."""
    for T in (1000, 100):
        sched = cls(T, timestep_spacing="trailing")
        for n in range(1, T + 1):
            sched.set_timesteps(n)
            ts = sched.timesteps
            assert ts.numel() == n and int(ts[0]) == T - 1 and int(ts[-1]) >= 0, (T, n)
            assert (ts[1:] < ts[:-1]).all()
    sched = cls(1000, timestep_spacing="trailing")
    x = sample(lambda x, t: torch.zeros_like(x), sched, shape=(2, 3), num_inference_steps=61,
               generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 3) and torch.isfinite(x).all()


def test_schedulers_refuse_truncated_timesteps_and_rebuild_custom_betas():
    import numpy as np
    sched = DDPMScheduler(20)
    x0, noise = torch.randn(3, 4), torch.randn(3, 4)
    with pytest.raises(ValueError, match="'timesteps' must be integers"):
        sched.add_noise(x0, noise, torch.tensor([0.9, 5.7, 10.2]))
    with pytest.raises(ValueError, match="'timesteps' must be integers"):
        sched.add_noise(x0, noise, torch.tensor([True, False, True]))
    with pytest.raises(ValueError, match="the sample must be a floating tensor"):
        sched.add_noise(x0.long(), noise.long(), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="'timesteps' must be integers"):
        sched.set_timesteps(timesteps=[15.7, 5.2])
    sched.set_timesteps(np.int64(5))                       # numpy integers are integers
    assert sched.num_inference_steps == 5
    betas = make_beta_schedule("cosine", 200)            # float64, not float32-exact
    custom = DDPMScheduler(trained_betas=betas)
    again = DDPMScheduler(**custom.config)                # the config holds the betas
    assert torch.equal(again.betas, betas) and again.config.beta_schedule == "custom"
    # a list of Python floats is float64 too (it passed through float32: 2e-8 off)
    assert torch.equal(DDPMScheduler(trained_betas=betas.tolist()).betas, betas)
    assert torch.equal(DDIMScheduler(**DDIMScheduler(30).config).betas, DDIMScheduler(30).betas)


def test_non_finite_settings_and_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="'clip_sample_range' must be a finite number > 0"):
        DDPMScheduler(10, clip_sample_range=float("nan"))
    with pytest.raises(ValueError, match=r"'shape' must be a sequence \[B, \*\]"):
        sample(lambda x, t: x, DDPMScheduler(10), shape=3)
    with pytest.raises(ValueError, match=r"'shape' must be a sequence \[B, \*\]"):
        sample(lambda x, t: x, DDPMScheduler(10), shape=(2, 1.5))


@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler])
def test_step_return_dict_false_is_a_plain_tuple(cls):
    """diffusers loops call ``scheduler.step(..., return_dict=False)[0]``; our step took
    no ``return_dict`` and raised a TypeError there."""
    sched = cls(num_train_timesteps=50)
    sched.set_timesteps(10)
    x, eps = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    t = sched.timesteps[3]
    named = sched.step(eps, t, x, generator=torch.Generator().manual_seed(0))
    plain = sched.step(eps, t, x, generator=torch.Generator().manual_seed(0),
                       return_dict=False)
    assert type(plain) is tuple and len(plain) == 2
    assert torch.equal(plain[0], named.prev_sample)
    assert torch.equal(plain[1], named.pred_original_sample)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("schedule", ["leading", "trailing", "offset", "custom"])
def test_ddpm_adds_no_noise_on_the_last_step(variance_type, schedule):
    """With the last timestep above 0 (trailing, steps_offset, custom timesteps), the last
    step still drew z: fixed_large left std 0.32 of noise on a perfect model's sample."""
    x0 = torch.randn(1, 4000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    kw = {"trailing": dict(timestep_spacing="trailing"), "offset": dict(steps_offset=1)}
    s = DDPMScheduler(1000, variance_type=variance_type, prediction_type="sample",
                      **kw.get(schedule, {}))
    if schedule == "custom":
        s.set_timesteps(timesteps=[900, 500, 100])
    else:
        s.set_timesteps(10)
    out = sample(lambda x, t: x0.expand_as(x).clone(), s, shape=(1, 4000),
                 generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(out, x0, atol=1e-9, rtol=0)


@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler])
@pytest.mark.parametrize("spacing", ["leading", "linspace"])
def test_one_inference_step_that_would_return_the_noise_is_refused(cls, spacing):
    """'leading' / 'linspace' put a one-step schedule at t = 0: the sampler returned its
    starting noise (mean -0.02 for data of mean 3)."""
    s = cls(1000, timestep_spacing=spacing)
    with pytest.raises(ValueError, match="'num_inference_steps'=1 .* starting noise"):
        s.set_timesteps(1)
    s.set_timesteps(2)
    assert int(s.timesteps[0]) >= 500
    one = cls(1000, timestep_spacing="trailing")
    one.set_timesteps(1)
    assert one.timesteps.tolist() == [999]


def test_degenerate_schedules_are_refused_by_name():
    with pytest.raises(ValueError, match=r"'trained_betas'\[0\] = 1e-17 is below float64"):
        DDPMScheduler(trained_betas=[1e-17, 0.1, 0.2])
    with pytest.raises(ValueError, match="zero terminal SNR.*prediction_type='epsilon'"):
        DDIMScheduler(trained_betas=[0.1, 0.5, 1.0])
    for kind in ("v_prediction", "sample"):     # those sample a beta of 1 without dividing by 0
        s = DDIMScheduler(trained_betas=[0.1, 0.5, 1.0], prediction_type=kind)
        s.set_timesteps(3)
        out = sample(lambda x, t: torch.zeros_like(x), s, shape=(2, 3),
                     generator=torch.Generator().manual_seed(0))
        assert bool(torch.isfinite(out).all())
