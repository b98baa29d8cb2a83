"""Resumable training: a run cut off and re-run with the same checkpoint ends with exactly
the weights of an uninterrupted run (DiffRecon and KGDiff), and a foreign checkpoint is
refused."""

import pytest
import torch
from torch import nn

from torch_stgen.models.diffrecon import DiffRecon
from torch_stgen.train import EMA, Checkpointer, data_fingerprint

from _grids import daily_grid_series as _series


class _Cut(Exception):
    """Stands in for a killed process."""


def _cut_after(module, name, calls):
    """Make ``module.<name>`` raise on its ``calls + 1``-th call in training mode (an
    interruption; validation calls run in eval mode and are not counted)."""
    real = getattr(module, name)
    count = {"n": 0}

    def wrapped(*args, **kwargs):
        if module.training:
            count["n"] += 1
            if count["n"] > calls:
                raise _Cut()
        return real(*args, **kwargs)

    setattr(module, name, wrapped)


def _same_weights(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


# ---------------------------------------------------------------------- DiffRecon
def _diffrecon():
    torch.manual_seed(0)
    return DiffRecon(channels=2, coarse_size=(4, 2), factor=2, history_c=3, history_f=6,
                     model_channels=8, d_model=8, num_train_timesteps=50)


FIT = dict(patterns=["random:0.4", "fixed:0.4", "block"], pretrain_steps=6, joint_steps=6,
           joint_refresh=4, batch_size=4, joint_sampling_steps=2, val_every=3, val_maps=8)


@pytest.fixture(scope="module")
def diffrecon_data():
    fine, time = _series()
    val, val_time = _series(T=30, seed=1)
    kw = dict(FIT, time=time, val_fine=val, val_time=val_time)
    plain = _diffrecon().fit(fine, **kw)
    return fine, kw, plain


def test_diffrecon_checkpointing_does_not_change_the_run(diffrecon_data, tmp_path):
    fine, kw, plain = diffrecon_data
    path = tmp_path / "run.pt"
    model = _diffrecon().fit(fine, checkpoint=path, checkpoint_every=2, **kw)
    _same_weights(model, plain)
    assert model.history_log["best_iter_f"] == plain.history_log["best_iter_f"]
    assert model.history_log["val_curve"] == plain.history_log["val_curve"]
    state = torch.load(path, weights_only=True)
    assert state["iteration"] == 12 and state["fingerprint"]["lr"] == 1e-3


@pytest.mark.parametrize("cut", [4, 9])     # pre-training / joint phase between refreshes
def test_diffrecon_resume_after_a_cut_gives_the_uninterrupted_weights(diffrecon_data,
                                                                    tmp_path, cut):
    fine, kw, plain = diffrecon_data
    path = tmp_path / "run.pt"
    first = _diffrecon()
    _cut_after(first.stage_f, "loss", cut)            # one Diffusion-F loss per iteration
    with pytest.raises(_Cut):
        first.fit(fine, checkpoint=path, checkpoint_every=2, **kw)
    saved = torch.load(path, weights_only=True)
    assert saved["iteration"] == 2 * (cut // 2)
    own = saved["ranks"][0]
    if cut == 9:            # the 3 completion series, without the truth (rebuilt on load)
        assert own["comp"].shape[0] == 3 and own["comp_mask"].shape == own["comp"].shape
    else:
        assert own["comp"] is None and own["comp_mask"] is None
    second = _diffrecon()
    torch.manual_seed(123)                             # the global stream is restored too
    second.fit(fine, checkpoint=path, checkpoint_every=2, **kw)
    _same_weights(second, plain)
    assert second.history_log["val_curve"] == plain.history_log["val_curve"]
    assert second.history_log["best_iter_c"] == plain.history_log["best_iter_c"]
    # a finished checkpoint is not trained again
    third = _diffrecon()
    _cut_after(third.stage_f, "loss", 0)
    third.fit(fine, checkpoint=path, checkpoint_every=2, **kw)
    _same_weights(third, plain)


def test_diffrecon_refuses_a_checkpoint_of_another_run(diffrecon_data, tmp_path):
    fine, kw, _ = diffrecon_data
    path = tmp_path / "run.pt"
    _diffrecon().fit(fine, checkpoint=path, **dict(kw, pretrain_steps=2, joint_steps=1))
    with pytest.raises(ValueError, match=r"different run.*joint_steps: saved 1, now 6"):
        _diffrecon().fit(fine, checkpoint=path, **dict(kw, pretrain_steps=2))
    with pytest.raises(ValueError, match="'fine'|fine: saved"):
        _diffrecon().fit(fine + 1, checkpoint=path, **dict(kw, pretrain_steps=2,
                                                           joint_steps=1))
    other = DiffRecon(channels=2, coarse_size=(4, 2), factor=2, history_c=3, history_f=6,
                      model_channels=8, d_model=8, num_train_timesteps=50,
                      use_tpatternnet=False)
    with pytest.raises(ValueError, match="architecture: saved"):
        other.fit(fine, checkpoint=path, **dict(kw, pretrain_steps=2, joint_steps=1))
    # a setting without parameters of its own (T-PatternNet's top_k) counts too
    torch.manual_seed(0)
    top_k = DiffRecon(channels=2, coarse_size=(4, 2), factor=2, history_c=3, history_f=6,
                      model_channels=8, d_model=8, num_train_timesteps=50, top_k=2)
    with pytest.raises(ValueError, match="architecture: saved"):
        top_k.fit(fine, checkpoint=path, **dict(kw, pretrain_steps=2, joint_steps=1))
    # resume=False starts afresh and overwrites
    _diffrecon().fit(fine, checkpoint=path, resume=False, **dict(kw, pretrain_steps=2))
    assert torch.load(path, weights_only=True)["fingerprint"]["joint_steps"] == 6


# ------------------------------------------------------------------------- KGDiff
def _kgdiff():
    from torch_stgen.data import UrbanKG
    from torch_stgen.models.kgdiff import KGDiff
    triples = [(f"s{i}", "is_a", "class_a" if i % 2 else "class_b") for i in range(6)]
    triples += [(f"s{i}", "near", f"s{(i + 1) % 6}") for i in range(6)]
    kg = UrbanKG.from_triples(triples, name="tiny")
    kg.set_node_entities([f"s{i}" for i in range(6)])
    torch.manual_seed(0)
    return KGDiff(kg, torch.randn(kg.num_entities, 8), 16, 4, 4, dim=8, model_channels=8,
                  channel_mult=(1, 2))


@pytest.fixture(scope="module")
def kgdiff_data():
    g = torch.Generator().manual_seed(0)
    nodes = torch.arange(24) % 6
    x = 10 + 5 * (nodes % 2)[:, None] + torch.randn(24, 16, generator=g)
    kw = dict(steps=10, batch_size=4, seed=3, progress=False, ema_decay=0.9)
    plain = _kgdiff()
    plain_loss = plain.fit(x, nodes, **kw)["loss"]
    return x, nodes, kw, plain, plain_loss


def test_kgdiff_resume_after_a_cut_gives_the_uninterrupted_weights(kgdiff_data, tmp_path):
    x, nodes, kw, plain, plain_loss = kgdiff_data
    path = tmp_path / "kg.pt"
    first = _kgdiff()
    _cut_after(first, "loss", 7)
    with pytest.raises(_Cut):
        first.fit(x, nodes, checkpoint=path, checkpoint_every=3, **kw)
    assert torch.load(path, weights_only=True)["iteration"] == 6
    second = _kgdiff()
    _cut_after(second, "loss", 4)                      # resumed: only steps 6..9 train
    loss = second.fit(x, nodes, checkpoint=path, checkpoint_every=3, **kw)["loss"]
    assert loss == plain_loss and len(loss) == 10
    _same_weights(second, plain)                       # EMA weights included
    with pytest.raises(ValueError, match="ema_decay: saved 0.9, now None"):
        _kgdiff().fit(x, nodes, checkpoint=path, **dict(kw, ema_decay=None))


# ------------------------------------------------------------------------- helpers
def test_checkpointer_writes_atomically_and_names_bad_files(tmp_path):
    path = tmp_path / "sub" / "c.pt"
    ck = Checkpointer(path, every=5, fingerprint={"a": 1})
    assert not ck.due(0) and ck.due(5) and not ck.due(7)
    torch.manual_seed(9)
    ck.save(5, {"x": torch.arange(3)})
    assert path.exists() and not path.with_name("c.pt.tmp").exists()
    want = torch.rand(2)                               # the draw after the save
    torch.manual_seed(10)
    state = Checkpointer(path, fingerprint={"a": 1}).load()     # restores the global RNG
    assert state["iteration"] == 5 and torch.equal(state["x"], torch.arange(3))
    resumed = Checkpointer(path, every=5, fingerprint={"a": 1})
    resumed.load()
    assert not resumed.due(5) and resumed.due(10)    # the loaded state is not rewritten
    resumed.finish(5, lambda: pytest.fail("a finished run must not be written again"))
    torch.testing.assert_close(torch.rand(2), want)
    assert Checkpointer(path, fingerprint={"a": 1}, resume=False).load() is None
    assert Checkpointer(None).load() is None and not Checkpointer(None).due(100)
    with pytest.raises(ValueError, match="a: saved 1, now 2"):
        Checkpointer(path, fingerprint={"a": 2}).load()
    path.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="could not be read"):
        Checkpointer(path).load()
    with pytest.raises(ValueError, match="checkpoint_every"):
        Checkpointer(path, every=0)
    assert data_fingerprint(None) is None
    shape, total, digest = data_fingerprint(torch.ones(2, 3))
    assert (shape, total) == ([2, 3], 6.0) and len(digest) == 16
    flags = torch.tensor([0.0, 1.0, 0.0, 1.0])
    # the same shape and sum, other contents (flags shifted by one day): told apart
    assert data_fingerprint(flags)[:2] == data_fingerprint(flags.roll(1))[:2]
    assert data_fingerprint(flags) != data_fingerprint(flags.roll(1))
    assert data_fingerprint(flags) != data_fingerprint(flags.double())
    assert data_fingerprint(flags) == data_fingerprint(flags.clone())
    assert data_fingerprint(torch.tensor(True))[0] == []          # 0-d and bool work
    assert data_fingerprint(flags.bfloat16())[1] == 2.0


def test_checkpointer_syncs_the_file_before_the_rename(tmp_path, monkeypatch):
    """Without an fsync the rename could reach the disk before the data: a power cut
    then leaves an empty or truncated checkpoint in place of the previous one."""
    import os

    import torch_stgen.train.checkpoint as ckmod
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync")
        real_fsync(fd)

    def replace(a, b):
        events.append("replace")
        real_replace(a, b)
    monkeypatch.setattr(ckmod.os, "fsync", fsync)
    monkeypatch.setattr(ckmod.os, "replace", replace)
    Checkpointer(tmp_path / "c.pt", fingerprint={"a": 1}).save(1, {"x": torch.ones(2)})
    assert events[:2] == ["fsync", "replace"], events     # the file, then the rename
    assert torch.equal(Checkpointer(tmp_path / "c.pt", fingerprint={"a": 1}).load()["x"],
                       torch.ones(2))


def test_ema_state_round_trip():
    lin = nn.Linear(3, 2)
    ema = EMA(lin, decay=0.9)
    for _ in range(4):
        with torch.no_grad():
            lin.weight.add_(1.0)
        ema.update()
    other = EMA(nn.Linear(3, 2), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 4 and other.decay == 0.9
    for k in ema.shadow:
        torch.testing.assert_close(other.shadow[k], ema.shadow[k])
    with pytest.raises(ValueError, match="differing names"):
        EMA(nn.Linear(3, 2, bias=False)).load_state_dict(ema.state_dict())


@pytest.mark.parametrize("layout", [0, 1, 2])
def test_a_checkpoint_of_an_older_layout_is_refused_by_name(kgdiff_data, tmp_path, layout):
    x, nodes, kw, _, _ = kgdiff_data
    path = tmp_path / "kg.pt"
    _kgdiff().fit(x, nodes, checkpoint=path, **dict(kw, steps=2))
    state = torch.load(path, weights_only=True)
    assert state["format"] == 3
    if layout == 2:                     # the layout before BestWeights
        state["format"] = 2
    else:
        del state["format"]             # unnumbered, as before layouts were numbered
    if layout == 0:                     # and without per-rank entries, older still
        own = state.pop("ranks")[0]
        state.update(gen=own["gen"], rng=own["rng"], loss=own["history"]["loss"])
    torch.save(state, path)
    found = "2" if layout == 2 else "unnumbered"
    with pytest.raises(ValueError, match=f"another torch-stgen version.*layout {found}, "
                                         f"this version reads 3.*resume=False"):
        _kgdiff().fit(x, nodes, checkpoint=path, **dict(kw, steps=2))
    _kgdiff().fit(x, nodes, checkpoint=path, resume=False, **dict(kw, steps=2))
    saved = torch.load(path, weights_only=True)
    assert saved["format"] == 3 and len(saved["ranks"][0]["history"]["loss"]) == 2


# ------------------------------------------------------------ learned baselines
def test_fit_upsampler_resume_after_a_cut_gives_the_uninterrupted_weights(tmp_path):
    from torch_stgen.models.baselines import UrbanFM, fit_upsampler
    fine, time = _series()
    val, _ = _series(T=30, seed=1)
    kw = dict(cond=time.float(), patterns=["random:0.4", "block"], steps=14, batch_size=8,
              seed=3, val_fine=val, val_cond=torch.randn(30, 3), val_every=4)

    def build():
        torch.manual_seed(0)
        return UrbanFM(2, (4, 2), 2, cond_features=3, width=8, num_blocks=2)

    plain = fit_upsampler(build(), fine, **kw)
    path = tmp_path / "urbanfm.pt"
    first = build()
    _cut_after(first, "forward", 11)                 # training calls only (eval: checks)
    with pytest.raises(_Cut):
        fit_upsampler(first, fine, checkpoint=path, checkpoint_every=5, **kw)
    assert torch.load(path, weights_only=True)["iteration"] == 10
    second = build()
    _cut_after(second, "forward", 4)                 # resumed: only steps 10..13 train
    fit_upsampler(second, fine, checkpoint=path, checkpoint_every=5, **kw)
    _same_weights(second, plain)
    assert second.best_step == plain.best_step
    with pytest.raises(ValueError, match="different run.*steps: saved 14, now 20"):
        fit_upsampler(build(), fine, checkpoint=path, **dict(kw, steps=20))
