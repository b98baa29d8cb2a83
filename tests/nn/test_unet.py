import pytest
import torch

from torch_stgen.nn.unet import ResBlock, UNet2D, num_groups


def small_unet(**kw):
    args = dict(model_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                attention_resolutions=(2,), num_heads=2)
    args.update(kw)
    return UNet2D(2, 1, **args)


def randomise_output(unet):
    # the output conv is zero-initialised; give it weights so the output depends on input
    torch.nn.init.normal_(unet.out_conv.weight, std=0.1)
    torch.nn.init.normal_(unet.out_conv.bias, std=0.1)
    return unet


def test_num_groups():
    assert [num_groups(c) for c in (1, 4, 16, 24, 64, 128, 96)] == [1, 2, 8, 12, 32, 32, 32]
    for c in (8, 12, 40, 200):
        assert c % num_groups(c) == 0


def test_zero_initialised_output():
    unet = small_unet()
    out = unet(torch.randn(2, 2, 8, 8), torch.tensor([1, 500]))
    assert out.shape == (2, 1, 8, 8) and bool((out == 0).all())


@pytest.mark.parametrize("H,W", [(8, 4), (16, 8), (16, 16), (32, 32)])
@pytest.mark.parametrize("with_inter", [False, True])
def test_forward_backward_sizes(H, W, with_inter):
    unet = randomise_output(small_unet(cond_dim=3, inter_channels=4 if with_inter else 0))
    hb, wb = unet.bottleneck_size(H, W)
    assert (hb, wb) == (H // 2, W // 2)
    x = torch.randn(2, 2, H, W, requires_grad=True)
    inter = torch.randn(2, 4, hb, wb, requires_grad=True) if with_inter else None
    out = unet(x, torch.tensor([3, 900]), cond=torch.randn(2, 3), inter=inter)
    assert out.shape == (2, 1, H, W)
    out.square().mean().backward()
    assert bool(torch.isfinite(x.grad).all()) and x.grad.abs().sum() > 0
    if with_inter:
        assert inter.grad.abs().sum() > 0
    for name, p in unet.named_parameters():
        assert p.grad is not None, name


@pytest.mark.parametrize("H,W", [(8, 4), (7, 5), (9, 16)])
def test_padding_for_any_size_three_levels(H, W):
    unet = randomise_output(UNet2D(1, 2, model_channels=8, channel_mult=(1, 2, 2),
                                   num_res_blocks=1, num_heads=2, inter_channels=3))
    assert unet.downsample_factor == 4
    hb, wb = unet.bottleneck_size(H, W)
    assert (hb, wb) == (-(-H // 4), -(-W // 4))
    out = unet(torch.randn(3, 1, H, W), torch.tensor(10), inter=torch.randn(3, 3, hb, wb))
    assert out.shape == (3, 2, H, W)
    assert bool(torch.isfinite(out).all())


def test_bottleneck_size_numbers():
    unet = UNet2D(1, 1, model_channels=8, channel_mult=(1, 2, 2), num_res_blocks=1)
    assert unet.bottleneck_size(8, 4) == (2, 1)
    assert unet.bottleneck_size(7, 5) == (2, 2)
    assert unet.bottleneck_size(32, 32) == (8, 8)
    assert UNet2D(1, 1, model_channels=8, channel_mult=(1,)).bottleneck_size(5, 3) == (5, 3)


def _block_embedding_inputs(unet, **call):
    seen = []
    hooks = [b.emb_proj.register_forward_hook(lambda m, inp, out: seen.append(inp[0].clone()))
             for b in unet.res_blocks()]
    try:
        unet(**call)
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("film", [True, False])
def test_every_block_receives_step_and_cond(film):
    unet = randomise_output(small_unet(cond_dim=5, film=film))
    n_blocks = len(unet.res_blocks())
    assert n_blocks == 1 * 2 + 2 + 2 * 2  # encoder + middle + decoder
    x = torch.randn(2, 2, 8, 8)
    t = torch.tensor([5, 5])
    c1, c2 = torch.randn(2, 5), torch.randn(2, 5)
    e1 = _block_embedding_inputs(unet, x=x, t=t, cond=c1)
    e2 = _block_embedding_inputs(unet, x=x, t=t, cond=c2)
    e3 = _block_embedding_inputs(unet, x=x, t=torch.tensor([6, 700]), cond=c1)
    assert len(e1) == len(e2) == len(e3) == n_blocks
    for a, b, c in zip(e1, e2, e3):
        assert (a - b).abs().max() > 1e-4  # the condition reaches this block
        assert (a - c).abs().max() > 1e-4  # the step reaches this block
    # and changes the network output
    y1, y2 = unet(x, t, cond=c1), unet(x, t, cond=c2)
    assert (y1 - y2).abs().max() > 1e-4
    # inside each block the embedding changes the block's output (not normalised away)
    for block in unet.res_blocks():
        h = torch.randn(2, block.in_channels, 4, 4)
        emb = torch.randn(2, unet.time_embed_dim)
        d = (block(h, emb) - block(h, emb + torch.randn_like(emb))).abs().max()
        assert d > 1e-3


def test_additive_and_film_block_formulas():
    for film in (True, False):
        block = ResBlock(4, 6, emb_dim=3, film=film)
        x, e = torch.randn(2, 4, 3, 3), torch.randn(2, 3)
        h = block.norm2(block.conv1(torch.nn.functional.silu(block.norm1(x))))
        p = block.emb_proj(torch.nn.functional.silu(e))[:, :, None, None]
        if film:
            h = h * (1 + p[:, :6]) + p[:, 6:]
        else:
            h = h + p
        ref = block.skip(x) + block.conv2(torch.nn.functional.silu(h))
        torch.testing.assert_close(block(x, e), ref)


def test_inter_features_change_output_and_resize_rules():
    unet = randomise_output(small_unet(inter_channels=3))
    x, t = torch.randn(2, 2, 16, 8), torch.tensor([1, 2])
    a = unet(x, t, inter=torch.randn(2, 3, 8, 4))
    b = unet(x, t, inter=torch.randn(2, 3, 8, 4))
    assert (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match=r"bottleneck's spatial size 8 x 4"):
        unet(x, t, inter=torch.randn(2, 3, 4, 2))
    with pytest.raises(ValueError, match="'inter' of shape .* is required"):
        unet(x, t)
    with pytest.raises(ValueError, match=r"inter_channels=3"):
        unet(x, t, inter=torch.randn(2, 5, 8, 4))
    resized = small_unet(inter_channels=3, inter_resize="bilinear")
    resized.load_state_dict(unet.state_dict())
    coarse = torch.randn(2, 3, 4, 2)
    up = torch.nn.functional.interpolate(coarse, size=(8, 4), mode="bilinear",
                                         align_corners=False)
    torch.testing.assert_close(resized(x, t, inter=coarse), unet(x, t, inter=up))


def test_identity_inter_init_starts_as_the_unet_without_inter_features():
    torch.manual_seed(0)
    unet = randomise_output(small_unet(cond_dim=3, inter_channels=4, inter_init="identity"))
    plain = small_unet(cond_dim=3)
    state = {k: v for k, v in unet.state_dict().items() if not k.startswith("inter_proj")}
    plain.load_state_dict(state)
    ch = unet.inter_proj.out_channels
    w = unet.inter_proj.weight[:, :, 0, 0]
    torch.testing.assert_close(w[:, :ch], torch.eye(ch))
    assert bool((w[:, ch:] == 0).all()) and bool((unet.inter_proj.bias == 0).all())
    x, t, c = torch.randn(2, 2, 16, 8), torch.tensor([3, 700]), torch.randn(2, 3)
    inter = torch.randn(2, 4, 8, 4, requires_grad=True)
    out = unet(x, t, cond=c, inter=inter)
    # W_p = [I | 0]: exactly the U-Net without the inter branch, whatever the features
    torch.testing.assert_close(out, plain(x, t, cond=c))
    torch.testing.assert_close(unet(x, t, cond=c, inter=5 * torch.randn(2, 4, 8, 4)), out)
    out.square().mean().backward()
    # the zero connection learns from the first step; the encoder behind it waits for it
    assert unet.inter_proj.weight.grad[:, ch:].abs().sum() > 0
    assert bool((inter.grad == 0).all())
    with torch.no_grad():
        unet.inter_proj.weight -= 0.1 * unet.inter_proj.weight.grad
    assert (unet(x, t, cond=c, inter=inter.detach()) - out).abs().max() > 1e-5
    # the default initialisation mixes the intra features too
    default = small_unet(cond_dim=3, inter_channels=4)
    assert (default.inter_proj.weight[:, :ch, 0, 0] - torch.eye(ch)).abs().max() > 0.1
    with pytest.raises(ValueError, match="'inter_init' must be one of"):
        small_unet(inter_channels=4, inter_init="zeros")


def test_timestep_forms_and_float_noise_labels():
    unet = randomise_output(small_unet())
    x = torch.randn(3, 2, 8, 4)
    full = unet(x, torch.tensor([7, 7, 7]))
    torch.testing.assert_close(unet(x, 7), full)
    torch.testing.assert_close(unet(x, torch.tensor([7])), full)
    c_noise = torch.log(torch.tensor([0.01, 1.0, 50.0])) / 4
    y = unet(x, c_noise)
    assert y.shape == (3, 1, 8, 4) and bool(torch.isfinite(y).all())
    with pytest.raises(ValueError, match=r"'t' must have shape \[B=3\]"):
        unet(x, torch.tensor([1, 2]))


def test_input_errors():
    unet = small_unet(cond_dim=4)
    x, t = torch.randn(2, 2, 8, 8), torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"'x' must have shape \[B, in_channels=2, H, W\]"):
        unet(torch.randn(2, 3, 8, 8), t, cond=torch.randn(2, 4))
    with pytest.raises(ValueError, match="'cond' of shape .* is required"):
        unet(x, t)
    with pytest.raises(ValueError, match=r"'cond' must have shape \[B=2, cond_dim=4\]"):
        unet(x, t, cond=torch.randn(2, 5))
    with pytest.raises(ValueError, match="NaN"):
        unet(x, t, cond=torch.full((2, 4), float("nan")))
    with pytest.raises(ValueError, match="cond_dim=0"):
        small_unet()(x, t, cond=torch.randn(2, 4))
    with pytest.raises(ValueError, match="'num_heads'=3 must divide"):
        small_unet(num_heads=3)
    with pytest.raises(ValueError, match="'inter_resize'"):
        small_unet(inter_resize="cubic")
    for bad in ((), (1, 1.5), 2, (1, 0)):          # (1, 1.5) was silently (1, 1)
        with pytest.raises(ValueError, match="'channel_mult' must be a non-empty sequence"):
            small_unet(channel_mult=bad)
    # a factor no level has was ignored: a U-Net without the attention asked for
    with pytest.raises(ValueError, match=r"'attention_resolutions' \[3\] are not "
                                         r"downsampling factors .* \[1, 2\]"):
        small_unet(attention_resolutions=(3,))
    with pytest.raises(ValueError, match="'time_embed_dim' must be a positive integer"):
        small_unet(time_embed_dim=0)                # was silently the default


def test_repr():
    unet = small_unet(cond_dim=4, inter_channels=2)
    assert str(unet) == ("UNet2D(2, 1, model_channels=8, channel_mult=(1, 2), "
                         "num_res_blocks=1, attention_resolutions=(2,), cond_dim=4, "
                         "film=True, inter_channels=2)")
