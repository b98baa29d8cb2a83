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


def test_cpu_training_leaves_cuda_generators_alone(monkeypatch):
    """pretrain_tucker seeded with torch.manual_seed, which also reseeds every CUDA device
    (lazily, on a machine whose CUDA is not yet initialised), while fork_rng restored only
    the CPU generator: a CPU pre-training changed the caller's later CUDA draws."""
    kg, _ = clustered_kg()
    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda s: calls.append(("all", s)))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda s: calls.append(("one", s)))
    a = pretrain_tucker(kg, seed=3, cache_dir=False, **FAST)
    assert calls == []
    monkeypatch.undo()
    b = pretrain_tucker(kg, seed=3, cache_dir=False, **FAST)
    assert torch.equal(a.entity, b.entity)


def test_rebuilding_the_pykeen_model_leaves_the_callers_rng_alone():
    """to_pykeen_model() built PyKEEN's TuckER with random_seed=<training seed>, which
    reseeded the caller's python, numpy and torch generators on every call."""
    import random

    import numpy as np
    kg, _ = clustered_kg()
    emb = pretrain_tucker(kg, seed=3, cache_dir=False, **FAST)
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    emb.to_pykeen_model()
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1]) and got[2] == expected[2]


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


def test_link_prediction_names_bad_relation_ids_and_subset_size():
    kg, _ = clustered_kg()
    emb = pretrain_tucker(kg, cache_dir=False, **{**FAST, "epochs": 0})
    test = kg.triples[:5]
    # a relation id past num_relations: an IndexError from the scorer before
    with pytest.raises(ValueError, match=r"'test_triples' holds relation id 5 >= "
                                         r"num_relations=2"):
        link_prediction_mrr(emb, torch.tensor([[0, 5, 1]]))
    # in the filter, key h * R + r collided with another query's key: silently wrong
    with pytest.raises(ValueError, match=r"'known_triples' holds relation id 2 >= "
                                         r"num_relations=2"):
        link_prediction_mrr(emb, test, torch.tensor([[0, 2, 3]]))
    # 0: a raw torch.cat error; -1: test[:-1], one triple silently dropped
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="'max_triples' must be a positive integer or "
                                             "None"):
            link_prediction_mrr(emb, test, max_triples=bad)
    with pytest.raises(ValueError, match="'ks' must be positive integers"):
        link_prediction_mrr(emb, test, ks=(0,))
    assert link_prediction_mrr(emb, test, max_triples=5)["num_triples"] == 5


def test_cache_dir_is_checked_before_training(tmp_path, monkeypatch):
    """A cache_dir that is a file failed with a raw FileExistsError *after* training,
    losing the embeddings; it is now refused before any training."""
    from pykeen.training import SLCWATrainingLoop
    kg, _ = clustered_kg()

    def boom(*args, **kwargs):
        raise AssertionError("trained before checking cache_dir")

    monkeypatch.setattr(SLCWATrainingLoop, "train", boom)
    a_file = tmp_path / "afile"
    a_file.write_text("")
    for bad in (a_file, a_file / "sub"):
        with pytest.raises(ValueError, match="'cache_dir'.*not a (writable )?directory"):
            pretrain_tucker(kg, cache_dir=bad, **FAST)
    monkeypatch.undo()
    # a cache folder that does not exist yet is created
    emb = pretrain_tucker(kg, cache_dir=tmp_path / "new" / "cache", **FAST)
    assert not emb.from_cache and len(list((tmp_path / "new" / "cache").glob("*.pt"))) == 1


def test_failed_cache_write_keeps_the_trained_embeddings(tmp_path, monkeypatch, caplog):
    import torch_stgen.kg.tucker as tucker
    kg, _ = clustered_kg()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tucker.torch, "save", full_disk)
    with caplog.at_level("WARNING", logger="torch_stgen.kg.tucker"):
        emb = pretrain_tucker(kg, cache_dir=tmp_path, **FAST)
    assert emb.entity.shape[1] == 8 and len(emb.losses) == 2
    assert "could not write the TuckER cache" in caplog.text
    assert list(tmp_path.iterdir()) == []                   # no half-written file left


def test_seed_and_tiny_kgs_get_named_errors():
    kg, n = clustered_kg()
    for bad in (-1, 2 ** 32, 1.5, True):
        with pytest.raises(ValueError, match=r"'seed' must be an integer in \[0, 2\*\*32\)"):
            pretrain_tucker(kg, seed=bad, cache_dir=False, **FAST)
    emb = pretrain_tucker(kg, seed=2 ** 32 - 1, cache_dir=False, **{**FAST, "epochs": 0})
    assert emb.settings["seed"] == 2 ** 32 - 1
    with pytest.raises(ValueError, match="'relation_dim'"):
        pretrain_tucker(kg, relation_dim=True, cache_dir=False, **FAST)
    # one triple: PyKEEN's "batch_size=1 ... BatchNorm" although batch_size was 8
    one = UrbanKG(["a", "b"], ["r"], torch.tensor([[0, 0, 1]]))
    with pytest.raises(ValueError, match=r"'kg' has 1 triple.*batch norm.*at least 2"):
        pretrain_tucker(one, cache_dir=False, **{**FAST, "batch_size": 8})
    with pytest.raises(ValueError, match=r"'batch_size' must be >= 2 to train"):
        pretrain_tucker(kg, cache_dir=False, **{**FAST, "batch_size": 1})
    # one entity: "random_ expects 'from' < 'to'" from the negative sampler
    with pytest.raises(ValueError, match=r"1 entity.*at least 2 entities"):
        pretrain_tucker(torch.tensor([[0, 0, 0]] * 4), num_entities=1, num_relations=1,
                        cache_dir=False, **FAST)
    # no entity at all (PyKEEN's "max() arg is an empty sequence")
    with pytest.raises(ValueError, match="'kg' has no entities"):
        pretrain_tucker(UrbanKG([], [], torch.zeros(0, 3, dtype=torch.long)),
                        cache_dir=False, **{**FAST, "epochs": 0})
    # the untrained (epochs=0) model of a one-triple KG stays available
    assert pretrain_tucker(one, cache_dir=False, **{**FAST, "epochs": 0}).losses == []


def test_cache_key_depends_on_the_device_type_only_off_the_cpu(tmp_path):
    """Dropout masks come from the device's generator (CPU: Mersenne Twister, CUDA:
    Philox) and reductions differ, so CUDA-trained embeddings are not the CPU ones: a
    CUDA run gets its own cache entry. CPU keys are unchanged (old caches stay valid)."""
    from torch_stgen.kg.tucker import _cache_key, _device_settings
    assert _device_settings(torch.device("cpu")) == {}
    cuda = _device_settings(torch.device("cuda", 1))
    assert cuda["device"] == "cuda" and set(cuda) == {"device", "tf32"}
    assert _device_settings(torch.device("cuda", 0)) == cuda   # the index does not matter
    s = dict(dim=8, relation_dim=8, epochs=2, seed=0, batch_size=64, num_negs=2, lr=0.02,
             loop="slcwa", pykeen_version="1")
    assert _cache_key("fp", s) != _cache_key("fp", {**s, **cuda})
    # the key of these settings as the code before the device entry computed it: CPU
    # caches written then are still found
    assert _cache_key("fp", s) == "0571cfb856dfd5509ca0ae188e7b7d89"
    kg, _ = clustered_kg()
    emb = pretrain_tucker(kg, cache_dir=tmp_path, **FAST)
    assert "device" not in emb.settings
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'device' cuda: CUDA is not available"):
            pretrain_tucker(kg, cache_dir=tmp_path, device="cuda", **FAST)
    with pytest.raises(ValueError, match="'device' must be"):
        pretrain_tucker(kg, cache_dir=tmp_path, device="gpu0", **FAST)


def test_lcwa_batch_is_capped_at_its_head_relation_pairs():
    """LCWA trains on distinct (head, relation) pairs; a batch capped at the triple count
    alone left PyKEEN with no full batch (NoTrainingBatchError) when pairs repeat."""
    t = torch.tensor([[0, 0, 1], [0, 0, 2], [1, 0, 2]])
    emb = pretrain_tucker(t, num_entities=3, num_relations=1, loop="lcwa", cache_dir=False,
                          **{**FAST, "batch_size": 8})
    assert len(emb.losses) == 2
    with pytest.raises(ValueError, match=r"single \(head, relation\) pair.*loop='slcwa'"):
        pretrain_tucker(t[:2], num_entities=3, num_relations=1, loop="lcwa",
                        cache_dir=False, **FAST)


def test_device_none_is_the_cpu_and_an_unusable_default_cache_only_warns(
        tmp_path, monkeypatch, caplog):
    kg, _ = clustered_kg()
    a = pretrain_tucker(kg, cache_dir=False, device=None, **FAST)
    b = pretrain_tucker(kg, cache_dir=False, device="cpu", **FAST)
    assert torch.equal(a.entity, b.entity)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TORCH_STGEN_CACHE", str(blocker))     # default folder unusable
    with caplog.at_level("WARNING"):
        c = pretrain_tucker(kg, **FAST)
    assert torch.equal(c.entity, b.entity) and not c.from_cache
    assert "training without a cache" in caplog.text
    with pytest.raises(ValueError, match="'cache_dir'"):         # a folder the caller named
        pretrain_tucker(kg, cache_dir=blocker / "sub", **FAST)


def test_a_call_with_callbacks_bypasses_the_cache(tmp_path):
    """A clipping callback's embeddings were cached under the plain settings' key: a later
    plain call got them (and a call with a callback got a plain hit, never clipping)."""
    from pykeen.training.callbacks import GradientAbsClippingTrainingCallback
    g = torch.Generator().manual_seed(0)
    tr = torch.stack([torch.randint(0, 20, (120,), generator=g),
                      torch.randint(0, 2, (120,), generator=g),
                      torch.randint(0, 20, (120,), generator=g)], 1)
    kw = dict(num_entities=20, num_relations=2, dim=8, epochs=2, batch_size=32, lr=0.05,
              progress=False)
    clip = [GradientAbsClippingTrainingCallback(clip_value=1e-9)]
    clipped = pretrain_tucker(tr, cache_dir=tmp_path, callbacks=clip, **kw)
    assert not list(tmp_path.glob("tucker-*.pt"))              # nothing written
    plain = pretrain_tucker(tr, cache_dir=tmp_path, **kw)
    assert not plain.from_cache and not torch.equal(plain.entity, clipped.entity)
    again = pretrain_tucker(tr, cache_dir=tmp_path, callbacks=clip, **kw)   # no plain hit
    assert not again.from_cache and torch.equal(again.entity, clipped.entity)
    assert pretrain_tucker(tr, cache_dir=tmp_path, **kw).from_cache


def test_numpy_integer_sizes_are_accepted():
    """dim=np.int64(8) (a size read from a config array) was refused; seed was not."""
    import numpy as np
    kg, _ = clustered_kg(groups=2, size=4, edges_per_group=6)
    a = pretrain_tucker(kg, dim=np.int64(4), epochs=np.int64(1), batch_size=np.int32(8),
                        progress=False, cache_dir=False)
    b = pretrain_tucker(kg, dim=4, epochs=1, batch_size=8, progress=False, cache_dir=False)
    assert torch.equal(a.entity, b.entity) and a.settings["dim"] == 4
    assert type(a.settings["dim"]) is int
    with pytest.raises(ValueError, match="'dim' must be an integer >= 1"):
        pretrain_tucker(kg, dim=4.0, epochs=1, progress=False, cache_dir=False)
