r"""Non-learned reconstruction baselines for incomplete coarse -> complete fine maps.

Baseline (a) of the DiffRecon benchmark: *interpolation + distributional upsampling*.

1. **Nearest-observed fill** (:func:`nearest_fill`): each missing coarse cell takes the
   mean of the observed cells at the smallest Euclidean grid distance in the same step
   and channel (ties averaged, so the fill does not depend on the scan order).
2. **Distributional upsampling** (:class:`DistributionalUpsampler`): each completed
   coarse value is split over its :math:`N \times N` fine cells with the training set's
   mean fine/coarse shares

   .. math::
       s_{c,u} = \frac{\sum_t X^{fg}_{t,c,u}}{\sum_t X^{cg}_{t,c,\pi(u)}},
       \qquad \hat X^{fg}_{t,c,u} = s_{c,u}\, \hat X^{cg}_{t,c,\pi(u)},

   where :math:`\pi(u)` is the coarse cell containing fine cell :math:`u` (ratio of sums:
   a ratio of means over the training steps, robust to steps where a coarse cell is 0).
   Blocks whose training coarse mass is 0 get uniform shares :math:`1/N^2`. The shares
   of each block sum to one, so the prediction preserves the coarse mass exactly.

Baselines (b) and (c) are learned networks applied to the same nearest-filled coarse map
(:class:`SRCNN`, :class:`UrbanFM`), trained with :func:`fit_upsampler` on training maps
whose coarse inputs are masked with simulated sparse patterns and nearest-filled, exactly
as at test time.
"""
import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.grid import coarsen, upsample
from ..data.patterns import SparsePattern
from ..train.checkpoint import architecture_fingerprint, data_fingerprint
from ..train.early_stopping import BestWeights
from ..train.trainer import Trainer

__all__ = ["nearest_fill", "DistributionalUpsampler", "InterpolationUpsampling", "SRCNN",
           "UrbanFM", "fit_upsampler"]


def nearest_fill(x: Tensor, mask: Tensor, chunk: int = 256) -> Tensor:
    r"""Fill missing cells with the mean of the nearest observed cells of the same map.

    Args:
        x (Tensor): maps ``[..., H, W]`` (missing entries may hold anything).
        mask (Tensor): observed mask broadcastable to ``x`` (1 observed, 0 missing).
        chunk (int, optional): maps processed at once (memory ``chunk * (H*W)^2``).

    Returns:
        Tensor ``[..., H, W]``: observed cells unchanged, missing ones filled. A map with
        no observed cell is filled with zeros.
    """
    if x.dim() < 2:
        raise ValueError(f"'x' must have shape [..., H, W] (got {tuple(x.shape)})")
    mask = torch.broadcast_to(mask, x.shape).bool()
    H, W = x.shape[-2:]
    flat_x = x.reshape(-1, H * W)
    flat_m = mask.reshape(-1, H * W)
    rows = torch.arange(H, dtype=torch.float64).repeat_interleave(W)
    cols = torch.arange(W, dtype=torch.float64).repeat(H)
    dist = (rows[:, None] - rows[None, :]) ** 2 + (cols[:, None] - cols[None, :]) ** 2
    out = flat_x.clone()
    for start in range(0, flat_x.shape[0], chunk):
        xs = flat_x[start:start + chunk].to(torch.float64)
        ms = flat_m[start:start + chunk]
        if bool(ms.all()):
            continue
        # d[b, u, v]: distance from target cell u to observed source v (inf if missing).
        d = dist.unsqueeze(0).expand(xs.shape[0], -1, -1)
        d = d.masked_fill(~ms.unsqueeze(1), float("inf"))
        dmin = d.min(dim=-1, keepdim=True).values
        nearest = (d <= dmin + 1e-9) & torch.isfinite(d)
        weight = nearest.to(torch.float64)
        count = weight.sum(-1).clamp_min(1.0)
        fill = (weight * xs.masked_fill(~ms, 0.0).unsqueeze(1)).sum(-1) / count
        res = torch.where(ms, xs, fill)
        out[start:start + chunk] = res.to(out.dtype)
    return out.reshape(x.shape)


class DistributionalUpsampler:
    r"""Split coarse values over fine cells with the training set's mean shares.

    Args:
        factor (int): magnification :math:`N` (each coarse cell covers ``N x N`` fine cells).

    Shapes:
        - fit: coarse ``[T, C, h, w]`` (optional; the sum-pooled fine maps by default),
          fine ``[T, C, h*N, w*N]``
        - predict: coarse ``[..., C, h, w]`` -> fine ``[..., C, h*N, w*N]``
    """

    def __init__(self, factor: int):
        if int(factor) < 1:
            raise ValueError(f"'factor' must be a positive integer (got {factor})")
        self.factor = int(factor)
        self.shares: Optional[Tensor] = None

    def fit(self, fine: Tensor, coarse: Optional[Tensor] = None) -> "DistributionalUpsampler":
        if fine.dim() != 4:
            raise ValueError(f"'fine' must have shape [T, C, H, W] (got {tuple(fine.shape)})")
        for name, x in (("fine", fine), ("coarse", coarse)):
            if x is not None and not bool(torch.isfinite(x).all()):
                raise ValueError(f"'{name}' holds NaN or inf: the shares need complete "
                                 f"training maps")
        f = self.factor
        fine = fine.to(torch.float64)
        fine_sum = fine.sum(0)  # [C, H, W]
        coarse_sum = coarsen(fine_sum, f) if coarse is None else coarse.to(torch.float64).sum(0)
        denom = upsample(coarse_sum, f)  # repeat each coarse total over its block
        uniform = torch.full_like(fine_sum, 1.0 / (f * f))
        self.shares = torch.where(denom > 0, fine_sum / denom.clamp_min(1e-300), uniform)
        return self

    def predict(self, coarse: Tensor) -> Tensor:
        if self.shares is None:
            raise RuntimeError("DistributionalUpsampler is not fitted: call fit() first")
        if tuple(coarse.shape[-3:]) != (self.shares.shape[0], self.shares.shape[1] // self.factor,
                                        self.shares.shape[2] // self.factor):
            raise ValueError(f"'coarse' must have shape [..., C, h, w] = [..., "
                             f"{self.shares.shape[0]}, {self.shares.shape[1] // self.factor}, "
                             f"{self.shares.shape[2] // self.factor}] (got {tuple(coarse.shape)})")
        out = upsample(coarse.to(torch.float64), self.factor, shares=self.shares)
        return out.to(coarse.dtype)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(factor={self.factor}, fitted={self.shares is not None})"


class InterpolationUpsampling:
    r"""Baseline (a): :func:`nearest_fill` of the incomplete coarse map, then
    :class:`DistributionalUpsampler`.

    Example::

        base = InterpolationUpsampling(factor=2).fit(train_fine)
        fine_hat = base.predict(coarse * mask, mask)   # [T, C, 2h, 2w]
    """

    name = "interp+dist"

    def __init__(self, factor: int):
        self.upsampler = DistributionalUpsampler(factor)

    @property
    def factor(self) -> int:
        return self.upsampler.factor

    def fit(self, fine: Tensor) -> "InterpolationUpsampling":
        self.upsampler.fit(fine)
        return self

    def predict(self, coarse: Tensor, mask: Tensor) -> Tensor:
        return self.upsampler.predict(nearest_fill(coarse, mask))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(factor={self.factor})"


# --------------------------------------------------------------------------- learned (b), (c)
def _check_maps(name: str, x: Tensor, channels: int, size) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != channels or \
            tuple(x.shape[2:]) != tuple(size):
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"'{name}' must have shape [B, C, h, w] = [B, {channels}, "
                         f"{size[0]}, {size[1]}] (got {got})")


class _LearnedUpsampler(nn.Module):
    """Scaling buffers and the fill -> network -> original-units pipeline of (b) and (c)."""

    name = "learned"

    def __init__(self, channels: int, coarse_size, factor: int, cond_features: int = 0):
        super().__init__()
        for n, v in (("channels", channels), ("factor", factor)):
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"'{n}' must be a positive integer (got {v!r})")
        self.channels, self.factor = int(channels), int(factor)
        self.coarse_size = (int(coarse_size[0]), int(coarse_size[1]))
        self.cond_features = int(cond_features)
        #: per-channel scale of the fine maps (std of the training fine values)
        self.register_buffer("scale", torch.full((self.channels,), float("nan")))

    def fit_scale(self, fine: Tensor) -> None:
        std = fine.transpose(0, 1).reshape(self.channels, -1).double().std(1, unbiased=False)
        self.scale.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)).float())

    def forward(self, filled: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        """Filled coarse maps (original units) -> fine maps divided by :attr:`scale`."""
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, coarse: Tensor, mask: Tensor, cond: Optional[Tensor] = None,
                batch_size: int = 1024) -> Tensor:
        """Incomplete coarse ``[T, C, h, w]`` + observed ``mask`` -> fine ``[T, C, H, W]``
        (original units): :func:`nearest_fill`, then the network (on the model's device;
        returned on the device of ``coarse``)."""
        if not bool(torch.isfinite(self.scale).all()):
            raise RuntimeError(f"{self.__class__.__name__} is not fitted: call "
                               f"fit_upsampler() first")
        _check_maps("coarse", coarse, self.channels, self.coarse_size)
        out_device, dev = coarse.device, self.scale.device
        coarse, mask = coarse.cpu(), torch.as_tensor(mask).cpu()
        cond = cond.cpu() if isinstance(cond, Tensor) else cond
        m = torch.broadcast_to(mask, coarse.shape).bool()
        filled = nearest_fill(torch.where(m, coarse.float(), torch.zeros(())), m)
        _check_cond("cond", cond, coarse.shape[0], self.cond_features)
        if coarse.shape[0] == 0:
            h, w = self.coarse_size
            return torch.empty(0, self.channels, h * self.factor, w * self.factor,
                               device=out_device)
        self.eval()
        outs = []
        for s in range(0, coarse.shape[0], batch_size):
            c = cond[s:s + batch_size].float().to(dev) if self.cond_features else None
            outs.append(self(filled[s:s + batch_size].to(dev), c) * self.scale[:, None, None])
        return torch.cat(outs).to(out_device)


class SRCNN(_LearnedUpsampler):
    r"""Baseline (b): SRCNN (Dong, Loy, He & Tang, "Image Super-Resolution Using Deep
    Convolutional Networks", TPAMI 2016, `arXiv:1501.00092
    <https://arxiv.org/abs/1501.00092>`_) on the nearest-filled coarse map.

    The filled coarse map is brought to the fine grid as a density (nearest-neighbour
    repeat divided by :math:`N^2`), then the three-layer network of the paper (patch
    extraction, non-linear mapping, reconstruction; eqs. 1-3) maps it to the fine map:

    .. math::
        Y = \mathrm{Up}_N(\tilde X^{cg}) / (N^2 \sigma), \quad
        F_1 = \mathrm{ReLU}(W_1 * Y + B_1), \quad
        F_2 = \mathrm{ReLU}(W_2 * F_1 + B_2), \quad
        \hat X^{fg} / \sigma = W_3 * F_2 + B_3

    with kernels 9-1-5 and widths 64-32 (the paper's 9-1-5 setting), zero "same" padding,
    and :math:`\sigma` the per-channel std of the training fine maps.

    Args:
        channels (int): map channels :math:`C`.
        coarse_size (tuple of int): ``(h, w)``.
        factor (int): magnification :math:`N`.
        widths (tuple of int, optional): ``(n_1, n_2)``. (default: ``(64, 32)``)
        kernels (tuple of int, optional): ``(f_1, f_2, f_3)``. (default: ``(9, 1, 5)``)

    Shapes:
        - **forward:** filled coarse ``[B, C, h, w]`` -> ``[B, C, hN, wN]`` (scaled)
        - **predict:** coarse, mask ``[T, C, h, w]`` -> ``[T, C, hN, wN]``
    """

    name = "srcnn"

    def __init__(self, channels: int, coarse_size, factor: int,
                 widths: Sequence[int] = (64, 32), kernels: Sequence[int] = (9, 1, 5)):
        super().__init__(channels, coarse_size, factor)
        self.widths, self.kernels = tuple(int(w) for w in widths), tuple(int(k) for k in kernels)
        n1, n2 = self.widths
        f1, f2, f3 = self.kernels
        self.conv1 = nn.Conv2d(channels, n1, f1, padding=f1 // 2)
        self.conv2 = nn.Conv2d(n1, n2, f2, padding=f2 // 2)
        self.conv3 = nn.Conv2d(n2, channels, f3, padding=f3 // 2)

    def forward(self, filled: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        _check_maps("filled", filled, self.channels, self.coarse_size)
        N = self.factor
        y = upsample(filled, N) / (N * N * self.scale[:, None, None])
        y = F.relu(self.conv1(y))
        y = F.relu(self.conv2(y))
        return self.conv3(y)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.channels}, coarse_size={self.coarse_size}, "
                f"factor={self.factor}, widths={self.widths}, kernels={self.kernels})")


class _ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.BatchNorm2d(ch),
                                  nn.ReLU(), nn.Conv2d(ch, ch, 3, padding=1),
                                  nn.BatchNorm2d(ch))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class UrbanFM(_LearnedUpsampler):
    r"""Baseline (c): an UrbanFM-style network (Liang et al., "UrbanFM: Inferring
    Fine-Grained Urban Flows", KDD 2019, `arXiv:1902.05377
    <https://arxiv.org/abs/1902.05377>`_) on the nearest-filled coarse map.

    Inference network: a convolution, ``num_blocks`` residual blocks
    (conv-BN-ReLU-conv-BN with identity skip), a convolution with a global skip,
    :math:`\log_2 N` sub-pixel (PixelShuffle) upsampling stages (any other :math:`N`: one
    PixelShuffle by :math:`N`), then the **distributional upsampling** of the paper's
    :math:`N^2`-Normalization layer, a softmax over each :math:`N \times N` block times the
    coarse value:

    .. math::
        \hat X^{fg}_{Ni+a,Nj+b} = \frac{\exp H_{Ni+a,Nj+b}}
        {\sum_{a',b' < N} \exp H_{Ni+a',Nj+b'}}\; \tilde X^{cg}_{i,j}

    so each block sums exactly to its (filled) coarse value. **External-factor fusion**:
    the conditioning vector (calendar / weather features, ``cond_features``) is embedded by
    an MLP into one coarse-resolution map concatenated to the input and one
    fine-resolution map concatenated before the output convolution (the paper's
    coarse- and fine-level external maps).

    Args:
        channels (int): map channels :math:`C`.
        coarse_size (tuple of int): ``(h, w)``.
        factor (int): magnification :math:`N`.
        cond_features (int, optional): size of the external vector (``0``: none).
            (default: ``0``)
        width (int, optional): feature channels. (default: ``64``)
        num_blocks (int, optional): residual blocks. (default: ``8``)

    Shapes:
        - **forward:** filled coarse ``[B, C, h, w]``, cond ``[B, cond_features]`` ->
          ``[B, C, hN, wN]`` (scaled)
        - **predict:** coarse, mask ``[T, C, h, w]``, cond ``[T, cond_features]`` ->
          ``[T, C, hN, wN]``
    """

    name = "urbanfm"

    def __init__(self, channels: int, coarse_size, factor: int, cond_features: int = 0,
                 width: int = 64, num_blocks: int = 8):
        super().__init__(channels, coarse_size, factor, cond_features)
        self.width, self.num_blocks = int(width), int(num_blocks)
        h, w = self.coarse_size
        N = self.factor
        ext = 1 if self.cond_features else 0
        if self.cond_features:
            self.ext_coarse = nn.Sequential(nn.Linear(self.cond_features, 128), nn.ReLU(),
                                            nn.Linear(128, h * w), nn.ReLU())
            self.ext_fine = nn.Sequential(nn.Linear(self.cond_features, 128), nn.ReLU(),
                                          nn.Linear(128, h * w * N * N), nn.ReLU())
        self.head = nn.Conv2d(channels + ext, self.width, 9, padding=4)
        self.blocks = nn.Sequential(*[_ResBlock(self.width) for _ in range(self.num_blocks)])
        self.body_tail = nn.Sequential(nn.Conv2d(self.width, self.width, 3, padding=1),
                                       nn.BatchNorm2d(self.width))
        ups = []
        if N > 1:
            stages = [2] * int(math.log2(N)) if (N & (N - 1)) == 0 else [N]
            for r in stages:
                ups += [nn.Conv2d(self.width, self.width * r * r, 3, padding=1),
                        nn.BatchNorm2d(self.width * r * r), nn.PixelShuffle(r), nn.ReLU()]
        self.up = nn.Sequential(*ups)
        self.out = nn.Conv2d(self.width + ext, channels, 9, padding=4)

    def shares(self, filled: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        """Per-block softmax shares ``[B, C, hN, wN]`` (each ``N x N`` block sums to 1)."""
        _check_maps("filled", filled, self.channels, self.coarse_size)
        B = filled.shape[0]
        (h, w), N = self.coarse_size, self.factor
        x = filled / (N * N * self.scale[:, None, None])
        if self.cond_features:
            if cond is None or tuple(cond.shape) != (B, self.cond_features):
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(f"'cond' must have shape [B, {self.cond_features}] "
                                 f"(got {got})")
            x = torch.cat([x, self.ext_coarse(cond).view(B, 1, h, w)], 1)
        f0 = self.head(x)
        f = self.up(f0 + self.body_tail(self.blocks(f0)))
        if self.cond_features:
            f = torch.cat([f, self.ext_fine(cond).view(B, 1, h * N, w * N)], 1)
        logits = self.out(f)                                  # [B, C, hN, wN]
        blk = logits.view(B, self.channels, h, N, w, N)
        blk = torch.softmax(blk.permute(0, 1, 2, 4, 3, 5).reshape(B, self.channels, h, w,
                                                                   N * N), -1)
        return blk.view(B, self.channels, h, w, N, N).permute(0, 1, 2, 4, 3, 5).reshape(
            B, self.channels, h * N, w * N)

    def forward(self, filled: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        N = self.factor
        return upsample(filled, N) * self.shares(filled, cond) / self.scale[:, None, None]

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.channels}, coarse_size={self.coarse_size}, "
                f"factor={self.factor}, cond_features={self.cond_features}, "
                f"width={self.width}, num_blocks={self.num_blocks})")


def _check_cond(name: str, cond: Optional[Tensor], T: int, features: int) -> None:
    """A model with ``features`` external inputs needs a finite ``[T, features]`` ``cond``."""
    if not features:
        return
    if not isinstance(cond, Tensor) or tuple(cond.shape) != (T, features):
        got = tuple(cond.shape) if isinstance(cond, Tensor) else cond
        raise ValueError(f"'{name}' must have shape [T={T}, {features}] (got {got})")
    if not bool(torch.isfinite(cond).all()):
        raise ValueError(f"'{name}' holds NaN or inf: external features must be complete "
                         f"(fill or drop the affected steps)")


def fit_upsampler(model: _LearnedUpsampler, fine: Tensor, cond: Optional[Tensor] = None,
                  patterns: Sequence[Union[str, SparsePattern]] = ("random:0.4",),
                  steps: int = 2000, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
                  progress: bool = False, val_fine: Optional[Tensor] = None,
                  val_cond: Optional[Tensor] = None, val_every: int = 100,
                  val_maps: int = 256, checkpoint=None, checkpoint_every: int = 100,
                  resume: bool = True) -> _LearnedUpsampler:
    r"""Train :class:`SRCNN` / :class:`UrbanFM` on complete training fine maps.

    Each step draws ``batch_size`` training maps; their coarse maps
    :math:`X^{cg} = \mathrm{coarsen}(X^{fg}, N)` are masked with a pattern drawn uniformly
    from ``patterns`` (fresh seeds) and filled by :func:`nearest_fill`; the loss is the
    mean squared error of the scaled fine maps,
    :math:`\|(\hat X^{fg} - X^{fg}) / \sigma\|^2`. Adam, cosine decay from ``lr`` to
    ``lr / 10``.

    With ``val_fine``, early stopping as in :meth:`DiffRecon.fit
    <torch_stgen.models.DiffRecon.fit>`: every ``val_every`` steps and after the last, the
    same loss on up to ``val_maps`` held-out maps (masks drawn once) is measured and the
    model ends with its best weights.

    Args:
        model: the network (its scale is fitted here).
        fine (Tensor): ``[T, C, H, W]`` complete training maps.
        cond (Tensor, optional): ``[T, cond_features]`` external vectors (UrbanFM).
        patterns, steps, batch_size, lr, seed, progress: the schedule above.
        val_fine (Tensor, optional): ``[T_v, C, H, W]`` held-out maps. (default: ``None``)
        val_cond (Tensor, optional): ``[T_v, cond_features]`` (UrbanFM).
        val_every, val_maps: as in :meth:`DiffRecon.fit`. (default: ``100``, ``256``)
        checkpoint, checkpoint_every, resume: resumable training, as in
            :meth:`DiffRecon.fit` (a run cut off and re-run with the same file ends with
            the weights of an uninterrupted run). (default: ``None``, ``100``, ``True``)

    Returns:
        the trained ``model`` (in eval mode; ``model.train_seconds`` set, and with early
        stopping ``model.best_step``).

    Raises:
        FloatingPointError: the loss or its gradient is not finite (lower ``lr``).

    The loop is the shared :class:`~torch_stgen.train.Trainer` (no gradient clipping).
    """
    N = model.factor
    H, W = model.coarse_size[0] * N, model.coarse_size[1] * N
    _check_maps("fine", fine, model.channels, (H, W))
    if not bool(torch.isfinite(fine).all()):
        raise ValueError("'fine' training maps must be complete (NaN/inf found)")
    pats = [SparsePattern.parse(p) for p in patterns]
    if not pats:
        raise ValueError("'patterns' must not be empty")
    _check_cond("cond", cond, fine.shape[0], model.cond_features)
    gen = torch.Generator().manual_seed(int(seed))
    # the maps stay on the CPU (as do the random draws, so the stream does not depend on
    # the device); each batch moves to the model's device
    dev = model.scale.device
    fine = fine.float().cpu()
    cond = cond.cpu() if isinstance(cond, Tensor) else cond
    model.fit_scale(fine)
    scale = model.scale.cpu()
    coarse = coarsen(fine, N)
    target = fine / scale[:, None, None]
    h, w = model.coarse_size

    val = None
    if val_fine is not None:
        _check_maps("val_fine", val_fine, model.channels, (H, W))
        if not bool(torch.isfinite(val_fine).all()):
            raise ValueError("'val_fine' must be complete (NaN/inf found)")
        _check_cond("val_cond", val_cond, val_fine.shape[0], model.cond_features)
        if isinstance(val_every, bool) or int(val_every) != val_every or val_every < 1:
            raise ValueError(f"'val_every' must be a positive integer (got {val_every!r})")
        Tv = val_fine.shape[0]
        vi = torch.linspace(0, Tv - 1, min(int(val_maps), Tv)).round().long()
        vm = SparsePattern.draw_mixture(pats, len(vi), 1, h, w,
                                        torch.Generator().manual_seed(int(seed) + 7919))
        vf = val_fine.float().cpu()[vi]
        val = (nearest_fill(coarsen(vf, N) * vm, vm.expand(-1, model.channels, -1, -1)).to(dev),
               val_cond.cpu()[vi].float().to(dev) if model.cond_features else None,
               (vf / scale[:, None, None]).to(dev))
    best = BestWeights(model)

    def check(done: int):
        model.eval()
        with torch.no_grad():
            v = F.mse_loss(model(val[0], val[1]), val[2]).item()
        model.train()
        best.update(v, done)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(i, steps) / max(1, steps))))
    trainer = Trainer(
        model, opt, sched, total=int(steps), generator=gen,
        grad_clip=None,             # the shared loop, without clipping (as the papers)
        checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
        fingerprint={"model": model.name, "architecture": architecture_fingerprint(model),
                     "patterns": [p.name for p in pats], "steps": int(steps),
                     "batch_size": int(batch_size), "lr": lr, "seed": int(seed),
                     "val_every": val_every if val is not None else None,
                     "val_maps": val_maps if val is not None else None,
                     "fine": data_fingerprint(fine), "cond": data_fingerprint(cond),
                     "val_fine": data_fingerprint(val_fine),
                     "val_cond": data_fingerprint(val_cond)},
        progress=progress, desc=f"{model.name} fit")
    model.train()
    saved = trainer.resume()
    if saved is not None:
        best.load_state_dict(saved["best"])

    def before_step(it: int) -> None:
        if val is not None and it and it % int(val_every) == 0:
            check(it)

    def loss_fn(it: int) -> Tensor:
        idx = torch.randint(fine.shape[0], (batch_size,), generator=gen)
        m = SparsePattern.draw_mixture(pats, batch_size, 1, h, w, gen)
        filled = nearest_fill(coarse[idx] * m, m.expand(-1, model.channels, -1, -1))
        c = cond[idx].float().to(dev) if model.cond_features else None
        return F.mse_loss(model(filled.to(dev), c), target[idx].to(dev))

    trainer.run(loss_fn, before_step, extra_state=lambda: {"best": best.state_dict()})
    if val is not None:
        check(steps)
        model.best_step = best.restore()
    model.eval()
    model.train_seconds = trainer.seconds
    return model
