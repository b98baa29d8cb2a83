r"""Conditioners: the extension point that turns a batch into conditioning signals for
the U-Net denoiser.

A conditioner is an ``nn.Module`` whose ``forward(batch: dict) -> dict`` returns any of

* ``'vector'``   ``[B, vector_dim]`` - added (and used for FiLM) in every residual block
  of :class:`~torch_stgen.nn.UNet2D` together with the step embedding (KGDiff eq. 19);
* ``'map'``      ``[B, map_channels, H, W]`` - concatenated to the denoiser's input
  channels (conditional DDPM input, DiffRecon Diffusion-C/-F);
* ``'features'`` ``[B, feature_channels, h, w]`` - fused at the U-Net bottleneck with the
  intra-map encoder's features (DiffRecon eqs. 11-13); ``(h, w)`` should be
  ``unet.bottleneck_size(H, W)``.

It declares the sizes of what it produces (``vector_dim``, ``map_channels``,
``feature_channels``; ``0`` = not produced), so a model can size its U-Net without
running it (:meth:`ConditionalDenoiser.build`). :class:`ConditionalDenoiser` glues a
U-Net and a conditioner, so a model accepts a user conditioner without code changes.

Example - a user-written conditioner that embeds a region id::

    class RegionConditioner(Conditioner):
        def __init__(self, num_regions, dim):
            super().__init__()
            self.vector_dim = dim                      # declares kind == ('vector',)
            self.embed = torch.nn.Embedding(num_regions, dim)

        def forward(self, batch):
            return {"vector": self.embed(batch["region"])}

    cond = ConditionerStack([RegionConditioner(10, 16),
                             ObservedMapConditioner(channels=1)])
    denoiser = ConditionalDenoiser.build(cond, data_channels=1, model_channels=32)
    eps = denoiser(x_t, t, {"region": r, "obs": coarse, "mask": m})
"""
from typing import Dict, Iterable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_binary_mask
from .embeddings import ExternalEmbedding, TimeFeatureEmbedding, _check_finite

__all__ = ["Conditioner", "ObservedMapConditioner", "ExternalConditioner",
           "ConditionerStack", "ConditionalDenoiser"]

KEYS = ("vector", "map", "features")
_SIZE_ATTR = {"vector": "vector_dim", "map": "map_channels", "features": "feature_channels"}


class _MissingKey(KeyError):
    """A built-in conditioner's missing batch key (``.key``), already explained."""

    def __init__(self, key: str, message: str, explained: bool = False):
        super().__init__(message)
        self.key, self.explained = key, explained


class _Batch(dict):
    """The batch as a :class:`ConditionerStack`'s members see it: reading a key it lacks
    raises :class:`_MissingKey`, so a ``KeyError`` of a conditioner's own (a lookup table
    of its own, say) is told apart from a missing batch key and passes unchanged."""

    def __missing__(self, key):
        raise _MissingKey(key, f"the batch lacks {key!r}")


def _get(batch: Dict[str, Tensor], key: str, owner: str) -> Tensor:
    if not isinstance(batch, dict):
        raise TypeError(f"{owner} expects 'batch' to be a dict of tensors "
                        f"(got {type(batch).__name__})")
    if key not in batch:
        raise _MissingKey(key, f"{owner} needs batch[{key!r}] (batch has keys "
                               f"{sorted(batch)})")
    return torch.as_tensor(batch[key])


def check_inputs(inputs: Optional[Dict[str, Tensor]], lead: Sequence[int], what: str,
                 name: str, builtin: Iterable[str] = (), device=None,
                 check_values: bool = True) -> Dict[str, Tensor]:
    """Validate a model's user conditioning inputs ``{key: tensor [*lead, ...]}`` (the
    models' ``step_inputs`` / ``inputs``) and return them on ``device`` (``None``: the
    CPU), floating ones as float32 (a float64 array from numpy then meets float32
    weights); integer and boolean ones keep their dtype.

    Args:
        lead: the leading shape every entry must have, e.g. ``(T,)``; ``what`` names it
            in messages (``"T"``).
        name: the argument's name in messages.
        builtin: keys the model fills itself, refused.
        check_values: refuse NaN/inf (a device sync; off on a training hot path).
    """
    if inputs is None:
        return {}
    if not isinstance(inputs, dict):
        raise TypeError(f"'{name}' must be a dict {{key: tensor [{what}, ...]}} "
                        f"(got {type(inputs).__name__})")
    builtin = set(builtin)
    out = {}
    for key, value in inputs.items():
        if key in builtin:
            raise ValueError(f"'{name}' key {key!r} is a built-in batch key; choose another "
                             f"name (built-in: {sorted(builtin)})")
        if not isinstance(value, Tensor) or tuple(value.shape[:len(lead)]) != tuple(lead):
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"'{name}[{key!r}]' must be a tensor [{what}, ...] with "
                             f"[{what}] = {list(lead)} (got {got})")
        if value.is_floating_point():
            if check_values and not bool(torch.isfinite(value).all()):
                raise ValueError(f"'{name}[{key!r}]' has NaN/inf values")
            value = value.to(torch.float32)
        out[key] = value.to("cpu" if device is None else device)
    return out


def _reset_submodules(module: nn.Module) -> None:
    """Call ``reset_parameters`` of every child of ``module`` that has one and walk into
    those that do not (``nn.Sequential``, ``nn.ModuleList``, plain modules). Parameters
    held directly by a walked module cannot be re-initialised generically: a
    ``RuntimeError`` names them."""
    def walk(m: nn.Module, where: str):
        own = [n for n, _ in m.named_parameters(recurse=False)]
        if own:
            raise RuntimeError(f"{where} ({type(m).__name__}) holds parameters {own} of its "
                               f"own: give it a reset_parameters() that initialises them")
        for name, child in m.named_children():
            if callable(getattr(child, "reset_parameters", None)):
                child.reset_parameters()
            else:
                walk(child, f"{where}.{name}")
    walk(module, type(module).__name__)


class Conditioner(nn.Module):
    r"""Base class of conditioners.

    Subclasses set the sizes of what they produce (class attributes or in ``__init__``)
    and implement :meth:`forward`. :attr:`kind` is derived from the sizes.

    Attributes:
        vector_dim (int): size of ``'vector'`` (``0``: not produced).
        map_channels (int): channels of ``'map'`` (``0``: not produced).
        feature_channels (int): channels of ``'features'`` (``0``: not produced).
    """

    vector_dim: int = 0
    map_channels: int = 0
    feature_channels: int = 0

    @property
    def kind(self) -> Tuple[str, ...]:
        """The keys this conditioner produces, a subset of
        ``('vector', 'map', 'features')``."""
        return tuple(k for k in KEYS if getattr(self, _SIZE_ATTR[k]) > 0)

    def forward(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:  # pragma: no cover
        raise NotImplementedError(f"{self.__class__.__name__} must implement "
                                  f"forward(batch) -> dict")

    def check(self, out: Dict[str, Tensor], batch_size: Optional[int] = None
              ) -> Dict[str, Tensor]:
        """Validate an output of :meth:`forward` against the declared sizes; returns it."""
        name = self.__class__.__name__
        if not isinstance(out, dict):
            raise TypeError(f"{name}.forward must return a dict (got {type(out).__name__})")
        unknown = set(out) - set(KEYS)
        if unknown:
            raise ValueError(f"{name} returned unknown keys {sorted(unknown)}; allowed: "
                             f"{list(KEYS)}")
        for key in KEYS:
            size = getattr(self, _SIZE_ATTR[key])
            if key not in out:
                if size > 0:
                    raise ValueError(f"{name} declares {_SIZE_ATTR[key]}={size} but did not "
                                     f"return {key!r}")
                continue
            v = out[key]
            if size == 0:
                raise ValueError(f"{name} returned {key!r} but declares "
                                 f"{_SIZE_ATTR[key]}=0; set it to the produced size")
            want = "[B, {}]".format(size) if key == "vector" else f"[B, {size}, H, W]"
            ndim = 2 if key == "vector" else 4
            if not isinstance(v, Tensor) or v.dim() != ndim or v.shape[1] != size or (
                    batch_size is not None and v.shape[0] != batch_size):
                got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
                b = f" with B={batch_size}" if batch_size is not None else ""
                raise ValueError(f"{name} output {key!r} must have shape {want}{b} "
                                 f"(got {got})")
            _check_finite(f"{name} output {key!r}", v)
        return out

    def reset_parameters(self):
        """Re-initialise every submodule (each one's own ``reset_parameters``; containers
        such as ``nn.Sequential`` are walked). A subclass that registers an
        ``nn.Parameter`` of its own overrides this to initialise it too; otherwise a
        ``RuntimeError`` names it rather than leave it trained."""
        _reset_submodules(self)

    def extra_repr(self) -> str:
        return ", ".join(f"{_SIZE_ATTR[k]}={getattr(self, _SIZE_ATTR[k])}" for k in self.kind)


class ObservedMapConditioner(Conditioner):
    r"""Observed (possibly incomplete) map and its mask as input channels - the condition
    of DiffRecon's conditional DDPMs (the incomplete coarse map for Diffusion-C, the
    completed coarse map for Diffusion-F; `arXiv:2410.05323
    <https://arxiv.org/abs/2410.05323>`_, §IV):

    .. math::
        \mathrm{map} = \big[\, \mathrm{Up}_s(X \odot M) \,\|\, \mathrm{Up}_s(M) \,\big]

    Missing entries are zeroed with ``torch.where`` (a NaN in a missing cell never
    leaks) and flagged by the mask channels; a non-finite *observed* value raises.
    :math:`\mathrm{Up}_s` is nearest-neighbour upsampling by ``upsample`` (values are
    copied, not rescaled: divide a sum-pooled coarse map by :math:`s^2` beforehand if a
    per-cell density is wanted).

    Args:
        channels (int): channels :math:`C` of the observed map.
        key (str, optional): batch key of the map ``[B, C, h, w]``. (default: ``"obs"``)
        mask_key (str, optional): batch key of the observed mask ``[B, C, h, w]`` or
            ``[B, 1, h, w]``; ``None`` for a complete map (no mask channels).
            (default: ``"mask"``)
        mask_channels (int, optional): channels of the mask, ``C`` or ``1``.
            (default: ``channels``)
        upsample (int, optional): nearest-neighbour upsampling factor :math:`s`.
            (default: ``1``)

    Shapes:
        - **output:** ``{'map': [B, C + mask_channels, s*h, s*w]}``
    """

    def __init__(self, channels: int, key: str = "obs", mask_key: Optional[str] = "mask",
                 mask_channels: Optional[int] = None, upsample: int = 1):
        super().__init__()
        if int(channels) < 1:
            raise ValueError(f"'channels' must be positive (got {channels})")
        if int(upsample) < 1:
            raise ValueError(f"'upsample' must be a positive integer (got {upsample})")
        self.channels = int(channels)
        self.key, self.mask_key = key, mask_key
        if mask_key is None:
            self.mask_channels = 0
        else:
            self.mask_channels = int(mask_channels) if mask_channels is not None else channels
            if self.mask_channels not in (1, self.channels):
                raise ValueError(f"'mask_channels' must be 1 or channels={channels} "
                                 f"(got {mask_channels})")
        self.upsample = int(upsample)
        self.map_channels = self.channels + self.mask_channels

    def forward(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        name = self.__class__.__name__
        x = _get(batch, self.key, name)
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"batch[{self.key!r}] must have shape [B, {self.channels}, h, w] "
                             f"(got {tuple(x.shape)})")
        x = x.float() if not x.is_floating_point() else x
        parts = []
        if self.mask_key is None:
            _check_finite(f"batch[{self.key!r}]", x)
            parts.append(x)
        else:
            m = _get(batch, self.mask_key, name)
            want = (x.shape[0], self.mask_channels) + tuple(x.shape[2:])
            if tuple(m.shape) != want:
                raise ValueError(f"batch[{self.mask_key!r}] must have shape "
                                 f"[B, {self.mask_channels}, h, w] = {want} "
                                 f"(got {tuple(m.shape)})")
            # NaN, -1 or 0.5 would count as observed (!= 0) and let values through
            check_binary_mask(f"batch[{self.mask_key!r}]", m)
            observed = m.bool() if m.dtype == torch.bool else (m != 0)
            if not bool(torch.isfinite(x[observed.expand_as(x)]).all()):
                raise ValueError(f"batch[{self.key!r}] has NaN/inf at observed entries "
                                 f"(mask 1); mark them missing instead")
            parts.append(torch.where(observed, x, torch.zeros((), dtype=x.dtype,
                                                              device=x.device)))
            parts.append(observed.to(x.dtype))
        out = torch.cat(parts, dim=1)
        if self.upsample > 1:
            out = F.interpolate(out, scale_factor=float(self.upsample), mode="nearest")
        return {"map": out}

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, key={self.key!r}, mask_key={self.mask_key!r}, "
                f"map_channels={self.map_channels}, upsample={self.upsample}")


class ExternalConditioner(Conditioner):
    r"""Calendar time features and external covariates as one conditioning vector
    (DiffRecon's external-feature embedding, eq. 14 of `arXiv:2410.05323
    <https://arxiv.org/abs/2410.05323>`_, summed as the embeddings are there):

    .. math::
        v = \mathrm{TimeFeatureEmbedding}(\tau) + \mathrm{ExternalEmbedding}(u)

    Inputs may carry a time axis (``[B, T, F]``, e.g. a history window); ``reduce``
    then picks the last step (``"last"``, the target step by convention) or averages the
    per-step embeddings (``"mean"``).

    Args:
        dim (int): ``vector_dim``.
        ext_features (int, optional): number of external covariates; ``0`` disables them.
            (default: ``0``)
        use_time (bool, optional): use the ``[hour, weekday, holiday]`` features.
            (default: ``True``)
        time_key (str, optional): batch key of the time features. (default:
            ``"time_y"``, the target-step features of
            :class:`~torch_stgen.data.WindowDataset`)
        ext_key (str, optional): batch key of the covariates. (default: ``"ext_y"``)
        reduce (str, optional): ``"last"`` or ``"mean"`` over a time axis.
            (default: ``"last"``)
        **time_kwargs: passed to :class:`TimeFeatureEmbedding` (e.g. ``hour_period=1``).

    Shapes:
        - **input:** ``batch[time_key]`` ``[B, F_time]`` or ``[B, T, F_time]`` with
          ``F_time`` 3 (raw), 5 (cyclic) or 32 (onehot), see
          :class:`TimeFeatureEmbedding`; ``batch[ext_key]``
          ``[B, F_ext]`` or ``[B, T, F_ext]``
        - **output:** ``{'vector': [B, dim]}``
    """

    def __init__(self, dim: int, ext_features: int = 0, use_time: bool = True,
                 time_key: str = "time_y", ext_key: str = "ext_y", reduce: str = "last",
                 **time_kwargs):
        super().__init__()
        if not use_time and ext_features <= 0:
            raise ValueError("ExternalConditioner needs time features (use_time=True) or "
                             "external covariates (ext_features > 0)")
        if reduce not in ("last", "mean"):
            raise ValueError(f"'reduce' must be 'last' or 'mean' (got {reduce!r})")
        self.vector_dim = int(dim)
        self.ext_features = int(ext_features)
        self.time_key, self.ext_key, self.reduce = time_key, ext_key, reduce
        self.time_embed = TimeFeatureEmbedding(dim, **time_kwargs) if use_time else None
        self.ext_embed = ExternalEmbedding(ext_features, dim) if ext_features > 0 else None

    def _reduce(self, e: Tensor, key: str) -> Tensor:
        if e.dim() == 2:
            return e
        if e.dim() == 3:
            return e[:, -1] if self.reduce == "last" else e.mean(dim=1)
        raise ValueError(f"batch[{key!r}] must have shape [B, F] or [B, T, F]")

    def forward(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        name = self.__class__.__name__
        vec = tau = None
        if self.time_embed is not None:
            tau = _get(batch, self.time_key, name)
            if tau.dim() not in (2, 3):
                raise ValueError(f"batch[{self.time_key!r}] must have shape [B, F_time] or "
                                 f"[B, T, F_time] (got {tuple(tau.shape)})")
            vec = self._reduce(self.time_embed(tau), self.time_key)
        if self.ext_embed is not None:
            u = _get(batch, self.ext_key, name)
            if u.dim() not in (2, 3):
                raise ValueError(f"batch[{self.ext_key!r}] must have shape "
                                 f"[B, {self.ext_features}] or [B, T, {self.ext_features}] "
                                 f"(got {tuple(u.shape)})")
            if tau is not None and tau.dim() == 3 == u.dim() and tau.shape[1] != u.shape[1]:
                raise ValueError(f"batch[{self.ext_key!r}] and batch[{self.time_key!r}] "
                                 f"cover windows of different length ({u.shape[1]} vs "
                                 f"{tau.shape[1]} steps)")
            e = self._reduce(self.ext_embed(u), self.ext_key)
            if vec is not None and e.shape[0] != vec.shape[0]:
                raise ValueError(f"batch[{self.ext_key!r}] and batch[{self.time_key!r}] "
                                 f"disagree on the batch size ({e.shape[0]} vs "
                                 f"{vec.shape[0]})")
            vec = e if vec is None else vec + e
        return {"vector": vec}

    def extra_repr(self) -> str:
        return (f"vector_dim={self.vector_dim}, time={self.time_embed is not None}, "
                f"ext_features={self.ext_features}, reduce={self.reduce!r}")


class ConditionerStack(Conditioner):
    r"""Several conditioners composed into one.

    * ``'vector'`` outputs are **summed** (``vector_mode="sum"``, all ``vector_dim`` equal)
      or **concatenated** (``vector_mode="concat"``, ``vector_dim`` = their sum), in
      the order given;
    * ``'map'`` and ``'features'`` outputs are concatenated along channels in the order
      given (features must share their spatial size).

    Args:
        conditioners (Iterable[Conditioner]): the conditioners.
        vector_mode (str, optional): ``"sum"`` or ``"concat"``. (default: ``"concat"``)
    """

    def __init__(self, conditioners: Iterable[Conditioner], vector_mode: str = "concat"):
        super().__init__()
        self.conditioners = nn.ModuleList(conditioners)
        if len(self.conditioners) == 0:
            raise ValueError("'conditioners' must not be empty")
        for c in self.conditioners:
            if not isinstance(c, Conditioner):
                raise TypeError(f"every entry of 'conditioners' must be a Conditioner "
                                f"(got {type(c).__name__})")
        if vector_mode not in ("sum", "concat"):
            raise ValueError(f"'vector_mode' must be 'sum' or 'concat' (got {vector_mode!r})")
        self.vector_mode = vector_mode
        dims = [c.vector_dim for c in self.conditioners if c.vector_dim > 0]
        if vector_mode == "sum" and len(set(dims)) > 1:
            raise ValueError(f"vector_mode='sum' needs equal vector_dim for all conditioners "
                             f"(got {dims}); use vector_mode='concat'")
        self.vector_dim = (sum(dims) if vector_mode == "concat" else (dims[0] if dims else 0))
        self.map_channels = sum(c.map_channels for c in self.conditioners)
        self.feature_channels = sum(c.feature_channels for c in self.conditioners)

    def forward(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        parts = {k: [] for k in KEYS}
        batch_size = None
        view = batch if isinstance(batch, _Batch) or not isinstance(batch, dict) else _Batch(batch)
        for c in self.conditioners:
            try:
                out = c(view)
            except _MissingKey as err:  # name the conditioner and what the batch holds
                if err.explained:
                    raise                  # from a nested stack: already explained
                key = err.key
                raise _MissingKey(key, f"{type(c).__name__} reads batch key {key!r} that the "
                                       f"batch lacks (it has {sorted(batch)}); the models "
                                       f"fill extra keys from the user's inputs, one row "
                                       f"per map or sample (DiffRecon: step_inputs, "
                                       f"KGDiff: inputs)", explained=True) from err
            if batch_size is None and isinstance(out, dict) and out:
                first = next(iter(out.values()))   # every output on the first one's B
                if isinstance(first, Tensor) and first.dim() > 0:
                    batch_size = first.shape[0]
            out = c.check(out, batch_size)
            for k, v in out.items():
                parts[k].append(v)
        result = {}
        if parts["vector"]:
            vs = parts["vector"]
            result["vector"] = (torch.cat(vs, dim=1) if self.vector_mode == "concat"
                                else torch.stack(vs).sum(0))
        for k in ("map", "features"):
            if parts[k]:
                sizes = {tuple(v.shape[-2:]) for v in parts[k]}
                if len(sizes) > 1:
                    raise ValueError(f"ConditionerStack: the {k!r} outputs have different "
                                     f"spatial sizes {sorted(sizes)}")
                result[k] = torch.cat(parts[k], dim=1)
        return result

    def extra_repr(self) -> str:
        return f"vector_mode={self.vector_mode!r}, " + super().extra_repr()


class ConditionalDenoiser(nn.Module):
    r"""A U-Net denoiser driven by a conditioner: the glue that lets models accept a user
    conditioner without code changes.

    .. math::
        \{v, m, f\} = \mathrm{cond}(\text{batch}), \qquad
        \hat\epsilon = \mathrm{UNet}\big([x_t \,\|\, m],\ t,\ \text{cond}=v,\
        \text{inter}=f\big)

    The constructor checks that the U-Net is sized for the conditioner:
    ``unet.in_channels == data_channels + conditioner.map_channels``,
    ``unet.cond_dim == conditioner.vector_dim`` and
    ``unet.inter_channels == conditioner.feature_channels``; :meth:`build` creates a
    :class:`~torch_stgen.nn.UNet2D` that satisfies them.

    Args:
        unet (nn.Module): a :class:`~torch_stgen.nn.UNet2D` (or a module with the same
            ``in_channels`` / ``cond_dim`` / ``inter_channels`` attributes and
            ``forward(x, t, cond=None, inter=None)``).
        conditioner (Conditioner, optional): ``None`` for an unconditional denoiser.

    Shapes:
        - **input:** ``x_t`` ``[B, data_channels, H, W]``, ``t`` ``[B]`` or scalar,
          ``batch`` a dict read by the conditioner
        - **output:** ``[B, unet.out_channels, H, W]``
    """

    def __init__(self, unet: nn.Module, conditioner: Optional[Conditioner] = None):
        super().__init__()
        if conditioner is not None and not isinstance(conditioner, Conditioner):
            raise TypeError(f"'conditioner' must be a Conditioner (got "
                            f"{type(conditioner).__name__})")
        self.unet = unet
        self.conditioner = conditioner
        c = conditioner
        vdim = c.vector_dim if c is not None else 0
        mch = c.map_channels if c is not None else 0
        fch = c.feature_channels if c is not None else 0
        if getattr(unet, "cond_dim", 0) != vdim:
            raise ValueError(f"unet.cond_dim={getattr(unet, 'cond_dim', 0)} must equal the "
                             f"conditioner's vector_dim={vdim}")
        if getattr(unet, "inter_channels", 0) != fch:
            raise ValueError(f"unet.inter_channels={getattr(unet, 'inter_channels', 0)} must "
                             f"equal the conditioner's feature_channels={fch}")
        self.data_channels = int(unet.in_channels) - mch
        if self.data_channels < 1:
            raise ValueError(f"unet.in_channels={unet.in_channels} must exceed the "
                             f"conditioner's map_channels={mch} (in_channels = data "
                             f"channels + map channels)")

    def reset_parameters(self):
        """Re-initialise the U-Net and the conditioner (see
        :meth:`Conditioner.reset_parameters`)."""
        _reset_submodules(self)

    @classmethod
    def build(cls, conditioner: Optional[Conditioner], data_channels: int,
              out_channels: Optional[int] = None, **unet_kwargs) -> "ConditionalDenoiser":
        """A :class:`ConditionalDenoiser` around a new :class:`~torch_stgen.nn.UNet2D`
        sized from the conditioner's declared outputs (``out_channels`` defaults to
        ``data_channels``; other arguments go to ``UNet2D``)."""
        from .unet import UNet2D
        c = conditioner
        unet = UNet2D(data_channels + (c.map_channels if c is not None else 0),
                      out_channels if out_channels is not None else data_channels,
                      cond_dim=c.vector_dim if c is not None else 0,
                      inter_channels=c.feature_channels if c is not None else 0,
                      **unet_kwargs)
        return cls(unet, conditioner)

    def conditions(self, batch: Optional[Dict[str, Tensor]], batch_size: int
                   ) -> Dict[str, Tensor]:
        """Run and validate the conditioner (``{}`` when there is none)."""
        if self.conditioner is None:
            return {}
        if batch is None:
            raise ValueError(f"'batch' is required: the denoiser has a conditioner "
                             f"({self.conditioner.__class__.__name__}) that reads it")
        return self.conditioner.check(self.conditioner(batch), batch_size)

    def forward(self, x_t: Tensor, t, batch: Optional[Dict[str, Tensor]] = None) -> Tensor:
        if not isinstance(x_t, Tensor) or x_t.dim() != 4 or x_t.shape[1] != self.data_channels:
            got = tuple(x_t.shape) if isinstance(x_t, Tensor) else type(x_t).__name__
            raise ValueError(f"'x_t' must have shape [B, {self.data_channels}, H, W] "
                             f"(got {got})")
        # every conditioner output meets x_t's device and dtype (a float64 vector from
        # a numpy-fed conditioner, a table kept on the CPU), not only the map
        out = {key: value.to(device=x_t.device, dtype=x_t.dtype)
               for key, value in self.conditions(batch, x_t.shape[0]).items()}
        x = x_t
        if "map" in out:
            m = out["map"]
            if tuple(m.shape[-2:]) != tuple(x_t.shape[-2:]):
                raise ValueError(f"the conditioner's 'map' must match x_t's spatial size "
                                 f"{tuple(x_t.shape[-2:])} (got {tuple(m.shape[-2:])})")
            x = torch.cat([x_t, m], dim=1)
        return self.unet(x, t, cond=out.get("vector"), inter=out.get("features"))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(unet={self.unet!r}, "
                f"conditioner={self.conditioner!r})")
