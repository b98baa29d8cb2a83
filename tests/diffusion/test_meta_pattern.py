import math

import pytest
import torch
from torch import nn

from _diffusion_helpers import normal_quantiles, toy_model
from torch_stgen.diffusion import (DDIMScheduler, DDPMScheduler, EDMPrecond,
                                   MetaPatternDiffusion, diffusion_loss, edm_loss,
                                   edm_sampler, make_beta_schedule, sample)

SHAPE = (3, 4, 5, 2)  # [B, T, N, F]


def test_q_sample_is_eq_16():
    mpd = MetaPatternDiffusion(DDPMScheduler())
    x0, f, noise = torch.randn(SHAPE), torch.randn(SHAPE[1:]), torch.randn(SHAPE)
    t = torch.tensor([0, 300, 999])
    ab = mpd.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    expected = ab.sqrt() * x0 + (1 - ab.sqrt()) * f + (1 - ab).sqrt() * noise
    torch.testing.assert_close(mpd.q_sample(x0, f, t, noise), expected)


def test_forward_marginal_monte_carlo():
    """Simulating the Markov chain x_i = sqrt(a_i) x_{i-1} + (1 - sqrt(a_i)) f + sqrt(b_i) e
    gives the marginal of eq. 16: mean sqrt(ab) x0 + (1 - sqrt(ab)) f, variance 1 - ab."""
    betas = make_beta_schedule("linear", 20, beta_start=1e-2, beta_end=0.4)
    mpd = MetaPatternDiffusion(betas)
    x0, f = torch.tensor([2.0, -1.0], dtype=torch.float64), torch.tensor([-3.0, 4.0],
                                                                          dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x = x0.expand(n, 2).clone()
    for i in range(20):
        a = 1 - betas[i].item()
        x = math.sqrt(a) * x + (1 - math.sqrt(a)) * f + math.sqrt(1 - a) * torch.randn(
            n, 2, generator=g, dtype=torch.float64)
        if i in (2, 9, 19):
            ab = mpd.alphas_cumprod[i].item()
            mean = math.sqrt(ab) * x0 + (1 - math.sqrt(ab)) * f
            var = 1 - ab
            torch.testing.assert_close(x.mean(0), mean, rtol=0.01, atol=0.01 * math.sqrt(var))
            torch.testing.assert_close(x.var(0), torch.full((2,), var, dtype=torch.float64),
                                       rtol=0.01, atol=0)
            # and q_sample draws from the same marginal
            xs = mpd.q_sample(x0.expand(n, 2), f, torch.full((n,), i), generator=g)
            torch.testing.assert_close(xs.mean(0), mean, rtol=0.01, atol=0.01 * math.sqrt(var))
            torch.testing.assert_close(xs.var(0), torch.full((2,), var, dtype=torch.float64),
                                       rtol=0.01, atol=0)


def test_posterior_is_bayes():
    """Eq. 17 equals the Gaussian posterior of x_{i-1} given (x_i, x0), computed (a) from the
    joint Gaussian of (x_{i-1}, x_i) and (b) by numerical Bayes on a grid."""
    mpd = MetaPatternDiffusion(DDPMScheduler(num_train_timesteps=100, beta_end=0.2))
    x0, f, xt = 1.3, -0.7, 0.4
    ac = mpd.alphas_cumprod
    for i in (1, 10, 50, 99):
        ab, ab_prev = ac[i].item(), ac[i - 1].item()
        a = ab / ab_prev
        mean, var = mpd.posterior(torch.tensor([[x0]], dtype=torch.float64),
                                  torch.tensor([[xt]], dtype=torch.float64),
                                  torch.tensor(f, dtype=torch.float64), torch.tensor([i]))
        # (a) joint Gaussian: x_{i-1} ~ N(m1, v1), x_i | x_{i-1} ~ N(sqrt(a) x_{i-1} + (1 -
        # sqrt(a)) f, 1 - a)
        m1 = math.sqrt(ab_prev) * x0 + (1 - math.sqrt(ab_prev)) * f
        v1 = 1 - ab_prev
        m2, v2, c12 = math.sqrt(a) * m1 + (1 - math.sqrt(a)) * f, a * v1 + 1 - a, math.sqrt(a) * v1
        assert v2 == pytest.approx(1 - ab, rel=1e-12)  # consistent with eq. 16
        assert mean.item() == pytest.approx(m1 + c12 / v2 * (xt - m2), rel=1e-10)
        assert var.item() == pytest.approx(v1 - c12 ** 2 / v2, rel=1e-10)
        # (b) numerical Bayes: p(x_{i-1} | x_i, x0) ~ q(x_i | x_{i-1}) q(x_{i-1} | x0)
        sd = math.sqrt(v1)
        grid = torch.linspace(m1 - 12 * sd, m1 + 12 * sd, 200_001, dtype=torch.float64)
        logp = (-(grid - m1) ** 2 / (2 * v1)
                - (xt - math.sqrt(a) * grid - (1 - math.sqrt(a)) * f) ** 2 / (2 * (1 - a)))
        w = torch.exp(logp - logp.max())
        w = w / w.sum()
        num_mean = (w * grid).sum().item()
        num_var = (w * (grid - num_mean) ** 2).sum().item()
        assert mean.item() == pytest.approx(num_mean, abs=1e-6 * max(1, abs(num_mean)))
        assert var.item() == pytest.approx(num_var, rel=1e-4)
    # i = 0: the posterior is the point mass at x0
    mean0, var0 = mpd.posterior(torch.tensor([[x0]]), torch.tensor([[xt]]), torch.tensor(f), 0)
    assert mean0.item() == pytest.approx(x0, rel=1e-6) and var0.item() == 0.0


def test_shift_equivalence_with_ddpm():
    """mu(x0, x_i, f) = f + DDPM posterior mean of (x0 - f, x_i - f) (module docstring)."""
    sched = DDPMScheduler()
    mpd = MetaPatternDiffusion(sched)
    x0, xt, f = torch.randn(SHAPE, dtype=torch.float64), torch.randn(SHAPE,
                                                                      dtype=torch.float64), \
        torch.randn(SHAPE[1:], dtype=torch.float64)
    for i in (1, 250, 999):
        mean, var = mpd.posterior(x0, xt, f, i)
        c_x0, c_xt, ddpm_var = sched.posterior_coefficients(i)
        torch.testing.assert_close(mean, c_x0 * (x0 - f) + c_xt * (xt - f) + f)
        torch.testing.assert_close(var, torch.full((3, 1, 1, 1), ddpm_var, dtype=torch.float64))


def test_f_zero_reduces_to_ddpm():
    sched = DDPMScheduler()
    mpd = MetaPatternDiffusion(sched)
    x0, xt, noise = torch.randn(SHAPE), torch.randn(SHAPE), torch.randn(SHAPE)
    zero = torch.zeros(SHAPE[1:])
    t = torch.tensor([0, 10, 999])
    assert torch.equal(mpd.q_sample(x0, zero, t, noise), sched.add_noise(x0, noise, t))
    mean, var = mpd.posterior(x0.double(), xt.double(), zero.double(), 400)
    c_x0, c_xt, v = sched.posterior_coefficients(400)
    torch.testing.assert_close(mean, c_x0 * x0.double() + c_xt * xt.double())
    for s in (DDPMScheduler(), DDIMScheduler(eta=1.0)):
        kw = dict(num_inference_steps=20, x_T=torch.randn(SHAPE))
        a = MetaPatternDiffusion(s).sample(toy_model, zero, generator=torch.Generator()
                                           .manual_seed(5), **kw)
        b = sample(toy_model, s, generator=torch.Generator().manual_seed(5), **kw)
        assert torch.equal(a, b)
    # the loss too (same t and noise)
    model = nn.Linear(2, 2)
    torch.testing.assert_close(mpd.loss(lambda x, tt: model(x), x0, f=zero, t=t, noise=noise),
                               diffusion_loss(lambda x, tt: model(x), x0, sched, timesteps=t,
                                              noise=noise))


class Head(nn.Module):
    """phi [N, d] -> f [T, N, F] (per-node pattern)."""

    def __init__(self, d=3, T=4, F=2):
        super().__init__()
        self.lin = nn.Linear(d, T * F)
        self.T, self.F = T, F

    def forward(self, phi):
        return self.lin(phi).view(phi.shape[0], self.T, self.F).transpose(0, 1)


def test_joint_loss_and_aux():
    torch.manual_seed(0)
    head = Head()
    mpd = MetaPatternDiffusion(DDPMScheduler(), pattern_head=head, aux_weight=0.5)
    assert "aux_weight=0.5" in str(mpd) and "Head" in str(mpd)
    assert sum(p.numel() for p in mpd.parameters()) == sum(p.numel() for p in head.parameters())
    x0, phi = torch.randn(SHAPE), torch.randn(5, 3)
    net = nn.Linear(2, 2)
    total, denoise, aux = mpd.loss(lambda x, t: net(x), x0, phi=phi, return_parts=True,
                                   generator=torch.Generator().manual_seed(0))
    f = head(phi)
    torch.testing.assert_close(aux, ((x0 - f) ** 2).mean())
    torch.testing.assert_close(total, denoise + 0.5 * aux)
    # joint training: the denoising loss alone reaches the pattern head through x_i
    pure = MetaPatternDiffusion(DDPMScheduler(), pattern_head=head)
    head.zero_grad()
    loss = pure.loss(lambda x, t: net(x), x0, phi=phi, t=torch.tensor([5, 500, 900]))
    loss.backward()
    assert head.lin.weight.grad.abs().sum() > 0
    # the oracle model has zero loss for each prediction type
    noise, t = torch.randn(SHAPE), torch.tensor([5, 500, 900])
    for pred in ("epsilon", "sample", "v_prediction"):
        m = MetaPatternDiffusion(DDPMScheduler(prediction_type=pred))
        ab = m.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        target = {"epsilon": noise, "sample": x0,
                  "v_prediction": ab.sqrt() * noise - (1 - ab).sqrt() * (x0 - f)}[pred]
        assert m.loss(lambda x, tt: target, x0, f=f.detach(), t=t, noise=noise).item() == \
            pytest.approx(0.0, abs=1e-12)


def test_errors():
    mpd = MetaPatternDiffusion(DDPMScheduler())
    x0 = torch.randn(SHAPE)
    with pytest.raises(ValueError, match="exactly one of 'f'"):
        mpd.loss(lambda x, t: x, x0)
    with pytest.raises(ValueError, match="has no 'pattern_head'"):
        mpd.loss(lambda x, t: x, x0, phi=torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"'f' must broadcast to the sample shape \(3, 4, 5, 2\)"):
        mpd.q_sample(x0, torch.randn(7, 2), torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="'scheduler' must be a DDPMScheduler"):
        MetaPatternDiffusion("linear")
    with pytest.raises(ValueError, match="'aux_weight' must be >= 0"):
        MetaPatternDiffusion(DDPMScheduler(), aux_weight=-1.0)
    with pytest.raises(ValueError, match="same betas"):
        mpd.sample(toy_model, torch.zeros(2), (3, 2), scheduler=DDPMScheduler(beta_end=0.03))


@pytest.mark.parametrize("kind,steps", [("ddpm", None), ("ddim", 200)])
def test_exact_gaussian_sampling(kind, steps):
    """Data N(mu, s^2), pattern f: the exact epsilon of the residual process gives samples
    with the data's mean and std (2%); x_T ~ N(f, I)."""
    mu, s, f_val = 2.0, 1.0, 1.5
    sched = DDPMScheduler() if kind == "ddpm" else DDIMScheduler()
    mpd = MetaPatternDiffusion(sched)
    ac = sched.alphas_cumprod
    m = mu - f_val  # y0 = x0 - f ~ N(mu - f, s^2)

    def eps(x, t):
        ab = ac[t[0]].item()
        return math.sqrt(1 - ab) * (x - f_val - math.sqrt(ab) * m) / (ab * s * s + 1 - ab)
    f = torch.full((1,), f_val)
    x = mpd.sample(eps, f, (20000, 1), num_inference_steps=steps,
                   generator=torch.Generator().manual_seed(0))
    assert abs(x.mean().item() - mu) / mu < 0.02
    assert abs(x.std().item() - s) / s < 0.02
    # the default start is f + N(0, I) drawn from the generator
    x_T = f + torch.randn(20000, 1, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    torch.randn(20000, 1, generator=g)
    assert torch.equal(mpd.sample(eps, f, x_T=x_T, generator=g), x)


def test_sample_prediction_types_agree():
    mu, s, f = -1.0, 0.7, torch.full((1,), 0.5)
    z = normal_quantiles(256)
    outs = []
    for pred in ("epsilon", "sample", "v_prediction"):
        sched = DDIMScheduler(prediction_type=pred)
        ac = sched.alphas_cumprod

        def model(x, t, pred=pred, ac=ac):
            ab = ac[t[0]].item()
            a, b = math.sqrt(ab), math.sqrt(1 - ab)
            y, m = x - f, mu - f
            var = ab * s * s + 1 - ab
            e = b * (y - a * m) / var
            y0 = m + a * s * s * (y - a * m) / var
            return {"epsilon": e, "sample": y0 + f, "v_prediction": a * e - b * y0}[pred]
        outs.append(MetaPatternDiffusion(sched).sample(model, f, x_T=z + f,
                                                       num_inference_steps=50))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(outs[0], outs[2], rtol=1e-4, atol=1e-4)


def test_edm_helpers():
    mu, s, f_val = 2.0, 1.0, 1.5
    mpd = MetaPatternDiffusion(DDPMScheduler(), aux_weight=0.2)
    f = torch.full((1,), f_val)
    # loss on the residual x0 - f (+ aux)
    pre = EDMPrecond(lambda x, c: torch.tanh(x), sigma_data=0.5)
    x0 = torch.randn(6, 1)
    sigma, noise = torch.rand(6) + 0.1, torch.randn(6, 1)
    total, denoise, aux = mpd.edm_loss(pre, x0, f=f, sigma=sigma, noise=noise,
                                       return_parts=True)
    torch.testing.assert_close(denoise, edm_loss(pre, x0 - f, sigma=sigma, noise=noise))
    torch.testing.assert_close(total, denoise + 0.2 * ((x0 - f) ** 2).mean())
    # sampling adds f back, so x_T ~ N(f, sigma_max^2) and the residual denoiser suffices

    def D(y, sigma):
        sig = sigma.view(-1, 1)
        return (mu - f_val) + s * s / (s * s + sig ** 2) * (y - (mu - f_val))
    z = normal_quantiles(20000)
    x = mpd.edm_sample(D, f, z, num_steps=40)
    torch.testing.assert_close(x, edm_sampler(D, z, num_steps=40) + f)
    assert abs(x.mean().item() - mu) / mu < 0.02 and abs(x.std().item() - s) / s < 0.02


# Golden numbers: fixed-seed MetaPattern sampling with `toy_model`, computed once from the
# implementation after the checks above passed.
GOLDEN = {"ddpm": -559.5245710611343, "ddim": -479.7126836255193}


@pytest.mark.parametrize("kind", list(GOLDEN))
def test_golden_sample_sums(kind):
    sched = DDPMScheduler() if kind == "ddpm" else DDIMScheduler(eta=0.0)
    mpd = MetaPatternDiffusion(sched)
    f = torch.linspace(-1, 1, 40).view(4, 5, 2)
    x = mpd.sample(toy_model, f, SHAPE, num_inference_steps=50,
                   generator=torch.Generator().manual_seed(11))
    assert x.double().sum().item() == pytest.approx(GOLDEN[kind], abs=1e-4)
