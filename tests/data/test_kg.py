import json
import math

import numpy as np
import pytest
import torch
from torch_geometric.utils import scatter

from torch_stgen.data.kg import (UrbanKG, kg_from_grid, kg_from_sensor_graph,
                                 read_nyc_urban_kg)

TRIPLES = [("poi_a", "located_in", "cell_0"), ("poi_b", "located_in", "cell_0"),
           ("poi_a", "has_category", "food"), ("cell_0", "adjacent_to", "cell_1"),
           ("cell_1", "adjacent_to", "cell_0")]


def test_from_triples_ids_and_message_direction():
    kg = UrbanKG.from_triples(TRIPLES, entities=["lonely"])
    assert kg.entities == ["lonely", "poi_a", "cell_0", "poi_b", "food", "cell_1"]
    assert kg.relations == ["located_in", "has_category", "adjacent_to"]
    assert (kg.num_entities, kg.num_relations, kg.num_triples) == (6, 3, 5)
    assert kg.entity2id["cell_0"] == 2 and kg.relation2id["adjacent_to"] == 2
    assert kg.triples[0].tolist() == [1, 0, 2]
    # edge_index = [tail; head]: row 0 is the source (tail), row 1 the target (head)
    assert kg.edge_index.shape == (2, 5)
    assert kg.edge_index[:, 0].tolist() == [2, 1]
    assert kg.edge_type.tolist() == [0, 0, 1, 2, 2]
    # a PyG aggregation over edge_index sends tail features into heads
    x = torch.zeros(kg.num_entities)
    x[kg.entity2id["food"]] = 1.0
    out = scatter(x[kg.edge_index[0]], kg.edge_index[1], dim=0, dim_size=kg.num_entities,
                  reduce="sum")
    assert out[kg.entity2id["poi_a"]] == 1.0 and out.sum() == 1.0
    assert sorted(kg.neighbours("poi_a")) == ["cell_0", "food"]
    assert kg.neighbours("cell_0", relation="located_in", direction="in") == ["poi_a", "poi_b"]
    assert "entities=6" in repr(kg) and "triples=5" in repr(kg)


def test_lookups_and_node_entities():
    kg = UrbanKG.from_triples(TRIPLES)
    assert kg.entity_ids(["cell_1", "poi_b"]).tolist() == [kg.entity2id["cell_1"],
                                                          kg.entity2id["poi_b"]]
    assert int(kg.entity_ids("food")) == kg.entity2id["food"]
    with pytest.raises(KeyError, match="nowhere"):
        kg.entity_ids(["cell_0", "nowhere"])
    n2e = kg.set_node_entities(["cell_1", "cell_0"])
    assert n2e.tolist() == [kg.entity2id["cell_1"], kg.entity2id["cell_0"]]
    assert kg.node2entity is n2e and n2e.dtype == torch.long
    with pytest.raises(KeyError, match="cell_9"):
        kg.set_node_entities(["cell_0", "cell_9"])
    assert kg.set_node_entities(torch.tensor([4, 0])).tolist() == [4, 0]
    assert kg.set_node_entities([3, 1]).tolist() == [3, 1]
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        kg.set_node_entities(torch.tensor([5]))
    with pytest.raises(KeyError, match="relation"):
        kg.relation_ids("owns")


def test_constructor_validation():
    with pytest.raises(ValueError, match="'entities' must be unique"):
        UrbanKG(["a", "a"], ["r"], [[0, 0, 1]])
    with pytest.raises(ValueError, match=r"'triples' must have shape \[M, 3\]"):
        UrbanKG(["a", "b"], ["r"], [[0, 1]])
    with pytest.raises(ValueError, match="tail ids must lie in"):
        UrbanKG(["a", "b"], ["r"], [[0, 0, 2]])
    with pytest.raises(ValueError, match="relation ids must lie in"):
        UrbanKG(["a", "b"], ["r"], [[0, 1, 1]])
    with pytest.raises(ValueError, match=r"'triples'\[1\]"):
        UrbanKG.from_triples([("a", "r", "b"), ("a", "r")])
    empty = UrbanKG(["a"], ["r"], [])
    assert empty.num_triples == 0 and empty.edge_index.shape == (2, 0)


def test_from_file_skips_a_header_and_comments_when_told(tmp_path):
    """A column-name line became a triple 'head -relation-> tail' with three new
    entities, and a commented line with tabs became one too."""
    path = tmp_path / "kg.tsv"
    path.write_text("\n# exported 2024-05-01\thand-edited\nhead\trelation\ttail\n"
                    "a\tr\tb\n  # b\tr\tc (dropped)\nb\tr\ta\n")
    kg = UrbanKG.from_file(path, header=True, comment="#")
    assert kg.entities == ["a", "b"] and kg.relations == ["r"] and kg.num_triples == 2
    plain = tmp_path / "plain.tsv"
    plain.write_text("head\trelation\ttail\na\tr\tb\n")
    assert UrbanKG.from_file(plain).num_triples == 2            # the default reads every line
    assert UrbanKG.from_file(plain, header=True).entities == ["a", "b"]
    with pytest.raises(ValueError, match="'comment' must be a non-blank prefix"):
        UrbanKG.from_file(plain, comment=" ")


def test_file_roundtrip_and_errors(tmp_path):
    kg = UrbanKG.from_triples(TRIPLES)
    path = tmp_path / "kg.txt"
    kg.to_file(path)
    assert path.read_text().splitlines()[0] == "poi_a\tlocated_in\tcell_0"
    back = UrbanKG.from_file(path)
    assert back == kg and back.fingerprint() == kg.fingerprint()
    # blank lines and CRLF are tolerated
    (tmp_path / "crlf.txt").write_bytes(b"a\tr\tb\r\n\r\nb\tr\ta\r\n")
    assert UrbanKG.from_file(tmp_path / "crlf.txt").num_triples == 2
    (tmp_path / "bad.txt").write_text("a\tr\tb\nb\tr\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2"):
        UrbanKG.from_file(tmp_path / "bad.txt")
    (tmp_path / "bad2.txt").write_text("a\tr\tb\n\nx\t\ty\n")
    with pytest.raises(ValueError, match=r"bad2\.txt:3"):
        UrbanKG.from_file(tmp_path / "bad2.txt")
    with pytest.raises(FileNotFoundError, match=f"'missing.txt'.*{tmp_path.name}"):
        UrbanKG.from_file(tmp_path / "missing.txt")
    (tmp_path / "space.txt").write_text("a r b\n")
    assert UrbanKG.from_file(tmp_path / "space.txt", sep=" ").triples.tolist() == [[0, 0, 1]]


def test_fingerprint_tracks_content_only():
    kg = UrbanKG.from_triples(TRIPLES)
    fp = kg.fingerprint()
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert UrbanKG.from_triples(list(TRIPLES)).fingerprint() == fp
    kg.set_node_entities(["cell_0"])
    assert kg.fingerprint() == fp  # node mapping is not content
    assert UrbanKG.from_triples(TRIPLES[:-1]).fingerprint() != fp
    assert UrbanKG.from_triples(TRIPLES[::-1]).fingerprint() != fp  # ids change
    renamed = [(h, r, "cafe" if t == "food" else t) for h, r, t in TRIPLES]
    assert UrbanKG.from_triples(renamed).fingerprint() != fp
    # name boundaries are unambiguous: ["ab", "c"] vs ["a", "bc"]
    k1 = UrbanKG(["ab", "c"], ["r"], [[0, 0, 1]])
    k2 = UrbanKG(["a", "bc"], ["r"], [[0, 0, 1]])
    assert k1.fingerprint() != k2.fingerprint()


def test_add_inverse():
    kg = UrbanKG.from_triples(TRIPLES)
    kg.set_node_entities(["cell_0", "cell_1"])
    inv = kg.add_inverse()
    assert inv.relations == kg.relations + [r + "_inv" for r in kg.relations]
    assert inv.num_triples == 2 * kg.num_triples
    h, r, t = kg.triples[2].tolist()
    assert inv.triples[kg.num_triples + 2].tolist() == [t, r + kg.num_relations, h]
    assert torch.equal(inv.node2entity, kg.node2entity)
    assert kg.num_triples == 5  # the original is unchanged
    with pytest.raises(ValueError, match="suffix"):
        inv.add_inverse(suffix="")


def test_kg_from_sensor_graph_distance_bins():
    # along a meridian, 1 degree of latitude is 6371.0088 * pi / 180 km
    km_per_deg = 6371.0088 * math.pi / 180
    lat = torch.tensor([40.0, 40.0 + 0.5 / km_per_deg, 40.0 + 1.5 / km_per_deg,
                        40.0 + 30.0 / km_per_deg])
    lon = torch.full((4,), -74.0)
    kg = kg_from_sensor_graph(lat, lon)
    assert kg.relations == ["near_0_1km", "near_1_2km", "near_2_5km"]
    got = {(kg.entities[h], kg.relations[r], kg.entities[t]) for h, r, t in kg.triples.tolist()}
    want = set()
    for a, b, rel in ((0, 1, "near_0_1km"), (1, 2, "near_0_1km"), (0, 2, "near_1_2km")):
        want |= {(f"sensor_{a}", rel, f"sensor_{b}"), (f"sensor_{b}", rel, f"sensor_{a}")}
    assert got == want  # sensor_3 (30 km away) is isolated
    assert kg.node2entity.tolist() == [0, 1, 2, 3]
    adj = torch.zeros(4, 4)
    adj[0, 3] = 0.7
    adj[2, 2] = 1.0  # self-loops are not relations
    kg2 = kg_from_sensor_graph(lat, lon, adj=adj, bins=(0.25, 0.75),
                               sensor_ids=["a", "b", "c", "d"])
    assert kg2.relations == ["near_0_0.25km", "near_0.25_0.75km", "road_adjacent"]
    road = kg2.triples[kg2.triples[:, 1] == 2].tolist()
    assert road == [[0, 2, 3]] and kg2.entities == ["a", "b", "c", "d"]
    # only the pair (0, 1) at 0.5 km falls in [0.25, 0.75); 1.0 km and farther are unlinked
    assert kg2.triples[kg2.triples[:, 1] == 1].tolist() == [[0, 1, 1], [1, 1, 0]]
    # edges that agree to six digits keep distinct names (both were 'near_0.1_0.1km')
    kg3 = kg_from_sensor_graph(lat, lon, bins=(0.1, 0.1000001, 5))
    assert kg3.relations == ["near_0.0_0.1km", "near_0.1_0.1000001km",
                             "near_0.1000001_5.0km"]
    # float32 edges keep their short names (0.3 is 0.30000001192092896 in float32)
    kg4 = kg_from_sensor_graph(lat, lon, bins=torch.tensor([0.3, 1.2, 5.0]))
    assert kg4.relations == ["near_0_0.3km", "near_0.3_1.2km", "near_1.2_5km"]
    assert int((kg2.triples[:, 1] == 0).sum()) == 0
    with pytest.raises(ValueError, match="'bins'"):
        kg_from_sensor_graph(lat, lon, bins=(2.0, 1.0))
    with pytest.raises(ValueError, match=r"'adj' must have shape \[N, N\] = \[4, 4\]"):
        kg_from_sensor_graph(lat, lon, adj=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="'lon' must have shape"):
        kg_from_sensor_graph(lat, lon[:3])


def test_kg_from_grid():
    kg = kg_from_grid(2, 3)
    assert kg.relations == ["adjacent_to"]
    assert kg.num_entities == 6 and kg.num_triples == 2 * (2 * 2 + 1 * 3)
    assert kg.node2entity.tolist() == list(range(6))
    assert sorted(kg.neighbours("cell_0_1")) == ["cell_0_0", "cell_0_2", "cell_1_1"]
    assert kg_from_grid(2, 3, connectivity=8).num_triples == 14 + 2 * 2 * 2
    regions = np.array([[0, 0, 1], [0, 1, 1]])
    pois = torch.tensor([[0, 2], [1, 0], [1, 0]])
    cats = ["cafe", "park", "cafe"]
    kg = kg_from_grid(2, 3, regions=regions, pois=pois, poi_categories=cats)
    assert kg.relations == ["adjacent_to", "in_region", "located_in", "has_category"]
    assert kg.neighbours("cell_0_2", "in_region") == ["region_1"]
    assert kg.neighbours("cell_1_0", "located_in", direction="in") == ["poi_1", "poi_2"]
    assert kg.neighbours("cafe", direction="in") == ["poi_0", "poi_2"]
    assert kg.num_entities == 6 + 2 + 3 + 2
    kg_ids = kg_from_grid(2, 3, pois=torch.tensor([2, 3]), poi_categories=torch.tensor([4, 4]))
    assert kg_ids.neighbours("poi_1") == ["cell_1_0", "category_4"]
    with pytest.raises(ValueError, match=r"'regions' must have shape \[H, W\] = \[2, 3\]"):
        kg_from_grid(2, 3, regions=np.zeros((3, 2), dtype=int))
    with pytest.raises(ValueError, match="'pois'"):
        kg_from_grid(2, 3, pois=torch.tensor([6]))
    with pytest.raises(ValueError, match="'poi_categories' must have P=2"):
        kg_from_grid(2, 3, pois=torch.tensor([1, 2]), poi_categories=[0])


def test_read_nyc_urban_kg(nyc_kg_root):
    kg, regions = read_nyc_urban_kg(nyc_kg_root)
    assert (kg.num_entities, kg.num_relations, kg.num_triples) == (26604, 5, 67418)
    assert set(kg.relations) == {"NearBy", "BorderBy", "SimilarFunc", "LocateAt", "Cate1Of"}
    with open(nyc_kg_root / "region2info.json") as f:
        info = json.load(f)
    assert len(regions) == len(info) == 280
    assert regions.ids == list(info)
    assert all(kg.entities[e] == r for e, r in zip(regions.entity.tolist(), regions.ids))
    assert torch.equal(kg.node2entity, regions.entity)
    first = info[regions.ids[0]]
    assert regions.lon[0].item() == first["center"][0]
    assert regions.lat[0].item() == first["center"][1]
    assert regions.features.shape == (280, 6) and regions.n_pois[0].item() == first["n_pois"]
    assert 40.4 < regions.lat.min() and regions.lat.max() < 41.0  # New York
    assert len(regions.train) + len(regions.test) == 280
    assert not set(regions.train) & set(regions.test)
    assert [regions.ids[i] for i in regions.test_index.tolist()] == regions.test
    # LocateAt goes POI -> region and every POI has a first-level category
    locate = kg.relation2id["LocateAt"]
    tails = kg.triples[kg.triples[:, 1] == locate, 2]
    assert set(tails.tolist()) <= set(regions.entity.tolist())
    # Cate1Of is stored POI -> category in kg.txt (heads are the POIs of LocateAt)
    cate = kg.triples[kg.triples[:, 1] == kg.relation2id["Cate1Of"]]
    pois = set(kg.triples[kg.triples[:, 1] == locate, 0].tolist())
    assert set(cate[:, 0].tolist()) == pois
    assert all(kg.entities[t].startswith("Cate1_") for t in set(cate[:, 2].tolist()))


def test_read_nyc_urban_kg_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"'kg.txt'.*{tmp_path.name}"):
        read_nyc_urban_kg(tmp_path)
    (tmp_path / "kg.txt").write_text("r1\tNearBy\tr2\n")
    (tmp_path / "region2info.json").write_text(json.dumps(
        {"r1": {"center": [0, 0], "n_pois": 0, "pop": 1.0, "feature": [0.0]},
         "r3": {"center": [0, 1], "n_pois": 0, "pop": 1.0, "feature": [0.0]}}))
    (tmp_path / "train_regs.json").write_text('["r1"]')
    with pytest.raises(FileNotFoundError, match="'test_regs.json'"):
        read_nyc_urban_kg(tmp_path)
    (tmp_path / "test_regs.json").write_text('["r3"]')
    with pytest.raises(ValueError, match="r3"):
        read_nyc_urban_kg(tmp_path)


def test_constructor_refuses_non_integer_ids():
    for bad in ([[0.7, 0.2, 1.9]], torch.tensor([[0.0, 0.0, 1.0]]), [[float("nan"), 0, 1]],
                torch.ones(1, 3, dtype=torch.bool)):
        with pytest.raises(ValueError, match="'triples' must hold integer ids"):
            UrbanKG(["a", "b"], ["r"], bad)
    with pytest.raises(ValueError, match="'triples' must hold integer ids"):
        UrbanKG(["a", "b"], ["r"], [["a", "r", "b"]])
    ok = UrbanKG(["a", "b"], ["r"], np.array([[0, 0, 1]], dtype=np.int32))
    assert ok.triples.dtype == torch.long and ok.triples.tolist() == [[0, 0, 1]]
    assert UrbanKG(["a"], ["r"], []).num_triples == 0
    with pytest.raises(ValueError, match=r"'triples'\[0\] must be a \(head, relation, tail\)"):
        UrbanKG.from_triples([5])


def test_kg_from_sensor_graph_checks_bins_and_threshold():
    lat, lon = [34.0, 34.0, 34.01], [-118.0, -118.0, -118.0]
    for bad in ((float("nan"),), (1.0, float("inf")), "12", 1.0, (2.0, 1.0), (-1.0, 1.0),
                (0.0, 1.0), (), (True,), [[1.0, 2.0]], ("1",)):
        with pytest.raises(ValueError, match="'bins' must be a sequence of finite, positive, "
                                             "increasing"):
            kg_from_sensor_graph(lat, lon, bins=bad)
    ref = kg_from_sensor_graph(lat, lon, bins=(1.0, 2.0))
    for same in (torch.tensor([1.0, 2.0]), np.array([1, 2]), [np.float32(1.0), 2]):
        assert kg_from_sensor_graph(lat, lon, bins=same) == ref
    adj = np.ones((3, 3))
    for bad in (float("nan"), float("inf"), -float("inf"), "0", None):
        with pytest.raises(ValueError, match="'adj_threshold' must be a finite number"):
            kg_from_sensor_graph(lat, lon, adj=adj, adj_threshold=bad)
    kg = kg_from_sensor_graph(lat, lon, adj=adj, adj_threshold=np.float64(0.5))
    assert int((kg.edge_type == kg.relation2id["road_adjacent"]).sum()) == 6


def test_kg_from_grid_sizes_and_empty_pois():
    for h, w, bad in ((2.0, 2, "height"), (2, 2.5, "width"), (True, 2, "height"),
                      ("2", 2, "height"), (0, 2, "height"), (2, np.float64(3.0), "width")):
        with pytest.raises(ValueError, match=f"'{bad}' must be a positive integer"):
            kg_from_grid(h, w)
    assert kg_from_grid(np.int64(2), np.int32(3)) == kg_from_grid(2, 3)
    plain = kg_from_grid(2, 2)
    for empty in ([], np.zeros(0), torch.zeros(0, 2)):
        kg = kg_from_grid(2, 2, pois=empty)
        assert kg.entities == plain.entities and torch.equal(kg.triples, plain.triples)
        assert kg.relations == ["adjacent_to", "located_in"]      # declared, like the bins
    both = kg_from_grid(2, 2, pois=[], poi_categories=[])
    assert both.relations[-1] == "has_category" and both.num_triples == plain.num_triples
    with pytest.raises(ValueError, match="'poi_categories' must be integer ids or names"):
        kg_from_grid(2, 2, pois=[0], poi_categories=[1.7])


def test_from_file_reads_a_byte_order_mark_and_to_file_refuses_names_it_would_change(tmp_path):
    """A BOM (Excel, Notepad) became part of the first entity's name; names with surrounding
    whitespace were written and read back merged with others."""
    path = tmp_path / "bom.txt"
    path.write_bytes("a\tr\tb\nb\tr\ta\n".encode("utf-8-sig"))
    kg = UrbanKG.from_file(path)
    assert kg.entities == ["a", "b"] and kg.num_triples == 2
    for bad in (["a", "a ", "b"], ["a", "b\rc"]):
        kg = UrbanKG(bad, ["r"], torch.tensor([[0, 0, 1]]))
        with pytest.raises(ValueError, match="would not read back as itself"):
            kg.to_file(tmp_path / "out.txt")
    kg = UrbanKG(["a", "b"], [" r"], torch.tensor([[0, 0, 1]]))
    with pytest.raises(ValueError, match="relation name ' r' would not read back"):
        kg.to_file(tmp_path / "out.txt")


def test_set_node_entities_reads_integers_alike_in_every_container():
    """An object array of ints was read as entity *names* (so on a KG whose entities are
    '1', '0', '2' each node pointed at the other's entity); bool masks passed as ids."""
    kg = UrbanKG(["1", "0", "2"], ["r"], torch.tensor([[0, 0, 1]]))
    want = [0, 1]
    assert kg.set_node_entities([0, 1]).tolist() == want
    assert kg.set_node_entities(np.array([0, 1], dtype=object)).tolist() == want
    assert kg.set_node_entities(np.array([0, 1])).tolist() == want
    assert kg.set_node_entities(["0", "1"]).tolist() == [1, 0]          # names
    for bad in (torch.tensor([True, False]), np.array([True, False]),
                torch.tensor([0, 1], dtype=torch.complex64)):
        with pytest.raises(ValueError, match="'nodes' ids must be a 1-D integer tensor"):
            kg.set_node_entities(bad)
