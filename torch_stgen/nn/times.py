r"""TimesNet blocks and DiffRecon's T-PatternNet.

Papers:

* H. Wu, T. Hu, Y. Liu, H. Zhou, J. Wang, M. Long, "TimesNet: Temporal 2D-Variation Modeling
  for General Time Series Analysis", ICLR 2023, arXiv:2210.02186
  (https://arxiv.org/abs/2210.02186), §3, eqs. (1)-(6).
* Z. Sun et al., "From Incomplete Coarse-Grained to Complete Fine-Grained: A Two-Stage
  Framework for Spatiotemporal Data Reconstruction", arXiv:2410.05323
  (https://arxiv.org/abs/2410.05323), §IV-D, eqs. (26)-(34) (T-PatternNet, which applies the
  TimesNet block to the ``I * J`` coarse-cell series).

Public names: :class:`InceptionBlock`, :class:`TimesBlock`, :class:`TPatternNet`.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import match_input_dtype
from .st_point import _TIME_POOLS, _pair, _pool_time, _resolve_down, stack_subregions

__all__ = ["InceptionBlock", "TimesBlock", "TPatternNet"]


class InceptionBlock(nn.Module):
    r"""Parameter-efficient Inception block of TimesNet (§3.2): ``m`` parallel 2-D
    convolutions with square kernels ``1, 3, ..., 2m-1`` ("same" zero padding) whose outputs
    are **averaged**:

    .. math::
        \mathrm{Inception}(\mathbf{X}) = \frac{1}{m} \sum_{i=0}^{m-1}
        \mathrm{Conv2d}_{(2i+1) \times (2i+1)}(\mathbf{X})

    Because convolution is linear, the average equals **one** convolution with the kernel
    ``(1/m) sum_i pad(W_i)`` (each ``W_i`` zero-padded to ``(2m-1) x (2m-1)``) and bias
    ``(1/m) sum_i b_i``; :meth:`forward` runs that single convolution (about 2.4x fewer
    multiply-adds than six separate ones for ``m = 6``), cropped to at most
    ``(2H-1) x (2W-1)`` taps for an ``H x W`` input (the cropped taps only meet zero padding).
    The parameters stay the ``m`` separate kernels (``self.kernels``) and
    :meth:`forward_branches` computes the literal average; both give the same result.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        num_kernels (int, optional): number of kernels ``m``. (default: ``6``)

    Shapes:
        - input: ``[B, in_channels, H, W]``
        - output: ``[B, out_channels, H, W]``
    """

    def __init__(self, in_channels: int, out_channels: int, num_kernels: int = 6):
        super().__init__()
        for name, val in (("in_channels", in_channels), ("out_channels", out_channels),
                          ("num_kernels", num_kernels)):
            if not isinstance(val, int) or val <= 0:
                raise ValueError(f"'{name}' must be a positive int (got {val!r})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_kernels = num_kernels
        self.kernels = nn.ModuleList([
            nn.Conv2d(in_channels, out_channels, kernel_size=2 * i + 1, padding=i)
            for i in range(num_kernels)])
        self.reset_parameters()

    def reset_parameters(self):
        # TimesNet initialisation: Kaiming normal (fan_out, ReLU gain), zero bias.
        for conv in self.kernels:
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    def merged_weight(self) -> Tuple[Tensor, Tensor]:
        """The single equivalent kernel ``[out, in, 2m-1, 2m-1]`` and bias ``[out]``."""
        m = self.num_kernels
        weight = sum(F.pad(conv.weight, [m - 1 - i] * 4) for i, conv in enumerate(self.kernels))
        bias = sum(conv.bias for conv in self.kernels)
        return weight / m, bias / m

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != self.in_channels:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"'x' must have shape [B, C, H, W] with C = {self.in_channels} "
                             f"(got {got})")
        weight, bias = self.merged_weight()
        # Taps farther than H - 1 rows (W - 1 columns) from the centre only ever meet the
        # zero padding: crop them (exact, and much cheaper for the thin maps of long periods).
        m = self.num_kernels
        kh, kw = min(m - 1, x.shape[2] - 1), min(m - 1, x.shape[3] - 1)
        weight = weight[:, :, m - 1 - kh:m + kh, m - 1 - kw:m + kw]
        return F.conv2d(x, weight, bias, padding=(kh, kw))

    def forward_branches(self, x: Tensor) -> Tensor:
        """The literal average of the ``m`` convolutions (same result as :meth:`forward`)."""
        return torch.stack([conv(x) for conv in self.kernels], dim=-1).mean(-1)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"num_kernels={self.num_kernels})")


class TimesBlock(nn.Module):
    r"""TimesBlock of TimesNet (eqs. 1-6), used by DiffRecon's T-PatternNet (eqs. 26-34).

    Period discovery (:meth:`find_periods`) on ``X_{1D}`` ``[B, T, d]``:

    .. math::
        \mathbf{A} = \mathrm{Avg}\big(\mathrm{Amp}(\mathrm{FFT}(\mathbf{X}_{1D}))\big),\;
        \{f_1, \dots, f_k\} = \mathop{\arg\mathrm{Topk}}_{f \in \{1, \dots, \lfloor T/2
        \rfloor\}}(\mathbf{A}),\; p_i = \Big\lceil \frac{T}{f_i} \Big\rceil \qquad (1)

    (amplitudes of the real FFT over time, averaged over batch and channels; the DC term
    ``f = 0`` is excluded; ``period_rule="floor"`` uses ``p_i = T // f_i`` as the TimesNet
    code does). Each period folds the zero-padded series into a 2-D tensor with
    ``ceil(T / p_i)`` rows (inter-period variation) and ``p_i`` columns (intra-period
    variation), processed by a shared Inception -> GELU -> Inception and unfolded:

    .. math::
        \mathbf{X}^{i}_{2D} = \mathrm{Reshape}_{\lceil T/p_i \rceil, p_i}
        (\mathrm{Padding}(\mathbf{X}_{1D})) \qquad (3)

        \widehat{\mathbf{X}}^{i}_{1D} = \mathrm{Trunc}_T\Big(\mathrm{Reshape}_{1,
        \lceil T/p_i \rceil p_i}\big(\mathrm{Inception}(\mathrm{GELU}(
        \mathrm{Inception}(\mathbf{X}^{i}_{2D})))\big)\Big) \qquad (5)

    and the ``k`` results are aggregated with the softmax of their **per-sample** amplitudes
    :math:`\mathbf{A}_{b, f_i}` (mean over channels of sample ``b``) plus a residual:

    .. math::
        \widehat{\mathbf{A}}_{b} = \mathrm{Softmax}(\mathbf{A}_{b,f_1}, \dots,
        \mathbf{A}_{b,f_k}),\qquad
        \mathbf{X}^{l}_{1D} = \sum_{i=1}^{k} \widehat{\mathbf{A}}_{b,i}\,
        \widehat{\mathbf{X}}^{i}_{1D} + \mathbf{X}^{l-1}_{1D} \qquad (4, 6)

    The periods are chosen from the **batch-averaged** spectrum (as in TimesNet), so samples
    in one batch share them and a sample's output depends on the other samples of its
    batch; the softmax weights stay per sample and differentiable.
    ``period_scope="sample"`` picks each sample's periods from its own spectrum
    (:math:`\mathbf{A}_b`, the mean over channels only) instead: samples whose top-``k``
    frequencies agree (in order) are folded together, so a sample's output no longer depends
    on its batch (up to float round-off), at the cost of one fold per distinct period set.
    The papers leave this open (TimesNet's code averages over the batch). As in
    the paper the weights use the raw (unnormalised) FFT amplitudes, which grow with ``T`` and
    with the signal scale, so for long, strongly periodic inputs the softmax is close to
    one-hot (the strongest period dominates).

    The periods are data: one host sync per call reads them, and ``torch.compile`` breaks
    the graph there. With torch 2.13 the default inductor backend fails on the period
    reshapes when it compiles them with dynamic shapes; ``torch.compile(block,
    dynamic=False)`` (one graph per period set) works. Low-precision blocks
    (``.bfloat16()`` / ``.half()``) run their FFT in float32.

    Args:
        seq_len (int): series length ``T`` (inputs must have exactly this length).
        d_model (int, optional): channels ``d``. (default: ``64``)
        d_ff (int, optional): channels between the two Inception blocks. (default: ``64``)
        top_k (int, optional): number of periods ``k`` (``<= seq_len // 2``). (default: ``5``)
        num_kernels (int, optional): Inception kernels ``m``. (default: ``6``)
        period_rule (str, optional): ``"ceil"`` (paper, eq. 1) or ``"floor"`` (TimesNet code).
            (default: ``"ceil"``)
        period_scope (str, optional): ``"batch"`` (TimesNet: one period set from the
            batch-averaged spectrum) or ``"sample"`` (each sample's own). (default:
            ``"batch"``)

    Shapes:
        - input: ``[B, T, d]``
        - output: ``[B, T, d]``
    """

    def __init__(self, seq_len: int, d_model: int = 64, d_ff: int = 64, top_k: int = 5,
                 num_kernels: int = 6, period_rule: str = "ceil",
                 period_scope: str = "batch"):
        super().__init__()
        for name, val in (("seq_len", seq_len), ("d_model", d_model), ("d_ff", d_ff),
                          ("top_k", top_k), ("num_kernels", num_kernels)):
            if not isinstance(val, int) or val <= 0:
                raise ValueError(f"'{name}' must be a positive int (got {val!r})")
        if seq_len < 2:
            raise ValueError(f"'seq_len' must be >= 2: a length-{seq_len} series has no "
                             f"non-DC frequency to take a period from")
        if top_k > seq_len // 2:
            raise ValueError(f"'top_k' ({top_k}) must be <= seq_len // 2 = {seq_len // 2} "
                             f"(non-DC rFFT frequencies of a length-{seq_len} series)")
        if period_rule not in ("ceil", "floor"):
            raise ValueError(f"'period_rule' must be 'ceil' or 'floor' (got {period_rule!r})")
        if period_scope not in ("batch", "sample"):
            raise ValueError(f"'period_scope' must be 'batch' or 'sample' "
                             f"(got {period_scope!r})")
        self.seq_len = seq_len
        self.period_scope = period_scope
        self.d_model = d_model
        self.d_ff = d_ff
        self.top_k = top_k
        self.num_kernels = num_kernels
        self.period_rule = period_rule
        self.conv = nn.Sequential(InceptionBlock(d_model, d_ff, num_kernels), nn.GELU(),
                                  InceptionBlock(d_ff, d_model, num_kernels))
        self.reset_parameters()

    def reset_parameters(self):
        self.conv[0].reset_parameters()
        self.conv[2].reset_parameters()

    def _scope_repr(self) -> str:
        # shown only when not the default, so that the architecture fingerprints of
        # checkpoints written before the option existed still match
        return "" if self.period_scope == "batch" else f", period_scope={self.period_scope!r}"

    def extra_repr(self) -> str:
        return (f"seq_len={self.seq_len}, d_model={self.d_model}, d_ff={self.d_ff}, "
                f"top_k={self.top_k}, num_kernels={self.num_kernels}, "
                f"period_rule={self.period_rule!r}" + self._scope_repr())

    def _check(self, x: Tensor):
        if (not isinstance(x, Tensor) or x.dim() != 3 or x.shape[1] != self.seq_len
                or x.shape[2] != self.d_model):
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"'x' must have shape [B, T, d] = [B, {self.seq_len}, "
                             f"{self.d_model}] (got {got})")
        if x.shape[0] == 0:
            raise ValueError("'x' is an empty batch (B = 0): there is no spectrum to pick "
                             "periods from")

    def _spectrum(self, x: Tensor) -> Tensor:
        """``|rFFT(x)|`` over time, ``[B, T // 2 + 1, d]``."""
        # the CPU FFT has no bfloat16 / float16 kernels: those go through float32
        low = x.dtype in (torch.bfloat16, torch.float16)
        return torch.fft.rfft(x.float() if low else x, dim=1).abs()

    def _periods(self, freqs: List[int]) -> List[int]:
        T = self.seq_len
        if self.period_rule == "ceil":
            return [-(-T // fi) for fi in freqs]
        return [T // fi for fi in freqs]

    def find_periods(self, x: Tensor) -> Tuple[List[int], Tensor]:
        """Eq. (1): the top-``k`` periods of the batch-averaged spectrum and their per-sample
        amplitudes (``period_scope="batch"``; :meth:`forward` with ``"sample"`` applies this
        to each sample).

        Returns:
            ``(periods, amplitudes)``: a list of ``k`` ints (strongest frequency first) and a
            tensor ``[B, k]`` of per-sample amplitudes (mean over channels) of those
            frequencies, differentiable w.r.t. ``x``.
        """
        self._check(x)
        amp = self._spectrum(x)                                      # [B, T // 2 + 1, d]
        score = amp.detach().mean(dim=(0, 2))
        score[0] = float("-inf")  # DC excluded (paper: set to 0; -inf also breaks ties)
        freqs = torch.topk(score, self.top_k).indices  # [k]
        # one host sync for the periods and the check: the batch shares one spectrum, so a
        # single NaN / inf sample would silently change every sample's periods
        *f, finite = torch.cat([freqs, torch.isfinite(score[1:]).all().long()[None]]).tolist()
        if not finite:
            raise ValueError("'x' holds NaN or inf: TimesBlock picks the periods of the whole "
                             "batch from its mean spectrum (eq. 1)")
        return self._periods(f), amp.mean(-1)[:, freqs]

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(x, Tensor):
            x = match_input_dtype("x", x, self.conv[0].kernels[0].weight)
        if self.period_scope == "batch":
            periods, amplitudes = self.find_periods(x)
            return self._fold(x, periods, amplitudes)
        self._check(x)
        amp = self._spectrum(x).mean(-1)                             # [B, T // 2 + 1]
        score = amp.detach().clone()
        score[:, 0] = float("-inf")
        freqs = torch.topk(score, self.top_k, dim=1).indices         # [B, k]
        if not bool(torch.isfinite(score[:, 1:]).all()):
            raise ValueError("'x' holds NaN or inf: TimesBlock cannot pick periods from its "
                             "spectrum (eq. 1)")
        groups: dict = {}
        for b, key in enumerate(map(tuple, freqs.tolist())):
            groups.setdefault(key, []).append(b)
        if len(groups) == 1:
            return self._fold(x, self._periods(list(next(iter(groups)))),
                              amp.gather(1, freqs))
        pieces, order = [], []
        for key, members in groups.items():
            idx = torch.tensor(members, device=x.device)
            pieces.append(self._fold(x.index_select(0, idx), self._periods(list(key)),
                                     amp.index_select(0, idx).gather(
                                         1, freqs.index_select(0, idx))))
            order += members
        # one gather puts the groups' rows back in batch order
        return torch.cat(pieces).index_select(
            0, torch.argsort(torch.tensor(order, device=x.device)))

    def _fold(self, x: Tensor, periods: List[int], amplitudes: Tensor) -> Tensor:
        """Eqs. (3)-(6) for one period set shared by the samples of ``x``."""
        B, T, d = x.shape
        outs = []
        for p in periods:
            length = -(-T // p) * p
            y = F.pad(x, (0, 0, 0, length - T))  # zero-pad the end of the time axis
            y = y.reshape(B, length // p, p, d).permute(0, 3, 1, 2)  # [B, d, rows, p] (3)
            y = self.conv(y)  # (5)
            y = y.permute(0, 2, 3, 1).reshape(B, length, d)[:, :T]  # unfold + Trunc
            outs.append(y)
        weights = torch.softmax(amplitudes, dim=1).to(x.dtype)  # [B, k] (6)
        out = torch.einsum("bktd,bk->btd", torch.stack(outs, dim=1), weights)
        return out + x  # (4)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(seq_len={self.seq_len}, d_model={self.d_model}, "
                f"d_ff={self.d_ff}, top_k={self.top_k}, num_kernels={self.num_kernels}, "
                f"period_rule={self.period_rule!r}{self._scope_repr()})")


class TPatternNet(nn.Module):
    r"""T-PatternNet: the inter-map encoder of DiffRecon's Diffusion-F (§IV-D, eqs. 26-34).

    The completed coarse series -- ``C = I * J`` cell series (or ``N * F`` node features) of
    length ``T`` -- is embedded linearly and encoded by ``L`` TimesBlocks, each followed by a
    LayerNorm:

    .. math::
        \mathbf{X}^{0} = \mathbf{X}\mathbf{W}_{emb} + \mathbf{b}_{emb} \in
        \mathbb{R}^{T \times d},\qquad
        \mathbf{X}^{l} = \mathrm{LN}_l\big(\mathrm{TimesBlock}_l(\mathbf{X}^{l-1})\big),\;
        l = 1..L

    (:class:`TimesBlock` implements eqs. 26-34 / TimesNet eqs. 1-6). For a grid, :meth:`stack`
    maps the encoding back to every cell and stacks it per sub-region like
    :meth:`STPointFormer.stack`, to be concatenated with the U-Net bottleneck:

    1. per-cell projection ``Linear(d -> C)``: ``[B, T, d] -> [B, T, I, J, F_c]`` with
       ``F_c = C / (I * J)`` features per cell (channel ``(i * J + j) * F_c + f``);
    2. time pooling ``time_pool``: ``"flatten"`` (default; channel ``t * F_c + f``,
       ``C' = T * F_c``), ``"mean"`` or ``"last"`` (``C' = F_c``);
    3. :func:`~torch_stgen.nn.stack_subregions`: channel ``c * r_i r_j + a * r_j + e`` at pixel
       ``(p, q)`` is cell ``(p r_i + a, q r_j + e)``; optional ``1 x 1`` convolution to
       ``out_channels``.

    Args:
        in_channels (int): channels ``C`` of the input series (``I * J`` for a grid map,
            ``N * F`` for a node set).
        seq_len (int): series length ``T``.
        d_model (int, optional): hidden size. (default: ``64``)
        d_ff (int, optional): Inception hidden size. (default: ``64``)
        num_layers (int, optional): number of TimesBlocks ``L``. (default: ``2``)
        top_k (int, optional): periods per block. (default: ``5``)
        num_kernels (int, optional): Inception kernels. (default: ``6``)
        grid (tuple of int, optional): ``(I, J)``; ``I * J`` must divide ``in_channels``.
        down (tuple of int, optional): ``(I_down, J_down)``; ``None`` keeps ``(I, J)``.
        dropout (float, optional): dropout after the embedding. (default: ``0.0``)
        time_pool (str, optional): ``"flatten"``, ``"mean"`` or ``"last"``.
            (default: ``"flatten"``)
        out_channels (int, optional): ``1 x 1`` projection of the stacked map.
        period_rule (str, optional): see :class:`TimesBlock`. (default: ``"ceil"``)
        period_scope (str, optional): see :class:`TimesBlock`. (default: ``"batch"``)

    Shapes:
        - input: ``[B, T, C]`` or ``[B, T, N, F]`` with ``N * F = C``
        - output of :meth:`forward`: ``[B, T, d_model]``
        - output of :meth:`stack`: ``[B, C' * (I / I_down) * (J / J_down), I_down, J_down]`` or
          ``[B, out_channels, I_down, J_down]``
    """

    def __init__(self, in_channels: int, seq_len: int, d_model: int = 64, d_ff: int = 64,
                 num_layers: int = 2, top_k: int = 5, num_kernels: int = 6,
                 grid: Optional[Tuple[int, int]] = None,
                 down: Optional[Tuple[int, int]] = None, dropout: float = 0.0,
                 time_pool: str = "flatten", out_channels: Optional[int] = None,
                 period_rule: str = "ceil", period_scope: str = "batch"):
        super().__init__()
        for name, val in (("in_channels", in_channels), ("num_layers", num_layers)):
            if not isinstance(val, int) or val <= 0:
                raise ValueError(f"'{name}' must be a positive int (got {val!r})")
        if time_pool not in _TIME_POOLS:
            raise ValueError(f"'time_pool' must be one of {_TIME_POOLS} (got {time_pool!r})")
        if grid is not None:
            grid = _pair(grid, "grid")
            if in_channels % (grid[0] * grid[1]):
                raise ValueError(f"'in_channels' ({in_channels}) must be a multiple of I * J "
                                 f"of 'grid' {grid}")
            down = _resolve_down(grid, down)
        elif down is not None or out_channels is not None:
            raise ValueError("'down' and 'out_channels' need 'grid' = (I, J)")
        self.in_channels = in_channels
        self.seq_len = seq_len
        self.d_model = d_model
        self.num_layers = num_layers
        self.grid = grid
        self.down = down
        self.time_pool = time_pool
        self.out_channels = out_channels
        self.embedding = nn.Linear(in_channels, d_model)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([
            TimesBlock(seq_len, d_model, d_ff, top_k, num_kernels, period_rule, period_scope)
            for _ in range(num_layers)])
        self.norms = nn.ModuleList([nn.LayerNorm(d_model) for _ in range(num_layers)])
        self.cell_proj = nn.Linear(d_model, in_channels) if grid is not None else None
        self.proj = None
        if out_channels is not None:
            self.proj = nn.Conv2d(self.stacked_channels(projected=False), out_channels, 1)
        self.reset_parameters()

    def reset_parameters(self):
        self.embedding.reset_parameters()
        for block, norm in zip(self.blocks, self.norms):
            block.reset_parameters()
            norm.reset_parameters()
        for m in (self.cell_proj, self.proj):
            if m is not None:
                m.reset_parameters()

    def stacked_channels(self, projected: bool = True) -> int:
        """Number of channels returned by :meth:`stack`."""
        if self.grid is None:
            raise ValueError("stacking needs 'grid' = (I, J)")
        if projected and self.out_channels is not None:
            return self.out_channels
        per_cell = self.in_channels // (self.grid[0] * self.grid[1])
        c = per_cell * (self.seq_len if self.time_pool == "flatten" else 1)
        return c * (self.grid[0] // self.down[0]) * (self.grid[1] // self.down[1])

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(x, Tensor) and x.dim() == 4:     # sizes spelt out: -1 fails at B = 0
            x = x.reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
        if (not isinstance(x, Tensor) or x.dim() != 3
                or x.shape[1:] != (self.seq_len, self.in_channels)):
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"'x' must have shape [B, T, C] = [B, {self.seq_len}, "
                             f"{self.in_channels}] or [B, T, N, F] with N * F = C (got {got})")
        x = match_input_dtype("x", x, self.embedding.weight)
        h = self.dropout(self.embedding(x))
        for block, norm in zip(self.blocks, self.norms):
            h = norm(block(h))
        return h

    def stack(self, h: Tensor) -> Tensor:
        """``[B, T, d_model]`` encoding -> ``[B, C, I_down, J_down]`` (see the class docstring)."""
        if self.grid is None:
            raise ValueError("stacking needs 'grid' = (I, J); this TPatternNet was built "
                             "without one")
        if not isinstance(h, Tensor) or h.dim() != 3 or h.shape[1:] != (self.seq_len,
                                                                       self.d_model):
            got = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
            raise ValueError(f"'h' must have shape [B, T, d_model] = [B, {self.seq_len}, "
                             f"{self.d_model}] (got {got})")
        B, T = h.shape[:2]
        I, J = self.grid
        cells = self.cell_proj(h).view(B, T, I * J, -1)  # [B, T, N, F_c]
        z = _pool_time(cells, self.time_pool).reshape(B, -1, I, J)
        z = stack_subregions(z, self.down)
        return self.proj(z) if self.proj is not None else z

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, seq_len={self.seq_len}, "
                f"d_model={self.d_model}, num_layers={self.num_layers}, grid={self.grid}, "
                f"down={self.down}, time_pool={self.time_pool!r})")
