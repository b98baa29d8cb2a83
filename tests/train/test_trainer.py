"""The shared training loop: what it minimises, clipping per group, the divergence stop,
EMA, hooks, and a resume that ends bit-identical to an uninterrupted run."""
import math

import pytest
import torch
from torch import nn

from torch_stgen.train import EMA, Trainer


class _Cut(Exception):
    """Stands in for a killed process."""


def _problem(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(64, 1, generator=g)
    return model, x, y


def _trainer(model, total=40, lr=0.05, **kw):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / (2 * total))
    gen = torch.Generator().manual_seed(7)
    return Trainer(model, opt, sched, total=total, generator=gen, **kw), gen


def _mse_fn(model, x, y, gen):
    def loss_fn(it):
        idx = torch.randint(len(x), (16,), generator=gen)
        return (model(x[idx]) - y[idx]).pow(2).mean()
    return loss_fn


def test_it_minimises_the_loss_and_records_one_value_per_iteration():
    model, x, y = _problem()
    trainer, gen = _trainer(model)
    with torch.no_grad():
        before = float((model(x) - y).pow(2).mean())
    hist = trainer.run(_mse_fn(model, x, y, gen))
    with torch.no_grad():
        after = float((model(x) - y).pow(2).mean())
    assert list(hist) == ["loss"] and len(hist["loss"]) == 40
    assert after < 0.2 * before
    assert trainer.last() == hist["loss"][-1]
    assert trainer.scheduler.last_epoch == 40


def test_a_dict_of_losses_minimises_their_sum_and_keeps_each_history():
    model, x, y = _problem()
    calls = []

    def loss_fn(it):
        err = (model(x) - y).pow(2).mean()
        return {"a": err, "b": 0 * err + 3.0}          # b: constant, no gradient
    trainer, _ = _trainer(model, total=5)
    trainer.run(loss_fn, before_step=calls.append)
    assert calls == [0, 1, 2, 3, 4]
    assert trainer.history["b"] == [3.0] * 5
    assert trainer.history["a"][-1] < trainer.history["a"][0]


def test_clip_groups_bound_each_group_on_its_own():
    a, b = nn.Parameter(torch.zeros(4)), nn.Parameter(torch.zeros(4))
    holder = nn.ParameterList([a, b])

    def run(groups):
        with torch.no_grad():
            a.zero_(), b.zero_()
        opt = torch.optim.SGD(holder.parameters(), lr=1.0)
        trainer = Trainer(holder, opt, total=1, generator=torch.Generator(), grad_clip=1.0,
                          clip_groups=groups)
        # gradients: a gets norm 100, b gets norm 0.5
        trainer.run(lambda it: -(a.sum() * 50.0) - b.sum() * 0.25)
        return a.detach().norm().item(), b.detach().norm().item()

    na, nb = run([[a], [b]])
    assert math.isclose(na, 1.0, rel_tol=1e-5) and math.isclose(nb, 0.5, rel_tol=1e-5)
    na, nb = run(None)                                   # one group: b shrinks with a
    total = math.hypot(100.0, 0.5)
    assert math.isclose(na, 100.0 / total, rel_tol=1e-5)
    assert math.isclose(nb, 0.5 / total, rel_tol=1e-5)


def test_a_non_finite_gradient_stops_with_the_iteration_and_lr():
    model, x, y = _problem()
    trainer, _ = _trainer(model, total=10, desc="toy")
    before = [p.detach().clone() for p in model.parameters()]

    def loss_fn(it):
        err = (model(x) - y).pow(2).mean()
        return err * float("nan") if it == 3 else err
    # the schedule 1 - i / 20 gives 0.05 * (1 - 3 / 20) at iteration 3
    with pytest.raises(FloatingPointError, match=r"toy diverged at iteration 3 .*gradient "
                                                 r"norms \[nan\]\); lower 'lr' \(peak 0.05, "
                                                 r"at this iteration 0.0425\)"):
        trainer.run(loss_fn)
    assert len(trainer.history["loss"]) == 4
    # the NaN step was not taken
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_a_non_finite_loss_with_a_finite_gradient_stops_too():
    model, x, y = _problem()
    trainer, _ = _trainer(model, total=10, desc="toy")

    def loss_fn(it):
        err = (model(x) - y).pow(2).mean()
        return {"fit": err, "log": torch.tensor(float("inf") if it == 2 else 0.0)}
    with pytest.raises(FloatingPointError, match=r"iteration 2 .*'log': inf"):
        trainer.run(loss_fn)
    assert trainer.history["log"] == [0.0, 0.0, math.inf]


def test_ema_weights_replace_the_last_iterate():
    model, x, y = _problem()
    trainer, gen = _trainer(model, total=12, ema_decay=0.8)
    trainer.run(_mse_fn(model, x, y, gen))
    plain, x, y = _problem()                              # the same run, without EMA
    by_hand = EMA(plain, decay=0.8)
    plain_tr, gen = _trainer(plain, total=12)
    plain_tr.run(_mse_fn(plain, x, y, gen), before_step=lambda it: it and by_hand.update())
    by_hand.update()                                     # after the last step
    assert plain_tr.history == trainer.history           # EMA does not touch training
    assert trainer.ema.num_updates == by_hand.num_updates == 12
    for (k, p), q in zip(model.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.detach(), by_hand.shadow[k], rtol=0, atol=0)
        assert not torch.equal(p.detach(), q.detach())  # not the last iterate


def test_resume_after_a_cut_ends_bit_identical(tmp_path):
    def run(path=None, cut=None):
        model, x, y = _problem()
        trainer, gen = _trainer(model, total=25, checkpoint=path, checkpoint_every=4,
                                fingerprint={"toy": 1}, ema_decay=0.9)
        seen = []
        saved = trainer.resume()
        if saved is not None:
            seen = list(saved["seen"])
        loss_fn = _mse_fn(model, x, y, gen)

        def before(it):
            if cut is not None and it == cut:
                raise _Cut()
            seen.append(it)
        trainer.run(loss_fn, before, extra_state=lambda: {"seen": list(seen)})
        return model, trainer, seen

    ref, ref_tr, ref_seen = run()
    path = tmp_path / "toy.pt"
    with pytest.raises(_Cut):
        run(path, cut=14)
    assert torch.load(path, weights_only=True)["iteration"] == 12
    model, trainer, seen = run(path)
    assert trainer.start == 12 and seen == ref_seen == list(range(25))
    assert trainer.history == ref_tr.history
    for p, q in zip(model.state_dict().values(), ref.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    # the run's seconds carry over a resume
    assert trainer.seconds >= torch.load(path, weights_only=True)["elapsed"] > 0
    # a finished checkpoint trains nothing more
    again, tr, _ = run(path)
    assert tr.start == 25 and tr.history == ref_tr.history
    with pytest.raises(ValueError, match="different run.*toy"):
        m, _, _ = _problem()
        Trainer(m, torch.optim.Adam(m.parameters()), total=25, generator=torch.Generator(),
                checkpoint=path, fingerprint={"toy": 2}).resume()


def test_run_resumes_by_itself_and_refuses_another_schedule(tmp_path):
    path = tmp_path / "toy.pt"

    def make(total=8, **kw):
        model, x, y = _problem()
        trainer, gen = _trainer(model, total=total, checkpoint=path, checkpoint_every=2,
                                fingerprint={"toy": 1}, **kw)
        return model, trainer, _mse_fn(model, x, y, gen)

    ref_model, ref, loss_fn = make(total=8)
    ref.run(loss_fn)                                     # writes the finished state
    model, trainer, loss_fn = make(total=8)
    calls = []
    trainer.run(loss_fn, before_step=calls.append)       # no explicit resume()
    assert trainer.start == 8 and calls == [] and trainer.history == ref.history
    for p, q in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(RuntimeError, match="before run"):
        trainer.resume()
    with pytest.raises(RuntimeError, match="already called"):
        trainer.run(loss_fn)
    with pytest.raises(ValueError, match="different run.*trainer: saved .*'total': 8.*"
                                         "'total': 100"):
        make(total=100)[1].resume()
    with pytest.raises(ValueError, match="different run.*'ema_decay': None.*"
                                         "'ema_decay': 0.9"):
        make(total=8, ema_decay=0.9)[1].resume()


@pytest.mark.parametrize("kw, match", [(dict(total=-1), "'total'"),
                                       (dict(total=2.5), "'total'"),
                                       (dict(total=3, log_every=0), "'log_every'"),
                                       (dict(total=3, grad_clip=-1.0), "'grad_clip'"),
                                       (dict(total=3, checkpoint_every=0),
                                        "'checkpoint_every'"),
                                       # raw int() / float() errors, or 'decay', before
                                       (dict(total=None), "'total'"),
                                       (dict(total=3, log_every=None), "'log_every'"),
                                       (dict(total=3, checkpoint_every=None),
                                        "'checkpoint_every'"),
                                       (dict(total=3, grad_clip="x"), "'grad_clip'"),
                                       (dict(total=3, ema_decay=1.0), "'ema_decay'"),
                                       (dict(total=3, ema_decay="0.9"), "'ema_decay'")])
def test_bad_arguments_are_refused_by_name(kw, match):
    model, _, _ = _problem()
    with pytest.raises(ValueError, match=match):
        Trainer(model, torch.optim.Adam(model.parameters()), generator=torch.Generator(),
                **kw)


def test_resume_refuses_another_optimiser_or_learning_rate(tmp_path):
    """The optimiser's class and hyperparameters are part of the run: resuming with a new
    learning rate kept the saved one silently, and SGD -> Adam failed with KeyError."""
    ckpt = tmp_path / "run.pt"
    model, x, y = _problem()
    trainer, gen = _trainer(model, total=6, checkpoint=ckpt, checkpoint_every=3)
    trainer.run(_mse_fn(model, x, y, gen))
    model, x, y = _problem()
    with pytest.raises(ValueError, match=r"different run \(trainer: .*'lr': 0\.05.*'lr': 0\.5"):
        _trainer(model, total=6, lr=0.5, checkpoint=ckpt, checkpoint_every=3)[0].resume()
    gen = torch.Generator().manual_seed(7)
    sgd = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05), total=6, generator=gen,
                  checkpoint=ckpt, checkpoint_every=3)
    with pytest.raises(ValueError, match=r"different run \(trainer: .*'Adam'.*'SGD'"):
        sgd.resume()
    again, _ = _trainer(model, total=6, checkpoint=ckpt, checkpoint_every=3)
    assert again.resume()["iteration"] == 6                  # the same run still resumes


def test_a_checkpoint_of_data_with_nan_resumes(tmp_path):
    """NaN at missing entries made the fingerprint's sum NaN, which never equals itself:
    every such checkpoint was refused, even a finished one."""
    from torch_stgen.train import data_fingerprint
    x = torch.randn(5, 4)
    x[1, 2] = float("nan")
    fp = data_fingerprint(x)
    assert math.isfinite(fp[1]) and fp[1] == pytest.approx(float(x.nan_to_num().sum()))
    ckpt = tmp_path / "run.pt"
    model, xs, y = _problem()
    trainer, gen = _trainer(model, total=4, checkpoint=ckpt, checkpoint_every=2,
                            fingerprint={"x": fp, "spread": float("nan")})
    trainer.run(_mse_fn(model, xs, y, gen))
    model, xs, y = _problem()
    again, _ = _trainer(model, total=4, checkpoint=ckpt, checkpoint_every=2,
                        fingerprint={"x": data_fingerprint(x.clone()), "spread": float("nan")})
    assert again.resume()["iteration"] == 4
    other = x.clone()
    other[1, 2] = 0.0                                   # same sum, different data
    model, xs, y = _problem()
    with pytest.raises(ValueError, match="different run"):
        _trainer(model, total=4, checkpoint=ckpt, checkpoint_every=2,
                 fingerprint={"x": data_fingerprint(other), "spread": float("nan")})[0].resume()


def test_bad_fingerprints_generators_and_losses_are_named(tmp_path):
    np = pytest.importorskip("numpy")
    model, x, y = _problem()
    with pytest.raises(TypeError, match=r"'fingerprint' entry 'w' must be plain data .*"
                                        r"data_fingerprint"):
        _trainer(model, fingerprint={"w": torch.ones(3)}, checkpoint=tmp_path / "a.pt")
    _trainer(model, fingerprint={"w": torch.ones(3)})      # not saved: nothing to check
    # numpy scalars are stored as Python values (they made the file unreadable with
    # weights_only); np.float64 and np.str_ are subclasses of float and str
    for k, value in enumerate((np.int64(3), np.float64(0.5), np.str_("a"), np.bool_(True))):
        ckpt = tmp_path / f"b{k}.pt"
        trainer, gen = _trainer(model, total=2, checkpoint=ckpt, fingerprint={"n": value})
        trainer.run(_mse_fn(model, x, y, gen))
        assert _trainer(model, total=2, checkpoint=ckpt,
                        fingerprint={"n": value.item()})[0].resume()["iteration"] == 2
    # so are an optimiser's numpy hyperparameters (its state is saved too)
    ckpt = tmp_path / "c.pt"
    for _ in range(2):
        gen = torch.Generator().manual_seed(7)
        opt = torch.optim.Adam(model.parameters(), lr=np.float64(0.01))
        trainer = Trainer(model, opt, total=2, generator=gen, checkpoint=ckpt)
        trainer.run(_mse_fn(model, x, y, gen))
    assert trainer.start == 2                          # the second run resumed the first
    opt = torch.optim.Adam(model.parameters())
    with pytest.raises(TypeError, match="'generator' must be a torch.Generator"):
        Trainer(model, opt, total=2, generator=None)
    for bad, err, msg in ((1.0, TypeError, "loss 'loss' at iteration 0 is a float"),
                          ({}, TypeError, "empty dict"),
                          (lambda: model(x).sum(0).repeat(2), ValueError, "must be a scalar"),
                          (lambda: torch.tensor(1.0), ValueError, "none depends")):
        trainer, _ = _trainer(model, total=2)
        with pytest.raises(err, match=msg):
            trainer.run(lambda it: bad() if callable(bad) else bad)


def test_ema_refuses_a_state_of_other_shapes_or_decay():
    model, _, _ = _problem()
    ema = EMA(model, decay=0.9)
    state = ema.state_dict()
    name = next(iter(state["shadow"]))
    bad = dict(state, shadow=dict(state["shadow"], **{name: state["shadow"][name][:1]}))
    with pytest.raises(ValueError, match=rf"parameter shapes \({name}: \(1, 3\) for \(8, 3\)"):
        ema.load_state_dict(bad)
    with pytest.raises(ValueError, match=r"'decay' must lie in \[0, 1\) \(got 1.5\)"):
        ema.load_state_dict(dict(state, decay=1.5))
    other = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    with pytest.raises(ValueError, match="does not match the EMA's parameter shapes"):
        ema.copy_to(other)
    ema.load_state_dict(state)


def test_a_refused_checkpoint_stays_refused(tmp_path):
    """resume() marked itself done before loading: after a refusal, a retry (or run(), which
    resumes) started from 0 and overwrote the other run's checkpoint."""
    path = tmp_path / "run.pt"
    model, x, y = _problem()
    tr, gen = _trainer(model, total=6, checkpoint=path, checkpoint_every=2,
                       fingerprint={"experiment": "A"})
    tr.run(_mse_fn(model, x, y, gen))
    model, x, y = _problem()
    tr, gen = _trainer(model, total=6, checkpoint=path, checkpoint_every=2,
                       fingerprint={"experiment": "B"})
    with pytest.raises(ValueError, match="belongs to a different run"):
        tr.resume()
    for retry in (tr.resume, lambda: tr.run(_mse_fn(model, x, y, gen))):
        with pytest.raises(RuntimeError, match="checkpoint was refused .*different run"):
            retry()
    assert torch.load(path, weights_only=True)["fingerprint"]["experiment"] == "A"


def test_clip_groups_must_be_groups_of_parameters():
    """A flat model.parameters() made each parameter a 'group' of its rows: norms 0,
    nothing clipped."""
    model, x, y = _problem()
    with pytest.raises(TypeError, match=r"'clip_groups\[0\]' is a single tensor"):
        _trainer(model, clip_groups=list(model.parameters()))
    with pytest.raises(TypeError, match=r"'clip_groups\[0\]' must hold parameters"):
        _trainer(model, clip_groups=[[model[0].weight * 2]])


def test_gradients_of_parameters_outside_the_optimiser_do_not_pile_up():
    """Only the optimiser's gradients were zeroed: a trainable parameter it does not own kept
    accumulating into the clipped norm, which shrank every step of the rest."""
    model, x, y = _problem()
    opt = torch.optim.SGD(model[2].parameters(), lr=0.05)      # head only
    gen = torch.Generator().manual_seed(7)
    tr = Trainer(model, opt, total=15, generator=gen, grad_clip=1.0)
    tr.run(_mse_fn(model, x, y, gen))
    ref, _, _ = _problem()
    opt2 = torch.optim.SGD(ref[2].parameters(), lr=0.05)
    gen2 = torch.Generator().manual_seed(7)
    fn = _mse_fn(ref, x, y, gen2)
    for it in range(15):                                        # the usual loop
        ref.zero_grad(set_to_none=True)
        fn(it).backward()
        nn.utils.clip_grad_norm_(list(ref.parameters()), 1.0)
        opt2.step()
    torch.testing.assert_close(model[2].weight, ref[2].weight, atol=0, rtol=0)


def test_all_mean_is_exported_with_the_other_collectives():
    import torch_stgen.train as train
    assert "all_mean" in train.__all__
    assert float(train.all_mean(torch.tensor(3.0))) == 3.0          # one process: itself
