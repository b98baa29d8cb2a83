import math

import pytest
import torch

from torch_stgen.diffusion import alphas_cumprod_from_betas, make_beta_schedule


@pytest.mark.parametrize("n", [1, 7, 50, 1000])
def test_linear_schedule(n):
    betas = make_beta_schedule("linear", n)
    assert betas.dtype == torch.float64 and betas.shape == (n,)
    assert betas[0].item() == pytest.approx(1e-4, abs=1e-15)
    if n > 1:
        assert betas[-1].item() == pytest.approx(0.02, abs=1e-15)
        diffs = betas.diff()
        torch.testing.assert_close(diffs, torch.full_like(diffs, (0.02 - 1e-4) / (n - 1)))


def test_linear_schedule_custom_endpoints():
    betas = make_beta_schedule("linear", 11, beta_start=0.01, beta_end=0.11)
    torch.testing.assert_close(betas, 0.01 + 0.01 * torch.arange(11, dtype=torch.float64))


@pytest.mark.parametrize("n", [1, 50, 200])
def test_quadratic_schedule(n):
    betas = make_beta_schedule("quadratic", n)
    assert betas.dtype == torch.float64 and betas.shape == (n,)
    root = betas.sqrt()
    assert root[0].item() == pytest.approx(math.sqrt(1e-4))
    if n > 1:
        assert betas[-1].item() == pytest.approx(0.5)
        # CSDI / PriSTI: sqrt(beta) is linear in t
        torch.testing.assert_close(root.diff(), torch.full((n - 1,), (math.sqrt(0.5) - 0.01)
                                                           / (n - 1), dtype=torch.float64))


@pytest.mark.parametrize("n", [1, 10, 1000])
def test_cosine_schedule(n):
    betas = make_beta_schedule("cosine", n)
    assert betas.dtype == torch.float64 and betas.shape == (n,)
    s = 0.008

    def g(t):
        return math.cos((t / n + s) / (1 + s) * math.pi / 2) ** 2

    ab = alphas_cumprod_from_betas(betas)
    for t in range(n - 1):  # the last beta is clipped at 0.999
        assert ab[t].item() == pytest.approx(g(t + 1) / g(0), rel=1e-10)
    assert betas.max().item() <= 0.999
    assert betas[-1].item() == pytest.approx(0.999)  # g(T) = cos^2(pi/2) -> clipped
    assert (betas.diff() >= 0).all()


def test_alphas_cumprod_from_betas():
    betas = torch.tensor([0.1, 0.2, 0.5])
    ab = alphas_cumprod_from_betas(betas)
    assert ab.dtype == torch.float64
    torch.testing.assert_close(ab, torch.tensor([0.9, 0.72, 0.36], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"'betas' must have shape \[T\]"):
        alphas_cumprod_from_betas(torch.ones(2, 2) * 0.1)
    with pytest.raises(ValueError, match="'betas' must be finite and in"):
        alphas_cumprod_from_betas(torch.tensor([0.1, 0.0]))


def test_schedule_errors():
    with pytest.raises(ValueError, match="'kind' must be one of"):
        make_beta_schedule("sigmoid", 10)
    with pytest.raises(ValueError, match="'num_steps' must be a positive int"):
        make_beta_schedule("linear", 0)
    with pytest.raises(ValueError, match="'beta_end'"):
        make_beta_schedule("linear", 10, beta_start=0.1, beta_end=0.01)
    with pytest.raises(ValueError, match="'beta_start' must be in"):
        make_beta_schedule("quadratic", 10, beta_start=0.0)
    with pytest.raises(ValueError, match="not used by the 'cosine'"):
        make_beta_schedule("cosine", 10, beta_end=0.02)


def test_schedules_match_diffusers():
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    torch.testing.assert_close(make_beta_schedule("linear", 1000).float(), ref.betas)
    ref = diffusers.DDPMScheduler(num_train_timesteps=50, beta_schedule="scaled_linear",
                                  beta_start=1e-4, beta_end=0.5)
    torch.testing.assert_close(make_beta_schedule("quadratic", 50).float(), ref.betas)
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    torch.testing.assert_close(make_beta_schedule("cosine", 1000).float(), ref.betas,
                               rtol=1e-5, atol=1e-7)
