"""torch_stgen.train.EMA: the average it keeps, its warm-up, devices and errors."""
import pytest
import torch
from torch import nn

from torch_stgen.train import EMA


def test_ema_follows_the_closed_form_average():
    torch.manual_seed(0)
    lin = nn.Linear(3, 2)
    lin.bias.requires_grad_(False)                      # frozen: not tracked
    ema = EMA(lin, decay=0.9)
    assert set(ema.shadow) == {"weight"}
    want = lin.weight.detach().clone()
    for t in range(30):
        with torch.no_grad():
            lin.weight.add_(torch.randn_like(lin.weight))
        beta = min(0.9, (1 + t) / (10 + t))              # warm-up, then 0.9
        assert ema.current_decay() == pytest.approx(beta)
        want = beta * want + (1 - beta) * lin.weight.detach()
        ema.update()
    torch.testing.assert_close(ema.shadow["weight"], want)
    assert ema.num_updates == 30 and "num_updates=30" in repr(ema)
    last = lin.weight.detach().clone()
    ema.copy_to()
    torch.testing.assert_close(lin.weight.detach(), want)
    assert not torch.allclose(last, want)
    other = nn.Linear(3, 2)
    ema.copy_to(other)                                  # into another module
    torch.testing.assert_close(other.weight.detach(), want)
    assert ema.state_dict()["num_updates"] == 30


def test_ema_without_warmup_and_errors():
    lin = nn.Linear(2, 2)
    ema = EMA(lin, decay=0.5, warmup=False)
    w0 = lin.weight.detach().clone()
    with torch.no_grad():
        lin.weight.add_(2.0)
    ema.update()
    torch.testing.assert_close(ema.shadow["weight"], w0 + 1.0)   # 0.5 w0 + 0.5 (w0 + 2)
    with pytest.raises(ValueError, match="'decay' must lie in"):
        EMA(lin, decay=1.0)


def test_kgdiff_fit_ends_with_the_average_and_keeps_the_training_stream():
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from torch_stgen.data import UrbanKG
    from torch_stgen.models.kgdiff import KGDiff
    triples = [(f"s{i}", "near", f"s{(i + 1) % 8}") for i in range(8)]
    kg = UrbanKG.from_triples(triples, name="ring")
    kg.set_node_entities([f"s{i}" for i in range(8)])
    torch.manual_seed(0)
    emb = torch.randn(kg.num_entities, 8)
    x, nodes = torch.randn(12, 16) + 3, torch.arange(12) % 8

    def model():
        torch.manual_seed(1)
        return KGDiff(kg, emb, 16, 4, 4, dim=8, model_channels=8, channel_mult=(1, 2))

    plain, averaged = model(), model()
    h_plain = plain.fit(x, nodes, steps=6, batch_size=4, progress=False)
    iterates = []
    handle = register_optimizer_step_post_hook(lambda opt, args, kwargs: iterates.append(
        {n: p.detach().clone() for n, p in averaged.named_parameters() if p.requires_grad}))
    try:
        h_avg = averaged.fit(x, nodes, steps=6, batch_size=4, progress=False, ema_decay=0.9)
    finally:
        handle.remove()
    assert h_avg["loss"] == h_plain["loss"]              # EMA does not touch the training
    start = {n: p for n, p in model().named_parameters() if p.requires_grad}
    for name, p in averaged.named_parameters():
        if not p.requires_grad:
            continue
        want = start[name].detach().clone()
        for t, it in enumerate(iterates):
            beta = min(0.9, (1 + t) / (10 + t))
            want = beta * want + (1 - beta) * it[name]
        torch.testing.assert_close(p.detach(), want, msg=name)
    last = dict(plain.named_parameters())
    assert any(not torch.allclose(p, last[n]) for n, p in averaged.named_parameters()
               if p.requires_grad)
