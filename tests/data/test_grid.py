import pytest
import torch
from torch_geometric.utils import grid as pyg_grid
from torch_geometric.utils import remove_self_loops, scatter

from torch_stgen.data.grid import (coarsen, coarsen_nodes, grid_cluster, grid_graph,
                                   grid_to_image, image_to_grid, mass_project, upsample)


def _edge_set(edge_index):
    return set(map(tuple, edge_index.t().tolist()))


def test_grid_graph_4_neighbourhood():
    H, W = 3, 4
    data = grid_graph(H, W)
    assert data.num_nodes == 12
    assert data.edge_index.shape == (2, 2 * (2 * H * W - H - W))
    edges = _edge_set(data.edge_index)
    # brute force: all pairs with Manhattan distance 1
    expected = {(a * W + b, c * W + d) for a in range(H) for b in range(W)
                for c in range(H) for d in range(W) if abs(a - c) + abs(b - d) == 1}
    assert edges == expected
    assert all((j, i) in edges for i, j in edges)          # both directions
    assert all(i != j for i, j in edges)                   # no self-loops
    assert data.pos.shape == (12, 2)
    assert data.pos[5].tolist() == [1.0, 1.0]              # node i*W + j = (row 1, col 1)
    assert data.pos[7].tolist() == [1.0, 3.0]


def test_grid_graph_8_matches_pyg_grid_without_self_loops():
    data = grid_graph(32, 32, connectivity=8)
    ref, _ = remove_self_loops(pyg_grid(32, 32)[0])
    assert _edge_set(data.edge_index) == _edge_set(ref)
    assert data.edge_index.shape[1] == ref.shape[1] == 2 * (4 * 32 * 32 - 6 * 32 + 2)


def test_grid_graph_coordinates_from_bbox_and_arrays():
    data = grid_graph(2, 4, bbox=(40.0, 41.0, -74.0, -73.0))
    # row 0 is north: centre latitude 41 - 0.25; column 0 west: -74 + 0.125
    assert data.lat.view(2, 4)[0, 0].item() == pytest.approx(40.75)
    assert data.lat.view(2, 4)[1, 3].item() == pytest.approx(40.25)
    assert data.lon.view(2, 4)[1, 3].item() == pytest.approx(-73.125)
    assert data.lon.view(2, 4)[0, 0].item() == pytest.approx(-73.875)
    lat = torch.arange(8.).view(2, 4)
    d2 = grid_graph(2, 4, lat=lat, lon=-lat)
    assert torch.equal(d2.lat, lat.reshape(-1).double())
    assert torch.equal(d2.lon, -lat.reshape(-1).double())


def test_grid_graph_bad_input():
    with pytest.raises(ValueError, match="connectivity"):
        grid_graph(3, 3, connectivity=6)
    with pytest.raises(ValueError, match="'H'"):
        grid_graph(0, 3)
    with pytest.raises(ValueError, match=r"'lat' must have shape \[H, W\] = \[2, 3\]"):
        grid_graph(2, 3, lat=torch.zeros(3, 2), lon=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="'bbox'"):
        grid_graph(2, 3, bbox=(41.0, 40.0, 0.0, 1.0))


def test_image_views_roundtrip_and_layout():
    B, T, H, W, F = 2, 3, 4, 5, 2
    x = torch.randn(B, T, H * W, F)
    img = grid_to_image(x, H, W)
    assert img.shape == (B * T, F, H, W)
    # node i*W + j of (b, t) is pixel (i, j) of image b*T + t
    assert img[1 * T + 2, 1, 3, 4] == x[1, 2, 3 * W + 4, 1]
    assert torch.equal(image_to_grid(img, B, T), x)
    with pytest.raises(ValueError, match=r"'x' must have shape \[B, T, N=20, F\]"):
        grid_to_image(torch.zeros(2, 19, 1), H, W)
    with pytest.raises(ValueError, match="'img'"):
        image_to_grid(img, 5, T)


def test_coarsen_sums_blocks_and_preserves_mass():
    x = torch.randint(0, 100, (3, 2, 8, 12)).float()
    c = coarsen(x, 4)
    assert c.shape == (3, 2, 2, 3)
    assert c[1, 0, 1, 2] == x[1, 0, 4:8, 8:12].sum()
    assert torch.equal(c.sum(dim=(-2, -1)), x.sum(dim=(-2, -1)))
    assert coarsen(x, 1).equal(x)
    with pytest.raises(ValueError, match="divisible by 'factor'=3"):
        coarsen(torch.zeros(8, 8), 3)
    with pytest.raises(ValueError, match="'factor'"):
        coarsen(torch.zeros(8, 8), 0)


def test_coarsen_nodes_and_cluster_match_coarsen():
    B, T, H, W, F, f = 2, 3, 4, 6, 2, 2
    x = torch.randn(B, T, H * W, F, dtype=torch.float64)
    ref = image_to_grid(coarsen(grid_to_image(x, H, W), f), B, T)
    out = coarsen_nodes(x, H, W, f)
    assert out.shape == (B, T, 6, F)
    assert torch.allclose(out, ref)
    cluster = grid_cluster(H, W, f)
    assert cluster.tolist() == [0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2,
                                3, 3, 4, 4, 5, 5, 3, 3, 4, 4, 5, 5]
    pooled = scatter(x, cluster, dim=-2, reduce="sum")
    assert torch.allclose(pooled, out)
    with pytest.raises(ValueError, match=r"'x' must have shape \[..., N=24, F\]"):
        coarsen_nodes(torch.zeros(2, 23, 1), H, W, f)


def test_upsample_nearest_and_distributional():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    nn = upsample(x, 2)
    assert nn.shape == (4, 4)
    assert nn[2:, :2].eq(3.0).all() and nn[:2, 2:].eq(2.0).all()
    logits = torch.randn(5, 4, 4)
    # softmax over each 2x2 block gives valid shares
    blocks = logits.view(5, 2, 2, 2, 2).permute(0, 1, 3, 2, 4).reshape(5, 2, 2, 4)
    shares = blocks.softmax(-1).view(5, 2, 2, 2, 2).permute(0, 1, 3, 2, 4).reshape(5, 4, 4)
    xc = torch.rand(5, 2, 2) * 10
    fine = upsample(xc, 2, shares)
    assert torch.allclose(coarsen(fine, 2), xc, atol=1e-5)
    assert torch.allclose(fine[0, 0, 1], xc[0, 0, 0] * shares[0, 0, 1])
    with pytest.raises(ValueError, match="'shares': each 2x2 block must sum to 1"):
        upsample(xc, 2, torch.ones(5, 4, 4))
    with pytest.raises(ValueError, match=r"'shares' must have shape \[..., h\*N, w\*N\]"):
        upsample(xc, 2, torch.ones(5, 2, 2))


def test_rank_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"'x' must have shape \[..., H, W\]"):
        coarsen(torch.zeros(4), 2)
    with pytest.raises(ValueError, match=r"'x' must have shape \[..., h, w\]"):
        upsample(torch.zeros(4), 2)


def test_grid_series_graph_uses_grid_graph():
    from torch_stgen.data.series import GridSeries
    lat = torch.tensor([[2.0, 2.0], [1.0, 1.0]])
    g = GridSeries(torch.zeros(3, 1, 2, 2), lat=lat, lon=lat.t())
    data = g.graph(connectivity=8)
    assert data.num_nodes == 4 and data.edge_index.shape[1] == 12
    assert data.lat.tolist() == [2.0, 2.0, 1.0, 1.0]


def test_mass_project_additive_and_proportional():
    g = torch.Generator().manual_seed(0)
    fine = torch.rand(3, 2, 8, 4, generator=g) * 5
    coarse = torch.rand(3, 2, 4, 2, generator=g) * 20
    add = mass_project(fine, coarse, 2)
    torch.testing.assert_close(coarsen(add, 2), coarse)
    # additive: the same shift for all four cells of a block (least-squares projection)
    shift = add - fine
    torch.testing.assert_close(shift, upsample(coarsen(shift, 2) / 4, 2))
    prop = mass_project(fine, coarse, 2, "proportional")
    torch.testing.assert_close(coarsen(prop, 2), coarse)
    # proportional keeps each block's shares and stays non-negative
    torch.testing.assert_close(prop / upsample(coarse, 2), fine / upsample(coarsen(fine, 2), 2))
    assert prop.min() >= 0
    # a block summing to 0 falls back to the additive correction
    fine0 = fine.clone()
    fine0[0, 0, :2, :2] = 0.0
    out = mass_project(fine0, coarse, 2, "proportional")
    torch.testing.assert_close(out[0, 0, :2, :2],
                               torch.full((2, 2), float(coarse[0, 0, 0, 0]) / 4))
    # already consistent maps are left unchanged
    torch.testing.assert_close(mass_project(fine, coarsen(fine, 2), 2, "proportional"), fine)


def test_mass_project_errors():
    with pytest.raises(ValueError, match="'mode'"):
        mass_project(torch.rand(4, 4), torch.rand(2, 2), 2, "multiplicative")
    with pytest.raises(ValueError, match="'coarse' must have spatial size"):
        mass_project(torch.rand(4, 4), torch.rand(3, 2), 2)


def test_sizes_of_numpy_integer_type_and_mass_project_eps():
    np = pytest.importorskip("numpy")
    x = torch.rand(2, 4, 4)
    assert torch.equal(coarsen(x, np.int64(2)), coarsen(x, 2))
    assert grid_graph(np.int64(2), np.int32(3)).num_nodes == 6
    with pytest.raises(ValueError, match="'factor' must be a positive integer"):
        coarsen(x, 2.0)
    with pytest.raises(ValueError, match="'eps' must be >= 0"):       # gave NaN
        mass_project(x, coarsen(x, 2), 2, mode="proportional", eps=-1.0)
