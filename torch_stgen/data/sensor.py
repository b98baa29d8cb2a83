r"""Road / sensor networks as PyG graphs.

A sensor graph comes from a dense weighted adjacency, from a table of (road) distances via
the thresholded Gaussian kernel used by DCRNN (Li et al., "Diffusion Convolutional
Recurrent Neural Network: Data-Driven Traffic Forecasting", ICLR 2018,
https://arxiv.org/abs/1707.01926, §4 "Experiments"; kernel of Shuman et al. 2013)

.. math::
    W_{ij} = \begin{cases} \exp\!\left(-\dfrac{d_{ij}^2}{\sigma^2}\right) &
    \text{if } \exp\!\left(-\dfrac{d_{ij}^2}{\sigma^2}\right) \ge \kappa \\
    0 & \text{otherwise,} \end{cases}

with :math:`\sigma` the standard deviation of the finite distances and :math:`\kappa` the
threshold (0.1 in DCRNN), or from a :mod:`networkx` graph. Great-circle distances between
sensors come from :func:`haversine_distances`.
"""
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

__all__ = ["sensor_graph", "haversine_distances", "gaussian_kernel", "EARTH_RADIUS_KM"]

#: Mean Earth radius (IUGG), km.
EARTH_RADIUS_KM = 6371.0088


def _coords(name: str, value, n: Optional[int] = None) -> Tensor:
    value = torch.as_tensor(np.asarray(value, dtype=np.float64)).reshape(-1) \
        if not isinstance(value, Tensor) else value.detach().to(torch.float64).reshape(-1)
    if n is not None and value.numel() != n:
        raise ValueError(f"'{name}' must have shape [N={n}] (got {value.numel()} values)")
    if not torch.isfinite(value).all():
        raise ValueError(f"'{name}' must be finite (it contains NaN/inf)")
    return value


def haversine_distances(lat, lon) -> Tensor:
    r"""Pairwise great-circle distances (km) between points given in degrees.

    .. math::
        d_{ij} = 2R \arcsin\sqrt{\sin^2\frac{\varphi_j - \varphi_i}{2} + \cos\varphi_i
        \cos\varphi_j \sin^2\frac{\lambda_j - \lambda_i}{2}}, \qquad R = 6371.0088\ \text{km}

    Args:
        lat (Tensor or array): ``[N]`` latitudes :math:`\varphi` in degrees.
        lon (Tensor or array): ``[N]`` longitudes :math:`\lambda` in degrees.

    Returns:
        ``[N, N]`` float64 tensor, symmetric with zero diagonal.
    """
    lat = _coords("lat", lat)
    lon = _coords("lon", lon, lat.numel())
    phi, lam = torch.deg2rad(lat), torch.deg2rad(lon)
    dphi = phi.view(1, -1) - phi.view(-1, 1)
    dlam = lam.view(1, -1) - lam.view(-1, 1)
    a = torch.sin(dphi / 2) ** 2 + torch.cos(phi).view(-1, 1) * torch.cos(phi).view(1, -1) \
        * torch.sin(dlam / 2) ** 2
    return 2 * EARTH_RADIUS_KM * torch.asin(torch.sqrt(a.clamp(0.0, 1.0)))


def _square(name: str, value) -> Tensor:
    value = torch.as_tensor(np.asarray(value, dtype=np.float64)) \
        if not isinstance(value, Tensor) else value.detach().to(torch.float64)
    if value.dim() != 2 or value.shape[0] != value.shape[1]:
        raise ValueError(f"'{name}' must have shape [N, N] (got {tuple(value.shape)})")
    return value


def gaussian_kernel(dist: Tensor, sigma: Optional[float] = None,
                    threshold: float = 0.1) -> Tensor:
    r"""The DCRNN thresholded Gaussian kernel (module docstring) on a dense ``[N, N]``
    distance table; ``inf`` / NaN mean "not connected" and give weight 0.

    Args:
        dist (Tensor): ``[N, N]`` non-negative distances.
        sigma (float, optional): :math:`\sigma`; default: population std of the finite
            entries.
        threshold (float, optional): :math:`\kappa`. (default: ``0.1``)

    Returns:
        ``[N, N]`` float64 weights in ``{0} U [threshold, 1]``.
    """
    dist = _square("dist", dist)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"'threshold' must be in [0, 1] (got {threshold!r})")
    finite = torch.isfinite(dist)
    if (dist[finite] < 0).any():
        raise ValueError("'dist' must be non-negative")
    if sigma is None:
        if finite.sum() < 2:
            raise ValueError("'dist' needs at least two finite distances to estimate sigma; "
                             "pass 'sigma'")
        sigma = dist[finite].std(unbiased=False).item()
    if not sigma > 0:
        raise ValueError(f"'sigma' must be > 0 (got {sigma!r}); all finite distances are "
                         f"equal, pass 'sigma' explicitly")
    w = torch.exp(-(dist.nan_to_num(float("inf")) / sigma) ** 2)
    return torch.where(w >= threshold, w, torch.zeros((), dtype=w.dtype))


def sensor_graph(adj=None, dist=None, graph=None, lat=None, lon=None,
                 sigma: Optional[float] = None, threshold: float = 0.1,
                 self_loops: bool = False, nodelist: Optional[Sequence] = None) -> Data:
    r"""A sensor network as a PyG graph with edge weights.

    Exactly one source is used, in this order of precedence:

    * ``adj``: a dense ``[N, N]`` weighted adjacency, ``adj[i, j]`` = weight of the edge
      ``i -> j``; every non-zero entry is an edge (``threshold`` is **not** applied; DCRNN's
      ``adj_mx.pkl`` is already thresholded).
    * ``dist``: a dense ``[N, N]`` distance table (``inf`` / NaN = no road link) turned into
      weights by the Gaussian kernel above; :math:`\sigma` defaults to the population
      standard deviation of all finite entries (as in DCRNN's ``gen_adj_mx.py``), and
      weights below ``threshold`` are set to 0.
    * ``graph``: a :class:`networkx.Graph` / ``DiGraph``; if every edge has a ``'weight'``
      attribute it is used as the weight, else if every edge has ``'distance'`` the kernel is
      applied to those distances (missing pairs = no link), else all weights are 1. An
      undirected graph gives both directions. Nodes in ``nodelist`` order (default
      ``list(graph.nodes)``), kept as ``node_ids``; node attributes ``'lat'``/``'lon'`` (or
      ``'latitude'``/``'longitude'``) are used when ``lat``/``lon`` are not given.
    * none of the three but ``lat`` and ``lon``: the kernel on :func:`haversine_distances`.

    Args:
        adj, dist, graph: the source (see above). (default: ``None``)
        lat (array, optional): ``[N]`` latitudes (degrees). (default: ``None``)
        lon (array, optional): ``[N]`` longitudes (degrees). (default: ``None``)
        sigma (float, optional): kernel width :math:`\sigma` (same unit as ``dist``).
            (default: std of finite distances)
        threshold (float, optional): :math:`\kappa`, kernel weights below it become 0.
            (default: ``0.1``)
        self_loops (bool, optional): if ``False`` every ``i -> i`` edge is removed; if
            ``True`` existing self-loops are kept and missing ones added with weight 1.
            (default: ``False``)
        nodelist (sequence, optional): node order for ``graph``. (default: ``None``)

    Returns:
        :class:`torch_geometric.data.Data` with ``edge_index`` ``[2, E]`` (row 0 = source),
        ``edge_weight`` ``[E]`` float32, ``num_nodes`` and, when known, ``lat``/``lon``
        ``[N]`` float64 and ``node_ids``.
    """
    node_ids = None
    if adj is not None:
        w = _square("adj", adj)
        if not torch.isfinite(w).all():
            raise ValueError("'adj' must be finite (it contains NaN/inf)")
    elif dist is not None:
        w = gaussian_kernel(_square("dist", dist), sigma, threshold)
    elif graph is not None:
        w, node_ids, glat, glon = _from_networkx(graph, nodelist, sigma, threshold)
        if lat is None and lon is None and glat is not None:
            lat, lon = glat, glon
    elif lat is not None and lon is not None:
        w = gaussian_kernel(haversine_distances(lat, lon), sigma, threshold)
    else:
        raise ValueError("give one of 'adj' [N, N], 'dist' [N, N], 'graph' (networkx) "
                         "or both 'lat' and 'lon'")
    n = w.shape[0]
    eye = torch.eye(n, dtype=torch.bool)
    if self_loops:
        w = torch.where(eye & (w == 0), torch.ones((), dtype=w.dtype), w)
    else:
        w = w.masked_fill(eye, 0.0)
    edge_index = w.nonzero().t().contiguous()
    data = Data(edge_index=edge_index, edge_weight=w[edge_index[0], edge_index[1]].float(),
                num_nodes=n)
    if (lat is None) != (lon is None):
        raise ValueError("'lat' and 'lon' must be given together")
    if lat is not None:
        data.lat = _coords("lat", lat, n)
        data.lon = _coords("lon", lon, n)
    if node_ids is not None:
        data.node_ids = node_ids
    return data


def _from_networkx(graph, nodelist, sigma, threshold):
    nodes = list(graph.nodes) if nodelist is None else list(nodelist)
    index = {v: i for i, v in enumerate(nodes)}
    if len(index) != len(nodes) or set(index) != set(graph.nodes):
        raise ValueError("'nodelist' must list every node of 'graph' exactly once")
    n = len(nodes)
    edges = list(graph.edges(data=True))
    directed = graph.is_directed()
    if edges and all("weight" in d for _, _, d in edges):
        key, fill = "weight", 0.0
    elif edges and all("distance" in d for _, _, d in edges):
        key, fill = "distance", float("inf")
    else:
        key, fill = None, 0.0
    m = torch.full((n, n), fill, dtype=torch.float64)
    for u, v, d in edges:
        val = 1.0 if key is None else float(d[key])
        m[index[u], index[v]] = val
        if not directed:
            m[index[v], index[u]] = val
    if key == "distance":
        m = gaussian_kernel(m, sigma, threshold)
    lat = lon = None
    attrs = [graph.nodes[v] for v in nodes]
    for la, lo in (("lat", "lon"), ("latitude", "longitude")):
        if n and all(la in a and lo in a for a in attrs):
            lat = [float(a[la]) for a in attrs]
            lon = [float(a[lo]) for a in attrs]
            break
    return m, [str(v) for v in nodes], lat, lon
