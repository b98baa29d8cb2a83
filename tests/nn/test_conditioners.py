import pytest
import torch
from torch import nn

from torch_stgen.nn.conditioners import (ConditionalDenoiser, Conditioner, ConditionerStack,
                                         ExternalConditioner, ObservedMapConditioner)
from torch_stgen.nn.unet import UNet2D


class ModeConditioner(Conditioner):
    """A user-written conditioner: a learned vector per discrete mode."""

    def __init__(self, num_modes, dim):
        super().__init__()
        self.vector_dim = dim
        self.embed = nn.Embedding(num_modes, dim)

    def forward(self, batch):
        return {"vector": self.embed(batch["mode"])}


class PooledFeatures(Conditioner):
    """A user-written feature conditioner: average-pools a history map to the bottleneck."""

    feature_channels = 2

    def forward(self, batch):
        return {"features": nn.functional.avg_pool2d(batch["history"], 2)}


def test_kind_and_sizes_are_declared():
    assert ModeConditioner(3, 5).kind == ("vector",)
    assert PooledFeatures().kind == ("features",)
    obs = ObservedMapConditioner(channels=2)
    assert obs.kind == ("map",) and obs.map_channels == 4
    assert ObservedMapConditioner(2, mask_channels=1).map_channels == 3
    assert ObservedMapConditioner(2, mask_key=None).map_channels == 2
    ext = ExternalConditioner(8, ext_features=3)
    assert ext.kind == ("vector",) and ext.vector_dim == 8
    assert str(obs) == ("ObservedMapConditioner(channels=2, key='obs', mask_key='mask', "
                        "map_channels=4, upsample=1)")


def test_observed_map_zeroes_and_flags_missing():
    x = torch.randn(2, 1, 4, 4)
    mask = (torch.rand(2, 1, 4, 4) > 0.5).float()
    x_missing_nan = torch.where(mask.bool(), x, torch.full_like(x, float("nan")))
    out = ObservedMapConditioner(1)({"obs": x_missing_nan, "mask": mask})["map"]
    assert out.shape == (2, 2, 4, 4)
    torch.testing.assert_close(out[:, :1], x * mask)
    torch.testing.assert_close(out[:, 1:], mask)
    assert bool(torch.isfinite(out).all())
    up = ObservedMapConditioner(1, upsample=2)({"obs": x, "mask": mask})["map"]
    assert up.shape == (2, 2, 8, 8)
    torch.testing.assert_close(up[:, :, ::2, ::2], torch.cat([x * mask, mask], 1))
    torch.testing.assert_close(up[:, :, 1::2, 1::2], torch.cat([x * mask, mask], 1))


def test_observed_map_errors():
    cond = ObservedMapConditioner(2)
    x = torch.randn(2, 2, 4, 4)
    with pytest.raises(KeyError, match="needs batch\\['mask'\\]"):
        cond({"obs": x})
    with pytest.raises(ValueError, match=r"batch\['obs'\] must have shape \[B, 2, h, w\]"):
        cond({"obs": x[:, :1], "mask": torch.ones(2, 1, 4, 4)})
    with pytest.raises(ValueError, match=r"batch\['mask'\] must have shape"):
        cond({"obs": x, "mask": torch.ones(2, 2, 4, 3)})
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN/inf at observed entries"):
        cond({"obs": bad, "mask": torch.ones(2, 2, 4, 4)})


def test_external_conditioner_time_axis_and_covariates():
    cond = ExternalConditioner(6, ext_features=2)
    time = torch.tensor([[[8, 0, 0], [9, 0, 0]], [[17, 4, 1], [18, 4, 1]]])
    ext = torch.randn(2, 2, 2)
    v = cond({"time_y": time, "ext_y": ext})["vector"]
    assert v.shape == (2, 6)
    ref = cond.time_embed(time[:, -1]) + cond.ext_embed(ext[:, -1])
    torch.testing.assert_close(v, ref)
    torch.testing.assert_close(cond({"time_y": time[:, -1], "ext_y": ext[:, -1]})["vector"], ref)
    mean = ExternalConditioner(6, ext_features=2, reduce="mean")
    mean.load_state_dict(cond.state_dict())
    ref_mean = (cond.time_embed(time) + cond.ext_embed(ext)).mean(1)
    torch.testing.assert_close(mean({"time_y": time, "ext_y": ext})["vector"], ref_mean)
    # different covariates or times give different vectors
    v2 = cond({"time_y": time, "ext_y": ext + 1})["vector"]
    assert (v - v2).abs().max() > 1e-4
    only_ext = ExternalConditioner(4, ext_features=3, use_time=False)
    assert only_ext({"ext_y": torch.randn(5, 3)})["vector"].shape == (5, 4)
    with pytest.raises(ValueError, match="needs time features"):
        ExternalConditioner(4, use_time=False)
    with pytest.raises(KeyError, match="needs batch\\['time_y'\\]"):
        cond({"ext_y": ext})
    # the cyclic encoding of torch_stgen.data.time_features ([B, T, 5]) is accepted
    a = 2 * torch.pi * time[..., 0].float() / 24
    b = 2 * torch.pi * time[..., 1].float() / 7
    cyclic = torch.stack([a.sin(), a.cos(), b.sin(), b.cos(), time[..., 2].float()], -1)
    torch.testing.assert_close(cond({"time_y": cyclic, "ext_y": ext})["vector"], v,
                               atol=1e-5, rtol=0)
    custom = ExternalConditioner(6, time_key="t", ext_key="u", ext_features=2)
    assert custom({"t": time, "u": ext})["vector"].shape == (2, 6)


def test_stack_concat_and_sum():
    a, b = ModeConditioner(3, 4), ModeConditioner(3, 4)
    obs = ObservedMapConditioner(1)
    batch = {"mode": torch.tensor([0, 2]), "obs": torch.randn(2, 1, 4, 4),
             "mask": torch.ones(2, 1, 4, 4), "history": torch.randn(2, 2, 8, 8)}
    cat = ConditionerStack([a, obs, b, PooledFeatures()])
    assert cat.vector_dim == 8 and cat.map_channels == 2 and cat.feature_channels == 2
    assert cat.kind == ("vector", "map", "features")
    out = cat(batch)
    torch.testing.assert_close(out["vector"], torch.cat([a(batch)["vector"],
                                                         b(batch)["vector"]], 1))
    torch.testing.assert_close(out["map"], obs(batch)["map"])
    assert out["features"].shape == (2, 2, 4, 4)
    summed = ConditionerStack([a, b], vector_mode="sum")
    assert summed.vector_dim == 4
    torch.testing.assert_close(summed(batch)["vector"],
                               a(batch)["vector"] + b(batch)["vector"])
    two_maps = ConditionerStack([obs, ObservedMapConditioner(1, key="obs2", mask_key=None)])
    batch["obs2"] = torch.randn(2, 1, 4, 4)
    m = two_maps(batch)["map"]
    assert m.shape == (2, 3, 4, 4)
    torch.testing.assert_close(m[:, 2:], batch["obs2"])
    with pytest.raises(ValueError, match="vector_mode='sum' needs equal vector_dim"):
        ConditionerStack([a, ModeConditioner(3, 5)], vector_mode="sum")
    with pytest.raises(TypeError, match="must be a Conditioner"):
        ConditionerStack([nn.Linear(2, 2)])


def test_check_catches_undeclared_or_misshaped_outputs():
    class Liar(Conditioner):
        vector_dim = 3

        def forward(self, batch):
            return batch["out"]

    liar = Liar()
    with pytest.raises(ValueError, match="declares vector_dim=3 but did not return 'vector'"):
        liar.check(liar({"out": {}}))
    with pytest.raises(ValueError, match="returned 'map' but declares map_channels=0"):
        liar.check({"vector": torch.zeros(2, 3), "map": torch.zeros(2, 1, 2, 2)})
    with pytest.raises(ValueError, match=r"'vector' must have shape \[B, 3\] with B=2"):
        liar.check({"vector": torch.zeros(4, 3)}, batch_size=2)
    with pytest.raises(ValueError, match="unknown keys"):
        liar.check({"vector": torch.zeros(2, 3), "extra": torch.zeros(1)})


def test_conditional_denoiser_glue_equals_manual_call():
    cond = ConditionerStack([ModeConditioner(3, 4), ObservedMapConditioner(1),
                             PooledFeatures()])
    den = ConditionalDenoiser.build(cond, data_channels=1, model_channels=8,
                                    channel_mult=(1, 2), num_res_blocks=1, num_heads=2)
    unet = den.unet
    assert (unet.in_channels, unet.out_channels, unet.cond_dim, unet.inter_channels) == \
        (3, 1, 4, 2)
    torch.nn.init.normal_(unet.out_conv.weight, std=0.1)
    batch = {"mode": torch.tensor([0, 1]), "obs": torch.randn(2, 1, 8, 8),
             "mask": (torch.rand(2, 1, 8, 8) > 0.3).float(),
             "history": torch.randn(2, 2, 8, 8)}
    x_t, t = torch.randn(2, 1, 8, 8), torch.tensor([4, 40])
    out = den(x_t, t, batch)
    signals = cond(batch)
    ref = unet(torch.cat([x_t, signals["map"]], 1), t, cond=signals["vector"],
               inter=signals["features"])
    torch.testing.assert_close(out, ref)
    assert out.shape == (2, 1, 8, 8)
    other = dict(batch, mode=torch.tensor([2, 2]))
    assert (den(x_t, t, other) - out).abs().max() > 1e-5
    with pytest.raises(ValueError, match="'batch' is required"):
        den(x_t, t)
    with pytest.raises(ValueError, match=r"'x_t' must have shape \[B, 1, H, W\]"):
        den(torch.randn(2, 3, 8, 8), t, batch)


def test_conditional_denoiser_outputs_meet_x_t_device_and_dtype():
    """Only the conditioner's 'map' was moved to x_t's device and dtype; a vector or
    feature map kept on the CPU (a table, a numpy-fed conditioner) reached a GPU U-Net as
    is. A recording U-Net on the 'meta' device shows what the glue hands over."""
    class Outputs(Conditioner):
        vector_dim, feature_channels, map_channels = 3, 2, 1

        def forward(self, batch):
            return {"vector": batch["v"], "features": batch["f"], "map": batch["m"]}

    class RecordingUNet(nn.Module):
        in_channels, out_channels, cond_dim, inter_channels = 2, 1, 3, 2

        def forward(self, x, t, cond=None, inter=None):
            self.seen = {"x": x, "cond": cond, "inter": inter}
            return x[:, :1]

    unet = RecordingUNet()
    den = ConditionalDenoiser(unet, Outputs())
    x_t = torch.zeros(2, 1, 8, 8, dtype=torch.float64, device="meta")
    batch = {"v": torch.randn(2, 3), "f": torch.randn(2, 2, 4, 4),
             "m": torch.randn(2, 1, 8, 8)}
    den(x_t, torch.tensor([4, 40]), batch)
    for key, shape in (("x", (2, 2, 8, 8)), ("cond", (2, 3)), ("inter", (2, 2, 4, 4))):
        seen = unet.seen[key]
        assert (seen.device.type, seen.dtype, tuple(seen.shape)) == \
            ("meta", torch.float64, shape), key


def test_conditional_denoiser_size_checks():
    cond = ModeConditioner(3, 4)
    with pytest.raises(ValueError, match="unet.cond_dim=0 must equal the conditioner's "
                                         "vector_dim=4"):
        ConditionalDenoiser(UNet2D(1, 1, model_channels=8), cond)
    with pytest.raises(ValueError, match="inter_channels=0 must equal .* feature_channels=2"):
        ConditionalDenoiser(UNet2D(1, 1, model_channels=8), PooledFeatures())
    with pytest.raises(ValueError, match="must exceed the conditioner's map_channels=2"):
        ConditionalDenoiser(UNet2D(2, 1, model_channels=8), ObservedMapConditioner(1))
    plain = ConditionalDenoiser(UNet2D(1, 1, model_channels=8))
    assert plain(torch.randn(2, 1, 4, 4), 3).shape == (2, 1, 4, 4)


def test_user_conditioner_learns_conditional_mixture():
    """A small U-Net trained through a user-written conditioner samples the requested
    mode of a 4-mode Gaussian mixture on 4 x 4 images."""
    from torch_stgen.diffusion import DDPMScheduler, diffusion_loss, sample

    K, H, W = 4, 4, 4
    means = -torch.ones(K, 1, H, W)
    for k in range(K):  # mode k: its own bright 2 x 2 quadrant
        r, c = divmod(k, 2)
        means[k, 0, 2 * r:2 * r + 2, 2 * c:2 * c + 2] = 1.0
    den = ConditionalDenoiser.build(ModeConditioner(K, 8), data_channels=1,
                                    model_channels=16, channel_mult=(1, 2),
                                    num_res_blocks=1, mid_attention=False)
    sched = DDPMScheduler(200, beta_schedule="linear", beta_end=0.1,
                          prediction_type="epsilon")
    assert sched.alphas_cumprod[-1] < 1e-3  # x_T is (almost) pure noise
    opt = torch.optim.Adam(den.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        mode = torch.randint(0, K, (64,), generator=g)
        x0 = means[mode] + 0.1 * torch.randn(64, 1, H, W, generator=g)
        loss = diffusion_loss(lambda x, t: den(x, t, {"mode": mode}), x0, sched, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    n = 50
    mode = torch.arange(K).repeat_interleave(n)
    xs = sample(lambda x, t: den(x, t, {"mode": mode}), sched, (K * n, 1, H, W),
                num_inference_steps=40, generator=g)
    nearest = ((xs[:, None] - means[None]) ** 2).flatten(2).sum(-1).argmin(1)
    for k in range(K):
        assert (nearest[mode == k] == k).float().mean() > 0.9, k
    assert (nearest == mode).float().mean() > 0.9


def test_stack_names_the_missing_key_once():
    """The stack re-wrapped the built-in conditioner's whole message as the 'key'."""
    from torch_stgen.nn.conditioners import ConditionerStack, ExternalConditioner
    with pytest.raises(KeyError) as err:
        ConditionerStack([ExternalConditioner(8)])({"obs": torch.zeros(1)})
    msg = str(err.value)
    assert "ExternalConditioner reads batch key 'time_y' that the batch lacks (it has " \
           "['obs'])" in msg and "needs batch" not in msg
    with pytest.raises(KeyError) as nested:                 # a stack inside a stack
        ConditionerStack([ConditionerStack([ExternalConditioner(8)])])({"obs": torch.zeros(1)})
    assert str(nested.value) == msg

    class Bare(Conditioner):
        vector_dim = 4

        def forward(self, batch):
            raise KeyError()                                # no key at all: no IndexError
    with pytest.raises(KeyError) as bare:                   # its own error, passed unchanged
        ConditionerStack([Bare()])({"obs": torch.zeros(1)})
    assert bare.value.args == ()

    class Reads(Conditioner):                               # a user's conditioner: plain []
        vector_dim = 2

        def forward(self, batch):
            return {"vector": batch["weather"]}
    with pytest.raises(KeyError, match="Reads reads batch key 'weather' that the batch lacks"):
        ConditionerStack([Reads()])({"obs": torch.zeros(1)})


def test_stack_passes_a_conditioners_own_key_error_unchanged():
    """A KeyError from a conditioner's own lookup table was reported as a missing batch key
    (with the original traceback suppressed)."""
    from torch_stgen.nn.conditioners import ConditionerStack

    class Lookup(Conditioner):
        vector_dim = 2

        def __init__(self):
            super().__init__()
            self.table = {"a": torch.ones(2)}

        def forward(self, batch):
            return {"vector": self.table["b"].expand(batch["x"].shape[0], 2)}
    with pytest.raises(KeyError) as err:
        ConditionerStack([Lookup()])({"x": torch.zeros(3, 1)})
    assert err.value.args == ("b",) and "batch" not in str(err.value)
    # reading the batch with .get still works through the stack's view of it
    class Gets(Conditioner):
        vector_dim = 1

        def forward(self, batch):
            return {"vector": batch.get("x", torch.zeros(3, 1))}
    out = ConditionerStack([Gets()])({"x": torch.ones(3, 1)})
    assert torch.equal(out["vector"], torch.ones(3, 1))


def test_reset_parameters_reinitialises_denoiser_and_conditioners():
    """nn.Module has no reset_parameters: a trained ConditionalDenoiser / ConditionerStack
    could not be re-initialised like the library's layers."""
    class Table(Conditioner):             # a user conditioner's own nn.Parameter
        vector_dim = 2

        def __init__(self):
            super().__init__()
            self.table = nn.Parameter(torch.zeros(3, 2))

        def forward(self, batch):
            return {"vector": self.table[batch["mode"]]}

    cond = ConditionerStack([ModeConditioner(3, 4), ExternalConditioner(4, ext_features=2),
                             ObservedMapConditioner(1)])
    den = ConditionalDenoiser.build(cond, data_channels=1, model_channels=8,
                                    channel_mult=(1, 2), num_res_blocks=1, num_heads=2)
    with torch.no_grad():
        for p in den.parameters():
            p.fill_(7.0)
    den.reset_parameters()
    for name, p in den.named_parameters():
        if p.numel() > 1:                 # biases may start at 0, weights are drawn
            assert not bool((p == 7.0).all()), name
    with torch.no_grad():
        for p in cond.parameters():
            p.fill_(7.0)
    cond.reset_parameters()
    assert all(not bool((p == 7.0).all()) for p in cond.parameters() if p.numel() > 1)
    with pytest.raises(RuntimeError, match=r"holds parameters \['table'\] of its own"):
        ConditionerStack([Table()]).reset_parameters()
