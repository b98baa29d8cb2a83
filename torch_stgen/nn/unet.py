r"""A 2-D U-Net denoiser with step/condition embeddings in every block and an optional
*inter-map* feature input fused at the bottleneck.

The network follows the DDPM / ADM U-Net (Ho et al. 2020,
`arXiv:2006.11239 <https://arxiv.org/abs/2006.11239>`_; Dhariwal & Nichol 2021,
`arXiv:2105.05233 <https://arxiv.org/abs/2105.05233>`_) with two additions used by the
systems this library implements:

* **Bottleneck fusion** (DiffRecon, `arXiv:2410.05323 <https://arxiv.org/abs/2410.05323>`_,
  eqs. 11-13): the U-Net encoder is the *intra-map* encoder of the noisy map; its bottleneck
  features are concatenated with the features of an *inter-map* encoder (ST-PointFormer or
  T-PatternNet over the history) and projected back before the middle block and decoder.
* **Conditioning in every block** (KGDiff, AAAI 2026, eq. 19): the diffusion-step
  embedding and a conditioning vector (e.g. the KG guidance :math:`\varphi`) are added and
  injected into every residual block, additively or as FiLM scale/shift.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_int
from .embeddings import TimestepEmbedding, _check_finite

__all__ = ["UNet2D"]


def num_groups(channels: int, max_groups: int = 32, min_group_channels: int = 2) -> int:
    """The largest GroupNorm group count ``<= max_groups`` that divides ``channels`` and
    leaves at least ``min_group_channels`` channels per group (``1`` if none does); e.g.
    16 -> 8, 64 -> 32, 128 -> 32. One channel per group would be InstanceNorm, whose
    statistics over a 2 x 2 bottleneck are mostly noise."""
    for g in range(min(max_groups, channels // min_group_channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


class ResBlock(nn.Module):
    r"""Residual block conditioned on an embedding vector :math:`e` (step + condition).

    .. math::
        h &= \mathrm{Conv}_1\big(\mathrm{SiLU}(\mathrm{GN}_1(x))\big) \\
        h &= \begin{cases}
            \mathrm{GN}_2(h) \odot (1 + \gamma) + \beta, &
                [\gamma, \beta] = W_e\,\mathrm{SiLU}(e) \quad \text{(FiLM)} \\
            \mathrm{GN}_2(h) + W_e\,\mathrm{SiLU}(e) & \text{(additive)}
        \end{cases} \\
        y &= \mathrm{skip}(x) + \mathrm{Conv}_2\big(\mathrm{Dropout}(\mathrm{SiLU}(h))\big)
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int,
                 dropout: float = 0.0, film: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.film = film
        self.norm1 = nn.GroupNorm(num_groups(in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_channels * (2 if film else 1))
        self.norm2 = nn.GroupNorm(num_groups(out_channels), out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = (nn.Identity() if in_channels == out_channels
                     else nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        e = self.emb_proj(F.silu(emb))[:, :, None, None]
        if self.film:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            # added after the norm: a per-channel bias added before GroupNorm would be
            # partly (fully, for one channel per group) removed by the normalisation
            h = self.norm2(h) + e
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the ``H*W`` positions of a feature map (residual)."""

    def __init__(self, channels: int, num_heads: int = 4):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"'num_heads'={num_heads} must divide the channel count "
                             f"{channels} of every attention block")
        self.channels, self.num_heads = channels, num_heads
        self.norm = nn.GroupNorm(num_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.num_heads, C // self.num_heads, H * W)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # [B, heads, HW, C/heads]
        h = F.scaled_dot_product_attention(q, k, v)
        h = h.transpose(-1, -2).reshape(B, C, H, W)
        return x + self.proj(h)


class _Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class _Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Stage(nn.ModuleList):
    """A sequence of layers; residual blocks receive the embedding."""

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        for layer in self:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return h


_INTER_RESIZE = ("error", "nearest", "bilinear", "area")
_INTER_INIT = ("default", "identity")


class UNet2D(nn.Module):
    r"""2-D U-Net noise/denoiser network with step + condition embedding in every residual
    block (KGDiff eq. 19) and optional inter-map features fused at the bottleneck
    (DiffRecon, `arXiv:2410.05323 <https://arxiv.org/abs/2410.05323>`_, eqs. 11-13).

    Embedding injected into **every** residual block (encoder, middle and decoder):

    .. math::
        e = \mathrm{MLP}_t\big(\mathrm{PE}(t)\big) + \mathrm{MLP}_c(c)

    where :math:`\mathrm{PE}` is the sinusoidal encoding (:class:`TimestepEmbedding`) and
    :math:`c` the conditioning vector ``cond``; each block maps :math:`\mathrm{SiLU}(e)`
    to a FiLM scale and shift (``film=True``) or to an additive bias (``film=False``),
    see :class:`ResBlock`.

    Bottleneck fusion of the intra-map encoder :math:`E` and inter-map features
    :math:`h_\text{inter}` (eqs. 11-13: the bottleneck sees the concatenation followed by
    a projection, here a :math:`1 \times 1` convolution):

    .. math::
        h_\text{intra} = E(x_t, t, c), \qquad
        h = W_p \big[ h_\text{intra} \,\|\, h_\text{inter} \big], \qquad
        \hat\epsilon = D(h, \text{skips}, t, c)

    **Any** ``H x W`` is accepted: the input is zero-padded at the bottom/right to a
    multiple of :math:`m = 2^{\text{len(channel\_mult)} - 1}` and the output cropped back.
    The bottleneck therefore has spatial size
    :meth:`bottleneck_size` ``(H, W) = (ceil(H / m), ceil(W / m))``; inter-map features
    must have that size, or are resized to it with ``inter_resize`` (``"nearest"``,
    ``"bilinear"`` or ``"area"`` via :func:`torch.nn.functional.interpolate`); the
    default ``"error"`` raises a ``ValueError`` naming the expected size.

    The output convolution is **zero-initialised** (common practice since DDPM/ADM), so a
    fresh network predicts exactly 0 for every input; it learns from the first step.
    GroupNorm uses the largest group count <= 32 that divides the channel count with at
    least 2 channels per group (:func:`num_groups`).

    Args:
        in_channels (int): input channels (data channels + conditioning map channels).
        out_channels (int): output channels.
        model_channels (int, optional): base width. (default: ``64``)
        channel_mult (Sequence[int], optional): width multiplier per resolution level;
            ``len(channel_mult) - 1`` downsamplings. (default: ``(1, 2)``)
        num_res_blocks (int, optional): residual blocks per level in the encoder (the
            decoder has one more per level). (default: ``2``)
        attention_resolutions (Sequence[int], optional): downsampling factors (1, 2, 4,
            ...) at which self-attention follows each residual block. (default: ``()``)
        dropout (float, optional): dropout inside residual blocks. (default: ``0.0``)
        cond_dim (int, optional): size of the conditioning vector ``cond``; ``0`` for
            none. (default: ``0``)
        film (bool, optional): FiLM scale/shift (``True``) or additive (``False``)
            injection of the embedding. (default: ``True``)
        inter_channels (int, optional): channels of the inter-map features fused at the
            bottleneck; ``0`` for none. (default: ``0``)
        time_embed_dim (int, optional): embedding size :math:`|e|`.
            (default: ``4 * model_channels``)
        num_heads (int, optional): attention heads (must divide the channels of every
            attention block). (default: ``4``)
        mid_attention (bool, optional): self-attention in the middle block.
            (default: ``True``)
        time_scale (float, optional): factor applied to ``t`` before the sinusoidal
            encoding, e.g. ``1000`` for EDM's :math:`c_\text{noise} = \ln(\sigma)/4`.
            (default: ``1.0``)
        inter_resize (str, optional): rule for inter features whose spatial size differs
            from :meth:`bottleneck_size`: ``"error"``, ``"nearest"``, ``"bilinear"`` or
            ``"area"``. (default: ``"error"``)
        inter_init (str, optional): initialisation of the fusion projection :math:`W_p`.
            ``"default"``: PyTorch's for a :math:`1 \times 1` convolution.
            ``"identity"``: :math:`W_p = [\,I \;|\; 0\,]`, zero bias, so a fresh network
            computes exactly what the same U-Net *without* inter features computes, and
            the inter branch enters through weights that start at zero and learn from the
            first step (the zero-initialised connection of ControlNet, Zhang et al. 2023;
            not in DiffRecon). The function class of eqs. 11-13 is unchanged.
            (default: ``"default"``)

    Shapes:
        - **input:** ``x`` ``[B, in_channels, H, W]``, ``t`` ``[B]`` (or a scalar; step
          indices or noise labels), ``cond`` ``[B, cond_dim]``, ``inter``
          ``[B, inter_channels, *bottleneck_size(H, W)]``
        - **output:** ``[B, out_channels, H, W]``
    """

    def __init__(self, in_channels: int, out_channels: int, model_channels: int = 64,
                 channel_mult: Sequence[int] = (1, 2), num_res_blocks: int = 2,
                 attention_resolutions: Sequence[int] = (), dropout: float = 0.0,
                 cond_dim: int = 0, film: bool = True, inter_channels: int = 0,
                 time_embed_dim: Optional[int] = None, num_heads: int = 4,
                 mid_attention: bool = True, time_scale: float = 1.0,
                 inter_resize: str = "error", inter_init: str = "default"):
        super().__init__()
        for name, v, lo in (("in_channels", in_channels, 1), ("out_channels", out_channels, 1),
                            ("model_channels", model_channels, 1),
                            ("num_res_blocks", num_res_blocks, 1), ("cond_dim", cond_dim, 0),
                            ("inter_channels", inter_channels, 0), ("num_heads", num_heads, 1)):
            if int(v) != v or v < lo:
                raise ValueError(f"'{name}' must be an integer >= {lo} (got {v})")
        given = channel_mult
        try:            # a float multiplier (1.5) was truncated; a bare int not iterable
            channel_mult = tuple(check_int("channel_mult", m, 1) for m in channel_mult)
        except (TypeError, ValueError):
            channel_mult = ()
        if not channel_mult:
            raise ValueError(f"'channel_mult' must be a non-empty sequence of positive "
                             f"integers (got {given!r})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"'dropout' must lie in [0, 1) (got {dropout})")
        if inter_init not in _INTER_INIT:
            raise ValueError(f"'inter_init' must be one of {_INTER_INIT} (got {inter_init!r})")
        if inter_resize not in _INTER_RESIZE:
            raise ValueError(f"'inter_resize' must be one of {_INTER_RESIZE} "
                             f"(got {inter_resize!r})")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.model_channels = int(model_channels)
        self.channel_mult = channel_mult
        self.num_res_blocks = int(num_res_blocks)
        self.attention_resolutions = tuple(check_int("attention_resolutions", a, 1)
                                           for a in attention_resolutions)
        reachable = [2 ** level for level in range(len(channel_mult))]
        unreachable = [a for a in self.attention_resolutions if a not in reachable]
        if unreachable:         # they used to be ignored: no attention at all
            raise ValueError(f"'attention_resolutions' {unreachable} are not downsampling "
                             f"factors of this U-Net (with {len(channel_mult)} levels: "
                             f"{reachable})")
        if time_embed_dim is not None and (isinstance(time_embed_dim, bool)
                                           or int(time_embed_dim) != time_embed_dim
                                           or time_embed_dim < 1):
            raise ValueError(f"'time_embed_dim' must be a positive integer or None "
                             f"(got {time_embed_dim!r})")
        self.dropout = float(dropout)
        self.cond_dim = int(cond_dim)
        self.film = bool(film)
        self.inter_channels = int(inter_channels)
        self.time_embed_dim = int(time_embed_dim or 4 * model_channels)
        self.num_heads = int(num_heads)
        self.mid_attention = bool(mid_attention)
        self.time_scale = float(time_scale)
        self.inter_resize = inter_resize
        self.inter_init = inter_init
        self.downsample_factor = 2 ** (len(channel_mult) - 1)

        mc, E = self.model_channels, self.time_embed_dim
        self.time_embed = TimestepEmbedding(E, hidden=E, freq_dim=mc, scale=time_scale)
        self.cond_embed = (nn.Sequential(nn.Linear(self.cond_dim, E), nn.SiLU(),
                                         nn.Linear(E, E)) if self.cond_dim else None)

        def block(cin, cout):
            return ResBlock(cin, cout, E, dropout, self.film)

        self.input_conv = nn.Conv2d(self.in_channels, mc, 3, padding=1)
        self.encoder = nn.ModuleList()
        skips, ch, ds = [mc], mc, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(self.num_res_blocks):
                layers = [block(ch, mc * mult)]
                ch = mc * mult
                if ds in self.attention_resolutions:
                    layers.append(AttentionBlock(ch, num_heads))
                self.encoder.append(_Stage(layers))
                skips.append(ch)
            if level < len(channel_mult) - 1:
                self.encoder.append(_Stage([_Downsample(ch)]))
                skips.append(ch)
                ds *= 2
        self.bottleneck_channels = ch
        self.inter_proj = (nn.Conv2d(ch + self.inter_channels, ch, 1)
                           if self.inter_channels else None)
        mid = [block(ch, ch)]
        if self.mid_attention:
            mid.append(AttentionBlock(ch, num_heads))
        mid.append(block(ch, ch))
        self.middle = _Stage(mid)
        self.decoder = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(self.num_res_blocks + 1):
                layers = [block(ch + skips.pop(), mc * mult)]
                ch = mc * mult
                if ds in self.attention_resolutions:
                    layers.append(AttentionBlock(ch, num_heads))
                if level > 0 and i == self.num_res_blocks:
                    layers.append(_Upsample(ch))
                    ds //= 2
                self.decoder.append(_Stage(layers))
        self.out_norm = nn.GroupNorm(num_groups(ch), ch)
        self.out_conv = nn.Conv2d(ch, self.out_channels, 3, padding=1)
        self.reset_parameters()

    def reset_parameters(self):
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)
        if self.inter_proj is not None and self.inter_init == "identity":
            ch = self.inter_proj.out_channels  # W_p = [I | 0]: h = h_intra at start
            with torch.no_grad():
                self.inter_proj.weight.zero_()
                self.inter_proj.weight[:, :ch, 0, 0].copy_(torch.eye(ch))
                self.inter_proj.bias.zero_()

    def res_blocks(self):
        """All residual blocks (each receives the step + condition embedding)."""
        return [m for m in self.modules() if isinstance(m, ResBlock)]

    def bottleneck_size(self, H: int, W: int) -> Tuple[int, int]:
        r"""Spatial size ``(ceil(H / m), ceil(W / m))`` of the bottleneck for an
        ``H x W`` input, :math:`m = 2^{\text{len(channel\_mult)}-1}`: the size inter-map
        features must have."""
        m = self.downsample_factor
        return (-(-int(H) // m), -(-int(W) // m))

    def embedding(self, t, batch_size: int, cond: Optional[Tensor] = None,
                  device=None) -> Tensor:
        r"""The block embedding :math:`e = \mathrm{MLP}_t(\mathrm{PE}(t)) + \mathrm{MLP}_c(c)`,
        ``[B, time_embed_dim]``."""
        t = torch.as_tensor(t, device=device)
        if t.dim() == 0 or (t.dim() == 1 and t.shape[0] == 1 and batch_size != 1):
            t = t.reshape(1).expand(batch_size)
        if t.dim() != 1 or t.shape[0] != batch_size:
            raise ValueError(f"'t' must have shape [B={batch_size}] or be a scalar "
                             f"(got {tuple(t.shape)})")
        emb = self.time_embed(t)
        if self.cond_embed is not None:
            if cond is None:
                raise ValueError(f"'cond' of shape [B={batch_size}, cond_dim={self.cond_dim}] "
                                 f"is required (the U-Net was built with cond_dim="
                                 f"{self.cond_dim})")
            if cond.dim() != 2 or tuple(cond.shape) != (batch_size, self.cond_dim):
                raise ValueError(f"'cond' must have shape [B={batch_size}, cond_dim="
                                 f"{self.cond_dim}] (got {tuple(cond.shape)})")
            _check_finite("cond", cond)
            emb = emb + self.cond_embed(cond.to(emb.dtype))
        elif cond is not None:
            raise ValueError("'cond' was given but the U-Net was built with cond_dim=0; "
                             "pass cond_dim=<size of the vector>")
        return emb

    def _inter(self, inter: Optional[Tensor], B: int, size: Tuple[int, int]) -> Optional[Tensor]:
        if self.inter_proj is None:
            if inter is not None:
                raise ValueError("'inter' was given but the U-Net was built with "
                                 "inter_channels=0; pass inter_channels=<channels>")
            return None
        if inter is None:
            raise ValueError(f"'inter' of shape [B={B}, inter_channels={self.inter_channels}, "
                             f"{size[0]}, {size[1]}] is required (the U-Net was built with "
                             f"inter_channels={self.inter_channels})")
        if inter.dim() != 4 or inter.shape[0] != B or inter.shape[1] != self.inter_channels:
            raise ValueError(f"'inter' must have shape [B={B}, inter_channels="
                             f"{self.inter_channels}, {size[0]}, {size[1]}] "
                             f"(got {tuple(inter.shape)})")
        _check_finite("inter", inter)
        if tuple(inter.shape[-2:]) != tuple(size):
            if self.inter_resize == "error":
                raise ValueError(
                    f"'inter' must have the bottleneck's spatial size {size[0]} x {size[1]} "
                    f"(= unet.bottleneck_size(H, W)); got {inter.shape[-2]} x "
                    f"{inter.shape[-1]} (or build the U-Net with inter_resize='bilinear'|"
                    f"'nearest'|'area')")
            kw = {"align_corners": False} if self.inter_resize == "bilinear" else {}
            inter = F.interpolate(inter, size=size, mode=self.inter_resize, **kw)
        return inter

    def forward(self, x: Tensor, t, cond: Optional[Tensor] = None,
                inter: Optional[Tensor] = None) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != self.in_channels:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"'x' must have shape [B, in_channels={self.in_channels}, H, W] "
                             f"(got {shape})")
        B, _, H, W = x.shape
        m = self.downsample_factor
        ph, pw = (-H) % m, (-W) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        inter = self._inter(inter, B, self.bottleneck_size(H, W))
        emb = self.embedding(t, B, cond, device=x.device).to(x.dtype)

        h = self.input_conv(x)
        skips = [h]
        for stage in self.encoder:
            h = stage(h, emb)
            skips.append(h)
        if inter is not None:
            h = self.inter_proj(torch.cat([h, inter.to(h.dtype)], dim=1))
        h = self.middle(h, emb)
        for stage in self.decoder:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb)
        out = self.out_conv(F.silu(self.out_norm(h)))
        return out[:, :, :H, :W]

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"model_channels={self.model_channels}, channel_mult={self.channel_mult}, "
                f"num_res_blocks={self.num_res_blocks}, "
                f"attention_resolutions={self.attention_resolutions}, "
                f"cond_dim={self.cond_dim}, film={self.film}, "
                f"inter_channels={self.inter_channels})")
