r"""ST-point attention layers of DiffRecon's ST-PointFormer.

Paper: Z. Sun, H. Su, E. Wang, F. Yang, Y. Yang, W. Liu, "From Incomplete Coarse-Grained to
Complete Fine-Grained: A Two-Stage Framework for Spatiotemporal Data Reconstruction",
arXiv:2410.05323 (https://arxiv.org/abs/2410.05323), §IV-C, eqs. (14)-(25).

Every value at a time step ``t`` and a location ``n`` (a grid cell ``(i, j)`` or a graph node) is
an *ST-point*. The ``T * N`` points of a history window are flattened in **time-major** order
(point ``t * N + n``) and encoded jointly by self-attention in which *missing* points are masked
out as keys, so that no missing value can influence any output.

Public names: :class:`STPointEmbedding` (eq. 14), :class:`STPointAttention` (eqs. 15-23),
:class:`STPointFormer` (K layers + the eqs. 24-25 stacking) and :func:`stack_subregions`.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_binary_mask, check_int, match_input_dtype

__all__ = ["STPointEmbedding", "STPointAttention", "STPointFormer", "stack_subregions"]

_TIME_POOLS = ("mean", "last", "flatten")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _pair(value, name: str) -> Tuple[int, int]:
    try:
        a, b = value                    # an int, a string or a triple fail here
        a, b = check_int(name, a), check_int(name, b)   # 2.7 was truncated to 2
    except (TypeError, ValueError):
        raise ValueError(f"'{name}' must be a pair of positive ints (got {value!r})") from None
    return a, b


def _resolve_down(grid: Tuple[int, int], down) -> Tuple[int, int]:
    """Checks that ``down = (I_down, J_down)`` divides ``grid = (I, J)``."""
    if down is None:
        return grid
    i_down, j_down = _pair(down, "down")
    if grid[0] % i_down or grid[1] % j_down:
        raise ValueError(f"'down' {(i_down, j_down)} must divide the grid {tuple(grid)} "
                         f"(I % I_down == 0 and J % J_down == 0)")
    return i_down, j_down


def stack_subregions(x: Tensor, down: Tuple[int, int]) -> Tensor:
    r"""Stacks the cells of every sub-region into the channel axis (DiffRecon eqs. 24-25).

    The ``I x J`` map is cut into ``I_down x J_down`` sub-regions of ``r_i x r_j`` cells
    (``r_i = I / I_down``, ``r_j = J / J_down``); the ``C`` features of the ``r_i r_j`` cells of
    sub-region ``(p, q)`` become the channels of output pixel ``(p, q)``:

    .. math::
        \mathbf{Z}[b,\; c\, r_i r_j + a\, r_j + e,\; p,\; q] =
        \mathbf{X}[b,\; c,\; p\, r_i + a,\; q\, r_j + e],
        \qquad 0 \le a < r_i,\; 0 \le e < r_j,

    which is :func:`torch.nn.functional.pixel_unshuffle` generalised to ``r_i != r_j`` (and
    identical to it when ``r_i == r_j``). The result aligns with a U-Net feature map of size
    ``I_down x J_down``.

    Args:
        x (Tensor): a map ``[B, C, I, J]``.
        down (tuple of int): ``(I_down, J_down)``, dividing ``(I, J)``.

    Shapes:
        - input: ``[B, C, I, J]``
        - output: ``[B, C * (I / I_down) * (J / J_down), I_down, J_down]``
    """
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"'x' must have shape [B, C, I, J] "
                         f"(got {tuple(x.shape) if isinstance(x, Tensor) else type(x)})")
    B, C, I, J = x.shape
    i_down, j_down = _resolve_down((I, J), down)
    ri, rj = I // i_down, J // j_down
    x = x.reshape(B, C, i_down, ri, j_down, rj)
    x = x.permute(0, 1, 3, 5, 2, 4)  # [B, C, ri, rj, I_down, J_down]
    return x.reshape(B, C * ri * rj, i_down, j_down)


# ---------------------------------------------------------------------------------------------
# eq. 14
# ---------------------------------------------------------------------------------------------
class STPointEmbedding(nn.Module):
    r"""Embedding of ST-points (DiffRecon eq. 14).

    Each point ``(t, n)`` is embedded as the sum of a value embedding, a learnable
    spatio-temporal position embedding and an external-feature embedding:

    .. math::
        \mathbf{h}^{(0)}_{t,n} = \mathbf{W}_v\, (\mathbf{m}_{t,n} \odot \mathbf{x}_{t,n})
        + \mathbf{W}_m (\mathbf{1} - \mathbf{m}_{t,n})
        + \mathbf{E}_{\mathrm{pos}}(t, n) + \mathbf{W}_e\, \mathbf{e}_t
        \qquad (14)

    Position embeddings :math:`\mathbf{E}_{\mathrm{pos}}(t, n)`:

    * **grid** ``(I, J)`` (node ``n = i * J + j``), ``grid_position="factorized"``:
      :math:`\mathbf{E}^{T}_t + \mathbf{E}^{I}_i + \mathbf{E}^{J}_j` (three learnable tables);
      ``grid_position="table"``: one learnable table over the ``T * N`` points.
    * **any node set** of ``N`` nodes: :math:`\mathbf{E}^{T}_t` plus a learnable per-node table
      :math:`\mathbf{E}^{N}_n` (``node_table=True``) and/or, with ``pos_features > 0``, an MLP of
      random Fourier features of the node coordinates ``pos`` ``[N, pos_features]`` (e.g.
      ``data.pos`` or lat/lon): :math:`\mathrm{MLP}([\sin 2\pi \tilde p B, \cos 2\pi \tilde p B])`
      with a fixed Gaussian matrix :math:`B` of scale ``fourier_scale`` and :math:`\tilde p` the
      coordinates centred and divided by their RMS radius (``normalize_pos=True``).

    Missing values are **replaced by zeros** (``torch.where``, so NaN/Inf placed at missing
    points cannot leak) before the value embedding; NaN in ``x`` counts as missing. The
    missing-indicator term :math:`\mathbf{W}_m (\mathbf{1}-\mathbf{m})` (not in the paper) is zero
    for fully observed points, so eq. (14) holds exactly for them; it only tells a partially
    observed multi-feature point which of its zeros are missing. A point is *observed* (a valid
    attention key) when at least one of its features is observed.

    Args:
        in_features (int): features per point ``F``.
        d_model (int): embedding size ``d``.
        history (int): number of time steps ``T``.
        num_nodes (int, optional): number of nodes ``N`` (node-set mode).
        grid (tuple of int, optional): ``(I, J)`` (grid mode, ``N = I * J``).
        ext_features (int, optional): size of the external features ``F_ext`` (0 = none).
            (default: ``0``)
        pos_features (int, optional): coordinate size of ``pos`` for the Fourier-feature MLP
            (0 = off). (default: ``0``)
        node_table (bool, optional): learnable per-node table in node-set mode; defaults to
            ``True`` when ``pos_features == 0`` else ``False``. (default: ``None``)
        grid_position (str, optional): ``"factorized"`` or ``"table"``. (default: ``"factorized"``)
        num_frequencies (int, optional): Fourier frequencies. (default: ``16``)
        fourier_scale (float, optional): std of the Fourier matrix. (default: ``1.0``)
        normalize_pos (bool, optional): centre/scale ``pos`` by the node set's RMS radius.
            (default: ``True``)

    Shapes:
        - x: ``[B, T, N, F]``; mask: ``[B, T, N, F]`` or ``[B, T, N, 1]`` (bool or 0/1, True =
          observed; ``None`` = all observed); ext: ``[B, T, F_ext]``; pos: ``[N, pos_features]``
        - output: ``(h [B, T * N, d], key_mask [B, T * N] bool)``, points in time-major order.
    """

    def __init__(self, in_features: int, d_model: int, history: int,
                 num_nodes: Optional[int] = None, grid: Optional[Tuple[int, int]] = None,
                 ext_features: int = 0, pos_features: int = 0,
                 node_table: Optional[bool] = None, grid_position: str = "factorized",
                 num_frequencies: int = 16, fourier_scale: float = 1.0,
                 normalize_pos: bool = True):
        super().__init__()
        for name, val in (("in_features", in_features), ("d_model", d_model),
                          ("history", history), ("num_frequencies", num_frequencies)):
            if not isinstance(val, int) or val <= 0:
                raise ValueError(f"'{name}' must be a positive int (got {val!r})")
        if ext_features < 0 or pos_features < 0:
            raise ValueError(f"'ext_features' and 'pos_features' must be >= 0 "
                             f"(got {ext_features}, {pos_features})")
        if grid is None and num_nodes is None:
            raise ValueError("give 'num_nodes' (a node set) or 'grid' = (I, J)")
        if grid is not None:
            grid = _pair(grid, "grid")
            if num_nodes is not None and num_nodes != grid[0] * grid[1]:
                raise ValueError(f"'num_nodes' ({num_nodes}) must equal I * J of 'grid' {grid}")
            num_nodes = grid[0] * grid[1]
        if not isinstance(num_nodes, int) or num_nodes <= 0:
            raise ValueError(f"'num_nodes' must be a positive int (got {num_nodes!r})")
        if grid_position not in ("factorized", "table"):
            raise ValueError(f"'grid_position' must be 'factorized' or 'table' "
                             f"(got {grid_position!r})")
        if node_table is None:
            node_table = grid is None and pos_features == 0
        if grid is None and not node_table and pos_features == 0:
            raise ValueError("a node set needs a position: set 'node_table=True' or "
                             "'pos_features' > 0")

        self.in_features = in_features
        self.d_model = d_model
        self.history = history
        self.num_nodes = num_nodes
        self.grid = grid
        self.ext_features = ext_features
        self.pos_features = pos_features
        self.use_node_table = bool(node_table)
        self.grid_position = grid_position
        self.num_frequencies = num_frequencies
        self.fourier_scale = float(fourier_scale)
        self.normalize_pos = normalize_pos

        self.value_proj = nn.Linear(in_features, d_model)
        self.missing_proj = nn.Linear(in_features, d_model, bias=False)
        self.time_emb = self.row_emb = self.col_emb = self.point_emb = None
        self.node_emb = self.pos_mlp = None
        if grid is not None and grid_position == "table":
            self.point_emb = nn.Parameter(torch.empty(history * num_nodes, d_model))
        else:
            self.time_emb = nn.Parameter(torch.empty(history, d_model))
            if grid is not None:
                self.row_emb = nn.Parameter(torch.empty(grid[0], d_model))
                self.col_emb = nn.Parameter(torch.empty(grid[1], d_model))
        if self.use_node_table:
            self.node_emb = nn.Parameter(torch.empty(num_nodes, d_model))
        if pos_features > 0:
            gen = torch.Generator().manual_seed(0)
            self.register_buffer("fourier_matrix", torch.randn(
                pos_features, num_frequencies, generator=gen) * self.fourier_scale)
            self.pos_mlp = nn.Sequential(nn.Linear(2 * num_frequencies, d_model), nn.ReLU(),
                                         nn.Linear(d_model, d_model))
        self.ext_proj = nn.Linear(ext_features, d_model) if ext_features > 0 else None
        self.reset_parameters()

    def reset_parameters(self):
        self.value_proj.reset_parameters()
        self.missing_proj.reset_parameters()
        for p in (self.time_emb, self.row_emb, self.col_emb, self.point_emb, self.node_emb):
            if p is not None:
                nn.init.normal_(p, std=0.02)
        if self.pos_mlp is not None:
            for m in self.pos_mlp:
                if isinstance(m, nn.Linear):
                    m.reset_parameters()
        if self.ext_proj is not None:
            self.ext_proj.reset_parameters()

    def fourier_features(self, pos: Tensor) -> Tensor:
        """``[N, pos_features] -> [N, 2 * num_frequencies]`` (sin, cos of ``2 pi p B``)."""
        pos = pos.to(self.fourier_matrix.dtype)
        if self.normalize_pos:
            pos = pos - pos.mean(0, keepdim=True)
            radius = pos.pow(2).sum(-1).mean().sqrt().clamp_min(1e-12)
            pos = pos / radius
        proj = 2 * math.pi * pos @ self.fourier_matrix
        return torch.cat([proj.sin(), proj.cos()], dim=-1)

    def position(self, pos: Optional[Tensor] = None) -> Tensor:
        """The position embedding ``E_pos`` of eq. (14), shape ``[T, N, d]``."""
        T, N, d = self.history, self.num_nodes, self.d_model
        if self.point_emb is not None:
            out = self.point_emb.view(T, N, d)
        else:
            out = self.time_emb.view(T, 1, d)
            if self.grid is not None:
                I, J = self.grid
                space = (self.row_emb.view(I, 1, d) + self.col_emb.view(1, J, d)).reshape(N, d)
                out = out + space.unsqueeze(0)
        if self.node_emb is not None:
            out = out + self.node_emb.unsqueeze(0)
        if self.pos_mlp is not None:
            if pos is None:
                raise ValueError(f"'pos' [N, {self.pos_features}] is required "
                                 f"(pos_features={self.pos_features})")
            if pos.dim() != 2 or pos.shape != (N, self.pos_features):
                raise ValueError(f"'pos' must have shape [N, pos_features] = "
                                 f"[{N}, {self.pos_features}] (got {tuple(pos.shape)})")
            if not torch.isfinite(pos).all():
                raise ValueError("'pos' must be finite (got NaN or Inf)")
            out = out + self.pos_mlp(self.fourier_features(pos)).unsqueeze(0)
        return out.expand(T, N, d)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None, ext: Optional[Tensor] = None,
                pos: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        T, N, Fi = self.history, self.num_nodes, self.in_features
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1:] != (T, N, Fi):
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"'x' must have shape [B, T, N, F] = [B, {T}, {N}, {Fi}] (got {got})")
        B = x.shape[0]
        x = match_input_dtype("x", x, self.value_proj.weight)
        if mask is None:
            mask = torch.ones(B, T, N, 1, dtype=torch.bool, device=x.device)
        if (not isinstance(mask, Tensor) or mask.dim() != 4
                or mask.shape[:3] != x.shape[:3] or mask.shape[3] not in (1, Fi)):
            got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"'mask' must have shape [B, T, N, F] or [B, T, N, 1] = "
                             f"[{B}, {T}, {N}, {Fi} or 1] (got {got})")
        if pos is not None and self.pos_mlp is None:
            raise ValueError("'pos' was given but the layer was built with pos_features=0")
        # one host sync for every value check: x finite where observed, a 0/1 mask (NaN,
        # -1 or 0.5 counted as observed before), a finite ``ext`` (NaN would blank the
        # sample's points)
        flags = []
        if mask.dtype != torch.bool:
            flags.append(((mask == 0) | (mask == 1)).all())
        raw_mask = mask
        mask = (mask != 0).expand_as(x) & ~torch.isnan(x)
        values = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
        flags.append(torch.isfinite(values).all())
        if self.ext_proj is not None and isinstance(ext, Tensor) and ext.is_floating_point():
            flags.append(torch.isfinite(ext).all())
        if not bool(torch.stack(flags).all()):
            check_binary_mask("mask", raw_mask)
            if not torch.isfinite(values).all():
                raise ValueError("'x' has Inf at observed points (mask them or clean the data)")
            raise ValueError("'ext' contains NaN or infinite values; fill or drop the "
                             "affected steps")
        m = mask.to(values.dtype)
        h = self.value_proj(values) + self.missing_proj(1.0 - m) + self.position(pos)
        if self.ext_proj is not None:
            if ext is None or ext.dim() != 3 or ext.shape != (B, T, self.ext_features):
                got = None if ext is None else tuple(ext.shape)
                raise ValueError(f"'ext' must have shape [B, T, F_ext] = "
                                 f"[{B}, {T}, {self.ext_features}] (got {got})")
            # conditioning covariates: integer flags and float64 arrays are cast, as in
            # ExternalEmbedding
            h = h + self.ext_proj(ext.to(self.ext_proj.weight.dtype)).unsqueeze(2)
        elif ext is not None:
            raise ValueError("'ext' was given but the layer was built with ext_features=0")
        return h.reshape(B, T * N, self.d_model), mask.any(-1).reshape(B, T * N)

    def __repr__(self) -> str:
        where = f"grid={self.grid}" if self.grid is not None else f"num_nodes={self.num_nodes}"
        return (f"{self.__class__.__name__}({self.in_features}, {self.d_model}, "
                f"history={self.history}, {where}, ext_features={self.ext_features}, "
                f"pos_features={self.pos_features})")


# ---------------------------------------------------------------------------------------------
# eqs. 15-23
# ---------------------------------------------------------------------------------------------
class STPointAttention(nn.Module):
    r"""One ST-PointFormer layer: masked multi-head self-attention over ST-points followed by a
    post-LN residual feed-forward block (DiffRecon eqs. 15-23).

    With ``M`` heads of size ``d_k = d / M`` and the key mask ``m`` (True = observed point):

    .. math::
        \mathbf{Q}_h = \mathbf{H}\mathbf{W}^Q_h,\quad \mathbf{K}_h = \mathbf{H}\mathbf{W}^K_h,
        \quad \mathbf{V}_h = \mathbf{H}\mathbf{W}^V_h \qquad (15\text{-}17)

        \mathrm{head}_h = \mathrm{softmax}\Big(\frac{\mathbf{Q}_h\mathbf{K}_h^\top}{\sqrt{d_k}}
        + \mathbf{A}\Big)\mathbf{V}_h,\quad A_{pq} = \begin{cases}0 & m_q\\ -\infty &
        \neg m_q\end{cases} \qquad (18)

        \mathrm{MHA}(\mathbf{H}) = [\mathrm{head}_1 \| \dots \| \mathrm{head}_M]\,\mathbf{W}^O
        \qquad (19)

        \mathbf{H}' = \mathrm{LN}(\mathbf{H} + \mathrm{MHA}(\mathbf{H})) \qquad (20)

        \mathrm{FFN}(\mathbf{H}') = \max(0, \mathbf{H}'\mathbf{W}_1 + \mathbf{b}_1)\mathbf{W}_2
        + \mathbf{b}_2 \qquad (21\text{-}22)

        \mathbf{H}'' = \mathrm{LN}(\mathbf{H}' + \mathrm{FFN}(\mathbf{H}')) \qquad (23)

    Missing points are masked **as keys only**: every point (missing ones included) is a query,
    so a missing point receives an estimate from the observed ones, while the output at
    observed points is exactly independent of whatever is stored at missing points.
    The mask is passed to :func:`torch.nn.functional.scaled_dot_product_attention` as a boolean
    ``[B, 1, 1, P]`` tensor (broadcast, never a ``[P, P]`` tensor), which lets PyTorch use its
    fused (flash) kernel, so memory grows linearly in ``P``. Attention dropout (``dropout > 0``
    in training mode) makes PyTorch fall back to the ``O(P^2)``-memory math kernel.

    **A sample with no observed point** (all keys masked) would make the softmax 0/0 = NaN.
    Here its attention message is defined as **zero**: ``H' = LN(H)`` and the layer
    reduces to the position-wise block ``LN(H' + FFN(H'))``; no NaN, and no gradient through
    the attention projections for that sample.

    Args:
        d_model (int, optional): point feature size ``d``. (default: ``64``)
        num_heads (int, optional): heads ``M`` (must divide ``d_model``). (default: ``4``)
        dim_feedforward (int, optional): FFN hidden size. (default: ``128``)
        dropout (float, optional): dropout on attention weights, the attention output and the
            FFN output. (default: ``0.0``)
        bias (bool, optional): biases in the projections. (default: ``True``)

    Shapes:
        - h: ``[B, P, d]``; key_mask: ``[B, P]`` bool (True = observed) or ``None`` (all observed)
        - output: ``[B, P, d]``
    """

    def __init__(self, d_model: int = 64, num_heads: int = 4, dim_feedforward: int = 128,
                 dropout: float = 0.0, bias: bool = True):
        super().__init__()
        for name, val in (("d_model", d_model), ("num_heads", num_heads),
                          ("dim_feedforward", dim_feedforward)):
            if not isinstance(val, int) or val <= 0:
                raise ValueError(f"'{name}' must be a positive int (got {val!r})")
        if d_model % num_heads:
            raise ValueError(f"'num_heads' ({num_heads}) must divide 'd_model' ({d_model})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"'dropout' must be in [0, 1) (got {dropout})")
        self.d_model = d_model
        self.num_heads = num_heads
        self.dim_feedforward = dim_feedforward
        self.dropout = float(dropout)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)  # W^Q, W^K, W^V (15-17)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)  # W^O (19)
        self.norm1 = nn.LayerNorm(d_model)
        self.lin1 = nn.Linear(d_model, dim_feedforward)
        self.lin2 = nn.Linear(dim_feedforward, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.xavier_uniform_(self.out_proj.weight)
        for lin in (self.qkv, self.out_proj):
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        self.lin1.reset_parameters()
        self.lin2.reset_parameters()
        self.norm1.reset_parameters()
        self.norm2.reset_parameters()

    def attention(self, h: Tensor, key_mask: Optional[Tensor] = None) -> Tensor:
        """Masked multi-head attention, eqs. (15)-(19): ``[B, P, d] -> [B, P, d]``."""
        B, P, d = h.shape
        M = self.num_heads
        q, k, v = self.qkv(h).view(B, P, 3, M, d // M).permute(2, 0, 3, 1, 4).unbind(0)
        attn_mask = has_key = None
        if key_mask is not None:
            has_key = key_mask.any(-1)  # [B]
            # samples without any observed point attend everywhere, then get a zero message
            attn_mask = (key_mask | ~has_key.unsqueeze(-1)).view(B, 1, 1, P)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0)  # (18)
        out = self.out_proj(out.transpose(1, 2).reshape(B, P, d))  # (19)
        if has_key is not None:
            out = out * has_key.view(B, 1, 1).to(out.dtype)
        return out

    def forward(self, h: Tensor, key_mask: Optional[Tensor] = None) -> Tensor:
        if not isinstance(h, Tensor) or h.dim() != 3 or h.shape[-1] != self.d_model:
            got = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
            raise ValueError(f"'h' must have shape [B, P, d] with d = {self.d_model} (got {got})")
        if key_mask is not None:
            if not isinstance(key_mask, Tensor) or key_mask.shape != h.shape[:2]:
                got = tuple(key_mask.shape) if isinstance(key_mask, Tensor) else type(key_mask)
                raise ValueError(f"'key_mask' must have shape [B, P] = {list(h.shape[:2])} "
                                 f"(got {got})")
            if key_mask.dtype != torch.bool:
                raise TypeError(f"'key_mask' must be a bool tensor (True = observed) "
                                f"(got {key_mask.dtype})")
        a = F.dropout(self.attention(h, key_mask), self.dropout, self.training)
        h = self.norm1(h + a)  # (20)
        f = self.lin2(F.relu(self.lin1(h)))  # (21-22)
        return self.norm2(h + F.dropout(f, self.dropout, self.training))  # (23)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.d_model}, num_heads={self.num_heads}, "
                f"dim_feedforward={self.dim_feedforward}, dropout={self.dropout})")


# ---------------------------------------------------------------------------------------------
# eqs. 14-25
# ---------------------------------------------------------------------------------------------
class STPointFormer(nn.Module):
    r"""ST-PointFormer: the inter-map encoder of DiffRecon's Diffusion-C (§IV-C, eqs. 14-25).

    The ``T * N`` ST-points of a history window are embedded (:class:`STPointEmbedding`,
    eq. 14), encoded by ``K`` :class:`STPointAttention` layers (eqs. 15-23) in which missing
    points are masked out as keys, and -- for a grid -- stacked per sub-region into channels so
    that they align with a U-Net feature map of size ``I_down x J_down`` (eqs. 24-25):

    .. math::
        \mathbf{H}^{(0)} = \mathrm{Emb}(\mathbf{X}, \mathbf{C}, \mathbf{E}) \quad (14), \qquad
        \mathbf{H}^{(k)} = \mathrm{STPointAttention}_k(\mathbf{H}^{(k-1)}, \mathbf{m}),\;
        k = 1..K \quad (15\text{-}23)

        \mathbf{Z} = \mathrm{Stack}_{r_i \times r_j}\big(\mathrm{Pool}_t\,
        \mathbf{H}^{(K)}\big) \in \mathbb{R}^{C' r_i r_j \times I_{down} \times J_{down}}
        \quad (24\text{-}25)

    **Stacking convention** (:meth:`stack`, pinned by a test). The encoded points
    ``[B, T, I*J, d]`` (node ``n = i * J + j``) are first pooled over time (``time_pool``):

    * ``"mean"`` (default): mean over the ``T`` steps -> ``C' = d`` channels (missing points
      included: their encodings are estimates attended from the observed points);
    * ``"last"``: the last step ``t = T - 1`` -> ``C' = d``;
    * ``"flatten"``: every step kept, channel ``t * d + c`` -> ``C' = T * d``
      (closest to stacking all history points; large).

    The map ``[B, C', I, J]`` then goes through :func:`stack_subregions`: output channel
    ``c * r_i r_j + a * r_j + e`` at pixel ``(p, q)`` is cell ``(p r_i + a, q r_j + e)``
    of channel ``c``, with ``r_i = I / I_down``, ``r_j = J / J_down``. With ``out_channels``
    a ``1 x 1`` convolution finally maps the ``C' r_i r_j`` channels to ``out_channels``.

    Args:
        in_features (int): features per point ``F``.
        d_model (int, optional): point feature size ``d``. (default: ``64``)
        num_layers (int, optional): number of attention layers ``K``. (default: ``2``)
        num_heads (int, optional): attention heads. (default: ``4``)
        history (int, optional): time steps ``T``. (default: ``12``)
        num_nodes (int, optional): ``N`` for an arbitrary node set.
        grid (tuple of int, optional): ``(I, J)`` for a grid (``N = I * J``, row-major).
        ext_features (int, optional): external features ``F_ext``. (default: ``0``)
        down (tuple of int, optional): ``(I_down, J_down)`` of the U-Net map; ``None`` keeps
            ``(I, J)``. (default: ``None``)
        dim_feedforward (int, optional): FFN size; ``None`` = ``2 * d_model``.
        dropout (float, optional): dropout of the attention layers. (default: ``0.0``)
        time_pool (str, optional): ``"mean"``, ``"last"`` or ``"flatten"``. (default: ``"mean"``)
        out_channels (int, optional): ``1 x 1`` projection of the stacked map. (default: ``None``)
        **embedding_kwargs: ``pos_features``, ``node_table``, ``grid_position``,
            ``num_frequencies``, ``fourier_scale``, ``normalize_pos`` of
            :class:`STPointEmbedding`.

    Shapes:
        - x: ``[B, T, N, F]``; mask: ``[B, T, N, F]`` or ``[B, T, N, 1]`` (True/1 = observed,
          ``None`` = all observed; NaN in ``x`` is treated as missing); ext: ``[B, T, F_ext]``;
          pos: ``[N, pos_features]``
        - output of :meth:`forward`: ``[B, T, N, d]``
        - output of :meth:`stack`: ``[B, C' * (I / I_down) * (J / J_down), I_down, J_down]`` or
          ``[B, out_channels, I_down, J_down]``
    """

    def __init__(self, in_features: int, d_model: int = 64, num_layers: int = 2,
                 num_heads: int = 4, history: int = 12, num_nodes: Optional[int] = None,
                 grid: Optional[Tuple[int, int]] = None, ext_features: int = 0,
                 down: Optional[Tuple[int, int]] = None, dim_feedforward: Optional[int] = None,
                 dropout: float = 0.0, time_pool: str = "mean",
                 out_channels: Optional[int] = None, **embedding_kwargs):
        super().__init__()
        if not isinstance(num_layers, int) or num_layers <= 0:
            raise ValueError(f"'num_layers' must be a positive int (got {num_layers!r})")
        if time_pool not in _TIME_POOLS:
            raise ValueError(f"'time_pool' must be one of {_TIME_POOLS} (got {time_pool!r})")
        self.embedding = STPointEmbedding(in_features, d_model, history, num_nodes=num_nodes,
                                          grid=grid, ext_features=ext_features,
                                          **embedding_kwargs)
        self.in_features = in_features
        self.d_model = d_model
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.history = history
        self.grid = self.embedding.grid
        self.num_nodes = self.embedding.num_nodes
        self.ext_features = ext_features
        self.dim_feedforward = dim_feedforward or 2 * d_model
        self.time_pool = time_pool
        self.down = None
        if self.grid is not None:
            self.down = _resolve_down(self.grid, down)
        elif down is not None:
            raise ValueError("'down' needs 'grid' = (I, J)")
        self.layers = nn.ModuleList([
            STPointAttention(d_model, num_heads, self.dim_feedforward, dropout)
            for _ in range(num_layers)])
        self.proj = None
        if out_channels is not None:
            if self.grid is None:
                raise ValueError("'out_channels' needs 'grid' = (I, J)")
            self.proj = nn.Conv2d(self.stacked_channels(projected=False), out_channels, 1)
        self.out_channels = out_channels
        self.reset_parameters()

    def reset_parameters(self):
        self.embedding.reset_parameters()
        for layer in self.layers:
            layer.reset_parameters()
        if self.proj is not None:
            self.proj.reset_parameters()

    def stacked_channels(self, projected: bool = True) -> int:
        """Number of channels returned by :meth:`stack`."""
        if self.grid is None:
            raise ValueError("stacking needs 'grid' = (I, J)")
        if projected and self.out_channels is not None:
            return self.out_channels
        c = self.d_model * (self.history if self.time_pool == "flatten" else 1)
        ri, rj = self.grid[0] // self.down[0], self.grid[1] // self.down[1]
        return c * ri * rj

    def forward(self, x: Tensor, mask: Optional[Tensor] = None, ext: Optional[Tensor] = None,
                pos: Optional[Tensor] = None) -> Tensor:
        h, key_mask = self.embedding(x, mask, ext, pos)
        for layer in self.layers:
            h = layer(h, key_mask)
        return h.view(x.shape[0], self.history, self.num_nodes, self.d_model)

    def stack(self, z: Tensor) -> Tensor:
        """Eqs. (24)-(25): ``[B, T, I*J, d]`` encoded points -> ``[B, C, I_down, J_down]``
        (see the class docstring for the exact channel order)."""
        if self.grid is None:
            raise ValueError("stacking needs 'grid' = (I, J); this STPointFormer was built "
                             "for a node set")
        T, N, d = self.history, self.num_nodes, self.d_model
        if not isinstance(z, Tensor) or z.dim() != 4 or z.shape[1:] != (T, N, d):
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"'z' must have shape [B, T, N, d] = [B, {T}, {N}, {d}] (got {got})")
        z = _pool_time(z, self.time_pool)  # [B, C', N]
        z = z.reshape(z.shape[0], z.shape[1], *self.grid)
        z = stack_subregions(z, self.down)
        return self.proj(z) if self.proj is not None else z

    def __repr__(self) -> str:
        where = f"grid={self.grid}" if self.grid is not None else f"num_nodes={self.num_nodes}"
        return (f"{self.__class__.__name__}({self.in_features}, {self.d_model}, "
                f"num_layers={self.num_layers}, num_heads={self.num_heads}, "
                f"history={self.history}, {where}, down={self.down}, "
                f"time_pool={self.time_pool!r})")


def _pool_time(z: Tensor, time_pool: str) -> Tensor:
    """``[B, T, N, C] -> [B, C', N]`` with ``C' = C`` (mean/last) or ``T * C`` (flatten,
    channel ``t * C + c``)."""
    B, T, N, C = z.shape
    if time_pool == "mean":
        z = z.mean(1)
    elif time_pool == "last":
        z = z[:, -1]
    else:
        z = z.permute(0, 2, 1, 3).reshape(B, N, T * C)
    return z.transpose(1, 2)
