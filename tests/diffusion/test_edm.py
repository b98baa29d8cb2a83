import math

import pytest
import torch
from torch import nn

from torch_stgen.diffusion import EDMPrecond, edm_loss, edm_sampler, edm_sigma_steps


def normal_quantiles(n):
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return (math.sqrt(2) * torch.erfinv(2 * u - 1)).float()[:, None]


def gaussian_denoiser(mu, s):
    """Exact D(x; sigma) = E[x0 | x0 + sigma n = x] for x0 ~ N(mu, s^2)."""
    def D(x, sigma):
        sig = sigma.view(-1, *([1] * (x.dim() - 1)))
        return mu + s * s / (s * s + sig ** 2) * (x - mu)
    return D


class Recorder(nn.Module):
    """Raw network F(x, c_noise) = tanh(x) * (1 + c_noise) that records its inputs."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.scale = nn.Parameter(torch.ones((), dtype=dtype))
        self.seen = []

    def forward(self, x, c_noise, bias=0.0):
        self.seen.append((x.clone(), c_noise.clone()))
        return self.scale * torch.tanh(x) * (1 + c_noise.view(-1, *([1] * (x.dim() - 1)))) + bias


def test_precond_coefficients_table1():
    pre = EDMPrecond(Recorder(), sigma_data=0.5)
    for s in (0.002, 0.3, 1.0, 80.0):
        c_skip, c_out, c_in, c_noise = pre.coefficients(torch.tensor(s, dtype=torch.float64))
        sd = 0.5
        assert c_skip.item() == pytest.approx(sd ** 2 / (s ** 2 + sd ** 2), rel=1e-12)
        assert c_out.item() == pytest.approx(s * sd / math.sqrt(s ** 2 + sd ** 2), rel=1e-12)
        assert c_in.item() == pytest.approx(1 / math.sqrt(s ** 2 + sd ** 2), rel=1e-12)
        assert c_noise.item() == pytest.approx(math.log(s) / 4, rel=1e-12)
        # unit-variance target (Karras et al. 2022, eq. 8): c_skip^2 sd^2 + ... = effective
        # training target has unit variance: (sd^2 (1 - c_skip)^2 + c_skip^2 s^2) / c_out^2 = 1
        tgt_var = (sd ** 2 * (1 - c_skip) ** 2 + c_skip ** 2 * s ** 2) / c_out ** 2
        assert tgt_var.item() == pytest.approx(1.0, rel=1e-10)
    assert str(pre) == "EDMPrecond(raw_net=Recorder, sigma_data=0.5)"


def test_precond_forward():
    raw = Recorder()
    pre = EDMPrecond(raw, sigma_data=1.0)
    x = torch.randn(3, 4, 5, 2)
    sigma = torch.tensor([0.1, 1.0, 10.0])
    out = pre(x, sigma, bias=0.5)
    s = sigma.view(-1, 1, 1, 1)
    c_skip, c_out, c_in = 1 / (s ** 2 + 1), s / (s ** 2 + 1).sqrt(), 1 / (s ** 2 + 1).sqrt()
    x_in, c_noise = raw.seen[-1]
    torch.testing.assert_close(x_in, c_in * x)
    torch.testing.assert_close(c_noise, sigma.log() / 4)
    F = torch.tanh(c_in * x) * (1 + sigma.log().view(-1, 1, 1, 1) / 4) + 0.5
    torch.testing.assert_close(out, c_skip * x + c_out * F)
    # a scalar sigma applies to the whole batch; c_noise is still [B]
    pre(x, 2.0)
    assert raw.seen[-1][1].shape == (3,)
    # the raw network runs in its own dtype, the wrapper in x's dtype
    raw64 = Recorder(torch.float64)
    y = EDMPrecond(raw64)(x, 1.0)
    assert raw64.seen[-1][0].dtype == torch.float64 and y.dtype == torch.float32
    with pytest.raises(ValueError, match=r"'sigma' must be a scalar or have shape \[B\] = \[3\]"):
        pre(x, torch.ones(2))
    with pytest.raises(ValueError, match="'sigma' must be finite and > 0"):
        pre(x, 0.0)
    with pytest.raises(ValueError, match="'raw_net' must return a tensor of shape"):
        EDMPrecond(lambda x, c: x[:1])(x, 1.0)
    for bad in (0.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="'sigma_data' must be a finite number > 0"):
            EDMPrecond(raw, sigma_data=bad)


def test_edm_loss_formula_and_sigma_distribution():
    raw = Recorder()
    pre = EDMPrecond(raw, sigma_data=0.5)
    x0, noise = torch.randn(3, 6, 2), torch.randn(3, 6, 2)
    sigma = torch.tensor([0.05, 0.5, 5.0])
    loss = edm_loss(pre, x0, sigma=sigma, noise=noise, bias=0.1)
    s = sigma.view(-1, 1, 1)
    D = pre(x0 + s * noise, sigma, bias=0.1)
    weight = (s ** 2 + 0.25) / (s * 0.5) ** 2
    torch.testing.assert_close(loss, (weight * (D - x0) ** 2).mean())
    mask = (torch.rand(3, 6, 2) > 0.3).float()
    masked = edm_loss(pre, x0, sigma=sigma, noise=noise, mask=mask, bias=0.1)
    torch.testing.assert_close(masked, (weight * (D - x0) ** 2 * mask).sum() / mask.sum())
    # ln sigma ~ N(P_mean, P_std^2)
    seen = []
    edm_loss(lambda x, sg: seen.append(sg) or x, torch.zeros(20000, 1), P_mean=-1.2, P_std=1.2,
             sigma_data=1.0, generator=torch.Generator().manual_seed(0))
    log_sigma = seen[0].log()
    assert log_sigma.mean().item() == pytest.approx(-1.2, abs=0.03)
    assert log_sigma.std().item() == pytest.approx(1.2, rel=0.02)
    with pytest.raises(ValueError, match="'sigma_data' must be given"):
        edm_loss(lambda x, sg: x, x0)
    with pytest.raises(ValueError, match="'P_std' must be > 0"):
        edm_loss(pre, x0, P_std=0.0)


def test_edm_loss_trains_toward_the_data():
    """The loss is minimised by the exact denoiser (loss of any perturbation is larger)."""
    mu, s = 1.0, 0.5
    g = torch.Generator().manual_seed(1)
    x0 = mu + s * torch.randn(4000, 1, generator=g)
    exact = gaussian_denoiser(mu, s)
    sigma = torch.exp(torch.randn(4000, generator=g) * 1.2 - 1.2)
    noise = torch.randn(4000, 1, generator=g)
    kw = dict(sigma=sigma, noise=noise, sigma_data=s)
    base = edm_loss(exact, x0, **kw)
    assert edm_loss(lambda x, sg: exact(x, sg) + 0.05, x0, **kw) > base
    assert edm_loss(lambda x, sg: 1.05 * exact(x, sg), x0, **kw) > base


def test_sigma_steps():
    t = edm_sigma_steps(18)
    assert t.dtype == torch.float64 and t.shape == (19,)
    assert t[0].item() == pytest.approx(80.0) and t[17].item() == pytest.approx(0.002)
    assert t[-1].item() == 0.0 and (t.diff() < 0).all()
    for i in (1, 9, 16):
        expected = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
        assert t[i].item() == pytest.approx(expected, rel=1e-12)
    assert edm_sigma_steps(1, sigma_max=3.0).tolist() == [3.0, 0.0]
    with pytest.raises(ValueError, match="'num_steps' must be a positive int"):
        edm_sigma_steps(0)
    with pytest.raises(ValueError, match="need 0 < 'sigma_min' < 'sigma_max'"):
        edm_sigma_steps(10, sigma_min=1.0, sigma_max=0.5)


@pytest.mark.parametrize("churn", [0.0, 40.0])
def test_sampler_evaluations_and_dtypes(churn):
    seen = []

    def D(x, sigma, bias=0.0):
        seen.append((x.dtype, sigma.dtype, sigma.shape, sigma[0].item()))
        return 0.9 * x + bias

    latents = torch.randn(4, 3)
    out = edm_sampler(D, latents, num_steps=18, S_churn=churn, S_min=0.05, S_max=50,
                      generator=torch.Generator().manual_seed(0), bias=0.1)
    assert len(seen) == 35 and out.dtype == torch.float32 and out.shape == (4, 3)
    assert all(s[:3] == (torch.float32, torch.float32, (4,)) for s in seen)
    sig = edm_sigma_steps(18)
    # first evaluation at sigma_0 (times 1 + gamma when churning inside [S_min, S_max])
    gamma = min(churn / 18, math.sqrt(2) - 1) if 0.05 <= sig[0] <= 50 else 0.0
    assert seen[0][3] == pytest.approx(sig[0].item() * (1 + gamma), rel=1e-6)
    assert seen[1][3] == pytest.approx(sig[1].item(), rel=1e-6)  # Heun correction at sigma_1


def test_sampler_is_algorithm_2_for_a_gaussian():
    """For Gaussian data the ODE is linear, so each Heun step multiplies (x - mu) by a known
    factor; the sampler must reproduce the product exactly (float64 arithmetic)."""
    mu, s, N = 2.0, 1.0, 18
    z = normal_quantiles(64).double()
    out = edm_sampler(gaussian_denoiser(mu, s), z, num_steps=N)
    ts = edm_sigma_steps(N).tolist()

    def a(sig):
        return sig / (s * s + sig * sig)  # d(x - mu)/dsigma = a(sigma) (x - mu)

    u = 80.0 * z - mu
    for i in range(N):
        h = ts[i + 1] - ts[i]
        if i < N - 1:
            u = u * (1 + h / 2 * (a(ts[i]) + a(ts[i + 1]) * (1 + h * a(ts[i]))))
        else:
            u = u * (1 + h * a(ts[i]))
    torch.testing.assert_close(out, mu + u, rtol=1e-12, atol=1e-12)
    # Heun is 2nd order: the ODE's exact end point is approached as N grows
    exact = mu + s / math.sqrt(s * s + 80 ** 2) * (80 * z - mu)
    errs = [(edm_sampler(gaussian_denoiser(mu, s), z, num_steps=n) - exact).abs().max().item()
            for n in (18, 36, 72)]
    assert errs[0] / errs[1] > 3.5 and errs[1] / errs[2] > 3.5


@pytest.mark.parametrize("N,churn", [(40, 0.0), (64, 10.0)])
def test_exact_gaussian_sampling(N, churn):
    """Samples of the exact denoiser of N(mu, s^2) match the data's mean and std to 2%.
    (At the default N = 18 the deterministic Heun std is 4.5% high for s = 1: see
    test_sampler_is_algorithm_2_for_a_gaussian for the exact discretisation.)"""
    mu, s = 2.0, 1.0
    g = torch.Generator().manual_seed(0)
    z = normal_quantiles(20000) if churn == 0 else torch.randn(20000, 1, generator=g)
    x = edm_sampler(gaussian_denoiser(mu, s), z, num_steps=N, S_churn=churn, generator=g)
    assert abs(x.mean().item() - mu) / mu < 0.02
    assert abs(x.std().item() - s) / s < 0.02


def test_sampler_errors():
    with pytest.raises(ValueError, match="'latents' must be a floating tensor"):
        edm_sampler(lambda x, s: x, torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match="'denoiser' must return shape"):
        edm_sampler(lambda x, s: x[:1], torch.ones(3, 2))


# Golden numbers: sums of fixed-seed Heun sampling with EDMPrecond(Recorder), computed once
# from the implementation after the checks above passed.
GOLDEN = {0.0: -5.124616626650095, 40.0: 3.9099495466798544}


@pytest.mark.parametrize("churn", list(GOLDEN))
def test_golden_heun_sums(churn):
    pre = EDMPrecond(Recorder(), sigma_data=0.5)
    g = torch.Generator().manual_seed(7)
    latents = torch.randn(2, 4, 3, 2, generator=g)
    x = edm_sampler(pre, latents, S_churn=churn, S_min=0.05, S_max=50, S_noise=1.003,
                    generator=g)
    assert x.double().sum().item() == pytest.approx(GOLDEN[churn], abs=1e-4)


def test_edm_loss_refuses_an_empty_batch_and_a_bad_sigma_data():
    """An empty batch returned NaN and sigma_data = 0 / -1 were accepted (NaN loss)."""
    net = lambda x, s: x      # noqa: E731
    with pytest.raises(ValueError, match=r"'x0' is an empty batch \(B = 0\)"):
        edm_loss(net, torch.zeros(0, 3), sigma_data=0.5)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="'sigma_data' must be a finite number > 0"):
            edm_loss(net, torch.zeros(2, 3), sigma_data=bad)
    import numpy as np
    assert edm_sigma_steps(np.int64(3)).shape == (4,)


def test_non_finite_sampler_and_embedding_settings_are_refused():
    from torch_stgen.nn import SinusoidalEmbedding
    for kw in (dict(S_churn=float("nan")), dict(S_noise=float("inf"))):
        with pytest.raises(ValueError, match="'S_churn' and 'S_noise' must be finite"):
            edm_sampler(lambda x, s: x, torch.zeros(2, 3), num_steps=2, **kw)
    with pytest.raises(ValueError, match="'max_period' must be a finite number > 1"):
        SinusoidalEmbedding(8, max_period=float("inf"))
    with pytest.raises(ValueError, match="'scale' must be finite"):
        SinusoidalEmbedding(8, scale=float("nan"))


def test_a_loaded_sigma_data_is_checked_like_the_constructors():
    """set_extra_state took sigma_data = inf, after which every output was NaN."""
    pre = EDMPrecond(Recorder(), sigma_data=0.5)
    for bad in (float("inf"), 0.0, float("nan")):
        with pytest.raises(ValueError, match="'sigma_data' must be a finite number > 0"):
            pre.set_extra_state({"sigma_data": bad})
    assert pre.sigma_data == 0.5
    pre.set_extra_state({"sigma_data": 1.5})
    assert pre.sigma_data == 1.5
