"""GeometryMoEConv on a tiny urban knowledge graph, composed with plain PyTorch / PyG.

A toy city: 36 regions on a 6 x 6 grid (``NearBy``), 432 POIs (``LocateAt`` region) of 4
categories (``Cate1Of`` POI). Target: each region's share of category-0 POIs, a quantity
that only the KG's structure carries; 9 regions are held out (no loss on them) and
scored at the end, as KGDiff's unseen nodes. Frozen entity embeddings (random, or
pre-trained with TuckER via ``--tucker``) go through two ``GeometryMoEConv`` layers (KGDiff
eqs. 13-15) and a ``Linear`` head. The script trains both variants (``'mobius_add'``, the
default, and ``'paper'``, the literal equations whose curved experts reduce to the
Euclidean one) and prints the fit and the learnt curvatures.

    python examples/layers_geometry_moe.py [--steps 200] [--tucker] [--threads 1]
"""
import argparse

import torch
from torch import nn

from torch_stgen.data import UrbanKG
from torch_stgen.nn import GeometryMoEConv


def toy_city(side: int = 6, pois_per_region: int = 12, seed: int = 0):
    """A ``side x side`` grid of regions; region ``i*side + j`` has entity id i*side + j."""
    g = torch.Generator().manual_seed(seed)
    n_reg = side * side
    names = [f"r{i}_{j}" for i in range(side) for j in range(side)]
    triples = []
    for i in range(side):
        for j in range(side):
            for di, dj in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                if 0 <= i + di < side and 0 <= j + dj < side:
                    triples.append((names[i * side + j], "NearBy",
                                    names[(i + di) * side + j + dj]))
    n_poi = n_reg * pois_per_region
    regions = torch.randint(0, n_reg, (n_poi,), generator=g)
    # category 0 becomes more frequent towards the upper-left corner of the city
    row, col = regions // side, regions % side
    p0 = 0.6 - 0.5 * (row + col).float() / (2 * side - 2)
    cats = torch.where(torch.rand(n_poi, generator=g) < p0, 0,
                       torch.randint(1, 4, (n_poi,), generator=g))
    for p in range(n_poi):
        triples.append((f"poi{p}", "LocateAt", names[int(regions[p])]))
        triples.append((f"cat{int(cats[p])}", "Cate1Of", f"poi{p}"))
    kg = UrbanKG.from_triples(triples, entities=names)
    share = torch.zeros(n_reg)
    for r in range(n_reg):
        here = regions == r
        share[r] = (cats[here] == 0).float().mean() if here.any() else 0.0
    return kg, share


class RegionModel(nn.Module):
    def __init__(self, num_entities, num_relations, dim, variant, init=None):
        super().__init__()
        # frozen entity features (random, or TuckER): with 16 regions, free per-entity
        # embeddings would simply memorise the training regions
        self.emb = nn.Embedding(num_entities, dim)
        nn.init.normal_(self.emb.weight, std=0.5)
        if init is not None:
            self.emb.weight.data.copy_(init)
        self.emb.weight.requires_grad_(False)
        self.conv1 = GeometryMoEConv(dim, num_relations=num_relations, variant=variant)
        self.conv2 = GeometryMoEConv(dim, num_relations=num_relations, variant=variant)
        self.head = nn.Linear(dim, 1)

    def forward(self, edge_index, edge_type, regions):
        x = self.conv1(self.emb.weight, edge_index, edge_type)
        x = self.conv2(x, edge_index, edge_type)
        return self.head(x[regions]).squeeze(-1)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--tucker", action="store_true",
                   help="initialise the entity embeddings with TuckER (needs pykeen)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    kg, share = toy_city()
    print(kg)
    init = None
    if args.tucker:
        from torch_stgen.kg import pretrain_tucker
        init = pretrain_tucker(kg, dim=args.dim, epochs=20, batch_size=128, lr=0.05,
                               cache_dir=False, progress=False).entity
    # messages flow tail -> head; with inverse relations POIs also talk to their regions
    kg2 = kg.add_inverse()
    regions = torch.arange(share.numel())  # region entities were declared first
    test = torch.randperm(share.numel(), generator=torch.Generator().manual_seed(1))[:9]
    train = regions[~torch.isin(regions, test)]  # unseen regions: no loss, KG links only
    for variant in ("mobius_add", "paper"):
        torch.manual_seed(0)
        model = RegionModel(kg2.num_entities, kg2.num_relations, args.dim, variant, init)
        opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=0.01,
                               weight_decay=1e-3)
        for step in range(args.steps + 1):
            opt.zero_grad()
            pred = model(kg2.edge_index, kg2.edge_type, regions)
            loss = (pred[train] - share[train]).square().mean()
            loss.backward()
            opt.step()
            if step % max(args.steps // 4, 1) == 0:
                test_mse = (pred[test] - share[test]).square().mean()
                print(f"[{variant:10s}] step {step:4d}  train mse {loss.item():.5f}  "
                      f"unseen-region mse {test_mse.item():.5f}")
        k = {name: round(float(v.detach()), 3) for name, v in model.conv1.curvatures.items()}
        print(f"[{variant:10s}] {model.conv1}\n             learnt curvatures conv1: {k}")
    baseline = (share[test] - share[train].mean()).square().mean()
    print(f"unseen-region mse of predicting the training mean: {baseline.item():.5f}")


if __name__ == "__main__":
    main()
