r"""DiffRecon: two-stage reconstruction of complete fine-grained maps from incomplete
coarse-grained observations.

Paper: Z. Sun, H. Su, E. Wang, F. Yang, Y. Yang, W. Liu, "From Incomplete Coarse-Grained to
Complete Fine-Grained: A Two-Stage Framework for Spatiotemporal Data Reconstruction",
`arXiv:2410.05323 <https://arxiv.org/abs/2410.05323>`_.

Given the magnification :math:`N` and incomplete coarse maps
:math:`X^{1..t}_{inc,cg} \in \mathbb{R}^{C \times I \times J}` with observed masks
:math:`\mathcal{C}^{1..t}`, DiffRecon infers the complete fine map
:math:`X^{t}_{comp,fg} \in \mathbb{R}^{C \times NI \times NJ}` in two conditional DDPM stages:

.. math::
    \hat X^{t}_{comp,cg} \sim p_{\theta_C}\big(X^{t}_{cg} \,\big|\, X^{t}_{inc,cg},
        \mathcal{C}^{t}, \mathrm{STPointFormer}(X^{t-H_C+1..t}_{inc,cg}, \mathcal{C}),
        e^{t}\big) \qquad \text{(Diffusion-C)}

    \hat X^{t}_{comp,fg} \sim p_{\theta_F}\big(X^{t}_{fg} \,\big|\, \hat X^{t}_{comp,cg},
        \mathrm{TPatternNet}(\hat X^{t-H_F+1..t}_{comp,cg}), e^{t}\big)
        \qquad \text{(Diffusion-F)}

Both stages are :class:`~torch_stgen.nn.ConditionalDenoiser` U-Nets built from public
conditioners: the current map enters as input channels
(:class:`~torch_stgen.nn.conditioners.ObservedMapConditioner`), calendar / external features
as a vector added in every block
(:class:`~torch_stgen.nn.conditioners.ExternalConditioner`), and the history encoders
(:class:`STPointFormerConditioner`, :class:`TPatternConditioner`, wrapping the public
:class:`~torch_stgen.nn.STPointFormer` and :class:`~torch_stgen.nn.TPatternNet`) as
inter-map features fused at the U-Net bottleneck (eqs. 11-13).

Training (:meth:`DiffRecon.fit`) is documented there: pre-training of each stage on
pseudo-complete coarse maps (sum-pooled fine truth), then joint training in which
Diffusion-F learns from Diffusion-C's own completions.
"""
import contextlib
import functools
import logging
import math
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._checks import check_binary_mask, check_float32_model, check_seed
from ..data.grid import coarsen, mass_project
from ..data.patterns import SparsePattern
from ..data.scalers import StandardScaler
from ..diffusion import DDIMScheduler, DDPMScheduler, diffusion_loss, sample
from ..nn import STPointFormer, TPatternNet
from ..nn.conditioners import (ConditionalDenoiser, Conditioner, ConditionerStack,
                               ExternalConditioner, ObservedMapConditioner, check_inputs)
from ..train import BestWeights, Trainer, architecture_fingerprint, data_fingerprint
from ..train.distributed import all_mean, rank_seed

__all__ = ["STPointFormerConditioner", "TPatternConditioner", "PositionConditioner",
           "DiffusionC", "DiffusionF", "DiffRecon", "Reconstruction"]

log = logging.getLogger(__name__)


def _check_series(name: str, x: Tensor, channels: int, size: Tuple[int, int]) -> None:
    want = (channels,) + tuple(size)
    if not isinstance(x, Tensor) or x.dim() != 5 or tuple(x.shape[2:]) != want:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"batch[{name!r}] must have shape [B, T, C, h, w] = [B, T, "
                         f"{', '.join(map(str, want))}] (got {got})")


def _inter_down(unet_size: Tuple[int, int], grid: Tuple[int, int]) -> Optional[Tuple[int, int]]:
    """The U-Net bottleneck size if it divides the encoder's grid (exact sub-region stacking,
    eqs. 24-25), else ``None`` (stack nothing; the U-Net resizes the features)."""
    if grid[0] % unet_size[0] == 0 and grid[1] % unet_size[1] == 0:
        return unet_size
    return None


# ------------------------------------------------------------------------ conditioners
class STPointFormerConditioner(Conditioner):
    r"""ST-PointFormer over the history of observed coarse ST-points as bottleneck features
    (the inter-encoder of Diffusion-C, DiffRecon §IV-C, eqs. 14-25).

    .. math::
        f = \mathrm{Stack}\Big(\mathrm{STPointFormer}\big(X^{t-H+1..t} \odot
        \mathcal{C},\ \mathcal{C},\ e^{t-H+1..t}\big)\Big)

    Missing ST-points are zeroed and masked out as attention keys by
    :class:`~torch_stgen.nn.STPointFormer`, so no missing value reaches the features.

    Args:
        channels (int): map channels :math:`C` (features per ST-point).
        grid (tuple of int): coarse grid ``(I, J)``.
        history (int): window length :math:`H` (the last step is the current one).
        down (tuple of int, optional): U-Net bottleneck size; ``None`` keeps ``(I, J)``.
        out_channels (int, optional): feature channels after the ``1 x 1`` projection.
            (default: ``32``)
        ext_features (int, optional): per-step external features (key ``ext_key``).
            (default: ``0``)
        d_model, num_layers, num_heads (int, optional): ST-PointFormer sizes.
            (default: ``32``, ``2``, ``4``)
        key, mask_key, ext_key (str, optional): batch keys. (default: ``"hist"``,
            ``"hist_mask"``, ``"hist_ext"``)

    Shapes:
        - **input:** ``batch[key]``, ``batch[mask_key]`` ``[B, H, C, I, J]``;
          ``batch[ext_key]`` ``[B, H, F_ext]``
        - **output:** ``{'features': [B, out_channels, *down]}``
    """

    def __init__(self, channels: int, grid: Tuple[int, int], history: int,
                 down: Optional[Tuple[int, int]] = None, out_channels: int = 32,
                 ext_features: int = 0, d_model: int = 32, num_layers: int = 2,
                 num_heads: int = 4, key: str = "hist", mask_key: str = "hist_mask",
                 ext_key: str = "hist_ext"):
        super().__init__()
        self.channels, self.grid, self.history = int(channels), tuple(grid), int(history)
        self.key, self.mask_key, self.ext_key = key, mask_key, ext_key
        self.ext_features = int(ext_features)
        self.former = STPointFormer(self.channels, d_model=d_model, num_layers=num_layers,
                                    num_heads=num_heads, history=self.history,
                                    grid=self.grid, ext_features=self.ext_features,
                                    down=down, time_pool="mean", out_channels=out_channels)
        self.feature_channels = int(out_channels)

    def forward(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        x, m = batch[self.key], batch[self.mask_key]
        for name, v in ((self.key, x), (self.mask_key, m)):
            _check_series(name, v, self.channels, self.grid)
            if v.shape[1] != self.history:
                raise ValueError(f"batch[{name!r}] must hold history={self.history} steps "
                                 f"(got {v.shape[1]})")
        B, H, C, I, J = x.shape
        pts = x.permute(0, 1, 3, 4, 2).reshape(B, H, I * J, C)
        msk = m.permute(0, 1, 3, 4, 2).reshape(B, H, I * J, C)
        ext = batch[self.ext_key] if self.ext_features else None
        z = self.former(pts, msk, ext)
        return {"features": self.former.stack(z)}

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, grid={self.grid}, history={self.history}, "
                f"feature_channels={self.feature_channels}")


class TPatternConditioner(Conditioner):
    r"""T-PatternNet over the completed coarse series as bottleneck features (the
    inter-encoder of Diffusion-F, DiffRecon §IV-D, eqs. 26-34).

    .. math::
        f = \mathrm{Stack}\Big(\mathrm{TPatternNet}\big(\hat X^{t-H+1..t}_{comp,cg}\big)\Big)

    The ``C x I x J`` map of each step is flattened cell-major (channel ``n * C + c`` for
    cell ``n = i J + j``), so :meth:`~torch_stgen.nn.TPatternNet.stack` maps features back to
    their cells.

    Args:
        channels (int): map channels :math:`C`.
        grid (tuple of int): coarse grid ``(I, J)``.
        history (int): series length :math:`H` (the last step is the current one).
        down (tuple of int, optional): U-Net bottleneck size; ``None`` keeps ``(I, J)``.
        out_channels (int, optional): feature channels. (default: ``32``)
        d_model, d_ff, num_layers, top_k, num_kernels (int, optional): T-PatternNet sizes.
            (default: ``32``, ``32``, ``2``, ``3``, ``3``)
        key (str, optional): batch key. (default: ``"series"``)

    Shapes:
        - **input:** ``batch[key]`` ``[B, H, C, I, J]``
        - **output:** ``{'features': [B, out_channels, *down]}``
    """

    def __init__(self, channels: int, grid: Tuple[int, int], history: int,
                 down: Optional[Tuple[int, int]] = None, out_channels: int = 32,
                 d_model: int = 32, d_ff: int = 32, num_layers: int = 2, top_k: int = 3,
                 num_kernels: int = 3, key: str = "series"):
        super().__init__()
        self.channels, self.grid, self.history = int(channels), tuple(grid), int(history)
        self.key = key
        n = self.grid[0] * self.grid[1]
        self.net = TPatternNet(self.channels * n, self.history, d_model=d_model, d_ff=d_ff,
                               num_layers=num_layers, top_k=top_k, num_kernels=num_kernels,
                               grid=self.grid, down=down, time_pool="flatten",
                               out_channels=out_channels)
        self.feature_channels = int(out_channels)

    def forward(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        x = batch[self.key]
        _check_series(self.key, x, self.channels, self.grid)
        if x.shape[1] != self.history:
            raise ValueError(f"batch[{self.key!r}] must hold history={self.history} steps "
                             f"(got {x.shape[1]})")
        B, H, C, I, J = x.shape
        seq = x.permute(0, 1, 3, 4, 2).reshape(B, H, I * J * C)
        return {"features": self.net.stack(self.net(seq))}

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, grid={self.grid}, history={self.history}, "
                f"feature_channels={self.feature_channels}")


class PositionConditioner(Conditioner):
    r"""A learnable positional map :math:`P \in \mathbb{R}^{k \times H \times W}` as input
    channels (the same for every sample).

    Convolutions are translation-equivariant, but a city's cells are not interchangeable
    (baseline (a) works because its fine/coarse shares are *per cell*); this map lets the
    U-Net learn cell-specific behaviour. Not in the DiffRecon paper (whose ST-PointFormer
    has its own position embedding, eq. 14): an addition, switched off with
    ``position_channels=0``.

    Args:
        channels (int): :math:`k`.
        size (tuple of int): ``(H, W)``.
        key (str): a batch key whose first dimension gives the batch size.

    Shapes:
        - **output:** ``{'map': [B, k, H, W]}``
    """

    def __init__(self, channels: int, size: Tuple[int, int], key: str):
        super().__init__()
        self.map_channels = int(channels)
        self.size, self.key = (int(size[0]), int(size[1])), key
        self.weight = nn.Parameter(torch.empty(self.map_channels, *self.size))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.normal_(self.weight, std=0.1)

    def forward(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        B = batch[self.key].shape[0]
        return {"map": self.weight.unsqueeze(0).expand(B, -1, -1, -1)}

    def extra_repr(self) -> str:
        return f"map_channels={self.map_channels}, size={self.size}"


# ------------------------------------------------------------------------ stages
class _Stage(nn.Module):
    """Shared machinery of the two conditional DDPM stages."""

    def __init__(self, conditioners: List[Conditioner], data_channels: int,
                 num_train_timesteps: int, beta_schedule: str, prediction_type: str,
                 unet_kwargs: dict):
        super().__init__()
        self.data_channels = int(data_channels)
        self.denoiser = ConditionalDenoiser.build(ConditionerStack(conditioners),
                                                  data_channels=self.data_channels,
                                                  inter_resize="nearest", **unet_kwargs)
        self.scheduler = DDPMScheduler(num_train_timesteps, beta_schedule=beta_schedule,
                                       prediction_type=prediction_type)

    @property
    def device(self) -> torch.device:
        """Where the stage's parameters live (and where it computes)."""
        return next(self.parameters()).device

    def _on_device(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        dev = self.device
        return {k: v.to(dev) for k, v in batch.items()}

    def loss(self, batch: Dict[str, Tensor], target: Tensor,
             generator: Optional[torch.Generator] = None) -> Tensor:
        r"""Denoising loss (DDPM eq. 14, simplified objective) of the stage on
        ``target`` ``[B, C, H, W]`` given the conditioning ``batch``, computed on the
        stage's device (inputs are moved there; a CPU ``generator`` draws :math:`t` and
        :math:`\epsilon` on the CPU, so the stream does not depend on the device)."""
        batch = self._on_device(batch)
        return diffusion_loss(lambda x, t: self.denoiser(x, t, batch),
                              target.to(self.device), self.scheduler, generator=generator)

    def sampler(self, kind: str) -> Union[DDPMScheduler, DDIMScheduler]:
        cfg = self.scheduler.config
        common = dict(num_train_timesteps=cfg.num_train_timesteps,
                      beta_schedule=cfg.beta_schedule, prediction_type=cfg.prediction_type)
        if cfg.beta_schedule != "cosine":
            common.update(beta_start=cfg.beta_start, beta_end=cfg.beta_end)
        if kind == "ddim":
            return DDIMScheduler(**common)
        if kind == "ddpm":
            return DDPMScheduler(**common)
        raise ValueError(f"'sampler' must be 'ddim' or 'ddpm' (got {kind!r})")

    @torch.no_grad()
    def generate(self, batch: Dict[str, Tensor], x_T: Tensor, sampler: str = "ddim",
                 steps: int = 20, generator: Optional[torch.Generator] = None) -> Tensor:
        r"""Reverse chain from ``x_T`` ``[S * B, C, H, W]`` for ``S`` samples of each of the
        ``B`` conditions in ``batch``. The conditioner runs **once** per condition (it does
        not depend on the diffusion step); its outputs are repeated for the ``S`` samples
        (sample ``s`` of condition ``b`` is row ``s * B + b``). Runs on the stage's device
        and returns on the device of ``x_T``."""
        den = self.denoiser
        out_device = x_T.device
        batch, x_T = self._on_device(batch), x_T.to(self.device)
        B = next(iter(batch.values())).shape[0]
        if x_T.shape[0] % B:
            raise ValueError(f"'x_T' must have S * B rows for B={B} conditions "
                             f"(got {x_T.shape[0]})")
        S = x_T.shape[0] // B
        out = den.conditions(batch, B)
        rep = {k: v.repeat(S, *([1] * (v.dim() - 1))) for k, v in out.items()}

        def fn(x, t):
            xin = torch.cat([x, rep["map"]], dim=1) if "map" in rep else x
            return den.unet(xin, t, cond=rep.get("vector"), inter=rep.get("features"))

        return sample(fn, self.sampler(sampler), num_inference_steps=steps,
                      generator=generator, x_T=x_T).to(out_device)


class DiffusionC(_Stage):
    r"""Diffusion-C: conditional DDPM that completes the incomplete coarse map
    (DiffRecon §IV-B/C).

    The denoiser :math:`\epsilon_{\theta_C}` is a :class:`~torch_stgen.nn.UNet2D` whose
    encoder is the *intra-map* encoder of the noisy current map; the conditioning is

    .. math::
        \big[X^{t}_{inc,cg} \odot \mathcal{C}^t \,\|\, \mathcal{C}^t\big] \text{ (input
        channels)},\quad e^t \text{ (vector, every block)},\quad
        \mathrm{STPointFormer}(X^{t-H+1..t}_{inc,cg}) \text{ (bottleneck, eqs. 11-13)}

    and training minimises the DDPM loss on the complete coarse map (pseudo-complete:
    sum-pooled fine truth).

    Args:
        channels (int): map channels :math:`C`.
        grid (tuple of int): coarse grid ``(I, J)``.
        history (int, optional): ST-PointFormer window :math:`H_C`. (default: ``8``)
        use_time (bool, optional): condition on ``[hour, weekday, holiday]``.
            (default: ``True``)
        ext_features (int, optional): external covariates per step. (default: ``0``)
        use_stpointformer (bool, optional): the inter-encoder (``False``: the paper's
            "w/o ST-PointFormer" ablation). (default: ``True``)
        position_channels (int, optional): channels of the learnable positional map
            (:class:`PositionConditioner`, an addition to the paper; ``0``: none).
            (default: ``0``)
        model_channels, channel_mult, num_res_blocks: U-Net sizes.
            (default: ``32``, ``(1, 2)``, ``1``)
        cond_dim (int, optional): size of the time/external vector. (default: ``32``)
        inter_channels (int, optional): ST-PointFormer feature channels. (default: ``32``)
        d_model, num_layers, num_heads: ST-PointFormer sizes. (default: ``32``, ``2``, ``4``)
        num_train_timesteps, beta_schedule, prediction_type: the DDPM.
            (default: ``1000``, ``"linear"``, ``"sample"``; see :class:`DiffRecon` for
            why :math:`x_0`-prediction rather than the paper's :math:`\epsilon`)
        inter_init (str, optional): initialisation of the bottleneck fusion
            (:class:`~torch_stgen.nn.UNet2D`): ``"identity"`` starts as the U-Net without
            the inter-encoder. (default: ``"default"``)
        conditioners (sequence of Conditioner, optional): the user's own conditioners,
            stacked after the built-in ones; they read their keys from the batch
            (:class:`DiffRecon`'s ``step_inputs``). (default: none)

    Batch keys: ``obs``, ``mask`` ``[B, C, I, J]``; ``time`` ``[B, 3]``; ``ext``
    ``[B, F_ext]``; ``hist``, ``hist_mask`` ``[B, H_C, C, I, J]``; ``hist_ext``
    ``[B, H_C, 5 + F_ext]`` (cyclic calendar features and covariates of each step; only
    the covariates when ``use_time=False``).
    """

    def __init__(self, channels: int, grid: Tuple[int, int], history: int = 8,
                 use_time: bool = True, ext_features: int = 0,
                 use_stpointformer: bool = True, position_channels: int = 0,
                 model_channels: int = 32,
                 channel_mult: Sequence[int] = (1, 2), num_res_blocks: int = 1,
                 cond_dim: int = 32, inter_channels: int = 32, d_model: int = 32,
                 num_layers: int = 2, num_heads: int = 4, num_train_timesteps: int = 1000,
                 beta_schedule: str = "linear", prediction_type: str = "sample",
                 inter_init: str = "default", conditioners: Sequence[Conditioner] = ()):
        grid = (int(grid[0]), int(grid[1]))
        conds: List[Conditioner] = [ObservedMapConditioner(channels, key="obs",
                                                           mask_key="mask")]
        if position_channels:
            conds.append(PositionConditioner(position_channels, grid, key="obs"))
        if use_time or ext_features > 0:
            conds.append(ExternalConditioner(cond_dim, ext_features=ext_features,
                                             use_time=use_time, time_key="time",
                                             ext_key="ext"))
        m = 2 ** (len(tuple(channel_mult)) - 1)
        bott = (-(-grid[0] // m), -(-grid[1] // m))
        if use_stpointformer:
            conds.append(STPointFormerConditioner(
                channels, grid, history, down=_inter_down(bott, grid),
                out_channels=inter_channels,
                ext_features=(5 if use_time else 0) + ext_features, d_model=d_model,
                num_layers=num_layers, num_heads=num_heads))
        conds += _user_conditioners(conditioners)
        super().__init__(conds, channels, num_train_timesteps, beta_schedule,
                         prediction_type, dict(model_channels=model_channels,
                                               channel_mult=tuple(channel_mult),
                                               num_res_blocks=num_res_blocks,
                                               mid_attention=False, inter_init=inter_init))
        self.channels, self.grid, self.history = int(channels), grid, int(history)
        self.use_time, self.ext_features = bool(use_time), int(ext_features)
        self.use_stpointformer = bool(use_stpointformer)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, grid={self.grid}, history={self.history}, "
                f"stpointformer={self.use_stpointformer}")


class DiffusionF(_Stage):
    r"""Diffusion-F: conditional DDPM that infers the fine map from the completed coarse map
    (DiffRecon §IV-B/D).

    .. math::
        \big[\mathrm{Up}_N(\hat X^{t}_{comp,cg})\big] \text{ (input channels)},\quad
        e^t \text{ (vector)},\quad
        \mathrm{TPatternNet}(\hat X^{t-H+1..t}_{comp,cg}) \text{ (bottleneck, eqs. 11-13)}

    where :math:`\mathrm{Up}_N` repeats each coarse cell over its :math:`N \times N` fine
    cells.

    Args:
        channels (int): map channels :math:`C`.
        grid (tuple of int): coarse grid ``(I, J)``; the fine grid is ``(N I, N J)``.
        factor (int): magnification :math:`N`.
        history (int, optional): T-PatternNet series length :math:`H_F`. (default: ``24``)
        use_time, ext_features: as in :class:`DiffusionC`.
        use_tpatternnet (bool, optional): the inter-encoder (``False``: "w/o T-PatternNet").
            (default: ``True``)
        position_channels (int, optional): as in :class:`DiffusionC` (fine grid).
            (default: ``0``)
        completion_mask (bool, optional): also condition on which coarse cells were
            observed (1) and which Diffusion-C completed (0), batch key ``observed``
            ``[B, C, I, J]`` (see :class:`DiffRecon`). (default: ``False``)
        model_channels, channel_mult, num_res_blocks, cond_dim, inter_channels: U-Net sizes.
        d_model, num_layers, top_k, num_kernels, d_ff: T-PatternNet sizes. (default:
            ``32``, ``2``, ``3``, ``3``, ``d_model``)
        num_train_timesteps, beta_schedule, prediction_type: the DDPM.
            (default: ``1000``, ``"linear"``, ``"sample"``)
        inter_init (str, optional): as in :class:`DiffusionC`. (default: ``"default"``)
        conditioners (sequence of Conditioner, optional): as in :class:`DiffusionC`.
            (default: none)

    Batch keys: ``coarse`` ``[B, C, I, J]`` (completed, standardised), ``time``, ``ext``,
    ``series`` ``[B, H_F, C, I, J]``, ``observed`` ``[B, C, I, J]``.
    """

    def __init__(self, channels: int, grid: Tuple[int, int], factor: int, history: int = 24,
                 use_time: bool = True, ext_features: int = 0,
                 use_tpatternnet: bool = True, position_channels: int = 0,
                 completion_mask: bool = False, model_channels: int = 32,
                 channel_mult: Sequence[int] = (1, 2), num_res_blocks: int = 1,
                 cond_dim: int = 32, inter_channels: int = 32, d_model: int = 32,
                 num_layers: int = 2, top_k: int = 3, num_kernels: int = 3,
                 d_ff: Optional[int] = None, num_train_timesteps: int = 1000,
                 beta_schedule: str = "linear", prediction_type: str = "sample",
                 inter_init: str = "default", conditioners: Sequence[Conditioner] = ()):
        grid = (int(grid[0]), int(grid[1]))
        factor = int(factor)
        conds: List[Conditioner] = [ObservedMapConditioner(channels, key="coarse",
                                                           mask_key=None, upsample=factor)]
        if completion_mask:  # 1 = observed coarse cell, 0 = completed by Diffusion-C
            conds.append(ObservedMapConditioner(channels, key="observed", mask_key=None,
                                                upsample=factor))
        if position_channels:
            conds.append(PositionConditioner(position_channels,
                                             (grid[0] * factor, grid[1] * factor),
                                             key="coarse"))
        if use_time or ext_features > 0:
            conds.append(ExternalConditioner(cond_dim, ext_features=ext_features,
                                             use_time=use_time, time_key="time",
                                             ext_key="ext"))
        m = 2 ** (len(tuple(channel_mult)) - 1)
        bott = (-(-grid[0] * factor // m), -(-grid[1] * factor // m))
        if use_tpatternnet:
            conds.append(TPatternConditioner(channels, grid, history,
                                             down=_inter_down(bott, grid),
                                             out_channels=inter_channels, d_model=d_model,
                                             d_ff=d_model if d_ff is None else d_ff,
                                             num_layers=num_layers, top_k=top_k,
                                             num_kernels=num_kernels))
        conds += _user_conditioners(conditioners)
        super().__init__(conds, channels, num_train_timesteps, beta_schedule,
                         prediction_type, dict(model_channels=model_channels,
                                               channel_mult=tuple(channel_mult),
                                               num_res_blocks=num_res_blocks,
                                               mid_attention=False, inter_init=inter_init))
        self.channels, self.grid, self.factor = int(channels), grid, factor
        self.history = int(history)
        self.use_time, self.ext_features = bool(use_time), int(ext_features)
        self.use_tpatternnet = bool(use_tpatternnet)
        self.completion_mask = bool(completion_mask)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, grid={self.grid}, factor={self.factor}, "
                f"history={self.history}, tpatternnet={self.use_tpatternnet}, "
                f"completion_mask={self.completion_mask}")


# ------------------------------------------------------------------------ the model
class Reconstruction(NamedTuple):
    """Output of :meth:`DiffRecon.reconstruct` (original units).

    Attributes:
        fine: ``[T', C, NI, NJ]`` point estimate (mean or median over samples).
        spread: ``[T', C, NI, NJ]`` standard deviation over the samples (0 for one sample).
        coarse: ``[T', C, I, J]`` completed coarse maps (point estimate; observed cells keep
            their observed values).
        samples: ``[S, T', C, NI, NJ]`` the fine samples, or ``None`` unless requested.
    """
    fine: Tensor
    spread: Tensor
    coarse: Tensor
    samples: Optional[Tensor] = None


def _windows(x: Tensor, t_index: Tensor, length: int) -> Tensor:
    """``x`` ``[T, ...]`` -> ``[len(t_index), length, ...]`` windows ending at each index
    (inclusive). Indices before 0 are clamped to 0 (callers mask or replicate them)."""
    offs = torch.arange(-length + 1, 1)
    idx = (t_index[:, None] + offs[None, :]).clamp_min(0)
    return x[idx]


def _calendar_inputs(time: Optional[Tensor], ext: Optional[Tensor], T: int,
                     use_time: bool, ext_features: int) -> Tuple[Optional[Tensor],
                                                                 Optional[Tensor],
                                                                 Tensor]:
    """Validate ``time`` ``[T, 3]`` / ``ext`` ``[T, F]`` and build the per-step ST-point
    features ``[T, 5 * use_time + F]`` (cyclic hour / weekday, holiday, covariates), all
    on the CPU (DiffRecon prepares its series there and moves batches to its device)."""
    parts = []
    if time is not None and not use_time:
        raise ValueError("'time' was given but the model was built with use_time=False "
                         "(it would be ignored)")
    if ext is not None and not ext_features:
        raise ValueError("'ext' was given but the model was built with ext_features=0 "
                         "(it would be ignored)")
    if use_time:
        if time is None or time.dim() != 2 or tuple(time.shape) != (T, 3):
            got = None if time is None else tuple(time.shape)
            raise ValueError(f"'time' must have shape [T, 3] = [{T}, 3] (hour, weekday, "
                             f"holiday; got {got}); the model was built with use_time=True")
        time = time.float().cpu()
        a = 2 * math.pi * time[:, 0] / 24.0
        b = 2 * math.pi * time[:, 1] / 7.0
        parts.append(torch.stack([a.sin(), a.cos(), b.sin(), b.cos(), time[:, 2]], 1))
    if ext_features:
        if ext is None or ext.dim() != 2 or tuple(ext.shape) != (T, ext_features):
            got = None if ext is None else tuple(ext.shape)
            raise ValueError(f"'ext' must have shape [T, F_ext] = [{T}, {ext_features}] "
                             f"(got {got})")
        if not bool(torch.isfinite(ext).all()):
            raise ValueError("'ext' has NaN/inf values")
        ext = ext.float().cpu()
        parts.append(ext)
    step_feats = torch.cat(parts, 1) if parts else torch.zeros(T, 0)
    return time, ext, step_feats


#: batch keys the built-in conditioners of the two stages read
_BUILTIN_KEYS = frozenset({"obs", "mask", "hist", "hist_mask", "hist_ext", "time", "ext",
                           "coarse", "series", "observed"})


def _restores_step_inputs(method):
    """Decorator: the per-step inputs a :class:`DiffRecon` method sets are dropped again
    when it returns (or raises), so the model keeps no reference to a caller's data."""
    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        with self._using_steps(self._steps):     # whatever the method sets is undone
            return method(self, *args, **kwargs)
    return wrapped


def _user_conditioners(conditioners: Union[Conditioner, Sequence[Conditioner]]
                       ) -> List[Conditioner]:
    conds = [conditioners] if isinstance(conditioners, Conditioner) else list(conditioners)
    bad = [type(c).__name__ for c in conds if not isinstance(c, Conditioner)]
    if bad:
        raise TypeError(f"'conditioners' must be torch_stgen.nn.Conditioner instances "
                        f"(got {bad})")
    return conds


class DiffRecon(nn.Module):
    r"""DiffRecon (`arXiv:2410.05323 <https://arxiv.org/abs/2410.05323>`_): Diffusion-C
    (coarse completion) followed by Diffusion-F (fine inference).

    The model works in standardised units: coarse maps with per-channel statistics of the
    observed training coarse values, fine maps with those of the training fine maps
    (:class:`~torch_stgen.data.StandardScaler`, fitted in :meth:`fit` and stored as
    buffers); :meth:`reconstruct` takes and returns original units.

    Args:
        channels (int): map channels :math:`C` (e.g. 2 for in/out flow).
        coarse_size (tuple of int): coarse grid ``(I, J)``.
        factor (int): magnification :math:`N`.
        history_c (int, optional): Diffusion-C's ST-PointFormer window. (default: ``8``)
        history_f (int, optional): Diffusion-F's T-PatternNet series length (24 hourly
            steps see the daily cycle). (default: ``24``)
        use_time (bool, optional): calendar conditioning. (default: ``True``)
        ext_features (int, optional): external covariates per step. (default: ``0``)
        use_stpointformer, use_tpatternnet (bool, optional): the inter-encoders
            (ablations). (default: ``True``)
        position_channels (int, optional): learnable positional map channels of both
            U-Nets (:class:`PositionConditioner`; ``0``: none). (default: ``0``)
        completion_mask (bool, optional): Diffusion-F also sees the observed mask of the
            coarse map (1 observed, 0 completed by Diffusion-C). Not in the DiffRecon paper,
            whose Diffusion-F sees only the completed map. The intent: without the mask,
            joint training on completions can teach Diffusion-F to distrust *every* coarse
            value, observed ones included; with it, it can learn how far to trust the
            completed cells only (measured on BikeNYC validation it did not make the joint
            phase pay off; ``benchmarks/results/diffrecon_bikenyc.md``). The mask is only
            informative when Diffusion-F saw completions, so a model trained without the
            joint phase is fed an all-ones mask (what it was trained on).
            (default: ``False``)
        model_channels (int, optional): U-Net width of both stages. (default: ``32``)
        channel_mult (sequence of int, optional): (default: ``(1, 2)``)
        num_res_blocks (int, optional): (default: ``1``)
        d_model (int, optional): ST-PointFormer / T-PatternNet width. (default: ``32``)
        top_k, num_kernels, d_ff (int, optional): T-PatternNet's number of periods, Inception
            kernels and feed-forward width (TimesNet eqs. 1-6, DiffRecon eqs. 26-34). The reference
            settings are 5, 6 and 64 (with ``d_model=64``); the defaults are smaller for
            CPU budgets. (default: ``3``, ``3``, ``d_model``)
        num_train_timesteps (int, optional): DDPM steps. (default: ``1000``)
        beta_schedule (str, optional): (default: ``"linear"``)
        prediction_type (str, optional): ``"sample"`` (:math:`x_0`-prediction),
            ``"epsilon"`` (the paper's DDPM parameterisation) or ``"v_prediction"``.
            (default: ``"sample"``) The paper's :math:`\epsilon`-prediction is not usable
            at training budgets of a few thousand iterations: its sampler divides the
            predicted noise by :math:`\sqrt{\bar\alpha_t}` (down to ~0.006 at
            :math:`t = T`), so every error of an under-trained denoiser is amplified ~150x
            at the first steps, and the library does not clip :math:`x_0` for unbounded
            data. Measured on BikeNYC validation at fixed 40 %, 1000 + 200 iterations:
            fine MAE 8.095 with :math:`\epsilon`, 2.138 with :math:`x_0`
            (``benchmarks/results/diffrecon_bikenyc.md``); every DiffRecon table of the
            benchmarks uses :math:`x_0`-prediction.
        inter_init (str, optional): initialisation of both U-Nets' bottleneck fusion
            :math:`W_p` (eqs. 11-13, :class:`~torch_stgen.nn.UNet2D`). ``"default"``, or
            ``"identity"``: :math:`W_p = [I \mid 0]`, so each stage starts as its
            ablation without the inter-encoder and the ST-PointFormer / T-PatternNet
            features enter through zero-initialised weights (ControlNet's zero
            connection; not in the paper). (default: ``"default"``)
        independent_stages (bool, optional): decouple the two stages' training
            mechanics, which the paper does not couple. Each stage is initialised from
            its own seed, and :meth:`fit` clips each stage's gradient norm on its own
            instead of both together. The stages share no parameter. With both switches, a
            stage's pre-training does not depend on the other stage's architecture or
            gradients. For example, the ablation without ST-PointFormer then pre-trains
            exactly the same Diffusion-F as the full model, and its fine-map error
            isolates the completions. (default: ``False``: one global clip, one
            initialisation stream)
        conditioners_c, conditioners_f (sequence of Conditioner, optional): the user's
            own conditioners for Diffusion-C / Diffusion-F (:doc:`the guide's extension
            point <guide>`), stacked after the built-in ones. They read per-step inputs
            that :meth:`fit` and :meth:`reconstruct` take as ``step_inputs``
            ``{key: [T, ...]}``: the batch of target step :math:`t` holds ``key`` =
            ``step_inputs[key][t]``. (default: none)

    Example::

        model = DiffRecon(channels=2, coarse_size=(8, 4), factor=2)
        model.fit(train_fine, time=train_time, patterns=["random:0.4", "block"])
        out = model.reconstruct(coarse * mask, mask, time=test_time, num_samples=8)
        out.fine            # [T, 2, 16, 8]
    """

    def __init__(self, channels: int, coarse_size: Tuple[int, int], factor: int,
                 history_c: int = 8, history_f: int = 24, use_time: bool = True,
                 ext_features: int = 0, use_stpointformer: bool = True,
                 use_tpatternnet: bool = True, position_channels: int = 0,
                 completion_mask: bool = False, model_channels: int = 32,
                 channel_mult: Sequence[int] = (1, 2), num_res_blocks: int = 1,
                 d_model: int = 32, top_k: int = 3, num_kernels: int = 3,
                 d_ff: Optional[int] = None, num_train_timesteps: int = 1000,
                 beta_schedule: str = "linear", prediction_type: str = "sample",
                 inter_init: str = "default", independent_stages: bool = False,
                 conditioners_c: Sequence[Conditioner] = (),
                 conditioners_f: Sequence[Conditioner] = ()):
        super().__init__()
        for name, v in (("channels", channels), ("factor", factor), ("history_c", history_c),
                        ("history_f", history_f)):
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"'{name}' must be a positive integer (got {v!r})")
        if len(tuple(coarse_size)) != 2 or min(coarse_size) < 1:
            raise ValueError(f"'coarse_size' must be (I, J) with positive sizes "
                             f"(got {coarse_size!r})")
        self.channels, self.factor = int(channels), int(factor)
        self.coarse_size = (int(coarse_size[0]), int(coarse_size[1]))
        self.fine_size = (self.coarse_size[0] * self.factor, self.coarse_size[1] * self.factor)
        self.history_c, self.history_f = int(history_c), int(history_f)
        self.use_time, self.ext_features = bool(use_time), int(ext_features)
        sizes = dict(model_channels=model_channels, channel_mult=tuple(channel_mult),
                     num_res_blocks=num_res_blocks, d_model=d_model,
                     num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                     prediction_type=prediction_type, use_time=use_time,
                     ext_features=ext_features, position_channels=position_channels,
                     inter_init=inter_init)
        self.independent_stages = bool(independent_stages)
        self._user_conditioned = bool(_user_conditioners(conditioners_c)
                                      or _user_conditioners(conditioners_f))

        def build_c():
            return DiffusionC(channels, self.coarse_size, history_c,
                              use_stpointformer=use_stpointformer,
                              conditioners=conditioners_c, **sizes)

        def build_f():
            return DiffusionF(channels, self.coarse_size, factor, history_f,
                              use_tpatternnet=use_tpatternnet,
                              completion_mask=completion_mask, top_k=top_k,
                              num_kernels=num_kernels, d_ff=d_ff,
                              conditioners=conditioners_f, **sizes)

        if self.independent_stages:
            # each stage from its own seed, both drawn before either is built: a stage's
            # initial weights do not depend on the other stage's architecture
            seeds = torch.randint(2 ** 62, (2,)).tolist()
            stages = []
            for seed, build in zip(seeds, (build_c, build_f)):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    stages.append(build())
            self.stage_c, self.stage_f = stages
        else:
            self.stage_c, self.stage_f = build_c(), build_f()
        for name in ("coarse_mean", "coarse_std", "fine_mean", "fine_std"):
            self.register_buffer(name, torch.full((self.channels,), float("nan")))
        #: whether Diffusion-F was trained on Diffusion-C's completions (joint phase)
        self.register_buffer("f_saw_completions", torch.tensor(False))
        #: what :meth:`fit` did (phases, steps, seconds, final losses)
        self.history_log: Dict[str, object] = {}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # state dicts saved before ``f_saw_completions`` existed (0.1.0 development
        # snapshots) lack it; those models could not use ``completion_mask``, so the flag
        # is irrelevant to them and ``False`` reproduces their behaviour exactly
        key = prefix + "f_saw_completions"
        if key not in state_dict:
            state_dict[key] = torch.tensor(False)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -------------------------------------------------------------- scaling
    @property
    def fitted(self) -> bool:
        return bool(torch.isfinite(self.coarse_mean).all())

    def _check_fitted(self):
        if not self.fitted:
            raise RuntimeError("DiffRecon is not fitted: call fit() (or load a state dict) "
                               "before reconstruct()")

    @staticmethod
    def _scale(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
        mean, std = mean.to(x.device), std.to(x.device)
        return (x - mean[:, None, None]) / std[:, None, None]

    @staticmethod
    def _unscale(z: Tensor, mean: Tensor, std: Tensor) -> Tensor:
        mean, std = mean.to(z.device), std.to(z.device)
        return z * std[:, None, None] + mean[:, None, None]

    def fit_scalers(self, fine: Tensor) -> None:
        """Fit the per-channel coarse / fine standardisation on training fine maps
        ``[T, C, NI, NJ]`` (the coarse statistics on their sum-pooled maps)."""
        s_f = StandardScaler().fit(fine, channel_dim=1)
        s_c = StandardScaler().fit(coarsen(fine, self.factor), channel_dim=1)
        self.fine_mean.copy_(s_f.mean.reshape(-1).float())
        self.fine_std.copy_(s_f.std.reshape(-1).float())
        self.coarse_mean.copy_(s_c.mean.reshape(-1).float())
        self.coarse_std.copy_(s_c.std.reshape(-1).float())

    # -------------------------------------------------------------- batches
    def _c_batch(self, zc_obs: Tensor, mask: Tensor, t_idx: Tensor, time: Optional[Tensor],
                 ext: Optional[Tensor], step_feats: Tensor) -> Dict[str, Tensor]:
        """Diffusion-C conditioning for targets ``t_idx`` of a series of standardised,
        zero-at-missing coarse maps ``zc_obs`` with observed ``mask`` ``[T, C, I, J]``.
        Window steps before the series start are missing (mask 0)."""
        H = self.history_c
        batch = {"obs": zc_obs[t_idx], "mask": mask[t_idx]}
        if self.stage_c.use_stpointformer:
            valid = ((t_idx[:, None] + torch.arange(-H + 1, 1)[None, :]) >= 0).float()
            batch["hist"] = _windows(zc_obs, t_idx, H) * valid[:, :, None, None, None]
            batch["hist_mask"] = _windows(mask, t_idx, H) * valid[:, :, None, None, None]
            if step_feats.shape[1]:
                batch["hist_ext"] = _windows(step_feats, t_idx, H)
        self._add_calendar(batch, t_idx, time, ext)
        return batch

    def _f_batch(self, zc_comp: Tensor, t_idx: Tensor, time: Optional[Tensor],
                 ext: Optional[Tensor], observed: Optional[Tensor] = None
                 ) -> Dict[str, Tensor]:
        """Diffusion-F conditioning from a series of completed standardised coarse maps
        ``zc_comp`` ``[T, C, I, J]`` (steps before the start replicate the first map);
        ``observed`` ``[T, C, I, J]``: which cells were observed (default: all)."""
        batch = {"coarse": zc_comp[t_idx]}
        if self.stage_f.use_tpatternnet:
            batch["series"] = _windows(zc_comp, t_idx, self.history_f)
        if self.stage_f.completion_mask:
            batch["observed"] = (torch.ones_like(batch["coarse"]) if observed is None
                                 else observed[t_idx].to(batch["coarse"].dtype))
        self._add_calendar(batch, t_idx, time, ext)
        return batch

    def _add_calendar(self, batch, t_idx, time, ext):
        if self.use_time:
            batch["time"] = time[t_idx]
        if self.ext_features:
            batch["ext"] = ext[t_idx]
        for key, value in self._steps.items():     # the user's per-step inputs
            batch[key] = value[t_idx]

    #: per-step inputs of the series being trained on / reconstructed (``step_inputs``)
    _steps: Dict[str, Tensor] = {}

    def _step_inputs(self, inputs: Optional[Dict[str, Tensor]], T: int,
                     name: str = "step_inputs") -> Dict[str, Tensor]:
        """Validate the user's per-step conditioning inputs ``{key: [T, ...]}`` (returned
        on the CPU; floating ones as float32)."""
        inputs = check_inputs(inputs, (T,), "T", name, _BUILTIN_KEYS)
        if inputs and not self._user_conditioned:
            raise ValueError(f"'{name}' {sorted(inputs)} given, but the model has no "
                             f"conditioners_c / conditioners_f to read them")
        return inputs

    @contextlib.contextmanager
    def _using_steps(self, steps: Dict[str, Tensor]):
        """Batches built inside read ``steps`` (e.g. the validation series')."""
        saved, self._steps = self._steps, steps
        try:
            yield
        finally:
            self._steps = saved

    # -------------------------------------------------------------- training
    def _c_train_batch(self, zc: Tensor, m: Tensor, t_idx: Tensor, time, ext,
                       step_feats: Tensor) -> Dict[str, Tensor]:
        """Diffusion-C training conditions for targets ``t_idx`` of the complete
        standardised coarse series ``zc`` under mask windows ``m`` ``[B, H_C, I, J]``."""
        m = m[:, :, None].expand(-1, -1, self.channels, -1, -1)
        obs_win = _windows(zc, t_idx, self.history_c) * m
        b_c = {"obs": obs_win[:, -1], "mask": m[:, -1]}
        if self.stage_c.use_stpointformer:
            b_c["hist"], b_c["hist_mask"] = obs_win, m
            if step_feats.shape[1]:
                b_c["hist_ext"] = _windows(step_feats, t_idx, self.history_c)
        self._add_calendar(b_c, t_idx, time, ext)
        return b_c

    def _validation_set(self, fine: Tensor, time, ext, pats: List[SparsePattern],
                        maps: int, seed: int, condition: str = "truth",
                        series: int = 3) -> Dict[str, object]:
        """Fixed early-stopping conditions and targets from held-out fine maps (drawn
        with their own generator: the training stream is untouched). With
        ``condition="completed"`` also the held-out coarse series, ``series`` mask series
        drawn from ``pats`` and the starting noise of their completions (all fixed)."""
        if not isinstance(fine, Tensor) or fine.dim() != 4 or \
                tuple(fine.shape[1:]) != (self.channels,) + self.fine_size:
            got = tuple(fine.shape) if isinstance(fine, Tensor) else type(fine).__name__
            raise ValueError(f"'val_fine' must have shape [T_v, C, NI, NJ] = [T_v, "
                             f"{self.channels}, {self.fine_size[0]}, {self.fine_size[1]}] "
                             f"(got {got})")
        if not bool(torch.isfinite(fine).all()):
            raise ValueError("'val_fine' must be complete (NaN/inf found)")
        fine = fine.cpu()
        need = max(self.history_c, self.history_f)
        Tv = fine.shape[0]
        if Tv < need:
            raise ValueError(f"'val_fine' has T_v={Tv} steps; early stopping needs at least "
                             f"max(history_c, history_f)={need}")
        if isinstance(maps, bool) or int(maps) != maps or maps < 1:
            raise ValueError(f"'val_maps' must be a positive integer (got {maps!r})")
        try:
            time, ext, feats = _calendar_inputs(time, ext, Tv, self.use_time,
                                                self.ext_features)
        except ValueError as err:
            raise ValueError(f"validation calendar (val_time / val_ext): {err}") from None
        gen = torch.Generator().manual_seed(seed + 7919)
        fine = fine.float()
        zc = self._scale(coarsen(fine, self.factor), self.coarse_mean, self.coarse_std)
        idx = torch.linspace(need - 1, Tv - 1, min(int(maps), Tv - need + 1)).round().long()
        m = SparsePattern.draw_mixture(pats, len(idx), self.history_c, *self.coarse_size,
                                       gen)
        b_f = self._f_batch(zc, idx, time, ext)
        val = {"b_c": self._c_train_batch(zc, m, idx, time, ext, feats), "y_c": zc[idx],
               "b_f": b_f, "y_f": self._scale(fine[idx], self.fine_mean, self.fine_std),
               "seed": seed + 104729}
        if condition == "completed":
            # each mask series completes the held-out maps ``i = k mod P``: never more
            # series than maps (a series with no map would score nothing)
            pick = torch.randperm(len(pats), generator=gen)[:min(series, len(idx))].tolist()
            masks = torch.stack([self._mask_series(pats[k], Tv, gen)
                                 for k in pick])                     # [P, T_v, C, I, J]
            val.update(zc=zc, idx=idx, time=time, ext=ext, feats=feats, masks=masks,
                       noise=torch.randn(masks.shape, generator=gen))
        return val

    @torch.no_grad()
    def _validation_losses(self, val: Dict[str, object], draws: int = 2,
                           steps: int = 10, sampler: str = "ddim") -> Tuple[float, float]:
        """Both stages' denoising losses on the fixed validation set (same timesteps and
        noise at every call). With completion material in ``val``, Diffusion-F's loss is
        conditioned on the current Diffusion-C's completions of the held-out series
        (``sampler``, ``steps``; target ``i`` under mask series ``i mod P``)."""
        was = self.training
        self.eval()
        gen = torch.Generator().manual_seed(int(val["seed"]))
        lc = sum(self.stage_c.loss(val["b_c"], val["y_c"], gen).item() for _ in range(draws))
        b_f, y_f = val["b_f"], val["y_f"]
        if "masks" in val:
            idx, P = val["idx"], val["masks"].shape[0]
            groups, order = [], []
            for k in range(P):
                m = val["masks"][k]
                comp = self._complete(val["zc"], m, val["noise"][k], val["time"], val["ext"],
                                      val["feats"], gen, steps, 512, sampler)
                sel = torch.arange(k, len(idx), P)
                groups.append(self._f_batch(comp, idx[sel], val["time"], val["ext"], m))
                order.append(sel)
            b_f = {key: torch.cat([g[key] for g in groups]) for key in groups[0]}
            y_f = y_f[torch.cat(order)]
        lf = sum(self.stage_f.loss(b_f, y_f, gen).item() for _ in range(draws))
        self.train(was)
        return lc / draws, lf / draws

    @torch.no_grad()
    def _complete_series(self, zc: Tensor, patterns: List[SparsePattern], time, ext,
                         step_feats, gen: torch.Generator, steps: int, batch_size: int,
                         sampler: str = "ddim") -> Tuple[Tensor, Tensor]:
        """Diffusion-C's own completions of the training series under simulated masks, one
        mask series per pattern: completions and their masks, both ``[P, T, C, I, J]``
        (observed cells keep the truth)."""
        T = zc.shape[0]
        outs, masks = [], []
        for p in patterns:
            m = self._mask_series(p, T, gen)
            x_T = torch.randn(zc.shape, generator=gen)
            outs.append(self._complete(zc, m, x_T, time, ext, step_feats, gen, steps,
                                       batch_size, sampler))
            masks.append(m)
        return torch.stack(outs), torch.stack(masks)

    def _mask_series(self, pattern: SparsePattern, T: int,
                     gen: torch.Generator) -> Tensor:
        """A ``[T, C, I, J]`` observed-mask series of ``pattern`` with a fresh seed drawn
        from ``gen``."""
        seed = int(torch.randint(2 ** 62, (1,), generator=gen))
        m = SparsePattern(pattern.kind, pattern.ratio, seed=seed,
                          block=pattern.block)(T, *self.coarse_size)
        return m[:, None].expand(-1, self.channels, -1, -1).contiguous()

    @torch.no_grad()
    def _complete(self, zc: Tensor, m: Tensor, x_T: Tensor, time, ext, step_feats,
                  gen: torch.Generator, steps: int, batch_size: int,
                  sampler: str = "ddim") -> Tensor:
        """Diffusion-C's completion ``[T, C, I, J]`` of the standardised series ``zc``
        under the mask series ``m`` from the starting noise ``x_T`` (observed cells keep
        ``zc``)."""
        T = zc.shape[0]
        obs = zc * m
        comp = torch.empty_like(zc)
        for s in range(0, T, batch_size):
            idx = torch.arange(s, min(T, s + batch_size))
            b = self._c_batch(obs, m, idx, time, ext, step_feats)
            comp[idx] = self.stage_c.generate(b, x_T[idx], sampler, steps, gen)
        return torch.where(m.bool(), zc, comp)

    @_restores_step_inputs
    def fit(self, fine: Tensor, time: Optional[Tensor] = None, ext: Optional[Tensor] = None,
            patterns: Sequence[Union[str, SparsePattern]] = ("random:0.4",),
            pretrain_steps: int = 2000, joint_steps: int = 500, batch_size: int = 64,
            lr: float = 1e-3, pretrain: bool = True, joint: bool = True,
            joint_refresh: int = 250, joint_sampling_steps: int = 10,
            joint_series: Optional[int] = 3, joint_mix: float = 1.0,
            joint_mode: str = "sampled", joint_sampler: str = "ddim", seed: int = 0,
            progress: bool = False, val_fine: Optional[Tensor] = None,
            val_time: Optional[Tensor] = None, val_ext: Optional[Tensor] = None,
            val_every: int = 100, val_maps: int = 256,
            val_condition: str = "truth", checkpoint: Optional[Union[str, Path]] = None,
            checkpoint_every: int = 100, resume: bool = True,
            step_inputs: Optional[Dict[str, Tensor]] = None,
            val_step_inputs: Optional[Dict[str, Tensor]] = None) -> "DiffRecon":
        r"""Train both stages on complete training fine maps.

        Masks are *simulated*: every training window gets a mask drawn from a uniformly
        chosen entry of ``patterns`` with a fresh seed (fixed: the same cells missing over
        the whole window; random: new cells at each step; block: the block), so the model
        learns to complete any mask of those kinds and never sees an evaluation mask.

        **Pre-training** (``pretrain_steps`` iterations, each stage on its own loss):

        .. math::
            \mathcal{L}_C = \mathbb{E}\,\|\epsilon - \epsilon_{\theta_C}(X^t_{cg,\tau},
            \tau \mid X^t_{cg} \odot \mathcal{C}, \mathcal{C}, \text{hist}, e)\|^2, \quad
            \mathcal{L}_F = \mathbb{E}\,\|\epsilon - \epsilon_{\theta_F}(X^t_{fg,\tau},
            \tau \mid X^t_{cg}, X^{t-H_F+1..t}_{cg}, e)\|^2

        with :math:`X_{cg} = \mathrm{coarsen}(X_{fg}, N)` the pseudo-complete coarse map
        (sum-pooled fine truth) both as Diffusion-C's target and as Diffusion-F's
        condition (with ``prediction_type="sample"`` the networks regress
        :math:`X_0` instead of :math:`\epsilon`: the same objective up to a per-step
        weight, Ho et al. 2020 §3.2). The two losses share no parameter, so one Adam step on
        :math:`\mathcal{L}_C + \mathcal{L}_F` is exactly two separate pre-trainings run
        side by side.

        **Joint training** (``joint_steps`` iterations): every ``joint_refresh``
        iterations Diffusion-C completes the whole training series (``joint_sampler``,
        DDIM by default, ``joint_sampling_steps`` steps, observed cells kept) under simulated mask series
        of ``joint_series`` patterns drawn from ``patterns`` at each refresh (fresh seeds;
        ``joint_series=None``: one series per pattern); Diffusion-F is
        then trained on those completions (current map *and* T-PatternNet series) instead
        of the truth -- each sample of a batch with probability ``joint_mix``, otherwise
        on the pseudo-complete truth as in pre-training; with ``completion_mask`` it also
        sees which cells were completed -- while Diffusion-C keeps training on
        :math:`\mathcal{L}_C`; one optimiser step on :math:`\mathcal{L}_C +
        \mathcal{L}_F^{joint}`. Gradients do not flow through the sampler (the
        completions are detached), so "joint" means that Diffusion-F adapts to the
        errors Diffusion-C actually makes.
        (Measured on BikeNYC at 1000 + 200 iterations, two seeds, at 3000 + 600, and on
        the synthetic city, the joint phase did not beat spending the same iterations on
        pre-training: it leaves Diffusion-C as it is and makes Diffusion-F worse even on
        exact coarse maps; ``benchmarks/results/diffrecon_bikenyc.md``. It stays on by
        default because it is the paper's method.)

        Ablations: ``pretrain=False`` runs only the joint phase for
        ``pretrain_steps + joint_steps`` iterations (Diffusion-F learns from an untrained
        Diffusion-C's completions at first); ``joint=False`` runs only pre-training for
        ``pretrain_steps + joint_steps`` iterations. The learning rate follows a cosine
        decay from ``lr`` to ``lr / 10`` over all iterations (AdamW, gradient clipping 1).

        **Early stopping** (with ``val_fine``; an addition to the paper): every
        ``val_every`` iterations and after the last, each stage's denoising loss is measured
        on up to ``val_maps`` held-out maps (Diffusion-C on simulated masks drawn once from
        ``patterns``, Diffusion-F conditioned on the true coarse map; the same timesteps and
        noise at every check, two draws per map), and each stage ends with its weights from
        the check where *its* validation loss was lowest. The stages share no parameter,
        so the two choices are independent. Small cities are memorised otherwise: on the
        8 x 8 synthetic city Diffusion-F's fine MAE with nothing missing is 0.11 on training
        maps against 1.55 on validation maps after 1200 iterations
        (``benchmarks/results/diffrecon_bikenyc.md``). The random stream of training is the
        same with and without it.

        Args:
            fine (Tensor): complete training fine maps ``[T, C, NI, NJ]`` (consecutive
                steps).
            time (Tensor, optional): ``[T, 3]`` hour, weekday (Monday 0), holiday flag
                (:func:`~torch_stgen.data.time_features` with ``encoding='raw'``);
                required when ``use_time``.
            ext (Tensor, optional): ``[T, F_ext]`` covariates; required when
                ``ext_features > 0``.
            patterns (sequence): pattern specs (``"fixed:0.4"``, ``"block"``, ...) or
                :class:`~torch_stgen.data.SparsePattern` objects.
            pretrain_steps, joint_steps, batch_size, lr, pretrain, joint, joint_refresh,
            joint_sampling_steps: the schedule above.
            joint_series (int, optional): completion series per refresh, drawn from
                ``patterns`` without repeats; ``None``: one per pattern, so that the
                completions cover pre-training's mask mixture. Covering all nine patterns
                did not help: BikeNYC validation MAE 2.270 against 2.179 with three
                (seed 0, which drew fixed 80 %, fixed 60 % and the block; no joint phase:
                2.106). (default: ``3``)
            joint_mix (float, optional): share of Diffusion-F's joint-phase samples
                conditioned on Diffusion-C's completions rather than the truth; ``1`` is
                the paper's description (completions only), lower values keep Diffusion-F
                anchored to the truth while it adapts. (default: ``1.0``)
            joint_mode (str, optional): ``"sampled"``: the schedule above (detached DDIM
                completions, refreshed every ``joint_refresh`` iterations);
                ``"end_to_end"``: Diffusion-F's current coarse map is completed by
                Diffusion-C's one-step :math:`\hat x_0` from pure noise at the last training
                step (:math:`\approx \mathbb{E}[X_{cg} \mid \text{condition}]`, what
                deterministic DDIM with :math:`x_0`-prediction also returns), *not*
                detached, so :math:`\mathcal{L}_F` trains Diffusion-C as well (its
                T-PatternNet series is the truth with the current step replaced). Needs
                ``prediction_type`` ``"sample"`` or ``"v_prediction"`` (an
                :math:`\epsilon` network cannot give :math:`\hat x_0` at
                :math:`\bar\alpha \approx 0`). (default: ``"sampled"``)
            joint_sampler (str, optional): sampler of the joint-phase completions,
                ``"ddim"`` (deterministic, :math:`\eta = 0`: close to Diffusion-C's
                conditional mean) or ``"ddpm"`` (ancestral: genuine samples, to pair with
                ``reconstruct(sampler="ddpm")``). (default: ``"ddim"``)
            seed (int, optional): seeds initialisation-independent randomness (batches,
                masks, noise). (default: ``0``)
            progress (bool, optional): tqdm bars. (default: ``False``)
            val_fine (Tensor, optional): held-out complete fine maps ``[T_v, C, NI, NJ]``
                (consecutive steps, e.g. the validation split) for early stopping; ``None``
                keeps the last weights. (default: ``None``)
            val_time, val_ext (Tensor, optional): their ``[T_v, 3]`` calendar and
                ``[T_v, F_ext]`` covariates (as ``time`` / ``ext``).
            val_every (int, optional): iterations between validation checks.
                (default: ``100``)
            val_maps (int, optional): held-out maps per check (evenly spaced).
                (default: ``256``)
            val_condition (str, optional): what Diffusion-F's validation loss is
                conditioned on. ``"truth"``: the held-out pseudo-complete coarse maps, as in
                pre-training. ``"completed"``: the current Diffusion-C's completions
                (``joint_sampler``, ``joint_sampling_steps``) of the held-out coarse series
                under ``joint_series`` (default 3) fixed mask series drawn from
                ``patterns``, as at inference and in the joint phase; costs those
                completions at every check. With ``"truth"`` the criterion favours
                pre-training weights, since the joint phase trains Diffusion-F on
                completions instead. (default: ``"truth"``)
            checkpoint (str or Path, optional): file for resumable checkpoints
                (:class:`~torch_stgen.train.Checkpointer`): written every
                ``checkpoint_every`` iterations and after the last; a later ``fit`` with
                the same arguments, data and file continues from it and ends with exactly
                the weights of an uninterrupted run (a finished checkpoint is not trained
                again). A file from a different run raises ``ValueError``.
                (default: ``None``, none written)
            checkpoint_every (int, optional): iterations between checkpoints.
                (default: ``100``)
            resume (bool, optional): continue from an existing ``checkpoint``; ``False``
                starts afresh and overwrites it. (default: ``True``)
            step_inputs (dict, optional): ``{key: [T, ...]}`` per-step inputs of the
                user's ``conditioners_c`` / ``conditioners_f`` (the batch of target step
                :math:`t` holds ``step_inputs[key][t]``). (default: ``None``)
            val_step_inputs (dict, optional): the same for ``val_fine`` ``[T_v, ...]``;
                required with ``val_fine`` when ``step_inputs`` is given.

        Returns:
            ``self`` (``self.history_log`` records what ran: the per-iteration losses
            ``train_losses = {"loss_c": [...], "loss_f": [...]}`` and the last of them,
            ``final_loss_c`` / ``final_loss_f`` (``nan`` when no iteration ran); with early
            stopping the validation curve ``val_curve`` (iteration, loss C, loss F) and the
            chosen iterations ``best_iter_c`` / ``best_iter_f``).

        Raises:
            FloatingPointError: a loss or gradient norm is not finite (the iteration, the
                losses and the learning rate are named); lower ``lr``.

        The loop is the shared :class:`~torch_stgen.train.Trainer`.
        """
        check_float32_model(self)
        if not isinstance(fine, Tensor) or fine.dim() != 4 or fine.shape[1] != self.channels \
                or tuple(fine.shape[2:]) != self.fine_size:
            got = tuple(fine.shape) if isinstance(fine, Tensor) else type(fine).__name__
            raise ValueError(f"'fine' must have shape [T, C, NI, NJ] = [T, {self.channels}, "
                             f"{self.fine_size[0]}, {self.fine_size[1]}] (got {got})")
        if not bool(torch.isfinite(fine).all()):
            raise ValueError("'fine' training maps must be complete (NaN/inf found): "
                             "DiffRecon trains on complete fine truth")
        T = fine.shape[0]
        need = max(self.history_c, self.history_f)
        if T < need + 1:
            raise ValueError(f"'fine' has T={T} steps; training needs more than "
                             f"max(history_c, history_f)={need}")
        if isinstance(patterns, (str, SparsePattern)):     # one pattern, not its letters
            patterns = [patterns]
        pats = [SparsePattern.parse(p) for p in patterns]
        if not pats:
            raise ValueError("'patterns' must not be empty")
        for name, value in (("pretrain_steps", pretrain_steps), ("joint_steps", joint_steps)):
            if isinstance(value, bool) or int(value) != value or value < 0:
                raise ValueError(f"'{name}' must be a non-negative integer (got {value!r})")
        for name, value, least in (("joint_sampling_steps", joint_sampling_steps, 2),
                                   ("joint_refresh", joint_refresh, 1)):
            if isinstance(value, bool) or int(value) != value or value < least:
                raise ValueError(f"'{name}' must be an integer >= {least} (got {value!r})"
                                 + (": a one-step schedule runs its step at t = 0 and "
                                    "returns the starting noise" if least == 2 else ""))
        if not pretrain and not joint:
            raise ValueError("'pretrain' and 'joint' are both False: nothing would be trained")
        check_seed(seed)
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"'batch_size' must be a positive integer (got {batch_size!r})")
        if joint_series is not None and (isinstance(joint_series, bool) or
                                         int(joint_series) != joint_series or
                                         joint_series < 1):
            raise ValueError(f"'joint_series' must be None or a positive integer "
                             f"(got {joint_series!r})")
        if not 0.0 <= float(joint_mix) <= 1.0:
            raise ValueError(f"'joint_mix' must be in [0, 1] (got {joint_mix!r})")
        if joint_sampler not in ("ddim", "ddpm"):
            raise ValueError(f"'joint_sampler' must be 'ddim' or 'ddpm' (got {joint_sampler!r})")
        if val_condition not in ("truth", "completed"):
            raise ValueError(f"'val_condition' must be 'truth' or 'completed' "
                             f"(got {val_condition!r})")
        if joint_mode not in ("sampled", "end_to_end"):
            raise ValueError(f"'joint_mode' must be 'sampled' or 'end_to_end' "
                             f"(got {joint_mode!r})")
        sch_c = self.stage_c.scheduler
        if joint_mode == "end_to_end" and sch_c.config.prediction_type == "epsilon":
            raise ValueError("joint_mode='end_to_end' needs prediction_type 'sample' or "
                             "'v_prediction' (got 'epsilon')")
        time, ext, step_feats = _calendar_inputs(time, ext, T, self.use_time,
                                                 self.ext_features)
        gen = torch.Generator().manual_seed(rank_seed(seed))    # = seed on a single process
        # the series stays on the CPU (as do all random draws, so the training stream does
        # not depend on the device); each batch moves to the model's device
        fine = fine.cpu()
        dev = self.stage_c.device
        self.fit_scalers(fine.float())
        zf = self._scale(fine.float(), self.fine_mean, self.fine_std)
        zc = self._scale(coarsen(fine.float(), self.factor), self.coarse_mean,
                         self.coarse_std)
        targets = torch.arange(need - 1, T)
        steps_tr = self._step_inputs(step_inputs, T)
        if val_step_inputs is not None and val_fine is None:
            raise ValueError("'val_step_inputs' needs 'val_fine' (the held-out maps they "
                             "belong to)")
        val_check, steps_val = None, {}
        if val_fine is not None:
            if isinstance(val_every, bool) or int(val_every) != val_every or val_every < 1:
                raise ValueError(f"'val_every' must be a positive integer (got {val_every!r})")
            steps_val = self._step_inputs(val_step_inputs, val_fine.shape[0],
                                          "val_step_inputs")
            if set(steps_val) != set(steps_tr):
                raise ValueError(f"'val_step_inputs' must have the keys of 'step_inputs' "
                                 f"{sorted(steps_tr)} (got {sorted(steps_val)})")
            with self._using_steps(steps_val):
                val_check = self._validation_set(val_fine, val_time, val_ext, pats, val_maps,
                                                 int(seed), val_condition,
                                                 len(pats) if joint_series is None
                                                 else int(joint_series))
        self._steps = steps_tr                  # training batches read these
        n_pre = pretrain_steps + (0 if joint else joint_steps) if pretrain else 0
        n_joint = (joint_steps + (0 if pretrain else pretrain_steps)) if joint else 0
        total = max(1, n_pre + n_joint)
        opt = torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda i: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(i, total) / total)))
        trainer = Trainer(
            self, opt, sched, total=n_pre + n_joint, generator=gen, checkpoint=checkpoint,
            checkpoint_every=checkpoint_every, resume=resume, fingerprint={
                "model": "DiffRecon", "architecture": architecture_fingerprint(self),
                "patterns": [p.name for p in pats],
                "pretrain_steps": pretrain_steps, "joint_steps": joint_steps,
                "batch_size": batch_size, "lr": lr, "pretrain": pretrain, "joint": joint,
                "joint_refresh": joint_refresh, "joint_sampling_steps": joint_sampling_steps,
                "joint_series": joint_series, "joint_mix": joint_mix,
                "joint_mode": joint_mode, "joint_sampler": joint_sampler, "seed": int(seed),
                "val_every": val_every, "val_maps": val_maps, "val_condition": val_condition,
                "independent_stages": self.independent_stages,
                "fine": data_fingerprint(fine), "time": data_fingerprint(time),
                "ext": data_fingerprint(ext), "val_fine": data_fingerprint(val_fine),
                "step_inputs": {k: data_fingerprint(v) for k, v in steps_tr.items()} or None,
                "val_step_inputs": {k: data_fingerprint(v) for k, v in steps_val.items()}
                or None},
            grad_clip=1.0,      # independent stages: each stage's norm bounds only itself
            clip_groups=([self.stage_c.parameters(), self.stage_f.parameters()]
                         if self.independent_stages else None),
            progress=progress, desc="DiffRecon fit", log_every=20)
        self.train()
        log_ = {"pretrain_steps": n_pre, "joint_steps": n_joint, "joint_mix": joint_mix,
                "joint_mode": joint_mode, "joint_series": joint_series,
                "joint_sampler": joint_sampler,
                "patterns": [p.name for p in pats], "batch_size": batch_size}
        if val_check is not None:
            log_["val_condition"] = val_condition
        comp = sources = source_mask = None

        def sources_of(comp: Tensor, comp_mask: Tensor) -> Tuple[Tensor, Tensor]:
            """Source 0 = the truth (all observed), 1..P = the completion series
            ``[1 + P, T, C, I, J]``, and their masks of observed cells."""
            return (torch.cat([zc.unsqueeze(0), comp]),
                    torch.cat([torch.ones_like(zc).unsqueeze(0), comp_mask]))
        curve: List[Tuple[int, float, float]] = []
        best = {"c": BestWeights(self.stage_c), "f": BestWeights(self.stage_f)}
        saved = trainer.resume()
        if saved is not None:
            curve = [tuple(c) for c in saved["curve"]]
            for key, kept in best.items():
                kept.load_state_dict(saved["best"][key])
            own = saved["rank"]                     # this rank's completions
            if own["comp"] is not None:         # the truth is not stored: rebuilt here
                comp, sources, source_mask = own["comp"], *sources_of(own["comp"],
                                                                      own["comp_mask"])
            log.info("DiffRecon.fit resumes from %s at iteration %d of %d", checkpoint,
                     trainer.start, n_pre + n_joint)

        def extra_state() -> Dict[str, object]:
            return {"curve": curve, "best": {k: b.state_dict() for k, b in best.items()},
                    "rank": {"comp": comp,
                             "comp_mask": None if comp is None else source_mask[1:]}}

        def check(done: int) -> None:
            with self._using_steps(steps_val):
                lc, lf = self._validation_losses(val_check, steps=joint_sampling_steps,
                                                 sampler=joint_sampler)
            lc, lf = all_mean(lc), all_mean(lf)     # every rank keeps the same weights
            curve.append((done, lc, lf))
            best["c"].update(lc, done)              # the stages share no parameter:
            best["f"].update(lf, done)              # each keeps its own best weights

        def loss_fn(it: int) -> Dict[str, Tensor]:
            """Iteration ``it``'s denoising losses of both stages on this rank's batch."""
            joint_phase = it >= n_pre
            t_idx = targets[torch.randint(len(targets), (batch_size,), generator=gen)]
            # Diffusion-C on simulated masks
            m = SparsePattern.draw_mixture(pats, batch_size, self.history_c,
                                           *self.coarse_size, gen)
            # on the model's device once: the loss and the end-to-end pass both use it
            b_c = self.stage_c._on_device(self._c_train_batch(zc, m, t_idx, time, ext,
                                                              step_feats))
            m = m[:, :, None].expand(-1, -1, self.channels, -1, -1)
            loss_c = self.stage_c.loss(b_c, zc[t_idx], gen)
            # Diffusion-F on the truth (pre-training) or on Diffusion-C's completions
            if joint_phase and joint_mode == "end_to_end":
                t_last = sch_c.config.num_train_timesteps - 1
                x_T = torch.randn(zc[t_idx].shape, generator=gen).to(dev)
                out = self.stage_c.denoiser(x_T, torch.full((batch_size,), t_last, device=dev),
                                            b_c)
                x0_hat, _ = sch_c._predict_x0_eps(out, x_T, sch_c._alpha_prod(t_last))
                keep = m[:, -1].bool()                              # observed cells
                if joint_mix < 1.0:
                    use_comp = torch.rand(batch_size, generator=gen) < float(joint_mix)
                    keep = keep | ~use_comp[:, None, None, None]
                keep = keep.to(dev)
                b_f = self.stage_f._on_device(self._f_batch(zc, t_idx, time, ext,
                                                            observed=None))
                b_f["coarse"] = torch.where(keep, zc[t_idx].to(dev), x0_hat)
                if self.stage_f.use_tpatternnet:
                    b_f["series"] = torch.cat([b_f["series"][:, :-1],
                                               b_f["coarse"].unsqueeze(1)], 1)
                if self.stage_f.completion_mask:
                    b_f["observed"] = keep.to(zc.dtype)
            elif joint_phase:
                p_idx = torch.randint(comp.shape[0], (batch_size,), generator=gen) + 1
                if joint_mix < 1.0:
                    use_comp = torch.rand(batch_size, generator=gen) < float(joint_mix)
                    p_idx = torch.where(use_comp, p_idx, torch.zeros_like(p_idx))
                offs = (t_idx[:, None] + torch.arange(-self.history_f + 1, 1)).clamp_min(0)
                series = sources[p_idx[:, None], offs]              # [B, H_F, C, I, J]
                b_f = {"coarse": series[:, -1]}
                if self.stage_f.use_tpatternnet:
                    b_f["series"] = series
                if self.stage_f.completion_mask:
                    b_f["observed"] = source_mask[p_idx, t_idx]
                self._add_calendar(b_f, t_idx, time, ext)
            else:
                b_f = self._f_batch(zc, t_idx, time, ext)
            loss_f = self.stage_f.loss(b_f, zf[t_idx], gen)
            return {"loss_c": loss_c, "loss_f": loss_f}

        def before_step(it: int) -> None:
            nonlocal comp, sources, source_mask
            if val_check is not None and it and it % int(val_every) == 0:
                check(it)
            if it >= n_pre and joint_mode == "sampled" and \
                    (it - n_pre) % joint_refresh == 0:
                self.eval()
                if joint_series is None:
                    pick = list(range(len(pats)))
                else:
                    pick = torch.randperm(len(pats), generator=gen)[:joint_series].tolist()
                comp, comp_mask = self._complete_series(zc, [pats[i] for i in pick], time,
                                                        ext, step_feats, gen,
                                                        joint_sampling_steps, 512,
                                                        joint_sampler)
                sources, source_mask = sources_of(comp, comp_mask)
                self.train()

        trainer.run(loss_fn, before_step, extra_state,
                    postfix=lambda it: {"phase": "joint" if it >= n_pre else "pre"})
        if val_check is not None:
            check(n_pre + n_joint)
            log_.update(val_curve=curve, best_iter_c=best["c"].restore(),
                        best_iter_f=best["f"].restore())
            # Diffusion-F saw completions only if the kept weights come from the joint phase
            n_joint_kept = max(0, log_["best_iter_f"] - n_pre)
        else:
            n_joint_kept = n_joint
        self.eval()
        self.f_saw_completions.fill_(n_joint_kept > 0)
        log_.update(seconds=trainer.seconds,
                    final_loss_c=trainer.last("loss_c"), final_loss_f=trainer.last("loss_f"),
                    train_losses=trainer.history)
        self.history_log = log_
        return self

    # -------------------------------------------------------------- inference
    def _prepare_series(self, coarse, mask, history, time, ext, num_samples, reduce,
                        batch_size, step_inputs, steps, seed):
        """Check an inference series and prepare it on the CPU: ``(zc_obs, mf, time, ext,
        step_feats)`` with ``zc_obs`` the standardised, zero-at-missing coarse maps and
        ``mf`` the float mask ``[T, C, I, J]``; sets the per-step inputs."""
        check_float32_model(self)
        self._check_fitted()
        C, (I, J) = self.channels, self.coarse_size
        if not isinstance(coarse, Tensor) or coarse.dim() != 4 or \
                tuple(coarse.shape[1:]) != (C, I, J):
            got = tuple(coarse.shape) if isinstance(coarse, Tensor) else type(coarse).__name__
            raise ValueError(f"'coarse' must have shape [T, C, I, J] = [T, {C}, {I}, {J}] "
                             f"(got {got})")
        T = coarse.shape[0]
        if not isinstance(mask, Tensor) or mask.dim() != 4 or mask.shape[0] != T or \
                mask.shape[1] not in (1, C) or tuple(mask.shape[2:]) != (I, J):
            got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"'mask' must have shape [T, C, I, J] or [T, 1, I, J] = "
                             f"[{T}, {C} or 1, {I}, {J}] (got {got})")
        if isinstance(history, bool) or int(history) != history or not 0 <= history < T:
            raise ValueError(f"'history' must be an integer in [0, T={T}) (got {history!r})")
        if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"'num_samples' must be a positive integer (got {num_samples!r})")
        if reduce not in ("mean", "median"):
            raise ValueError(f"'reduce' must be 'mean' or 'median' (got {reduce!r})")
        if int(batch_size) < 1:
            raise ValueError(f"'batch_size' must be positive (got {batch_size})")
        if isinstance(steps, bool) or int(steps) != steps or steps < 2:
            raise ValueError(f"'steps' must be an integer >= 2 (got {steps!r}): a one-step "
                             f"schedule runs its step at t = 0 and returns the starting noise")
        check_seed(seed)
        check_binary_mask("mask", mask)
        # the series is prepared on the CPU; each batch moves to the model's device
        coarse, mask = coarse.cpu(), mask.cpu()
        time, ext, step_feats = _calendar_inputs(time, ext, T, self.use_time,
                                                 self.ext_features)
        m = (mask != 0).expand(T, C, I, J)
        x = torch.where(m, coarse.float(), torch.zeros(()))
        if not bool(torch.isfinite(x).all()):
            raise ValueError("'coarse' has NaN/inf at observed entries (mask 1); mark them "
                             "missing instead")
        mf = m.float()
        zc_obs = self._scale(x, self.coarse_mean, self.coarse_std) * mf
        self._steps = self._step_inputs(step_inputs, T)      # batches read these
        return zc_obs, mf, time, ext, step_feats

    def _sample_c(self, zc_obs, mf, time, ext, step_feats, xc_T, sampler, steps, bs, gen,
                  progress) -> Tensor:
        """Diffusion-C's completions ``[S, T, C, I, J]`` (standardised) of every step from
        the starting noise ``xc_T``; observed cells keep their values."""
        S, T, C, I, J = xc_T.shape
        comp = torch.empty(S, T, C, I, J)
        for s in tqdm(range(0, T, bs), disable=not progress, desc="Diffusion-C"):
            idx = torch.arange(s, min(T, s + bs))
            b = self._c_batch(zc_obs, mf, idx, time, ext, step_feats)
            xT = xc_T[:, idx].reshape(-1, C, I, J)
            out = self.stage_c.generate(b, xT, sampler, steps, gen)
            comp[:, idx] = out.reshape(S, len(idx), C, I, J)
        return torch.where(mf.bool().unsqueeze(0), zc_obs.unsqueeze(0), comp)

    @torch.no_grad()
    @_restores_step_inputs
    def complete(self, coarse: Tensor, mask: Tensor, history: int = 0,
                 time: Optional[Tensor] = None, ext: Optional[Tensor] = None,
                 num_samples: int = 8, sampler: str = "ddim", steps: int = 20,
                 batch_size: int = 256, reduce: str = "mean", seed: int = 0,
                 progress: bool = False,
                 step_inputs: Optional[Dict[str, Tensor]] = None) -> Tuple[Tensor, Tensor]:
        r"""Complete incomplete coarse maps with Diffusion-C alone (the first stage of
        :meth:`reconstruct`, without inferring fine maps).

        Arguments as in :meth:`reconstruct`. With ``sampler="ddim"`` the result equals
        ``reconstruct(...).coarse`` for the same ``seed`` (the same starting noise).

        Returns:
            ``(coarse, spread)``: ``[T - history, C, I, J]`` completed maps in original
            units (point estimate; observed cells keep their observed values) and the
            standard deviation over the samples.
        """
        zc_obs, mf, time, ext, step_feats = self._prepare_series(
            coarse, mask, history, time, ext, num_samples, reduce, batch_size, step_inputs,
            steps, seed)
        T, C, I, J = zc_obs.shape
        gen = torch.Generator().manual_seed(int(seed))
        xc_T = torch.randn((int(num_samples), T, C, I, J), generator=gen)
        comp = self._sample_c(zc_obs, mf, time, ext, step_feats, xc_T, sampler, steps,
                              int(batch_size), gen, progress)
        out = self._unscale(comp[:, int(history):], self.coarse_mean, self.coarse_std)
        point = out.mean(0) if reduce == "mean" else out.median(0).values
        return point.to(coarse.device), out.std(0, unbiased=False).to(coarse.device)

    @torch.no_grad()
    @_restores_step_inputs
    def reconstruct(self, coarse: Tensor, mask: Tensor, history: int = 0,
                    time: Optional[Tensor] = None, ext: Optional[Tensor] = None,
                    num_samples: int = 8, sampler: str = "ddim", steps: int = 20,
                    batch_size: int = 256, reduce: str = "mean",
                    mass_consistent: Union[bool, str] = False, seed: int = 0,
                    return_samples: bool = False, progress: bool = False,
                    step_inputs: Optional[Dict[str, Tensor]] = None) -> Reconstruction:
        r"""Reconstruct complete fine maps from a series of incomplete coarse maps.

        Diffusion-C completes every step of the series (its ST-PointFormer sees the
        observed points of the previous ``history_c - 1`` steps and the current one);
        observed cells keep their observed values. Diffusion-F then infers each fine map
        of steps ``history..T-1`` from its completed coarse map and the completed series of
        the previous ``history_f - 1`` steps (sample ``s`` of Diffusion-F is conditioned on
        sample ``s`` of the whole completed series). Window steps before the series start
        are missing (Diffusion-C) or replicate the first completion (Diffusion-F).

        With ``mass_consistent`` set, each fine sample is corrected so that every
        :math:`N \times N` block sums to its completed coarse value. ``True`` /
        ``"additive"`` is the least-squares projection onto the constraint:

        .. math::
            \tilde x^{f}_{u} = \hat x^{f}_{u} + \frac{1}{N^2}\Big(\hat x^{c}_{\pi(u)} -
            \sum_{v \in \pi(u)} \hat x^{f}_{v}\Big)

        ``"proportional"`` (for non-negative data such as counts) rescales each block,
        keeping the sampled shares -- the conditional mean of a multinomial split of the
        coarse value:

        .. math::
            \tilde x^{f}_{u} = \big(\hat x^{f}_{u}\big)_+ \,
            \frac{\big(\hat x^{c}_{\pi(u)}\big)_+}{\sum_{v \in \pi(u)}
            \big(\hat x^{f}_{v}\big)_+}

        (blocks whose sampled sum is not positive get the additive correction).

        Deterministic for a fixed ``seed``: all starting noise is drawn up front, so with
        ``sampler="ddim"`` (:math:`\eta = 0`) the result depends on ``batch_size`` only
        through float round-off and T-PatternNet's periods, which its TimesBlocks take
        from the spectrum averaged over the batch (TimesNet's rule): conditions whose
        spectra pick other periods can change the periods of a batch. On the synthetic
        city (``--quick``, random 40 %) batch sizes 256 and 8 give MAE 1.4744481 and
        1.4744478. (A ``TPatternNet(period_scope="sample")`` takes each series' own
        periods, which removes the second cause for models built with it.) The networks run on the model's device (``model.to(...)``);
        the noise is drawn on the CPU, so a CUDA model starts from the same noise as a CPU
        one, and the result is returned on the device of ``coarse``.

        Args:
            coarse (Tensor): ``[T, C, I, J]`` coarse maps (original units; entries with
                ``mask == 0`` are ignored, NaN allowed there).
            mask (Tensor): ``[T, C, I, J]`` or ``[T, 1, I, J]`` observed mask (1 observed).
            history (int, optional): leading steps used as context only (not returned).
                (default: ``0``)
            time (Tensor, optional): ``[T, 3]`` hour, weekday, holiday.
            ext (Tensor, optional): ``[T, F_ext]``.
            step_inputs (dict, optional): ``{key: [T, ...]}`` per-step inputs of the
                user's conditioners (as in :meth:`fit`).
            num_samples (int, optional): samples per step :math:`S`. (default: ``8``)
            sampler (str, optional): ``"ddim"`` or ``"ddpm"``. (default: ``"ddim"``)
            steps (int, optional): reverse steps. (default: ``20``)
            batch_size (int, optional): conditions per network call (times ``S`` maps).
                (default: ``256``)
            reduce (str, optional): point estimate ``"mean"`` or ``"median"``
                (``torch.median``: for an even ``S`` the lower of the two middle samples,
                not their average; use an odd ``S`` for the usual median).
                (default: ``"mean"``)
            mass_consistent (bool or str, optional): ``False``, ``True`` /
                ``"additive"`` or ``"proportional"``; see above. (default: ``False``)
            seed (int, optional): (default: ``0``)
            return_samples (bool, optional): keep all fine samples. (default: ``False``)
            progress (bool, optional): tqdm bars. (default: ``False``)

        Returns:
            :class:`Reconstruction` with ``fine`` ``[T - history, C, NI, NJ]``.
        """
        zc_obs, mf, time, ext, step_feats = self._prepare_series(
            coarse, mask, history, time, ext, num_samples, reduce, batch_size, step_inputs,
            steps, seed)
        modes = {False: None, True: "additive", "additive": "additive",
                 "proportional": "proportional"}
        if not isinstance(mass_consistent, (bool, str)) or mass_consistent not in modes:
            raise ValueError(f"'mass_consistent' must be False, True, 'additive' or "
                             f"'proportional' (got {mass_consistent!r})")
        mode = modes[mass_consistent]
        out_device = coarse.device
        T, C, I, J = zc_obs.shape
        S = int(num_samples)
        gen = torch.Generator().manual_seed(int(seed))
        xc_T = torch.randn((S, T, C, I, J), generator=gen)
        Tout = T - int(history)
        xf_T = torch.randn((S, Tout, C) + self.fine_size, generator=gen)
        bs = int(batch_size)
        comp = self._sample_c(zc_obs, mf, time, ext, step_feats, xc_T, sampler, steps, bs,
                              gen, progress)
        fine = torch.empty((S, Tout, C) + self.fine_size)
        # the completion mask only means something to a Diffusion-F trained on completions
        observed = mf if bool(self.f_saw_completions) else None
        for s in tqdm(range(0, Tout, bs), disable=not progress, desc="Diffusion-F"):
            idx = torch.arange(s, min(Tout, s + bs)) + int(history)
            batches = [self._f_batch(comp[k], idx, time, ext, observed) for k in range(S)]
            b = {key: torch.cat([bb[key] for bb in batches]) for key in batches[0]}
            # conditions differ per sample here: run them as S * B conditions, one sample each
            xT = xf_T[:, idx - int(history)].reshape(-1, C, *self.fine_size)
            out = self.stage_f.generate(b, xT, sampler, steps, gen)
            fine[:, idx - int(history)] = out.reshape(S, len(idx), C, *self.fine_size)
        fine = self._unscale(fine, self.fine_mean, self.fine_std)
        coarse_hat = self._unscale(comp[:, int(history):], self.coarse_mean, self.coarse_std)
        if mode is not None:
            fine = mass_project(fine, coarse_hat, self.factor, mode)
        point = fine.mean(0) if reduce == "mean" else fine.median(0).values
        coarse_point = coarse_hat.mean(0) if reduce == "mean" else coarse_hat.median(0).values
        spread = fine.std(0, unbiased=False)
        return Reconstruction(point.to(out_device), spread.to(out_device),
                              coarse_point.to(out_device),
                              fine.to(out_device) if return_samples else None)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(channels={self.channels}, "
                f"coarse_size={self.coarse_size}, factor={self.factor}, "
                f"history_c={self.history_c}, history_f={self.history_f}, "
                f"stpointformer={self.stage_c.use_stpointformer}, "
                f"tpatternnet={self.stage_f.use_tpatternnet}"
                + (", independent_stages=True" if self.independent_stages else "") + ")")
