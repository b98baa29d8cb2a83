r"""A city map as a PyG graph, and the exact conversions between its views.

A grid of ``H x W`` cells is a graph of ``N = H * W`` nodes in **row-major** order: node
``i * W + j`` is row ``i``, column ``j``. The same values are viewed either as a node tensor
``[B, T, N, F]`` (for message passing, ``node_dim=-2``) or as images ``[B * T, F, H, W]``
(for convolutions); :func:`grid_to_image` / :func:`image_to_grid` convert exactly.

Coarse and fine maps are tied by the *structural constraint* of fine-grained flow inference
(UrbanFM, Liang et al., KDD 2019, https://arxiv.org/abs/1902.05377; DiffRecon, Sun et al.,
https://arxiv.org/abs/2410.05323, problem definition): a coarse cell holds the **sum** of the
``N x N`` fine cells it covers,

.. math::
    x^{c}_{i,j} = \sum_{a=0}^{N-1} \sum_{b=0}^{N-1} x^{f}_{N i + a,\, N j + b},

which :func:`coarsen` implements; :func:`grid_cluster` gives the same fine -> coarse
assignment as a ``cluster`` vector for PyG pooling, and :func:`upsample` goes back (nearest
neighbour, or UrbanFM's distributional upsampling that keeps the mass).
"""
from typing import Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.data import Data

from .._checks import check_int

__all__ = ["grid_graph", "grid_to_image", "image_to_grid", "coarsen", "coarsen_nodes",
           "grid_cluster", "upsample", "mass_project"]

_OFFSETS = {
    4: ((-1, 0), (1, 0), (0, -1), (0, 1)),
    8: ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)),
}


def _check_size(name: str, value) -> int:
    return check_int(name, value, 1)          # numpy integers too


def _check_factor(factor) -> int:
    return check_int("factor", factor, 1)


def _cell_coords(name: str, value, H: int, W: int) -> Tensor:
    value = torch.as_tensor(value, dtype=torch.float64)
    if value.numel() != H * W or (value.dim() == 2 and tuple(value.shape) != (H, W)):
        raise ValueError(f"'{name}' must have shape [H, W] = [{H}, {W}] or [H*W] "
                         f"(got {tuple(value.shape)})")
    return value.reshape(-1)


def grid_graph(H: int, W: int, connectivity: int = 4, lat=None, lon=None,
               bbox: Optional[Sequence[float]] = None) -> Data:
    r"""The ``H x W`` grid as a PyG graph with row-major nodes (node ``i * W + j``).

    Each cell is linked to its 4 (von Neumann) or 8 (Moore) neighbours, in both directions,
    without self-loops: ``(i, j) -> (i + di, j + dj)`` for every offset inside the grid.

    .. math::
        \mathcal{E}_4 = \{(i, j) \to (i', j') : |i - i'| + |j - j'| = 1\}, \qquad
        \mathcal{E}_8 = \{(i, j) \to (i', j') : \max(|i - i'|, |j - j'|) = 1\}

    Cell-centre coordinates come either from ``lat`` / ``lon`` arrays or from a bounding
    box ``bbox = (lat_min, lat_max, lon_min, lon_max)``, with row 0 at the **north** edge
    (as in an image, the first row is the top of the map) and column 0 at the west edge:

    .. math::
        \mathrm{lat}_i = \mathrm{lat}_{max} - (i + \tfrac12)\,
        \frac{\mathrm{lat}_{max} - \mathrm{lat}_{min}}{H}, \qquad
        \mathrm{lon}_j = \mathrm{lon}_{min} + (j + \tfrac12)\,
        \frac{\mathrm{lon}_{max} - \mathrm{lon}_{min}}{W}.

    Args:
        H (int): number of rows.
        W (int): number of columns.
        connectivity (int, optional): ``4`` or ``8`` neighbours. (default: ``4``)
        lat (Tensor or array, optional): ``[H, W]`` (or ``[H*W]``) cell-centre latitudes.
            (default: ``None``)
        lon (Tensor or array, optional): ``[H, W]`` cell-centre longitudes. (default: ``None``)
        bbox (tuple, optional): ``(lat_min, lat_max, lon_min, lon_max)`` of the whole map;
            exclusive with ``lat`` / ``lon``. (default: ``None``)

    Returns:
        :class:`torch_geometric.data.Data` with ``edge_index`` ``[2, E]`` (sorted by source,
        then target), ``pos`` ``[N, 2]`` float (row, column), ``num_nodes = H * W``, ``height``,
        ``width`` and, when coordinates are given, ``lat`` / ``lon`` ``[N]`` (float64).

    Shapes:
        - **output:** ``edge_index`` :math:`[2, E]` with :math:`E = 2(2HW - H - W)` for 4-
          and :math:`E = 2(4HW - 3H - 3W + 2)` for 8-connectivity.
    """
    H, W = _check_size("H", H), _check_size("W", W)
    if connectivity not in _OFFSETS:
        raise ValueError(f"'connectivity' must be 4 or 8 (got {connectivity!r})")
    rows = torch.arange(H).view(H, 1).expand(H, W)
    cols = torch.arange(W).view(1, W).expand(H, W)
    src, dst = [], []
    for di, dj in _OFFSETS[connectivity]:
        ti, tj = rows + di, cols + dj
        ok = (ti >= 0) & (ti < H) & (tj >= 0) & (tj < W)
        src.append((rows * W + cols)[ok])
        dst.append((ti * W + tj)[ok])
    src, dst = torch.cat(src), torch.cat(dst)
    order = torch.argsort(src * (H * W) + dst)
    edge_index = torch.stack([src[order], dst[order]])
    pos = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1).to(torch.float)
    data = Data(edge_index=edge_index, pos=pos, num_nodes=H * W)
    data.height, data.width = H, W

    if bbox is not None:
        if lat is not None or lon is not None:
            raise ValueError("give either 'bbox' or 'lat'/'lon', not both")
        if len(bbox) != 4:
            raise ValueError(f"'bbox' must be (lat_min, lat_max, lon_min, lon_max) "
                             f"(got {bbox!r})")
        lat_min, lat_max, lon_min, lon_max = (float(v) for v in bbox)
        if not (lat_min < lat_max and lon_min < lon_max):
            raise ValueError(f"'bbox' must satisfy lat_min < lat_max and lon_min < lon_max "
                             f"(got {bbox!r})")
        ci = torch.arange(H, dtype=torch.float64) + 0.5
        cj = torch.arange(W, dtype=torch.float64) + 0.5
        lat_c = lat_max - ci * (lat_max - lat_min) / H
        lon_c = lon_min + cj * (lon_max - lon_min) / W
        lat = lat_c.view(H, 1).expand(H, W)
        lon = lon_c.view(1, W).expand(H, W)
    if (lat is None) != (lon is None):
        raise ValueError("'lat' and 'lon' must be given together")
    if lat is not None:
        data.lat = _cell_coords("lat", lat, H, W)
        data.lon = _cell_coords("lon", lon, H, W)
    return data


def grid_to_image(x: Tensor, H: int, W: int) -> Tensor:
    r"""Node view ``[B, T, N, F]`` (``N = H * W`` row-major) -> image view ``[B*T, F, H, W]``.

    Args:
        x (Tensor): ``[B, T, N, F]`` node values.
        H (int): rows; W (int): columns.

    Shapes:
        - **input:** :math:`[B, T, HW, F]`  - **output:** :math:`[BT, F, H, W]`
    """
    H, W = _check_size("H", H), _check_size("W", W)
    if x.dim() != 4 or x.shape[2] != H * W:
        raise ValueError(f"'x' must have shape [B, T, N={H * W}, F] for a {H}x{W} grid "
                         f"(got {tuple(x.shape)})")
    B, T, _, F = x.shape
    return x.reshape(B * T, H, W, F).permute(0, 3, 1, 2).contiguous()


def image_to_grid(img: Tensor, B: int, T: int) -> Tensor:
    r"""Image view ``[B*T, F, H, W]`` -> node view ``[B, T, H*W, F]``; exact inverse of
    :func:`grid_to_image`.

    Shapes:
        - **input:** :math:`[BT, F, H, W]`  - **output:** :math:`[B, T, HW, F]`
    """
    B, T = _check_size("B", B), _check_size("T", T)
    if img.dim() != 4 or img.shape[0] != B * T:
        raise ValueError(f"'img' must have shape [B*T={B * T}, F, H, W] "
                         f"(got {tuple(img.shape)})")
    _, F, H, W = img.shape
    return img.permute(0, 2, 3, 1).reshape(B, T, H * W, F).contiguous()


def coarsen(x: Tensor, factor: int) -> Tensor:
    r"""``factor x factor`` **sum** pooling over the last two dimensions (mass-preserving).

    .. math::
        x^{c}_{\dots, i, j} = \sum_{a, b < N} x^{f}_{\dots, N i + a, N j + b}

    Sums are exact for integer-valued counts (e.g. flows) in float32 up to
    :math:`2^{24}` and in float64 up to :math:`2^{53}`; the total
    :math:`\sum x^c = \sum x^f` holds exactly in that case.

    Args:
        x (Tensor): ``[..., H, W]`` fine map(s); ``H`` and ``W`` divisible by ``factor``.
        factor (int): the magnification ``N``.

    Shapes:
        - **input:** :math:`[\dots, H, W]`  - **output:** :math:`[\dots, H/N, W/N]`
    """
    factor = _check_factor(factor)
    if x.dim() < 2:
        raise ValueError(f"'x' must have shape [..., H, W] (got {tuple(x.shape)})")
    H, W = x.shape[-2:]
    if H % factor or W % factor:
        raise ValueError(f"'x' spatial size [H, W] = [{H}, {W}] must be divisible by "
                         f"'factor'={factor}")
    lead = x.shape[:-2]
    x = x.reshape(*lead, H // factor, factor, W // factor, factor)
    return x.sum(dim=(-3, -1))


def coarsen_nodes(x: Tensor, H: int, W: int, factor: int) -> Tensor:
    r""":func:`coarsen` on the node view: ``[..., N=H*W, F] -> [..., (H/N)*(W/N), F]``.

    Coarse nodes are row-major on the ``H/N x W/N`` grid, matching :func:`grid_cluster`.

    Shapes:
        - **input:** :math:`[\dots, HW, F]`  - **output:** :math:`[\dots, HW/N^2, F]`
    """
    H, W = _check_size("H", H), _check_size("W", W)
    factor = _check_factor(factor)
    if x.dim() < 2 or x.shape[-2] != H * W:
        raise ValueError(f"'x' must have shape [..., N={H * W}, F] for a {H}x{W} grid "
                         f"(got {tuple(x.shape)})")
    if H % factor or W % factor:
        raise ValueError(f"grid [H, W] = [{H}, {W}] must be divisible by 'factor'={factor}")
    lead, F = x.shape[:-2], x.shape[-1]
    img = x.reshape(*lead, H, W, F).movedim(-1, -3)          # [..., F, H, W]
    out = coarsen(img, factor).movedim(-3, -1)                # [..., h, w, F]
    return out.reshape(*lead, (H // factor) * (W // factor), F)


def grid_cluster(H: int, W: int, factor: int) -> Tensor:
    r"""Fine -> coarse assignment of the ``H x W`` grid's cells, for PyG pooling.

    .. math::
        c(iW + j) = \lfloor i / N \rfloor \cdot (W / N) + \lfloor j / N \rfloor

    ``torch_geometric.utils.scatter(x, cluster, dim=-2, reduce='sum')`` on a node tensor
    equals :func:`coarsen_nodes`.

    Returns:
        LongTensor ``[H * W]`` of coarse ids in ``[0, (H/N) * (W/N))`` (row-major).
    """
    H, W = _check_size("H", H), _check_size("W", W)
    factor = _check_factor(factor)
    if H % factor or W % factor:
        raise ValueError(f"grid [H, W] = [{H}, {W}] must be divisible by 'factor'={factor}")
    rows = torch.arange(H).view(H, 1) // factor
    cols = torch.arange(W).view(1, W) // factor
    return (rows * (W // factor) + cols).reshape(-1)


def upsample(x: Tensor, factor: int, shares: Optional[Tensor] = None,
             atol: float = 1e-4) -> Tensor:
    r"""Coarse ``[..., h, w]`` -> fine ``[..., h*N, w*N]``.

    Without ``shares``: nearest-neighbour repeat, every fine cell takes its coarse cell's
    value (:math:`x^f_{Ni+a, Nj+b} = x^c_{i,j}`; this does **not** keep the mass).

    With ``shares``: UrbanFM's distributional upsampling (Liang et al., KDD 2019,
    https://arxiv.org/abs/1902.05377, the :math:`N^2`-Normalization layer), each coarse
    value is split over its ``N x N`` fine cells,

    .. math::
        x^f_{Ni+a,\, Nj+b} = s_{Ni+a,\, Nj+b}\; x^c_{i,j}, \qquad
        \sum_{a, b < N} s_{Ni+a,\, Nj+b} = 1,

    so that ``coarsen(upsample(x, N, shares), N) == x`` (mass preserved). ``shares`` must be
    finite and each ``N x N`` block must sum to 1 within ``atol`` (a softmax over the
    ``N^2`` cells of each block gives such shares); otherwise ``ValueError``.

    Args:
        x (Tensor): ``[..., h, w]`` coarse map(s).
        factor (int): magnification ``N``.
        shares (Tensor, optional): ``[..., h*N, w*N]`` (broadcastable to the output).
            (default: ``None``)
        atol (float, optional): tolerance of the block-sum check. (default: ``1e-4``)

    Shapes:
        - **input:** :math:`[\dots, h, w]`  - **output:** :math:`[\dots, hN, wN]`
    """
    factor = _check_factor(factor)
    if x.dim() < 2:
        raise ValueError(f"'x' must have shape [..., h, w] (got {tuple(x.shape)})")
    fine = x.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    if shares is None:
        return fine
    h, w = x.shape[-2:]
    if shares.dim() < 2 or tuple(shares.shape[-2:]) != (h * factor, w * factor):
        raise ValueError(f"'shares' must have shape [..., h*N, w*N] = [..., {h * factor}, "
                         f"{w * factor}] (got {tuple(shares.shape)})")
    sums = coarsen(shares, factor)
    if not torch.isfinite(sums).all() or not torch.allclose(
            sums, torch.ones((), dtype=sums.dtype, device=sums.device), atol=atol, rtol=0):
        worst = (sums - 1).abs().nan_to_num(float("inf")).max().item()
        raise ValueError(f"'shares': each {factor}x{factor} block must sum to 1 "
                         f"(largest deviation {worst:.3g} > atol={atol})")
    return fine * shares


def mass_project(fine: Tensor, coarse: Tensor, factor: int, mode: str = "additive",
                 eps: float = 1e-6) -> Tensor:
    r"""Correct fine maps so that every ``N x N`` block sums to its coarse value, i.e.
    ``coarsen(out, N) == coarse`` (DiffRecon's optional mass consistency).

    ``"additive"`` is the least-squares projection onto the constraint,

    .. math::
        \tilde x^{f}_{u} = x^{f}_{u} + \frac{1}{N^2}\Big(x^{c}_{\pi(u)} -
        \sum_{v \in \pi(u)} x^{f}_{v}\Big),

    ``"proportional"`` (non-negative data such as counts) keeps each block's shares,

    .. math::
        \tilde x^{f}_{u} = (x^{f}_{u})_+ \, \frac{(x^{c}_{\pi(u)})_+}
        {\sum_{v \in \pi(u)} (x^{f}_{v})_+},

    the conditional mean of a multinomial split of the coarse value; blocks whose
    non-negative sum is ``<= eps`` get the additive correction instead. A negative coarse
    value is treated as 0 by the proportional split (its block becomes zeros, summing to 0)
    and met as given by the additive fallback, so the constraint holds exactly for
    ``coarse >= 0``.

    Args:
        fine (Tensor): ``[..., H, W]`` fine map(s).
        coarse (Tensor): ``[..., H/N, W/N]`` target block sums (broadcastable).
        factor (int): magnification ``N``.
        mode (str, optional): ``"additive"`` or ``"proportional"``. (default: ``"additive"``)
        eps (float, optional): see above. (default: ``1e-6``)

    Shapes:
        - **input:** :math:`[\dots, H, W]`, :math:`[\dots, H/N, W/N]`
        - **output:** :math:`[\dots, H, W]`
    """
    factor = _check_factor(factor)
    if mode not in ("additive", "proportional"):
        raise ValueError(f"'mode' must be 'additive' or 'proportional' (got {mode!r})")
    if not float(eps) >= 0:
        raise ValueError(f"'eps' must be >= 0 (got {eps!r})")
    if fine.dim() < 2 or coarse.dim() < 2:
        raise ValueError(f"'fine' [..., H, W] and 'coarse' [..., H/N, W/N] need two spatial "
                         f"dimensions (got {tuple(fine.shape)}, {tuple(coarse.shape)})")
    H, W = fine.shape[-2:]
    if H % factor or W % factor or tuple(coarse.shape[-2:]) != (H // factor, W // factor):
        raise ValueError(f"'coarse' must have spatial size [H/N, W/N] = [{H // factor}, "
                         f"{W // factor}] for 'fine' [{H}, {W}] and factor {factor} (got "
                         f"{tuple(coarse.shape[-2:])})")

    additive = fine + upsample(coarse - coarsen(fine, factor), factor) / (factor * factor)
    if mode == "additive":
        return additive
    pos = fine.clamp_min(0)
    total = coarsen(pos, factor)
    ok = total > eps
    scale = coarse.clamp_min(0) / torch.where(ok, total, torch.ones_like(total))
    return torch.where(upsample(ok, factor), pos * upsample(scale, factor), additive)
