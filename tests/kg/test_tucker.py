import sys

import pytest
import torch

pytest.importorskip("pykeen")  # the `test` extra installs it; a plain checkout skips

from torch_stgen.data import UrbanKG  # noqa: E402
from torch_stgen.kg import (TuckerEmbeddings, default_cache_dir,  # noqa: E402
                            link_prediction_mrr, pretrain_tucker)
from torch_stgen.kg.tucker import _triples_factory  # noqa: E402


def clustered_kg(groups=5, size=8, edges_per_group=30, seed=0):
    """Entities in groups; 'near' links members of a group, 'in' links a member to its hub."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for k in range(groups):
        members = torch.arange(size) + k * size
        pairs = members[torch.randint(0, size, (edges_per_group, 2), generator=g)]
        rows += [(int(a), 0, int(b)) for a, b in pairs if a != b]
        rows += [(int(m), 1, groups * size + k) for m in members]
    triples = torch.unique(torch.tensor(rows), dim=0)
    n = groups * size + groups
    entities = [f"poi{i}" for i in range(groups * size)] + [f"hub{k}" for k in range(groups)]
    return UrbanKG(entities, ["near", "in"], triples), n


FAST = dict(dim=8, epochs=2, batch_size=64, num_negs=2, progress=False)


def test_missing_pykeen_names_the_kg_extra(monkeypatch):
    kg, _ = clustered_kg()
    monkeypatch.setitem(sys.modules, "pykeen", None)  # makes `import pykeen` fail
    with pytest.raises(ImportError, match=r"torch-stgen\[kg\]"):
        pretrain_tucker(kg, cache_dir=False, **FAST)


def test_ids_are_aligned_with_the_kg():
    kg, n = clustered_kg()
    # PyKEEN gets the KG's own ids: same mapped triples, same name -> id maps
    tf = _triples_factory(kg.triples, kg.num_entities, kg.num_relations, kg.entities,
                          kg.relations)
    assert torch.equal(tf.mapped_triples, kg.triples)
    assert tf.entity_to_id == {e: i for i, e in enumerate(kg.entities)}
    assert tf.relation_to_id == {"near": 0, "in": 1}
    emb = pretrain_tucker(kg, cache_dir=False, **FAST)
    assert isinstance(emb, TuckerEmbeddings)
    assert emb.entity.shape == (n, 8) and emb.relation.shape == (2, 8)
    assert emb.entity.dtype == torch.float32 and len(emb.losses) == 2
    assert emb.settings["fingerprint"] == kg.fingerprint()
    model = emb.to_pykeen_model()
    ids = torch.tensor([0, 7, n - 1])
    torch.testing.assert_close(model.entity_representations[0](indices=ids), emb.entity[ids])
    torch.testing.assert_close(model.relation_representations[0](indices=torch.tensor([1])),
                               emb.relation[1:])
    # the model scores triple (h, r, t) with entity rows h and t of `emb.entity`
    h, r, t = kg.triples[0].tolist()
    full = model.score_t(torch.tensor([[h, r]]))[0, t]
    hrt = model.score_hrt(torch.tensor([[h, r, t]]))[0, 0]
    torch.testing.assert_close(full, hrt, atol=1e-5, rtol=1e-5)


def test_real_kg_alignment(nyc_kg_root):
    kg = UrbanKG.from_file(nyc_kg_root / "kg.txt")
    assert (kg.num_triples, kg.num_entities, kg.num_relations) == (67418, 26604, 5)
    tf = _triples_factory(kg.triples, kg.num_entities, kg.num_relations, kg.entities,
                          kg.relations)
    assert torch.equal(tf.mapped_triples, kg.triples)
    assert all(tf.entity_to_id[e] == i for i, e in enumerate(kg.entities))
    assert tf.num_entities == 26604 and tf.num_relations == 5


def test_deterministic_by_seed_and_rng_isolated():
    kg, _ = clustered_kg()
    state = torch.random.get_rng_state()
    a = pretrain_tucker(kg, seed=3, cache_dir=False, **FAST)
    assert torch.equal(torch.random.get_rng_state(), state)  # caller's RNG untouched
    b = pretrain_tucker(kg, seed=3, cache_dir=False, **FAST)
    c = pretrain_tucker(kg, seed=4, cache_dir=False, **FAST)
    assert torch.equal(a.entity, b.entity) and torch.equal(a.relation, b.relation)
    assert a.losses == b.losses
    assert not torch.allclose(a.entity, c.entity)


def test_disk_cache_hit_skips_training(tmp_path, monkeypatch):
    kg, _ = clustered_kg()
    first = pretrain_tucker(kg, cache_dir=tmp_path, **FAST)
    assert not first.from_cache
    assert len(list(tmp_path.glob("tucker-*.pt"))) == 1

    from pykeen.training import SLCWATrainingLoop

    def boom(*args, **kwargs):
        raise AssertionError("trained although the cache holds these embeddings")

    monkeypatch.setattr(SLCWATrainingLoop, "train", boom)
    second = pretrain_tucker(kg, cache_dir=tmp_path, **FAST)
    assert second.from_cache
    assert torch.equal(first.entity, second.entity) and first.losses == second.losses
    # the cached model still scores like the trained one
    q = kg.triples[:4, :2]
    torch.testing.assert_close(first.to_pykeen_model().score_t(q),
                               second.to_pykeen_model().score_t(q))
    # another setting or another KG is another key: it must train (and hit `boom`)
    with pytest.raises(AssertionError, match="trained although"):
        pretrain_tucker(kg, cache_dir=tmp_path, **{**FAST, "epochs": 3})
    kg2, _ = clustered_kg(seed=1)
    assert kg2.fingerprint() != kg.fingerprint()
    with pytest.raises(AssertionError, match="trained although"):
        pretrain_tucker(kg2, cache_dir=tmp_path, **FAST)
    # default location follows $TORCH_STGEN_CACHE
    monkeypatch.setenv("TORCH_STGEN_CACHE", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env" / "tucker"


def test_training_fits_the_kg_and_mrr_matches_pykeen():
    kg, n = clustered_kg(groups=6, size=8, edges_per_group=40)
    settings = dict(dim=16, batch_size=64, num_negs=8, lr=0.1, progress=False,
                    cache_dir=False)
    untrained = pretrain_tucker(kg, epochs=0, **settings)
    trained = pretrain_tucker(kg, epochs=6, **settings)
    assert trained.losses[-1] < 0.6 * trained.losses[0]
    m0 = link_prediction_mrr(untrained, kg.triples, filtered=False, max_triples=None)
    m1 = link_prediction_mrr(trained, kg.triples, filtered=False, max_triples=None)
    assert m1["mrr"] > 1.1 * m0["mrr"] and m1["hits@10"] > m0["hits@10"]
    # filtered ranking on a held-out-style subset; filtering only removes competitors
    test = kg.triples[::7]
    filt = link_prediction_mrr(trained, test, kg.triples, max_triples=None)
    raw = link_prediction_mrr(trained, test, kg.triples, max_triples=None, filtered=False)
    assert raw["mrr"] <= filt["mrr"] and filt["num_triples"] == test.size(0)
    # our closed-form ranking equals PyKEEN's rank-based evaluator (realistic, both sides)
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.models import TuckER
    from pykeen.triples import CoreTriplesFactory
    plain = TuckER(triples_factory=CoreTriplesFactory(kg.triples, n, 2), embedding_dim=16,
                   random_seed=0)  # PyKEEN's own class and scoring, our trained weights
    plain.load_state_dict(trained.model_state)
    res = RankBasedEvaluator().evaluate(plain, test,
                                        additional_filter_triples=[kg.triples],
                                        batch_size=32, use_tqdm=False)
    assert filt["mrr"] == pytest.approx(
        res.get_metric("both.realistic.inverse_harmonic_mean_rank"), abs=1e-6)
    assert filt["hits@10"] == pytest.approx(res.get_metric("both.realistic.hits_at_10"),
                                            abs=1e-6)
    sub = link_prediction_mrr(trained, test, kg.triples, max_triples=10)
    assert sub["num_triples"] == 10


def test_fast_one_to_n_scoring_equals_pykeen_also_in_training_mode():
    from pykeen.models import TuckER
    kg, _ = clustered_kg()
    model = pretrain_tucker(kg, cache_dir=False, **FAST).to_pykeen_model()
    assert isinstance(model, TuckER)
    q = kg.triples[:16, :2]
    torch.testing.assert_close(model.score_t(q), TuckER.score_t(model, q), atol=1e-5,
                               rtol=1e-5)
    model.train()  # dropout on: same masks from the same seed, batch norm on the batch
    torch.manual_seed(7)
    fast = model.score_t(q)
    torch.manual_seed(7)
    ref = TuckER.score_t(model, q)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


def test_bad_inputs():
    kg, n = clustered_kg()
    with pytest.raises(ValueError, match=r"'kg' must have shape \[M, 3\]"):
        pretrain_tucker(kg.triples[:, :2], num_entities=n, num_relations=2, **FAST)
    with pytest.raises(ValueError, match="'num_entities' and 'num_relations' are required"):
        pretrain_tucker(kg.triples, **FAST)
    with pytest.raises(ValueError, match="entity id"):
        pretrain_tucker(kg.triples, num_entities=3, num_relations=2, **FAST)
    with pytest.raises(ValueError, match="'loop'"):
        pretrain_tucker(kg, loop="pipeline", cache_dir=False, **FAST)
    with pytest.raises(ValueError, match="'dim'"):
        pretrain_tucker(kg, cache_dir=False, **{**FAST, "dim": 0})
    with pytest.raises(TypeError, match="'kg' must be an UrbanKG"):
        pretrain_tucker([(0, 0, 1)], **FAST)
    emb = pretrain_tucker(kg, cache_dir=False, **{**FAST, "epochs": 0})
    with pytest.raises(ValueError, match=r"'test_triples' must have shape \[M, 3\]"):
        link_prediction_mrr(emb, kg.triples[:, :2])
    with pytest.raises(TypeError, match="'model' must be TuckerEmbeddings"):
        link_prediction_mrr(emb.entity, kg.triples)
