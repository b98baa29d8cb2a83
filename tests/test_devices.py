"""Every public layer and model on every available device.

The ``device`` parameter is ``cpu`` everywhere and also ``cuda`` where CUDA is available
(these cases are collected only there, so a CPU-only run reports no skips). Each test
checks that the work runs on the device and agrees with the same module on the CPU:
layers to float32 round-off, trained models to the round-off that a few optimiser steps
accumulate (the data preparation and every random draw stay on the CPU, so both devices
see the same batches, masks, timesteps and noise)."""
import copy

import pytest
import torch

from torch_stgen.data import UrbanKG
from torch_stgen.diffusion import DDPMScheduler, MetaPatternDiffusion
from torch_stgen.experiments import resolve_device
from torch_stgen.models.baselines import SRCNN, UrbanFM, fit_upsampler
from torch_stgen.models.diffrecon import DiffRecon
from torch_stgen.models.kgdiff import KGDiff
from torch_stgen.nn import (GeometryMoEConv, STPointAttention, STPointFormer, TimesBlock,
                            TPatternNet, UNet2D)

from _grids import daily_grid_series as _series

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    """The device under test. On CUDA, TF32 (on by default for cuDNN convolutions, ~1e-3
    relative error) is switched off so that both devices compute in float32."""
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield torch.device(request.param)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def _same(a, b, atol=1e-5, rtol=1e-4):
    torch.testing.assert_close(a.detach().cpu(), b.detach().cpu(), atol=atol, rtol=rtol)


def _close_weights(ref, dev, tol=2e-3):
    """Trained twins: every tensor of ``dev`` lives on its device, and all floating tensors
    together are within ``tol`` of ``ref`` in relative norm. (Per tensor the bound would be
    fragile: Adam turns a sign flip of a near-zero gradient into an O(lr) step, which is
    large relative to a bias that has only moved by a few such steps.)"""
    device = next(dev.parameters()).device
    diff = norm = 0.0
    for (name, a), b in zip(ref.state_dict().items(), dev.state_dict().values()):
        if not isinstance(a, torch.Tensor):                 # extra state (e.g. sigma_data)
            assert a == b, name
            continue
        assert b.device.type == device.type, name
        if a.is_floating_point():
            diff += float((b.cpu() - a).double().square().sum())
            norm += float(a.double().square().sum())
    assert (diff / norm) ** 0.5 < tol, (diff / norm) ** 0.5


def _twin(module, device):
    """The module on the CPU (reference) and a copy of it on ``device``."""
    return module.eval(), copy.deepcopy(module).to(device).eval()


# ----------------------------------------------------------------------------- layers
def test_stpoint_attention_and_former_on_device(device):
    torch.manual_seed(0)
    ref, dev = _twin(STPointAttention(16, num_heads=4, dim_feedforward=32), device)
    h = torch.randn(2, 12, 16)
    key_mask = torch.rand(2, 12) > 0.3
    key_mask[:, 0] = True
    out = dev(h.to(device), key_mask.to(device))
    assert out.device.type == device.type
    _same(out, ref(h, key_mask))
    ref, dev = _twin(STPointFormer(2, d_model=16, num_layers=2, num_heads=4, history=3,
                                   grid=(4, 6), down=(2, 3)), device)
    x, mask = torch.randn(2, 3, 24, 2), torch.rand(2, 3, 24, 1) > 0.4
    out = dev(x.to(device), mask.to(device))
    _same(out, ref(x, mask))
    _same(dev.stack(out), ref.stack(ref(x, mask)))


def test_times_block_and_tpatternnet_on_device(device):
    torch.manual_seed(0)
    ref, dev = _twin(TimesBlock(48, d_model=8, d_ff=8, top_k=2, num_kernels=2), device)
    t = torch.arange(48.0)
    x = torch.stack([torch.sin(2 * torch.pi * t / 12), torch.cos(2 * torch.pi * t / 8)], -1)
    x = (x.unsqueeze(0) + 0.1 * torch.randn(3, 48, 2)) @ torch.randn(2, 8)
    out = dev(x.to(device))
    assert out.device.type == device.type
    _same(out, ref(x))
    ref, dev = _twin(TPatternNet(6, 24, d_model=8, d_ff=8, num_layers=2, top_k=2,
                                 num_kernels=2), device)
    s = torch.randn(2, 24, 6)
    _same(dev(s.to(device)), ref(s))


def test_geometry_moe_conv_on_device(device):
    torch.manual_seed(0)
    for variant in ("mobius_add", "paper"):
        ref, dev = _twin(GeometryMoEConv(8, 5, num_relations=3, variant=variant), device)
        x = 0.3 * torch.randn(7, 8)
        edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 0], [1, 2, 3, 4, 5, 6, 0, 3]])
        edge_type = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
        out = dev(x.to(device), edge_index.to(device), edge_type.to(device))
        assert out.device.type == device.type
        _same(out, ref(x, edge_index, edge_type))
        # the curvatures live on the device and stay on their side of zero
        k = dev.curvatures
        assert set(k) == {"H", "S"} and all(v.device.type == device.type for v in k.values())
        assert float(k["H"].detach()) < 0 < float(k["S"].detach())


def test_unet_and_meta_pattern_diffusion_on_device(device):
    torch.manual_seed(0)
    ref, dev = _twin(UNet2D(2, 1, model_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                            cond_dim=4), device)
    x, t, c = torch.randn(3, 2, 8, 8), torch.tensor([1, 50, 999]), torch.randn(3, 4)
    out = dev(x.to(device), t.to(device), cond=c.to(device))
    assert out.device.type == device.type
    _same(out, ref(x, t, cond=c))
    mpd = MetaPatternDiffusion(DDPMScheduler(50))
    f = torch.randn(3, 1, 8, 8)
    unet_ref, unet_dev = ref, dev
    # a CPU generator draws the same timesteps and noise for both devices
    x0 = torch.randn(3, 1, 8, 8)
    l_ref = mpd.loss(lambda x_t, tt: unet_ref(torch.cat([x_t, x_t], 1), tt, cond=c), x0, f=f,
                     generator=torch.Generator().manual_seed(1))
    l_dev = mpd.loss(lambda x_t, tt: unet_dev(torch.cat([x_t, x_t], 1), tt,
                                              cond=c.to(device)),
                     x0.to(device), f=f.to(device), generator=torch.Generator().manual_seed(1))
    assert l_dev.device.type == device.type
    _same(l_dev, l_ref)
    s_ref = mpd.sample(lambda x_t, tt: unet_ref(torch.cat([x_t, x_t], 1), tt, cond=c), f,
                       num_inference_steps=5, generator=torch.Generator().manual_seed(2))
    s_dev = mpd.sample(lambda x_t, tt: unet_dev(torch.cat([x_t, x_t], 1), tt,
                                                cond=c.to(device)),
                       f.to(device), num_inference_steps=5,
                       generator=torch.Generator().manual_seed(2))
    assert s_dev.device.type == device.type
    _same(s_dev, s_ref, atol=1e-4, rtol=1e-3)


# ----------------------------------------------------------------------------- models
@pytest.mark.parametrize("joint_mode", ["sampled", "end_to_end"])
def test_diffrecon_fit_and_reconstruct_on_device(device, joint_mode):
    fine, time = _series()
    kw = dict(channels=2, coarse_size=(4, 2), factor=2, history_c=3, history_f=6,
              model_channels=8, d_model=8, num_train_timesteps=50,
              prediction_type="epsilon" if joint_mode == "sampled" else "sample")
    fit = dict(time=time[:28], patterns=["random:0.4", "block"], pretrain_steps=4, joint_steps=3,
               joint_refresh=2, batch_size=8, joint_sampling_steps=2, joint_mode=joint_mode,
               val_fine=fine[-12:], val_time=time[-12:], val_every=3, val_maps=8,
               val_condition="completed", lr=1e-3)
    torch.manual_seed(0)
    ref = DiffRecon(**kw)
    dev = copy.deepcopy(ref).to(device)
    ref.fit(fine[:28], **fit)
    dev.fit(fine[:28].to(device), **{**fit, "time": time[:28].to(device)})
    assert next(dev.parameters()).device.type == device.type
    assert dev.history_log["best_iter_c"] == ref.history_log["best_iter_c"]
    _close_weights(ref, dev)
    mask = (torch.rand(40, 1, 4, 2, generator=torch.Generator().manual_seed(5)) > 0.4).float()
    from torch_stgen.data import coarsen
    coarse = coarsen(fine, 2)
    args = dict(history=6, time=time, num_samples=2, steps=4, seed=3)
    r_ref = ref.reconstruct(coarse, mask, **args)
    r_dev = dev.reconstruct(coarse.to(device), mask.to(device),
                            **{**args, "time": time.to(device)})
    assert r_dev.fine.device.type == device.type                 # the device of 'coarse'
    _same(r_dev.fine, r_ref.fine, atol=1e-2, rtol=1e-2)              # data scale ~5
    _same(r_dev.coarse, r_ref.coarse, atol=1e-2, rtol=1e-2)
    # a CPU caller of a device model gets CPU results, equal to the device's
    r_mix = dev.reconstruct(coarse, mask, **args)
    assert r_mix.fine.device.type == "cpu"
    _same(r_mix.fine, r_dev.fine, atol=1e-6, rtol=0)


@pytest.mark.parametrize("cls", [SRCNN, UrbanFM])
def test_learned_upsamplers_on_device(device, cls):
    fine, time = _series()
    cond = torch.stack([torch.sin(time[:, 0]), torch.cos(time[:, 0])], 1)
    torch.manual_seed(0)
    kw = dict(cond_features=2, width=8, num_blocks=1) if cls is UrbanFM else {}
    ref = cls(2, (4, 2), 2, **kw)
    dev = copy.deepcopy(ref).to(device)
    c = cond[:28] if cls is UrbanFM else None
    args = dict(patterns=["random:0.4"], steps=5, batch_size=8, val_every=2, val_maps=8)
    fit_upsampler(ref, fine[:28], c, val_fine=fine[28:],
                  val_cond=None if c is None else cond[28:], **args)
    fit_upsampler(dev, fine[:28].to(device), None if c is None else c.to(device),
                  val_fine=fine[28:].to(device),
                  val_cond=None if c is None else cond[28:].to(device), **args)
    assert dev.best_step == ref.best_step
    from torch_stgen.data import coarsen
    coarse, mask = coarsen(fine[28:], 2), torch.ones(12, 1, 4, 2)
    p_ref = ref.predict(coarse, mask, None if c is None else cond[28:])
    p_dev = dev.predict(coarse.to(device), mask.to(device),
                        None if c is None else cond[28:].to(device))
    assert p_dev.device.type == device.type
    _same(p_dev, p_ref, atol=1e-2, rtol=1e-2)                          # data scale ~5


def _kg(n=12):
    triples = [(f"s{i}", "is_a", "class_a" if i % 2 == 0 else "class_b") for i in range(n)]
    triples += [(f"s{i}", "near", f"s{(i + 1) % n}") for i in range(n)]
    kg = UrbanKG.from_triples(triples, name="tiny")
    kg.set_node_entities([f"s{i}" for i in range(n)])
    return kg


@pytest.mark.parametrize("options", [{}, {"geometry_moe": False}, {"guidance": False}])
def test_kgdiff_fit_and_generate_on_device(device, options):
    kg = _kg()
    torch.manual_seed(0)
    emb = torch.randn(kg.num_entities, 8)
    ref = KGDiff(kg, emb, 16, 4, 4, dim=8, model_channels=8, channel_mult=(1, 2),
                 guidance_dropout=0.0, **options)
    dev = copy.deepcopy(ref).to(device)
    g = torch.Generator().manual_seed(0)
    nodes = torch.arange(8).repeat(3)
    x = 3 + torch.sin(torch.arange(16.0) / 3)[None] * (1 + (nodes % 2)[:, None]) \
        + 0.1 * torch.randn(24, 16, generator=g)
    ref.fit(x, nodes, steps=3, batch_size=8, progress=False)
    dev.fit(x.to(device), nodes.to(device), steps=3, batch_size=8, progress=False)
    _close_weights(ref, dev)
    for sampler, steps in (("edm", 4), ("ddim", 5)):
        out_ref = ref.generate([8, 9, 10], num_samples=2, sampler=sampler,
                               num_steps=steps, seed=1)
        out_dev = dev.generate([8, 9, 10], num_samples=2, sampler=sampler,
                               num_steps=steps, seed=1)
        assert out_dev.device.type == device.type and out_dev.shape == (2, 3, 16)
        _same(out_dev, out_ref, atol=1e-2, rtol=1e-2)                  # data scale ~3


def test_pretrain_tucker_on_device(device):
    pytest.importorskip("pykeen", reason="TuckER pre-training needs the 'kg' extra (pykeen)")
    from torch_stgen.kg import pretrain_tucker
    kg = _kg()
    emb = pretrain_tucker(kg, dim=8, epochs=2, batch_size=16, cache_dir=False,
                          progress=False, device=device)
    assert emb.entity.shape == (kg.num_entities, 8) and emb.entity.device.type == "cpu"
    assert bool(torch.isfinite(emb.entity).all())


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="--device must be"):
        resolve_device("tpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(ValueError, match="--device cuda: CUDA is not available"):
            resolve_device("cuda")


def test_resolve_device_auto_sets_the_tf32_switches(monkeypatch):
    """'auto' on a CUDA machine sets TF32 as an explicit 'cuda' does (it returned before
    setting them). Runs anywhere: CUDA is faked, and only the switches are read."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        for tf32 in (True, False):
            assert resolve_device("auto", tf32=tf32).type == "cuda"
            assert torch.backends.cudnn.allow_tf32 is tf32
            assert torch.backends.cuda.matmul.allow_tf32 is tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# -------------------------------------------------------------------------- benchmarks
def test_benchmarks_run_on_device(device, tmp_path):
    """``--device`` reaches every learned method of both benchmarks; the rows record it and
    match the CPU rows (same seed: same masks, batches and noise)."""
    from torch_stgen.experiments import diffrecon as bd, kgdiff as bk
    n_threads = torch.get_num_threads()
    tiny_d = ["--city-size", "8", "--city-days", "6", "--steps", "4", "--joint-steps", "2",
              "--joint-refresh", "2", "--baseline-steps", "3", "--samples", "2",
              "--sampling-steps", "2", "--batch-size", "8", "--history-c", "3",
              "--history-f", "6", "--model-channels", "8", "--d-model", "8", "--no-progress",
              "--quick", "--early-stopping", "--val-every", "2"]
    tiny_k = ["--sensors", "16", "--city-days", "7", "--city-size", "8", "--steps", "2",
              "--batch-size", "4", "--sampling-steps", "2", "--tucker-epochs", "1",
              "--tucker-dim", "8", "--dim", "8", "--model-channels", "8", "--no-progress",
              "--quick", "--methods", "uncond,kgdiff", "--tucker-cache", str(tmp_path)]
    try:
        for mod, tiny in ((bd, tiny_d), (bk, tiny_k)):
            if mod is bk:
                pytest.importorskip("pykeen", reason="KGDiff's TuckER needs pykeen")
            rows = {}
            for dev in ("cpu", device.type):
                rows[dev] = mod.run(mod.build_parser().parse_args(tiny + ["--device", dev]))
            assert [r["device"] for r in rows[device.type]] == [device.type] * len(rows["cpu"])
            for a, b in zip(rows["cpu"], rows[device.type]):
                assert a["method"] == b["method"]
                assert b["mae"] == pytest.approx(a["mae"], rel=1e-3, abs=1e-3), a["method"]
    finally:
        torch.set_num_threads(n_threads)
