r"""Delay embedding of a time series into a square image and its inverse (KGDiff).

KGDiff ("Knowledge Graph Guided Heterogeneity-Informed Diffusion Model for
Spatio-Temporal Generation", Wang et al., AAAI 2026) turns each daily series into a
:math:`V \times V` image with stride :math:`U` and window :math:`V` so that a 2-D U-Net
can denoise it (the "delay embedding" of ImagenTime, Naiman et al. 2024,
`arXiv:2410.19538 <https://arxiv.org/abs/2410.19538>`_), and maps generated images back
to series with the inverse. Reference settings: ``U=3, V=16`` for 48 steps and
``U=9, V=32`` for 288 steps.
"""
import torch
from torch import Tensor, nn

__all__ = ["DelayEmbedding"]


class DelayEmbedding(nn.Module):
    r"""Delay embedding of a series of length :math:`L` into a :math:`V \times V` image
    (KGDiff, delay embedding with stride :math:`U` and window :math:`V`, zero-padded).

    Column :math:`j` of the image is the window of :math:`V` values starting at step
    :math:`jU`; entries past the end of the series are zero:

    .. math::
        \mathrm{img}[i, j] =
        \begin{cases} x[jU + i] & jU + i < L \\ 0 & \text{otherwise} \end{cases},
        \qquad 0 \le i, j < V

    (rows index the offset inside a window, columns the window). The inverse averages
    every image entry that maps to the same step:

    .. math::
        \hat x[\ell] = \frac{1}{|S_\ell|} \sum_{(i, j) \in S_\ell} \mathrm{img}[i, j],
        \qquad S_\ell = \{(i, j) : jU + i = \ell\}

    so ``inverse(forward(x)) == x`` exactly (up to float rounding of the mean) on every
    covered step. The series is fully covered iff :math:`U \le V` (no gap between
    windows) and :math:`(V - 1)U + V \ge L` (the last window reaches the end); otherwise
    the constructor raises a ``ValueError`` naming the failing condition, unless
    ``allow_partial=True``, in which case uncovered steps come back as ``0`` and
    :attr:`covered_mask` marks them.

    Args:
        length (int): series length :math:`L`.
        stride (int): stride :math:`U` between window starts.
        window (int): window length and image size :math:`V`.
        allow_partial (bool, optional): accept settings that do not cover every step.
            (default: ``False``)

    Shapes:
        - **forward:** ``[..., L]`` -> ``[..., V, V]``
        - **inverse:** ``[..., V, V]`` -> ``[..., L]``
    """

    def __init__(self, length: int, stride: int, window: int, allow_partial: bool = False):
        super().__init__()
        L, U, V = int(length), int(stride), int(window)
        if L < 1 or U < 1 or V < 1:
            raise ValueError(f"'length', 'stride' and 'window' must be positive integers "
                             f"(got L={length}, U={stride}, V={window})")
        self.length, self.stride, self.window = L, U, V
        self.allow_partial = bool(allow_partial)
        if not self.allow_partial:
            if U > V:
                raise ValueError(
                    f"DelayEmbedding(L={L}, U={U}, V={V}) leaves gaps: stride U={U} is larger "
                    f"than window V={V}, so steps between windows are never covered "
                    f"(need U <= V; or pass allow_partial=True)")
            if (V - 1) * U + V < L:
                raise ValueError(
                    f"DelayEmbedding(L={L}, U={U}, V={V}) cannot cover the series: the last "
                    f"of the V={V} windows ends at step (V-1)*U+V = {(V - 1) * U + V} < L={L} "
                    f"(increase U or V; or pass allow_partial=True)")
        i = torch.arange(V).view(V, 1)
        j = torch.arange(V).view(1, V)
        pos = j * U + i  # [V, V] series position of each image entry
        valid = pos < L
        self.register_buffer("index", torch.where(valid, pos, torch.zeros_like(pos)),
                             persistent=False)
        self.register_buffer("image_mask", valid, persistent=False)
        counts = torch.zeros(L, dtype=torch.long).index_add_(
            0, pos[valid], torch.ones(int(valid.sum()), dtype=torch.long))
        self.register_buffer("counts", counts, persistent=False)

    @property
    def covered_mask(self) -> Tensor:
        r"""``[L]`` bool: the series steps that appear in at least one image entry."""
        return self.counts > 0

    def _check(self, x: Tensor, name: str, tail, what: str):
        if not isinstance(x, Tensor):
            raise TypeError(f"'{name}' must be a tensor (got {type(x).__name__})")
        if x.dim() < len(tail) or tuple(x.shape[-len(tail):]) != tuple(tail):
            dims = ", ".join(str(d) for d in tail)
            raise ValueError(f"'{name}' must have shape [..., {dims}] ({what}; got "
                             f"{tuple(x.shape)})")

    def forward(self, x: Tensor) -> Tensor:
        """Series ``[..., L]`` -> image ``[..., V, V]``."""
        self._check(x, "x", (self.length,), f"series of length L={self.length}")
        V = self.window
        idx = self.index.to(x.device)
        img = x[..., idx.reshape(-1)].reshape(*x.shape[:-1], V, V)
        # ``where`` (not a product) so that a non-finite value cannot leak into padding
        return torch.where(self.image_mask.to(x.device), img, torch.zeros((), dtype=x.dtype,
                                                                         device=x.device))

    def inverse(self, img: Tensor) -> Tensor:
        """Image ``[..., V, V]`` -> series ``[..., L]`` (mean over duplicated entries)."""
        V, L = self.window, self.length
        self._check(img, "img", (V, V), f"delay-embedded V x V image, V={V}")
        lead = img.shape[:-2]
        mask = self.image_mask.to(img.device).reshape(-1)
        flat = img.reshape(*lead, V * V)[..., mask]
        pos = self.index.to(img.device).reshape(-1)[mask]
        out = img.new_zeros(*lead, L).index_add_(img.dim() - 2, pos, flat)
        counts = self.counts.to(device=img.device, dtype=img.dtype).clamp(min=1)
        return out / counts

    def extra_repr(self) -> str:
        return (f"length={self.length}, stride={self.stride}, window={self.window}"
                + (", allow_partial=True" if self.allow_partial else ""))
