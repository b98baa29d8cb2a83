import math

import networkx as nx
import numpy as np
import pytest
import torch

from torch_stgen.data.sensor import gaussian_kernel, haversine_distances, sensor_graph


def test_haversine_known_distances():
    # one degree of latitude = R * pi / 180 km; antipodes = pi * R
    lat = torch.tensor([0.0, 1.0, 0.0, 40.7128])
    lon = torch.tensor([0.0, 0.0, 180.0, -74.0060])
    d = haversine_distances(lat, lon)
    r = 6371.0088
    assert d.shape == (4, 4) and d.dtype == torch.float64
    assert d[0, 1].item() == pytest.approx(r * math.pi / 180, rel=1e-12)
    assert d[0, 2].item() == pytest.approx(r * math.pi, rel=1e-9)
    assert torch.allclose(d, d.t()) and d.diagonal().abs().max() == 0
    # New York -> London, about 5570 km
    ny_ldn = haversine_distances([40.7128, 51.5074], [-74.0060, -0.1278])[0, 1].item()
    assert 5560 < ny_ldn < 5580
    with pytest.raises(ValueError, match=r"'lon' must have shape \[N=4\]"):
        haversine_distances(lat, lon[:3])


def test_sensor_graph_from_adjacency():
    adj = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.2], [0.7, 0.0, 0.0]])
    data = sensor_graph(adj=adj, lat=[1.0, 2.0, 3.0], lon=[4.0, 5.0, 6.0])
    assert data.num_nodes == 3
    assert data.edge_index.tolist() == [[0, 1, 2], [1, 2, 0]]
    assert data.edge_weight.tolist() == pytest.approx([0.5, 0.2, 0.7])
    assert data.lat.tolist() == [1.0, 2.0, 3.0]
    loops = sensor_graph(adj=adj, self_loops=True)
    w = torch.zeros(3, 3)
    w[loops.edge_index[0], loops.edge_index[1]] = loops.edge_weight
    assert torch.equal(w, adj + torch.diag(torch.tensor([0.0, 0.0, 1.0])))
    with pytest.raises(ValueError, match=r"'adj' must have shape \[N, N\]"):
        sensor_graph(adj=torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"'lat' must have shape \[N=3\]"):
        sensor_graph(adj=adj, lat=[1.0], lon=[2.0])
    with pytest.raises(ValueError, match="'adj'"):
        sensor_graph()


def test_sensor_graph_from_distances_matches_dcrnn_kernel():
    rng = np.random.default_rng(0)
    dist = rng.uniform(0, 10, (6, 6))
    np.fill_diagonal(dist, 0.0)
    dist[0, 5] = np.inf                       # no road link
    finite = dist[np.isfinite(dist)]
    sigma = finite.std()
    ref = np.exp(-np.square(dist / sigma))
    ref[ref < 0.1] = 0.0
    np.fill_diagonal(ref, 0.0)
    data = sensor_graph(dist=dist)
    w = np.zeros((6, 6))
    w[data.edge_index[0].numpy(), data.edge_index[1].numpy()] = data.edge_weight.numpy()
    assert np.allclose(w, ref, atol=1e-7)
    assert w[0, 5] == 0.0 and data.edge_weight.min() >= 0.1
    assert (data.edge_index[0] != data.edge_index[1]).all()
    # a larger threshold keeps a subset of the edges
    assert sensor_graph(dist=dist, threshold=0.5).num_edges < data.num_edges
    # explicit sigma
    k = gaussian_kernel(torch.tensor([[0.0, 2.0], [2.0, 0.0]]), sigma=2.0, threshold=0.0)
    assert k[0, 1].item() == pytest.approx(math.exp(-1.0))
    with pytest.raises(ValueError, match="'sigma'"):
        gaussian_kernel(torch.ones(3, 3), threshold=0.1)


def test_sensor_graph_from_networkx():
    g = nx.Graph()
    g.add_node("a", lat=1.0, lon=2.0)
    g.add_node("b", lat=3.0, lon=4.0)
    g.add_node("c", lat=5.0, lon=6.0)
    g.add_edge("a", "b", weight=0.3)
    g.add_edge("b", "c", weight=0.9)
    data = sensor_graph(graph=g)
    assert data.node_ids == ["a", "b", "c"]
    assert data.edge_index.tolist() == [[0, 1, 1, 2], [1, 0, 2, 1]]
    assert data.edge_weight.tolist() == pytest.approx([0.3, 0.3, 0.9, 0.9])
    assert data.lat.tolist() == [1.0, 3.0, 5.0]
    # distances -> kernel with sigma = std of the finite entries of the dense table
    d = nx.DiGraph()
    d.add_edge(0, 1, distance=1.0)
    d.add_edge(1, 2, distance=3.0)
    out = sensor_graph(graph=d, sigma=2.0, threshold=0.0)
    assert out.edge_index.tolist() == [[0, 1], [1, 2]]
    assert out.edge_weight.tolist() == pytest.approx([math.exp(-0.25), math.exp(-2.25)])


def test_sensor_graph_from_coordinates():
    lat = torch.tensor([34.0, 34.01, 34.02, 34.5])
    lon = torch.tensor([-118.0, -118.0, -118.0, -118.0])
    data = sensor_graph(lat=lat, lon=lon, sigma=2.0)   # sigma in km
    pairs = set(map(tuple, data.edge_index.t().tolist()))
    # the three sensors about 1.1 km apart are linked, the far one (55 km) is not
    assert {(0, 1), (1, 0), (1, 2), (2, 1), (0, 2), (2, 0)} == pairs


def test_metr_la_adjacency_graph(metr_la_root):
    from torch_stgen.data.readers import read_dcrnn
    s = read_dcrnn(metr_la_root)
    with_loops = sensor_graph(adj=s.adj, lat=s.lat, lon=s.lon, self_loops=True)
    assert with_loops.num_edges == 1722 and with_loops.num_nodes == 207
    no_loops = sensor_graph(adj=s.adj, lat=s.lat, lon=s.lon)
    n_diag = int((s.adj.diagonal() != 0).sum())
    assert no_loops.num_edges == 1722 - n_diag
    assert no_loops.edge_weight.min() >= 0.1 - 1e-6          # DCRNN threshold kappa = 0.1
    d = haversine_distances(s.lat, s.lon)
    # linked sensors are close on the map: all within the LA network's extent
    assert d[no_loops.edge_index[0], no_loops.edge_index[1]].max() < 30


def test_threshold_range():
    with pytest.raises(ValueError, match=r"'threshold' must be in \[0, 1\]"):
        sensor_graph(dist=torch.ones(2, 2), threshold=1.5)
