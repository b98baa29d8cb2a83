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

_LAYOUTS = ("sliding", "imagentime")
_INVERSES = ("mean", "last")


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

    The papers leave two choices open; both are options. ``layout='sliding'`` (the
    default, above) fills every column, so the windows that run past the end of the series
    repeat its last steps; ``layout='imagentime'`` keeps ImagenTime's form: the
    :math:`n` windows that fit inside the series (:math:`jU + V \le L`), then, if the
    next start :math:`nU` lies inside the series, one shorter window from there to the end
    (ImagenTime adds it even when window :math:`n - 1` already reached the end), then zero
    columns; at most :math:`V` columns. ``inverse='mean'`` (the
    default) averages the entries of a step, which smooths a generated image whose
    copies of a step disagree; ``inverse='last'`` reads each step from the last column
    that holds it, as ImagenTime's inverse does. For a delay image of a real series both
    inverses return the series exactly.

    Args:
        length (int): series length :math:`L`.
        stride (int): stride :math:`U` between window starts.
        window (int): window length and image size :math:`V`.
        allow_partial (bool, optional): accept settings that do not cover every step.
            (default: ``False``)
        layout (str, optional): ``'sliding'`` or ``'imagentime'`` (see above).
            (default: ``'sliding'``)
        inverse (str, optional): ``'mean'`` or ``'last'`` (see above).
            (default: ``'mean'``)

    Shapes:
        - **forward:** ``[..., L]`` -> ``[..., V, V]``
        - **inverse:** ``[..., V, V]`` -> ``[..., L]``
    """

    def __init__(self, length: int, stride: int, window: int, allow_partial: bool = False,
                 layout: str = "sliding", inverse: str = "mean"):
        super().__init__()
        L, U, V = int(length), int(stride), int(window)
        if L < 1 or U < 1 or V < 1:
            raise ValueError(f"'length', 'stride' and 'window' must be positive integers "
                             f"(got L={length}, U={stride}, V={window})")
        if layout not in _LAYOUTS:
            raise ValueError(f"'layout' must be one of {_LAYOUTS} (got {layout!r})")
        if inverse not in _INVERSES:
            raise ValueError(f"'inverse' must be one of {_INVERSES} (got {inverse!r})")
        self.length, self.stride, self.window = L, U, V
        self.allow_partial = bool(allow_partial)
        self.layout, self.inverse_mode = layout, inverse
        # ImagenTime's columns: the windows inside the series, then one with the rest
        n_full = 0 if V > L else (L - V) // U + 1
        columns = V if layout == "sliding" else n_full + int(n_full * U < L)
        if layout == "imagentime" and not self.allow_partial:
            if U > V:
                raise ValueError(
                    f"DelayEmbedding(L={L}, U={U}, V={V}, layout='imagentime') leaves gaps: "
                    f"stride U={U} is larger than window V={V} (need U <= V; or pass "
                    f"allow_partial=True)")
            if columns > V:
                raise ValueError(
                    f"DelayEmbedding(L={L}, U={U}, V={V}, layout='imagentime') needs "
                    f"{columns} columns ({n_full} windows inside the series"
                    f"{' and a shorter one' if n_full * U < L else ''}) but the image has "
                    f"V={V} "
                    f"(increase U or V; or pass allow_partial=True)")
        elif not self.allow_partial:
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
        valid = (pos < L) & (j < columns)
        self.register_buffer("index", torch.where(valid, pos, torch.zeros_like(pos)),
                             persistent=False)
        self.register_buffer("image_mask", valid, persistent=False)
        counts = torch.zeros(L, dtype=torch.long).index_add_(
            0, pos[valid], torch.ones(int(valid.sum()), dtype=torch.long))
        self.register_buffer("counts", counts, persistent=False)
        # inverse='last': the flat image entry of the last column holding each step
        # (step l sits at row l - jU of column j; an uncovered step reads entry 0, masked)
        last = torch.zeros(L, dtype=torch.long).scatter_reduce_(
            0, pos[valid], j.expand(V, V)[valid], reduce="amax", include_self=False)
        steps = torch.arange(L)
        row = (steps - last * U).clamp(min=0, max=V - 1)
        self.register_buffer("last_entry", torch.where(counts > 0, row * V + last,
                                                       torch.zeros_like(last)),
                             persistent=False)

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
        """Image ``[..., V, V]`` -> series ``[..., L]`` (mean over duplicated entries, or
        the last column's entry with ``inverse='last'``)."""
        V, L = self.window, self.length
        self._check(img, "img", (V, V), f"delay-embedded V x V image, V={V}")
        lead = img.shape[:-2]
        if self.inverse_mode == "last":
            out = img.reshape(*lead, V * V)[..., self.last_entry.to(img.device)]
            return torch.where(self.covered_mask.to(img.device), out,
                               torch.zeros((), dtype=img.dtype, device=img.device))
        mask = self.image_mask.to(img.device).reshape(-1)
        flat = img.reshape(*lead, V * V)[..., mask]
        pos = self.index.to(img.device).reshape(-1)[mask]
        out = img.new_zeros(*lead, L).index_add_(img.dim() - 2, pos, flat)
        counts = self.counts.to(device=img.device, dtype=img.dtype).clamp(min=1)
        return out / counts

    def extra_repr(self) -> str:
        return (f"length={self.length}, stride={self.stride}, window={self.window}"
                + (", allow_partial=True" if self.allow_partial else "")
                + (f", layout={self.layout!r}" if self.layout != "sliding" else "")
                + (f", inverse={self.inverse_mode!r}" if self.inverse_mode != "mean" else ""))
