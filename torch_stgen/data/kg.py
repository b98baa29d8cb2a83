r"""Urban knowledge graphs: entities, relations and ``(head, relation, tail)`` triples.

KGDiff (Wang et al., "Knowledge Graph Guided Heterogeneity-Informed Diffusion Model for
Spatio-Temporal Generation", AAAI 2026) guides generation for unseen nodes with an urban
knowledge graph (UUKG-style: areas/regions, POIs, roads, categories, sensors). The KG's
entities are embedded (TuckER, :mod:`torch_stgen.kg`) and refined by Geometry MoE message
passing over the triples; every spatio-temporal node is tied to one entity through
:attr:`UrbanKG.node2entity`.

This module holds the container :class:`UrbanKG`, the readers (:meth:`UrbanKG.from_file`
for the tab-separated ``head<TAB>relation<TAB>tail`` layout of UUKG and KSTDiff,
:func:`read_nyc_urban_kg` for the KSTDiff New York release) and two builders for data
without a semantic KG: :func:`kg_from_sensor_graph` (KGDiff: "for sensor networks without
semantics the KG is built from distances") and :func:`kg_from_grid`.
"""
import hashlib
import json
import math
import numbers
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .._checks import check_int

__all__ = ["UrbanKG", "UrbanRegions", "read_nyc_urban_kg", "kg_from_sensor_graph",
           "kg_from_grid"]

_FINGERPRINT_VERSION = b"torch_stgen.UrbanKG/1"


def _unique_names(names: Sequence[str], what: str) -> List[str]:
    out = [str(n) for n in names]
    if len(set(out)) != len(out):
        seen, dup = set(), []
        for n in out:
            if n in seen and n not in dup:
                dup.append(n)
            seen.add(n)
        raise ValueError(f"'{what}' must be unique (duplicated: {dup[:5]})")
    return out


class UrbanKG:
    r"""An urban knowledge graph with integer-coded triples.

    Entities and relations are strings; :attr:`triples` holds their ids. Message passing
    over the KG uses :attr:`edge_index` and :attr:`edge_type`: in KGDiff's Geometry MoE
    (eqs. 13-15) the message of a triple :math:`(h, r, t)` is built from the tail
    :math:`t` and the relation :math:`r` and aggregated at the head :math:`h`, so

    .. math::
        \texttt{edge\_index} = \begin{bmatrix} t_1 & \cdots & t_M \\
        h_1 & \cdots & h_M \end{bmatrix}

    i.e. PyG's ``source_to_target`` convention with source = tail (row 0) and
    target = head (row 1): messages flow *into heads*. Use :meth:`add_inverse` when
    information must also flow the other way.

    Args:
        entities (list of str): entity names, unique; an entity's id is its position.
        relations (list of str): relation names, unique.
        triples (LongTensor): ``[M, 3]`` integer ids ``(head, relation, tail)``; floating
            (or boolean) ids are refused with a ``ValueError``, never truncated.
        node2entity (LongTensor, optional): ``[N]`` entity id of each spatio-temporal node.
        name (str, optional): a short identifier. (default: ``"kg"``)

    Shapes:
        ``triples``: ``[M, 3]``; ``edge_index``: ``[2, M]``; ``edge_type``: ``[M]``;
        ``node2entity``: ``[N]``.
    """

    def __init__(self, entities: Sequence[str], relations: Sequence[str], triples,
                 node2entity: Optional[Tensor] = None, name: str = "kg"):
        self.entities: List[str] = _unique_names(entities, "entities")
        self.relations: List[str] = _unique_names(relations, "relations")
        self.entity2id: Dict[str, int] = {e: i for i, e in enumerate(self.entities)}
        self.relation2id: Dict[str, int] = {r: i for i, r in enumerate(self.relations)}
        try:
            trip = torch.as_tensor(triples)
        except (TypeError, ValueError, RuntimeError):
            trip = None
        if trip is not None and trip.numel() == 0:      # [] is float32 to torch: no triples
            trip = trip.long().reshape(0, 3)
        if trip is None or trip.is_floating_point() or trip.is_complex() \
                or trip.dtype == torch.bool:
            got = type(triples).__name__ if trip is None else trip.dtype
            raise ValueError(f"'triples' must hold integer ids (head, relation, tail); "
                             f"a float id would be truncated (got {got})")
        trip = trip.long()
        if trip.dim() != 2 or trip.shape[1] != 3:
            raise ValueError(f"'triples' must have shape [M, 3] (head, relation, tail) "
                             f"(got {tuple(trip.shape)})")
        if trip.numel():
            ne, nr = len(self.entities), len(self.relations)
            for col, what, n in ((0, "head", ne), (1, "relation", nr), (2, "tail", ne)):
                lo, hi = int(trip[:, col].min()), int(trip[:, col].max())
                if lo < 0 or hi >= n:
                    raise ValueError(f"'triples' {what} ids must lie in [0, {n}) "
                                     f"(got range [{lo}, {hi}])")
        self.triples: Tensor = trip.contiguous()
        self.name = name
        self.node2entity: Optional[Tensor] = None
        if node2entity is not None:
            self.set_node_entities(node2entity)

    # ------------------------------------------------------------------ sizes / views
    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    @property
    def num_triples(self) -> int:
        return int(self.triples.shape[0])

    @property
    def edge_index(self) -> Tensor:
        """``[2, M]`` = ``[tails; heads]``: messages flow from tail to head (see class doc)."""
        return self.triples[:, [2, 0]].t().contiguous()

    @property
    def edge_type(self) -> Tensor:
        """``[M]`` relation id of every edge of :attr:`edge_index`."""
        return self.triples[:, 1].contiguous()

    # ------------------------------------------------------------------ look-ups
    def entity_ids(self, names: Union[str, Iterable[str]]) -> Tensor:
        """Ids of entity ``names`` as a LongTensor (``[len(names)]``, or 0-d for one name).

        Raises:
            KeyError: naming the unknown entities (first five).
        """
        single = isinstance(names, str)
        names = [names] if single else [str(n) for n in names]
        missing = [n for n in names if n not in self.entity2id]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise KeyError(f"unknown entit{'y' if len(missing) == 1 else 'ies'} "
                           f"{missing[:5]}{more} in UrbanKG {self.name!r}")
        ids = torch.tensor([self.entity2id[n] for n in names], dtype=torch.long)
        return ids[0] if single else ids

    def relation_ids(self, names: Union[str, Iterable[str]]) -> Tensor:
        """Ids of relation ``names`` (``KeyError`` naming an unknown one)."""
        single = isinstance(names, str)
        names = [names] if single else [str(n) for n in names]
        missing = [n for n in names if n not in self.relation2id]
        if missing:
            raise KeyError(f"unknown relation(s) {missing[:5]} in UrbanKG {self.name!r} "
                           f"(relations: {self.relations})")
        ids = torch.tensor([self.relation2id[n] for n in names], dtype=torch.long)
        return ids[0] if single else ids

    def set_node_entities(self, nodes) -> Tensor:
        """Tie the ``N`` spatio-temporal nodes to entities and return :attr:`node2entity`.

        Args:
            nodes: ``N`` entity names (node ``i`` is entity ``nodes[i]``), or an integer
                tensor/array of ``N`` entity ids.

        Raises:
            KeyError: an entity name is unknown (named in the message).
            ValueError: an id is out of range.
        """
        if isinstance(nodes, str):
            raise TypeError("'nodes' must be a sequence of entity names or ids, not a str")
        if isinstance(nodes, np.ndarray) and nodes.dtype.kind == "O":
            nodes = nodes.tolist()          # as a list: ids only if every entry is an int
        if not isinstance(nodes, (Tensor, np.ndarray)):
            nodes = list(nodes)
            if nodes and all(isinstance(n, (int, np.integer)) and not isinstance(n, bool)
                             for n in nodes):
                nodes = torch.tensor(nodes, dtype=torch.long)
        if isinstance(nodes, (Tensor, np.ndarray)) and not (
                isinstance(nodes, np.ndarray) and nodes.dtype.kind in "US"):
            ids = torch.as_tensor(nodes)
            if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool \
                    or ids.dim() != 1:
                raise ValueError(f"'nodes' ids must be a 1-D integer tensor "
                                 f"(got dtype {ids.dtype}, shape {tuple(ids.shape)})")
            ids = ids.long()
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_entities):
                raise ValueError(f"'nodes' ids must lie in [0, {self.num_entities}) "
                                 f"(got range [{int(ids.min())}, {int(ids.max())}])")
        else:
            ids = self.entity_ids(list(nodes)).reshape(-1)
        self.node2entity = ids.clone()
        return self.node2entity

    def neighbours(self, entity: Union[str, int], relation: Optional[str] = None,
                   direction: str = "out") -> List[str]:
        """Names of the entities linked to ``entity``.

        Args:
            entity: a name or an id.
            relation (str, optional): keep only this relation. (default: all)
            direction (str, optional): ``"out"`` = tails of triples whose head is
                ``entity``; ``"in"`` = heads of triples whose tail is ``entity``.
        """
        if direction not in ("out", "in"):
            raise ValueError(f"'direction' must be 'out' or 'in' (got {direction!r})")
        eid = int(self.entity_ids(entity)) if isinstance(entity, str) else int(entity)
        src, dst = (0, 2) if direction == "out" else (2, 0)
        sel = self.triples[:, src] == eid
        if relation is not None:
            sel &= self.triples[:, 1] == int(self.relation_ids(relation))
        return [self.entities[i] for i in self.triples[sel, dst].tolist()]

    # ------------------------------------------------------------------ derived graphs
    def add_inverse(self, suffix: str = "_inv") -> "UrbanKG":
        """A new KG with, for every relation ``r``, an inverse relation ``r + suffix`` and
        the reversed triples ``(t, r_inv, h)`` appended (ids ``r + num_relations``).
        :attr:`node2entity` is kept. Raises ``ValueError`` if a name would clash."""
        inv = [r + suffix for r in self.relations]
        clash = sorted(set(inv) & set(self.relations))
        if clash:
            raise ValueError(f"inverse relation names {clash} already exist; choose "
                             f"another 'suffix' (got {suffix!r})")
        rev = self.triples[:, [2, 1, 0]].clone()
        rev[:, 1] += self.num_relations
        return UrbanKG(self.entities, self.relations + inv,
                       torch.cat([self.triples, rev], 0), node2entity=self.node2entity,
                       name=self.name)

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        """Stable sha256 hex digest of the content (entity names in id order, relation
        names in id order, the triples as little-endian int64), used as a cache key for
        pre-trained embeddings. :attr:`node2entity` and :attr:`name` are not included."""
        h = hashlib.sha256(_FINGERPRINT_VERSION)
        for part in (self.entities, self.relations):
            h.update(len(part).to_bytes(8, "little"))
            for s in part:
                b = s.encode("utf-8")
                h.update(len(b).to_bytes(8, "little"))
                h.update(b)
        h.update(self.triples.cpu().numpy().astype("<i8").tobytes())
        return h.hexdigest()

    def __eq__(self, other) -> bool:
        return (isinstance(other, UrbanKG) and self.entities == other.entities
                and self.relations == other.relations
                and torch.equal(self.triples, other.triples))

    __hash__ = None  # mutable (node2entity)

    def __repr__(self) -> str:
        nodes = "" if self.node2entity is None else f", nodes={self.node2entity.numel()}"
        return (f"UrbanKG({self.name!r}, entities={self.num_entities}, "
                f"relations={self.num_relations}, triples={self.num_triples}{nodes})")

    # ------------------------------------------------------------------ constructors / IO
    @classmethod
    def from_triples(cls, triples: Iterable[Sequence[str]],
                     entities: Optional[Sequence[str]] = None,
                     relations: Optional[Sequence[str]] = None,
                     name: str = "kg") -> "UrbanKG":
        """Build from string triples ``(head, relation, tail)``.

        Ids follow first appearance; ``entities`` / ``relations`` (optional) are declared
        first, in their order, so isolated entities can exist and ids can be fixed.
        Duplicated triples are kept as given.
        """
        ents = _unique_names(entities or [], "entities")
        rels = _unique_names(relations or [], "relations")
        e2i = {e: i for i, e in enumerate(ents)}
        r2i = {r: i for i, r in enumerate(rels)}
        ids = []
        for k, trip in enumerate(triples):
            if isinstance(trip, str) or not hasattr(trip, "__len__") or len(trip) != 3:
                raise ValueError(f"'triples'[{k}] must be a (head, relation, tail) triple "
                                 f"(got {trip!r})")
            h, r, t = (str(v) for v in trip)
            for e in (h, t):
                if e not in e2i:
                    e2i[e] = len(ents)
                    ents.append(e)
            if r not in r2i:
                r2i[r] = len(rels)
                rels.append(r)
            ids.append((e2i[h], r2i[r], e2i[t]))
        trip = torch.tensor(ids, dtype=torch.long).reshape(-1, 3)
        return cls(ents, rels, trip, name=name)

    @classmethod
    def from_file(cls, path, sep: str = "\t", name: Optional[str] = None,
                  header: bool = False, comment: Optional[str] = None) -> "UrbanKG":
        """Read a ``head<sep>relation<sep>tail`` text file (UUKG / KSTDiff layout).

        Blank lines are skipped; surrounding whitespace of every field is stripped.

        Args:
            header (bool, optional): the first non-blank line names the columns (e.g.
                ``head<sep>relation<sep>tail``) and is skipped; without it such a line is
                read as a triple. (default: ``False``)
            comment (str, optional): lines whose first non-blank characters are this
                prefix (e.g. ``"#"``) are skipped. (default: ``None``: every line is data)

        Raises:
            FileNotFoundError: naming the file and its folder.
            ValueError: a line without exactly three non-empty fields (with its number).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"knowledge-graph file {path.name!r} not found in folder "
                                    f"{str(path.parent.resolve())!r}")
        if comment is not None and (not isinstance(comment, str) or not comment.strip()):
            raise ValueError(f"'comment' must be a non-blank prefix such as '#' "
                             f"(got {comment!r})")
        triples = []
        skip_header = bool(header)
        # utf-8-sig: a byte-order mark (Excel, Notepad) became part of the first name
        with open(path, "r", encoding="utf-8-sig") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                if comment is not None and line.lstrip().startswith(comment.strip()):
                    continue
                if skip_header:
                    skip_header = False
                    continue
                parts = [p.strip() for p in line.rstrip("\r\n").split(sep)]
                if len(parts) != 3 or not all(parts):
                    raise ValueError(f"{path}:{lineno}: expected 'head{sep!r}relation"
                                     f"{sep!r}tail' with 3 non-empty fields "
                                     f"(got {line.rstrip()!r})")
                triples.append(parts)
        return cls.from_triples(triples, name=name or path.stem)

    def to_file(self, path, sep: str = "\t") -> None:
        """Write the triples as ``head<sep>relation<sep>tail`` lines (readable by
        :meth:`from_file`; isolated entities are not written)."""
        for names, what in ((self.entities, "entity"), (self.relations, "relation")):
            for n in names:                 # each name must read back as itself
                if sep in n or "\n" in n or "\r" in n or n != n.strip() or not n:
                    raise ValueError(f"{what} name {n!r} would not read back as itself: it "
                                     f"is empty, has surrounding whitespace, or contains "
                                     f"the separator or a line break")
        with open(path, "w", encoding="utf-8") as f:
            for h, r, t in self.triples.tolist():
                f.write(f"{self.entities[h]}{sep}{self.relations[r]}{sep}"
                        f"{self.entities[t]}\n")


# ---------------------------------------------------------------------- NYC (KSTDiff)
@dataclass
class UrbanRegions:
    """Per-region information that comes with an urban KG (KSTDiff's ``region2info.json``).

    Attributes:
        ids: the ``R`` region ids (entity names in the KG), in file order.
        lon, lat: ``[R]`` region centres (degrees, ``float64``).
        n_pois: ``[R]`` number of POIs.
        pop: ``[R]`` population.
        features: ``[R, F]`` the region feature vector (``F = 6`` for NYC).
        entity: ``[R]`` KG entity id of each region.
        train, test: region ids of the split (``train_regs.json`` / ``test_regs.json``).
        train_index, test_index: positions of ``train`` / ``test`` in ``ids``.
        attrs: other numeric per-region fields (e.g. ``edu``, ``income``), ``[R]`` each.
    """

    ids: List[str]
    lon: Tensor
    lat: Tensor
    n_pois: Tensor
    pop: Tensor
    features: Tensor
    entity: Tensor
    train: List[str]
    test: List[str]
    train_index: Tensor
    test_index: Tensor
    attrs: Dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (f"UrbanRegions(regions={len(self.ids)}, train={len(self.train)}, "
                f"test={len(self.test)}, features={tuple(self.features.shape)})")


def _need(root: Path, fname: str) -> Path:
    p = root / fname
    if not p.is_file():
        raise FileNotFoundError(f"file {fname!r} not found in folder {str(root.resolve())!r} "
                                f"(expected the KSTDiff urban-KG layout: kg.txt, "
                                f"region2info.json, train_regs.json, test_regs.json)")
    return p


def read_nyc_urban_kg(root) -> Tuple[UrbanKG, UrbanRegions]:
    """Read the KSTDiff New York urban KG (census tracts, POIs, categories).

    Files in ``root``: ``kg.txt`` (``head<TAB>relation<TAB>tail``; relations ``NearBy``,
    ``BorderBy``, ``SimilarFunc`` between regions, ``LocateAt`` POI -> region, ``Cate1Of``
    POI -> category), ``region2info.json`` (per region ``center`` = ``[lon, lat]``,
    ``n_pois``, ``pop``, ``feature`` and further numeric fields), ``train_regs.json`` and
    ``test_regs.json`` (lists of region ids).

    The regions become the KG's spatio-temporal nodes: ``kg.node2entity`` is set to the
    regions in ``region2info.json`` order.

    Returns:
        ``(kg, regions)``: the :class:`UrbanKG` and an :class:`UrbanRegions`.

    Raises:
        FileNotFoundError: a file is missing (named with the folder).
        ValueError: a region of ``region2info.json`` or of the split is not a KG entity,
            or a split region is not in ``region2info.json``.
    """
    root = Path(root)
    kg = UrbanKG.from_file(_need(root, "kg.txt"), name="nyc_urban_kg")
    with open(_need(root, "region2info.json"), encoding="utf-8") as f:
        info = json.load(f)
    splits = {}
    for part in ("train", "test"):
        with open(_need(root, f"{part}_regs.json"), encoding="utf-8") as f:
            splits[part] = [str(r) for r in json.load(f)]
    ids = [str(k) for k in info]
    absent = [r for r in ids if r not in kg.entity2id]
    if absent:
        raise ValueError(f"{len(absent)} region(s) of region2info.json are not KG entities "
                         f"(e.g. {absent[:5]})")
    pos = {r: i for i, r in enumerate(ids)}
    for part, regs in splits.items():
        bad = [r for r in regs if r not in pos]
        if bad:
            raise ValueError(f"{part}_regs.json lists {len(bad)} region(s) absent from "
                             f"region2info.json (e.g. {bad[:5]})")
    recs = [info[k] for k in info]
    for k, rec in zip(ids, recs):
        for key in ("center", "n_pois", "pop", "feature"):
            if key not in rec:
                raise ValueError(f"region {k!r} of region2info.json has no {key!r} field")
    centre = torch.tensor([rec["center"] for rec in recs], dtype=torch.float64)
    attrs = {}
    extra_keys = [k for k, v in recs[0].items()
                  if k not in ("center", "n_pois", "pop", "feature")
                  and isinstance(v, (int, float))]
    for key in extra_keys:
        if all(isinstance(rec.get(key), (int, float)) for rec in recs):
            attrs[key] = torch.tensor([float(rec[key]) for rec in recs], dtype=torch.float64)
    regions = UrbanRegions(
        ids=ids, lon=centre[:, 0].contiguous(), lat=centre[:, 1].contiguous(),
        n_pois=torch.tensor([int(rec["n_pois"]) for rec in recs], dtype=torch.long),
        pop=torch.tensor([float(rec["pop"]) for rec in recs], dtype=torch.float64),
        features=torch.tensor([rec["feature"] for rec in recs], dtype=torch.float32),
        entity=kg.entity_ids(ids),
        train=splits["train"], test=splits["test"],
        train_index=torch.tensor([pos[r] for r in splits["train"]], dtype=torch.long),
        test_index=torch.tensor([pos[r] for r in splits["test"]], dtype=torch.long),
        attrs=attrs)
    kg.set_node_entities(ids)
    return kg, regions


# ---------------------------------------------------------------------- builders
def _haversine_km(lat, lon) -> np.ndarray:
    """``[N, N]`` great-circle distances (km) as numpy, see :func:`haversine_distances`."""
    from .sensor import haversine_distances
    return haversine_distances(lat, lon).numpy()


def _fmt_km(v: float, exact: bool = False) -> str:
    """Short form (``1``, ``2.5``), or the exact one (for edges that six digits would
    merge, ``0.1`` and ``0.1000001``)."""
    return repr(float(v)) if exact else f"{v:g}"


def _bin_edges(bins) -> List[float]:
    """``bins`` as a list of finite, positive, strictly increasing floats (or ValueError)."""
    msg = (f"'bins' must be a sequence of finite, positive, increasing upper edges in km "
           f"(got {bins!r})")
    if isinstance(bins, (Tensor, np.ndarray)):
        bins = bins.tolist()
    if isinstance(bins, (str, bytes)) or not isinstance(bins, Iterable):
        raise ValueError(msg)
    bins = list(bins)
    if not bins or any(isinstance(b, bool) or not isinstance(b, numbers.Real) for b in bins):
        raise ValueError(msg)
    edges = [float(b) for b in bins]
    if not all(math.isfinite(b) for b in edges) or edges[0] <= 0 \
            or any(b >= c for b, c in zip(edges, edges[1:])):
        raise ValueError(msg)
    return edges


def kg_from_sensor_graph(lat, lon, adj=None, bins: Sequence[float] = (1.0, 2.0, 5.0),
                         sensor_ids: Optional[Sequence[str]] = None,
                         adj_threshold: float = 0.0, name: str = "sensor_kg") -> UrbanKG:
    r"""A KG for a sensor network without semantics, from distances (and roads) alone.

    Every sensor is an entity (``sensor_ids`` or ``"sensor_<i>"``). For bin edges
    :math:`0 = b_0 < b_1 < \dots < b_K` (``bins`` gives :math:`b_1..b_K` in km), every
    ordered pair :math:`i \ne j` whose great-circle distance lies in
    :math:`[b_{k-1}, b_k)` gets the triple ``(i, "near_<b_{k-1}>_<b_k>km", j)`` (both
    directions, e.g. ``near_0_1km``, ``near_1_2km``, ``near_2_5km``); pairs farther than
    :math:`b_K` are not linked. With an adjacency, ``(i, "road_adjacent", j)`` is added for
    every ``adj[i, j] > adj_threshold``, ``i != j`` (``adj[i, j]`` = road link from ``i``
    to ``j``, DCRNN's convention). Relations are declared even when no pair falls in them,
    so relation ids do not depend on the data. ``node2entity`` is set to the sensors.

    Args:
        lat, lon: ``[N]`` sensor coordinates in degrees.
        adj (optional): ``[N, N]`` road adjacency / weights.
        bins (sequence of float, optional): upper bin edges in km: a non-empty sequence
            (list, tuple, 1-D tensor or array) of finite, positive, strictly increasing
            numbers; anything else (NaN, inf, a str, a scalar) raises ``ValueError``.
            (default: ``(1.0, 2.0, 5.0)``)
        sensor_ids (sequence of str, optional): entity names. (default: ``sensor_<i>``)
        adj_threshold (float, optional): weights above it are road links; must be a
            finite number (NaN would silently drop every road). (default: ``0``)
        name (str, optional): KG name.

    Shapes:
        ``lat``, ``lon``: ``[N]``; ``adj``: ``[N, N]``.
    """
    lat = np.asarray(torch.as_tensor(lat, dtype=torch.float64).reshape(-1))
    lon = np.asarray(torch.as_tensor(lon, dtype=torch.float64).reshape(-1))
    n = lat.shape[0]
    if lon.shape[0] != n:
        raise ValueError(f"'lon' must have shape [N={n}] like 'lat' (got {lon.shape[0]} values)")
    if not (np.isfinite(lat).all() and np.isfinite(lon).all()):
        raise ValueError("'lat' and 'lon' must be finite")
    if np.abs(lat).max(initial=0) > 90 or np.abs(lon).max(initial=0) > 180:
        raise ValueError("'lat' must lie in [-90, 90] and 'lon' in [-180, 180] (degrees)")
    edges = _bin_edges(bins)
    if isinstance(adj_threshold, bool) or not isinstance(adj_threshold, numbers.Real) \
            or not math.isfinite(adj_threshold):
        raise ValueError(f"'adj_threshold' must be a finite number (got {adj_threshold!r})")
    adj_threshold = float(adj_threshold)
    names = ([f"sensor_{i}" for i in range(n)] if sensor_ids is None
             else _unique_names(sensor_ids, "sensor_ids"))
    if len(names) != n:
        raise ValueError(f"'sensor_ids' must have N={n} entries (got {len(names)})")
    lows = [0.0] + edges[:-1]
    # exact edges only where the short names of two different edges coincide
    exact = len({_fmt_km(e) for e in edges}) < len(edges)
    relations = [f"near_{_fmt_km(lo, exact)}_{_fmt_km(hi, exact)}km"
                 for lo, hi in zip(lows, edges)]
    dist = _haversine_km(lat, lon)
    k = np.searchsorted(np.asarray(edges), dist, side="right")  # bin index, K = too far
    off = ~np.eye(n, dtype=bool)
    hi_, ti_ = np.nonzero(off & (k < len(edges)))
    parts = [np.stack([hi_, k[hi_, ti_], ti_], 1)]
    if adj is not None:
        a = np.asarray(torch.as_tensor(adj, dtype=torch.float64))
        if a.shape != (n, n):
            raise ValueError(f"'adj' must have shape [N, N] = [{n}, {n}] (got {a.shape})")
        relations.append("road_adjacent")
        ah, at = np.nonzero(off & (np.nan_to_num(a, nan=0.0) > adj_threshold))
        parts.append(np.stack([ah, np.full_like(ah, len(relations) - 1), at], 1))
    trip = torch.from_numpy(np.concatenate(parts, 0).astype(np.int64))
    kg = UrbanKG(names, relations, trip, name=name)
    kg.set_node_entities(torch.arange(n))
    return kg


def _grid_parts(height: int, width: int, regions=None, pois=None, poi_categories=None,
                connectivity: int = 4):
    """Entity names and string triples of a grid KG (shared with the synthetic city)."""
    height, width = check_int("height", height, 1), check_int("width", width, 1)
    if connectivity not in (4, 8):
        raise ValueError(f"'connectivity' must be 4 or 8 (got {connectivity})")
    cells = [f"cell_{i}_{j}" for i in range(height) for j in range(width)]
    entities = list(cells)
    triples: List[Tuple[str, str, str]] = []
    steps = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    if connectivity == 8:
        steps += [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    for i in range(height):
        for j in range(width):
            for di, dj in steps:
                a, b = i + di, j + dj
                if 0 <= a < height and 0 <= b < width:
                    triples.append((cells[i * width + j], "adjacent_to", cells[a * width + b]))
    if regions is not None:
        reg = np.asarray(torch.as_tensor(regions))
        if reg.shape != (height, width):
            raise ValueError(f"'regions' must have shape [H, W] = [{height}, {width}] "
                             f"(got {tuple(reg.shape)})")
        labels = sorted({int(v) for v in reg.reshape(-1)}) if reg.dtype.kind in "iub" else None
        if labels is None:
            raise ValueError(f"'regions' must hold integer region labels (got {reg.dtype})")
        entities += [f"region_{r}" for r in labels]
        for idx, r in enumerate(reg.reshape(-1).tolist()):
            triples.append((cells[idx], "in_region", f"region_{int(r)}"))
    if pois is not None:
        loc = np.asarray(torch.as_tensor(pois))
        if loc.size == 0 and loc.ndim <= 2:         # [] is float32 to torch: no POIs
            loc = loc.astype(np.int64).reshape(0, *loc.shape[1:])
        if loc.dtype.kind not in "iu":
            raise ValueError(f"'pois' must be integer cell indices [P] or (row, col) [P, 2] "
                             f"(got dtype {loc.dtype})")
        if loc.ndim == 2 and loc.shape[1] == 2:
            if (loc[:, 0] < 0).any() or (loc[:, 0] >= height).any() or \
                    (loc[:, 1] < 0).any() or (loc[:, 1] >= width).any():
                raise ValueError(f"'pois' (row, col) must lie in the {height} x {width} grid")
            loc = loc[:, 0] * width + loc[:, 1]
        elif loc.ndim != 1:
            raise ValueError(f"'pois' must have shape [P] or [P, 2] (got {tuple(loc.shape)})")
        if ((loc < 0) | (loc >= height * width)).any():
            raise ValueError(f"'pois' cell indices must lie in [0, {height * width})")
        poi_names = [f"poi_{p}" for p in range(loc.shape[0])]
        entities += poi_names
        for p, c in enumerate(loc.tolist()):
            triples.append((poi_names[p], "located_in", cells[c]))
        if poi_categories is not None:
            cats = list(poi_categories.tolist() if isinstance(poi_categories, (Tensor, np.ndarray))
                        else poi_categories)
            if len(cats) != len(poi_names):
                raise ValueError(f"'poi_categories' must have P={len(poi_names)} entries "
                                 f"(got {len(cats)})")
            try:
                cat_names = [c if isinstance(c, str) else f"category_{operator.index(c)}"
                             for c in cats]
            except TypeError:
                raise ValueError(f"'poi_categories' must be integer ids or names (got "
                                 f"{cats[:5]!r}); a float id would be truncated") from None
            for c in dict.fromkeys(cat_names):
                entities.append(c)
            for p, c in enumerate(cat_names):
                triples.append((poi_names[p], "has_category", c))
    elif poi_categories is not None:
        raise ValueError("'poi_categories' needs 'pois' (the POI locations)")
    return cells, entities, triples


def kg_from_grid(height: int, width: int, regions=None, pois=None, poi_categories=None,
                 connectivity: int = 4, name: str = "grid_kg") -> UrbanKG:
    r"""A KG for a city grid of ``height x width`` cells (row-major nodes).

    Entities and triples (all directed; adjacency is listed in both directions):

    * cells ``cell_<i>_<j>``: ``(cell, "adjacent_to", cell')`` for the 4- (or 8-)
      neighbourhood;
    * with ``regions`` (``[H, W]`` integer labels): entities ``region_<r>`` and
      ``(cell, "in_region", region)``;
    * with ``pois`` (cell index ``[P]`` row-major, or ``(row, col)`` ``[P, 2]``): entities
      ``poi_<p>`` and ``(poi, "located_in", cell)``;
    * with ``poi_categories`` (``[P]`` integer ids -> ``category_<c>``, or names):
      category entities and ``(poi, "has_category", category)``.

    A relation is declared whenever its argument is given, even when it yields no triple
    (``pois=[]``: no POI, but ``"located_in"`` exists), so relation ids do not depend on
    the data. ``node2entity`` is set to the cells, so node ``i*W + j`` is ``cell_<i>_<j>``.

    Args:
        height, width (int): grid size, positive integers (Python or NumPy); a float such
            as ``2.0`` raises ``ValueError``.
        regions (optional): ``[H, W]`` integer region label of every cell.
        pois (optional): ``[P]`` or ``[P, 2]`` integer POI locations (``P = 0`` allowed).
        poi_categories (optional): ``[P]`` category of each POI (integer ids or names;
            float ids raise ``ValueError``).
        connectivity (int, optional): 4 or 8. (default: ``4``)
        name (str, optional): KG name.
    """
    cells, entities, triples = _grid_parts(height, width, regions, pois, poi_categories,
                                           connectivity)
    relations = ["adjacent_to"] + (["in_region"] if regions is not None else []) \
        + (["located_in"] if pois is not None else []) \
        + (["has_category"] if poi_categories is not None else [])
    kg = UrbanKG.from_triples(triples, entities=entities, relations=relations, name=name)
    kg.set_node_entities(torch.arange(len(cells)))
    return kg
