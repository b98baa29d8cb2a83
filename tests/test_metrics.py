import math

import numpy as np
import pytest
import torch

from torch_stgen.metrics import crps, jsd, mae, mmd, mmd_per_node, rmse

scipy = pytest.importorskip("scipy")
from scipy.spatial.distance import cdist, jensenshannon  # noqa: E402
from scipy.stats import norm  # noqa: E402


def _np_mmd(x, y, num_kernels=5, kernel_mul=2.0, centre=None):
    """Reference: explicit kernel matrices with scipy's cdist."""
    z = np.concatenate([x, y])
    d2 = cdist(z, z, "sqeuclidean")
    p = len(z)
    if centre is None:
        centre = d2[~np.eye(p, dtype=bool)].mean()
    bws = [centre / kernel_mul ** (num_kernels // 2) * kernel_mul ** i
           for i in range(num_kernels)]
    k = sum(np.exp(-d2 / b) for b in bws)
    n = len(x)
    return k[:n, :n].mean() + k[n:, n:].mean() - k[:n, n:].mean() - k[n:, :n].mean()


def test_mae_rmse_match_numpy_with_mask():
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(4, 5, 3)), rng.normal(size=(4, 5, 3))
    mask = rng.random((4, 5, 3)) < 0.6
    target_nan = target.copy()
    target_nan[~mask] = np.nan  # unscored NaN must not leak
    err = pred[mask] - target[mask]
    assert mae(torch.tensor(pred), torch.tensor(target_nan), torch.tensor(mask)).item() == \
        pytest.approx(np.abs(err).mean(), rel=1e-12)
    assert rmse(pred, target_nan, mask.astype(np.float32)).item() == \
        pytest.approx(np.sqrt((err ** 2).mean()), rel=1e-12)
    assert mae(pred, target).item() == pytest.approx(np.abs(pred - target).mean(), rel=1e-12)
    # a mask broadcast over the last (feature) axis
    m2 = rng.random((4, 5, 1)) < 0.5
    full = np.broadcast_to(m2, pred.shape)
    assert rmse(pred, target, torch.tensor(m2)).item() == \
        pytest.approx(np.sqrt(((pred - target)[full] ** 2).mean()), rel=1e-12)


def test_mae_rmse_errors():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="'pred' must have the target's shape"):
        mae(torch.randn(3, 5), x)
    with pytest.raises(ValueError, match="all zero"):
        rmse(x, x, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="'mask'"):
        mae(x, x, torch.ones(2, 4))
    with pytest.raises(ValueError, match="only 0 and 1"):
        mae(x, x, torch.full((3, 4), 0.5))
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="'target' has 1 non-finite"):
        mae(x, bad)


def test_mmd_matches_reference_and_behaves():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 4, generator=g, dtype=torch.float64)
    y = torch.randn(25, 4, generator=g, dtype=torch.float64) + 0.7
    assert mmd(x, y).item() == pytest.approx(_np_mmd(x.numpy(), y.numpy()), rel=1e-10)
    assert mmd(x, y, num_kernels=3, kernel_mul=3.0, bandwidth=2.5).item() == pytest.approx(
        _np_mmd(x.numpy(), y.numpy(), 3, 3.0, centre=2.5), rel=1e-10)
    # single kernel with a fixed bandwidth: MMD^2 written out by hand
    a, b = np.array([[0.0], [1.0]]), np.array([[3.0]])
    k = lambda u, v: math.exp(-(u - v) ** 2 / 2.0)  # noqa: E731
    hand = (k(0, 0) + k(1, 1) + 2 * k(0, 1)) / 4 + 1.0 - (k(0, 3) + k(1, 3))
    assert mmd(a, b, num_kernels=1, bandwidth=2.0).item() == pytest.approx(hand, rel=1e-12)
    # ~0 against itself, grows with a mean shift
    assert abs(mmd(x, x).item()) < 1e-12
    vals = [mmd(x, x + s).item() for s in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert all(b > a for a, b in zip(vals, vals[1:]))
    # same distribution scores lower than a shifted one
    x2 = torch.randn(30, 4, generator=g, dtype=torch.float64)
    assert mmd(x, x2).item() < 0.5 * mmd(x, x2 + 1.0).item()
    # all pooled samples identical: defined and zero, not NaN
    assert mmd(torch.ones(4, 2), torch.ones(3, 2)).item() == 0.0


def test_mmd_errors():
    with pytest.raises(ValueError, match=r"'y' must have shape \[m, d=3\]"):
        mmd(torch.randn(5, 3), torch.randn(5, 2))
    with pytest.raises(ValueError, match="'x' must have shape"):
        mmd(torch.randn(2, 3, 4), torch.randn(5, 3))
    with pytest.raises(ValueError, match="'bandwidth'"):
        mmd(torch.randn(5, 3), torch.randn(5, 3), bandwidth=0.0)
    with pytest.raises(ValueError, match="'num_kernels'"):
        mmd(torch.randn(5, 3), torch.randn(5, 3), num_kernels=0)


def test_mmd_per_node_is_mean_of_per_node_mmd():
    g = torch.Generator().manual_seed(1)
    gen = torch.randn(6, 4, 8, generator=g)
    real = torch.randn(9, 4, 8, generator=g) + torch.arange(4.0).view(1, 4, 1) * 0.5
    per = mmd_per_node(gen, real, reduction="none")
    assert per.shape == (4,)
    ref = [_np_mmd(gen[:, v].double().numpy(), real[:, v].double().numpy()) for v in range(4)]
    np.testing.assert_allclose(per.numpy(), ref, rtol=1e-8)
    assert mmd_per_node(gen, real).item() == pytest.approx(np.mean(ref), rel=1e-8)
    # the node with the largest shift has the largest discrepancy
    assert int(per.argmax()) == 3
    with pytest.raises(ValueError, match=r"'real' must have shape \[R, N=4, L=8\]"):
        mmd_per_node(gen, real[:, :3])
    with pytest.raises(ValueError, match="'gen' must have shape"):
        mmd_per_node(gen[0], real)
    with pytest.raises(ValueError, match=r"no node \(N = 0\)"):       # was a silent NaN
        mmd_per_node(gen[:, :0], real[:, :0])


def test_jsd_matches_scipy():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=500), rng.normal(0.8, 1.5, size=(20, 30))
    for bins, base in ((10, 2.0), (50, 2.0), (30, None), (20, 10.0)):
        lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
        p = np.histogram(x, bins=bins, range=(lo, hi))[0]
        q = np.histogram(y, bins=bins, range=(lo, hi))[0]
        ref = jensenshannon(p, q, base=base) ** 2
        assert jsd(torch.tensor(x), torch.tensor(y), bins=bins, base=base).item() == \
            pytest.approx(ref, rel=1e-9, abs=1e-12)
    # explicit range, values outside are not counted (numpy semantics)
    p = np.histogram(x, bins=8, range=(-1, 1))[0]
    q = np.histogram(y, bins=8, range=(-1, 1))[0]
    assert jsd(x, y, bins=8, range=(-1, 1)).item() == pytest.approx(
        jensenshannon(p, q, base=2) ** 2, rel=1e-9)
    # bounds: identical -> 0, disjoint supports -> 1 bit = ln 2 nats
    assert jsd(x, x).item() == pytest.approx(0.0, abs=1e-15)
    a, b = np.zeros(10), np.ones(10)
    assert jsd(a, b, bins=2).item() == pytest.approx(1.0, rel=1e-12)
    assert jsd(a, b, bins=2, base=None).item() == pytest.approx(math.log(2), rel=1e-12)
    assert jsd(np.full(5, 3.0), np.full(7, 3.0)).item() == 0.0  # constant data: no NaN
    with pytest.raises(ValueError, match="no value of 'y'"):
        jsd(x, y + 100, range=(-5, 5))
    with pytest.raises(ValueError, match="'bins'"):
        jsd(x, y, bins=0)


def _np_crps(samples, target, fair=False):
    s = samples.shape[0]
    skill = np.abs(samples - target[None]).mean(0)
    pair = np.abs(samples[:, None] - samples[None, :]).sum((0, 1))
    return (skill - pair / (2 * (s * (s - 1) if fair else s * s))).mean()


def test_crps_matches_reference_and_gaussian_closed_form():
    rng = np.random.default_rng(3)
    samples, target = rng.normal(size=(7, 3, 4)), rng.normal(size=(3, 4))
    for fair in (False, True):
        assert crps(samples, target, fair=fair).item() == pytest.approx(
            _np_crps(samples, target, fair), rel=1e-12)
    mask = rng.random((3, 4)) < 0.5
    mask[0, 0] = True
    full = crps(samples, target, mask=mask).item()
    per = np.array([[_np_crps(samples[:, i:i + 1, j:j + 1], target[i:i + 1, j:j + 1])
                     for j in range(4)] for i in range(3)])
    assert full == pytest.approx(per[mask].mean(), rel=1e-12)
    # one sample: the CRPS is the MAE
    assert crps(samples[:1], target).item() == pytest.approx(
        mae(samples[0], target).item(), rel=1e-12)
    # many samples of N(0, 1): CRPS(N(0,1), y) = z(2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)
    g = torch.Generator().manual_seed(4)
    ens = torch.randn(4000, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.7], dtype=torch.float64)
    closed = y * (2 * norm.cdf(y) - 1) + 2 * norm.pdf(y) - 1 / math.sqrt(math.pi)
    assert crps(ens, y, fair=True).item() == pytest.approx(closed.mean().item(), abs=0.02)


def test_crps_errors():
    with pytest.raises(ValueError, match=r"'samples' must have shape \[S, 3, 4\]"):
        crps(torch.randn(5, 3, 5), torch.randn(3, 4))
    with pytest.raises(ValueError, match="at least 2 samples"):
        crps(torch.randn(1, 3), torch.randn(3), fair=True)
    with pytest.raises(ValueError, match="all zero"):
        crps(torch.randn(4, 3), torch.randn(3), mask=torch.zeros(3))


def test_metric_arguments_refused_by_name():
    """Each was a raw Python / torch error or a silent 0 (kernel_mul=inf)."""
    x, y = torch.randn(6, 3), torch.randn(5, 3) + 3
    with pytest.raises(ValueError, match="'kernel_mul' must be a finite number > 0"):
        mmd(x, y, kernel_mul=float("inf"))
    with pytest.raises(ValueError, match=r"'range' must be a \(low, high\) pair \(got 5\)"):
        jsd(x, y, range=5)
    with pytest.raises(ValueError, match="'bins' must be a positive integer"):
        jsd(x, y, bins=None)
    assert jsd(x, y, bins=10.0) == jsd(x, y, bins=10)
