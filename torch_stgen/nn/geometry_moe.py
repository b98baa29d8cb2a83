r"""Geometry mixture-of-experts message passing over a knowledge graph (KGDiff eqs. 13-15).

Wang, Chen, Jin, Deng, Pang, Liu, Zhao, "Knowledge Graph Guided Heterogeneity-Informed
Diffusion Model for Spatio-Temporal Generation", AAAI 2026.
"""
import math
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import geoopt
import torch
import torch.nn.functional as F
from geoopt.manifolds.base import Manifold
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

from .._checks import is_integer_dtype

__all__ = ["GeometryMoEConv"]

_EXPERTS = ("E", "H", "S")
_VARIANTS = ("mobius_add", "paper")


def _identity(x: Tensor) -> Tensor:
    return x


# module-level functions, so that a layer pickles (torch.save of the module, spawn)
_ACTS = {"tanh": torch.tanh, "relu": F.relu, "elu": F.elu, "gelu": F.gelu,
         "identity": _identity}
#: floor added to |k| so that a learnt curvature never underflows to exactly 0
_K_FLOOR = 1e-10


def _inv_softplus(y: float) -> float:
    """x with softplus(x) = y (y > 0), stable for tiny and large y."""
    return y + math.log(-math.expm1(-y))


class SignedStereographic(geoopt.Stereographic):
    r"""A geoopt :class:`~geoopt.Stereographic` manifold whose curvature keeps its sign.

    The curvature is parametrised as :math:`k = s\,(\mathrm{softplus}(\rho) + 10^{-10})`
    with a fixed sign :math:`s \in \{-1, +1\}` and a raw parameter :math:`\rho`, so no
    optimiser step can turn the hyperbolic (Poincaré ball, k < 0) expert into a spherical
    one or vice versa. All of geoopt's stereographic operations (``expmap0``,
    ``mobius_pointwise_mul``, ``mobius_add``, ``logmap0``, ``projx``) read :attr:`k`.
    """

    def __init__(self, k: float, learnable: bool = True):
        Manifold.__init__(self)  # not Stereographic.__init__: k is a derived property here
        if not (isinstance(k, (int, float)) and k != 0 and math.isfinite(k)):
            raise ValueError(f"'k' must be a non-zero finite float (got {k!r})")
        self.sign = -1.0 if k < 0 else 1.0
        self.learnable = bool(learnable)
        mag = max(abs(float(k)) - _K_FLOOR, _K_FLOOR)
        self._raw_init = _inv_softplus(mag)
        if self.learnable:
            self.raw_k = nn.Parameter(torch.tensor(self._raw_init))
        else:   # a buffer: module.requires_grad_(True) cannot make it trainable
            self.register_buffer("raw_k", torch.tensor(self._raw_init))
        self._k_init = float(self.k.detach())

    @property
    def k(self) -> Tensor:  # type: ignore[override]
        return self.sign * (F.softplus(self.raw_k) + _K_FLOOR)

    def __setstate__(self, state):
        # a module pickled before these attributes existed: derive them from raw_k
        super().__setstate__(state)
        if "_raw_init" not in self.__dict__:
            raw = self.raw_k
            self.learnable = bool(raw.requires_grad)
            self._raw_init = float(raw.detach())
            self._k_init = float(self.k.detach())

    def reset_parameters(self):
        """Back to the curvature given to the constructor."""
        with torch.no_grad():
            self.raw_k.fill_(self._raw_init)

    def extra_repr(self) -> str:
        return f"k={float(self.k.detach()):.4g}, learnable={self.learnable}"

    def _fingerprint_repr(self) -> str:
        # the settings, not the learnt k (a trained layer is still the same architecture)
        return f"k={self._k_init:.4g}, learnable={self.learnable}"


def _clip_scale(norm: Tensor, limit: Tensor) -> Tensor:
    """Factor in (0, 1] that brings ``norm`` down to at most ``limit``."""
    return torch.clamp(limit / norm.clamp_min(1e-15), max=1.0)


class GeometryMoEConv(MessagePassing):
    r"""The Geometry MoE layer of KGDiff: Euclidean, hyperbolic and spherical experts over
    typed knowledge-graph edges, from `"Knowledge Graph Guided Heterogeneity-Informed
    Diffusion Model for Spatio-Temporal Generation" (Wang et al., AAAI 2026)`.

    For every edge (h, r, t), stored as ``edge_index[:, e] = (t, h)`` so that messages flow
    from the tail (source j) to the head (target i), with relation embedding
    :math:`\mathbf{r}` and tail embedding :math:`\mathbf{t} = \mathbf{x}_j`, the paper's
    experts are (eqs. 13-14; :math:`\otimes_k` is Möbius point-wise multiplication,
    :math:`\exp_0^k` / :math:`\log_0^k` the maps at the origin of the stereographic model
    of curvature k, with learnable :math:`k_1 < 0` and :math:`k_2 > 0`)

    .. math::
        M_E = \mathbf{r} \odot \mathbf{t}, \qquad
        M_H = \mathbf{r} \otimes_{k_1} \exp_0^{k_1}(\mathbf{t}), \qquad
        M_S = \mathbf{r} \otimes_{k_2} \exp_0^{k_2}(\mathbf{t})                   \quad (13)

    .. math::
        M = W_m \big[ M_E \,\|\, \log_0^{k_1}(M_H) \,\|\, \log_0^{k_2}(M_S) \big],
        \qquad W_m \in \mathbb{R}^{d_{out} \times 3d}                            \quad (14)

    and the node update is the mean over the incoming edges (eq. 15)

    .. math::
        \mathbf{x}_i' = \sigma\Big( \frac{1}{|\mathcal{N}(i)|}
        \sum_{(i, r, j) \in \mathcal{N}(i)} M_{i r j} \Big)                      \quad (15)

    :math:`W_m` is linear, so it commutes with the mean: the layer averages the
    concatenated tangent messages per node and applies :math:`W_m` afterwards (per node,
    not per edge).

    **The printed equations collapse** (``variant='paper'``). Möbius point-wise
    multiplication is defined through the origin's maps,
    :math:`\mathbf{r} \otimes_k \mathbf{x} = \exp_0^k(\mathbf{r} \odot \log_0^k \mathbf{x})`,
    hence :math:`\log_0^k(\mathbf{r} \otimes_k \exp_0^k \mathbf{t}) = \mathbf{r} \odot
    \mathbf{t}` for every k (inside the injectivity radius): taken literally, the
    hyperbolic and spherical experts equal the Euclidean one and the curvatures learn
    nothing. ``variant='paper'`` keeps this literal form (a test pins the identity).

    The default ``variant='mobius_add'`` adds a MuRP-style relation translation by Möbius
    addition with a learnable per-relation vector :math:`\mathbf{b}_r`, which does depend
    on the curvature (:math:`\oplus_k` is not the Euclidean sum for k ≠ 0):

    .. math::
        M_E = \mathbf{r} \odot \mathbf{t} + \mathbf{b}_r, \qquad
        M_{H/S} = \log_0^{k}\Big( \big(\mathbf{r} \otimes_{k} \exp_0^{k}(\mathbf{t})\big)
        \oplus_{k} \exp_0^{k}(\mathbf{b}_r) \Big), \quad k \in \{k_1, k_2\}

    As :math:`k \to 0`, :math:`\oplus_k \to +` and :math:`\exp_0^k, \log_0^k \to`
    identity, so all three experts of a variant agree in the flat limit.

    Numerics: before the maps, the tangent vectors of an edge are scaled by one common
    factor so that :math:`\sqrt{|k|}\,\max(\|\mathbf{t}\|, \|\mathbf{r}\odot\mathbf{t}\|
    + \|\mathbf{b}_r\|) \le` ``max_tangent_norm`` (default 1.5 < π/2): on the sphere
    this keeps every point inside the injectivity radius of :math:`\exp_0` (no wrap-around
    through the antipode, where Möbius addition is 0/0), on the ball it keeps points clear
    of the float32 boundary projection (radius :math:`(1 - 4\cdot10^{-3})/\sqrt{|k|}`,
    tangent norm ≈ 3.1). The Euclidean expert is never clipped, so for large embeddings
    (norm above ``max_tangent_norm / sqrt|k|``) the curved experts saturate.

    **Message normalisation** (``message_norm=True``, not in the paper). The Euclidean
    message grows with the embedding, :math:`\|M_E\| \approx \|\mathbf{r} \odot
    \mathbf{t}\|`, while the curved messages are bounded by the chart
    (:math:`\|\log_0^k M\| \le` ``max_tangent_norm`` :math:`/\sqrt{|k|}`); with
    embeddings of norm ≈ 4.5 (KGDiff's projected TuckER embeddings) the curved experts
    saturate and :math:`W_m` sees the Euclidean one at three times their scale. With
    ``message_norm`` every expert's tangent message is layer-normalised per edge
    (no affine parameters; :math:`W_m` supplies the scale) before eq. 14:

    .. math::
        \hat M_x = \frac{M_x - \mathrm{mean}(M_x)}{\mathrm{std}(M_x)}, \qquad
        M = W_m \big[ \hat M_E \,\|\, \hat M_H \,\|\, \hat M_S \big]

    Caveat: when an edge is clipped (its tangent vectors beyond the chart), the curved
    message is :math:`|k|^{-1/2}\,G_{\pm 1}(\cdot)` of curvature-free arguments (the
    stereographic model of curvature k is the unit one scaled by :math:`|k|^{-1/2}`), so
    with ``message_norm`` the curvature has *no* effect on such edges; keep the inputs at
    norms around :math:`1/\sqrt{|k|}` (e.g. ``KGDiff(moe_input_scale=True)``) for the
    curvature to matter.

    The curvatures live in two geoopt stereographic manifolds (sub-modules
    ``manifolds['H']`` / ``manifolds['S']``) parametrised as
    :math:`k_1 = -\mathrm{softplus}(\rho_1)`, :math:`k_2 = +\mathrm{softplus}(\rho_2)`,
    so they train, move with ``.to(device)`` and never change sign.

    Args:
        in_channels (int): entity embedding size d (also the relation embedding size).
        out_channels (int, optional): output size; ``None`` means ``in_channels``.
        num_relations (int): number of relation types (keyword-only, required).
        variant (str): ``'mobius_add'`` (default, curvature-sensitive) or ``'paper'``
            (eqs. 13-14 literally; the curved experts reduce to the Euclidean one).
        experts (sequence of str): any non-empty subset of ``('E', 'H', 'S')``, for the
            ablations w/o E / H / S; :math:`W_m` takes ``len(experts) * d`` inputs.
            (default: ``('E', 'H', 'S')``)
        init_curvature (tuple of float): initial :math:`(k_1, k_2)`, with
            :math:`k_1 < 0 < k_2`. (default: ``(-1.0, 1.0)``)
        learn_curvature (bool): train the curvatures. (default: ``True``)
        act (str or callable): σ in eq. 15, ``'tanh'``, ``'relu'``, ``'elu'``, ``'gelu'``,
            ``'identity'`` or a callable. (default: ``'tanh'``)
        max_tangent_norm (float): tangent-norm limit in units of :math:`1/\sqrt{|k|}`,
            in (0, π/2). (default: ``1.5``)
        bias (bool): add a bias to :math:`W_m` (not in the paper). (default: ``False``)
        message_norm (bool): layer-normalise each expert's message per edge before
            :math:`W_m` (above; not in the paper). (default: ``False``)
        **kwargs: forwarded to :class:`torch_geometric.nn.MessagePassing`.

    Relation embeddings :math:`\mathbf{r}` are the layer's ``relation`` ``nn.Embedding``
    (initialised near 1, i.e. near the identity scaling) unless a ``relation`` tensor is
    passed to :meth:`forward`, e.g. pre-trained TuckER relations
    (:func:`torch_stgen.kg.pretrain_tucker` with ``relation_dim = d``).

    Shapes:
        - **input:** node features :math:`(*, N, d)` (``node_dim=-2``, e.g. :math:`(N, d)`
          or :math:`(B, N, d)`), ``edge_index`` :math:`(2, E)` with row 0 = tail (source)
          and row 1 = head (target), ``edge_type`` :math:`(E)` in ``[0, num_relations)``,
          optional ``relation`` :math:`(R, d)`.
        - **output:** :math:`(*, N, d_{out})`.
    """

    def __init__(self, in_channels: int, out_channels: Optional[int] = None, *,
                 num_relations: int, variant: str = "mobius_add",
                 experts: Sequence[str] = _EXPERTS,
                 init_curvature: Tuple[float, float] = (-1.0, 1.0),
                 learn_curvature: bool = True, act: Union[str, Callable] = "tanh",
                 max_tangent_norm: float = 1.5, bias: bool = False,
                 message_norm: bool = False, **kwargs):
        kwargs.setdefault("aggr", "mean")
        kwargs.setdefault("node_dim", -2)
        super().__init__(**kwargs)
        if out_channels is None:
            out_channels = in_channels
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("num_relations", num_relations)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"'{name}' must be a positive integer (got {value!r})")
        if variant not in _VARIANTS:
            raise ValueError(f"'variant' must be one of {_VARIANTS} (got {variant!r})")
        if isinstance(experts, str):
            experts = tuple(experts)
        experts = tuple(experts)
        if (not experts or len(set(experts)) != len(experts)
                or any(e not in _EXPERTS for e in experts)):
            raise ValueError(f"'experts' must be a non-empty subset of {_EXPERTS} without "
                             f"repeats (got {experts!r})")
        experts = tuple(e for e in _EXPERTS if e in experts)  # canonical order E, H, S
        try:
            k1, k2 = (float(v) for v in init_curvature)
        except (TypeError, ValueError):
            raise ValueError(f"'init_curvature' must be a pair (k1, k2) of floats "
                             f"(got {init_curvature!r})") from None
        if not (k1 < 0 < k2) or not (math.isfinite(k1) and math.isfinite(k2)):
            raise ValueError(f"'init_curvature' must satisfy k1 < 0 < k2 (hyperbolic, "
                             f"spherical) (got {init_curvature!r})")
        if not (0.0 < max_tangent_norm < math.pi / 2):
            raise ValueError(f"'max_tangent_norm' must lie in (0, pi/2) (got "
                             f"{max_tangent_norm!r})")
        if isinstance(act, str):
            if act not in _ACTS:
                raise ValueError(f"'act' must be one of {tuple(_ACTS)} or a callable "
                                 f"(got {act!r})")
            self._act_name, act = act, _ACTS[act]
        elif callable(act):
            self._act_name = getattr(act, "__name__", type(act).__name__)
        else:
            raise ValueError(f"'act' must be a string or a callable (got {act!r})")

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_relations = num_relations
        self.variant = variant
        self.experts = experts
        self.learn_curvature = learn_curvature
        self.max_tangent_norm = float(max_tangent_norm)
        self.message_norm = bool(message_norm)
        if self.message_norm and in_channels < 2:
            raise ValueError(f"'message_norm' needs in_channels >= 2: a layer norm over one "
                             f"channel maps every message to 0 (got in_channels={in_channels})")
        self.act = act

        self.relation = nn.Embedding(num_relations, in_channels)
        if variant == "mobius_add":
            self.translation = nn.Embedding(num_relations, in_channels)
        else:
            self.register_module("translation", None)
        self.manifolds = nn.ModuleDict()
        if "H" in experts:
            self.manifolds["H"] = SignedStereographic(k1, learnable=learn_curvature)
        if "S" in experts:
            self.manifolds["S"] = SignedStereographic(k2, learnable=learn_curvature)
        self.lin = nn.Linear(len(experts) * in_channels, out_channels, bias=bias)
        self.reset_parameters()

    def reset_parameters(self):
        super().reset_parameters()
        # near the identity scaling r = 1, so pre-trained entity embeddings pass through
        nn.init.normal_(self.relation.weight, mean=1.0, std=0.1)
        if self.translation is not None:
            nn.init.normal_(self.translation.weight, std=0.5 / math.sqrt(self.in_channels))
        self.lin.reset_parameters()
        for manifold in self.manifolds.values():
            manifold.reset_parameters()

    # -----------------------------------------------------------------------------------
    @property
    def curvatures(self) -> Dict[str, Tensor]:
        """The current curvatures, ``{'H': k1, 'S': k2}`` for the curved experts present."""
        return {name: m.k for name, m in self.manifolds.items()}

    def _check(self, x: Tensor, edge_index: Tensor, edge_type: Tensor,
               relation: Optional[Tensor]) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() < 2 or x.size(-1) != self.in_channels:
            raise ValueError(f"'x' must have shape [*, N, {self.in_channels}] "
                             f"(got {tuple(x.shape) if isinstance(x, Tensor) else type(x)})")
        if not x.is_floating_point():
            raise TypeError(f"'x' must be a floating-point tensor (got {x.dtype})")
        if (not isinstance(edge_index, Tensor) or edge_index.dim() != 2
                or edge_index.size(0) != 2):
            raise ValueError(f"'edge_index' must have shape [2, E] (got "
                             f"{tuple(edge_index.shape) if isinstance(edge_index, Tensor) else type(edge_index)})")
        if not is_integer_dtype(edge_index):
            raise TypeError(f"'edge_index' must be an integer tensor of node ids "
                            f"(got {edge_index.dtype})")
        num_edges = edge_index.size(1)
        if (not isinstance(edge_type, Tensor) or edge_type.dim() != 1
                or edge_type.numel() != num_edges):
            raise ValueError(f"'edge_type' must have shape [E] = [{num_edges}] (got "
                             f"{tuple(edge_type.shape) if isinstance(edge_type, Tensor) else type(edge_type)})")
        if not is_integer_dtype(edge_type):
            raise TypeError(f"'edge_type' must be an integer tensor of relation ids "
                            f"(got {edge_type.dtype})")
        if num_edges and (int(edge_type.min()) < 0
                          or int(edge_type.max()) >= self.num_relations):
            raise ValueError(f"'edge_type' values must lie in [0, {self.num_relations}) "
                             f"(got min {int(edge_type.min())}, max {int(edge_type.max())})")
        if num_edges and (int(edge_index.min()) < 0
                          or int(edge_index.max()) >= x.size(-2)):
            raise ValueError(f"'edge_index' values must lie in [0, N) = [0, {x.size(-2)}) "
                             f"(got min {int(edge_index.min())}, max {int(edge_index.max())})")
        if relation is None:
            return self.relation.weight
        if relation.shape != (self.num_relations, self.in_channels):
            raise ValueError(f"'relation' must have shape [num_relations, in_channels] = "
                             f"[{self.num_relations}, {self.in_channels}] "
                             f"(got {tuple(relation.shape)})")
        return relation

    def forward(self, x: Tensor, edge_index: Tensor, edge_type: Tensor,
                relation: Optional[Tensor] = None, per_relation: bool = False) -> Tensor:
        r"""Run eqs. 13-15.

        With ``per_relation=True`` the mean of eq. 15 is taken per relation and the
        activated outputs are summed over the relations node :math:`i` has edges of
        (R-GCN style),

        .. math::
            \mathbf{x}_i' = \sum_{r : \mathcal{N}_r(i) \neq \emptyset}
            \sigma\Big( W_m \frac{1}{|\mathcal{N}_r(i)|}
            \sum_{(i, r, j) \in \mathcal{N}_r(i)} M_{i r j} \Big),

        which equals calling the layer once per relation on that relation's edges and
        adding, at each node, the results of the relations it has edges of, in one pass
        over the edges (one scatter into node x relation slots instead of ``R``
        message-passing calls). A node thus gets the same output alone or in a PyG
        ``Batch`` (with a bias or an activation with :math:`\sigma(0) \neq 0`, it used to
        get :math:`\sigma(W_m 0)` from every relation present anywhere in the batch).

        Args:
            x (Tensor): entity embeddings ``[*, N, d]``.
            edge_index (LongTensor): ``[2, E]``, row 0 = tail (source), row 1 = head.
            edge_type (LongTensor): relation id of every edge ``[E]``.
            relation (Tensor, optional): relation embeddings ``[R, d]`` to use instead of
                the layer's own ``relation`` table (e.g. pre-trained TuckER relations).
            per_relation (bool): per-relation means, summed (above). (default: ``False``)
        """
        rel = self._check(x, edge_index, edge_type, relation)
        # int32 ids (accepted by PyG's convolutions) as the int64 that scatter indexes with
        edge_index, edge_type = edge_index.long(), edge_type.long()
        if not per_relation:
            agg = self.propagate(edge_index, x=x, edge_type=edge_type, rel=rel)
            return self.act(self.lin(agg))
        N, R = x.size(-2), self.num_relations
        msg = self.message(x.index_select(-2, edge_index[0]), edge_type, rel)  # [*, E, m]
        slot = edge_index[1] * R + edge_type                   # (head, relation) slot
        agg = scatter(msg, slot, dim=-2, dim_size=N * R, reduce="mean")
        out = self.act(self.lin(agg.unflatten(-2, (N, R))))   # [*, N, R, d_out]
        # a node without r-edges gets nothing from r (not act(lin(0)), which a bias or
        # sigmoid makes non-zero and which would depend on the other graphs of a batch)
        filled = torch.bincount(slot, minlength=N * R).view(N, R, 1) > 0
        total = torch.zeros_like(out.select(-2, 0))
        for r in torch.unique(edge_type).tolist():             # relations present, in order
            total = total + torch.where(filled.select(-2, r), out.select(-2, r), 0.0)
        return total

    def message(self, x_j: Tensor, edge_type: Tensor, rel: Tensor) -> Tensor:
        msgs = self.edge_messages(x_j, edge_type, rel)
        return torch.cat([msgs[e] for e in self.experts], dim=-1)

    def edge_messages(self, x_j: Tensor, edge_type: Tensor,
                      relation: Optional[Tensor] = None) -> Dict[str, Tensor]:
        r"""The tangent-space message of every expert for every edge, as :math:`W_m` sees
        it: ``{'E': M_E, 'H': log0(M_H), 'S': log0(M_S)}`` (the experts present, each
        layer-normalised with ``message_norm``), each ``[*, E, d]``.

        Args:
            x_j (Tensor): tail embeddings per edge ``[*, E, d]``.
            edge_type (LongTensor): ``[E]``.
            relation (Tensor, optional): relation embeddings ``[R, d]``.
        """
        rel = self.relation.weight if relation is None else relation
        r = rel[edge_type].to(x_j.dtype)                       # [E, d]
        rt = r * x_j                                           # r ⊙ t
        b = None
        if self.translation is not None:
            b = self.translation.weight[edge_type].to(x_j.dtype)  # [E, d]
        out: Dict[str, Tensor] = {}
        if "E" in self.experts:
            out["E"] = rt if b is None else rt + b
        for name in ("H", "S"):
            if name in self.experts:
                out[name] = self._curved_message(self.manifolds[name], x_j, r, rt, b)
        if self.message_norm:
            out = {name: F.layer_norm(m, m.shape[-1:]) for name, m in out.items()}
        return out

    def _curved_message(self, manifold: SignedStereographic, t: Tensor, r: Tensor,
                        rt: Tensor, b: Optional[Tensor]) -> Tensor:
        k = manifold.k.to(t.dtype)
        limit = self.max_tangent_norm / k.abs().sqrt()
        # one common factor per edge keeps ||t||, ||r ⊙ t|| + ||b|| inside the chart
        reach = rt.norm(dim=-1, keepdim=True)
        if b is not None:
            reach = reach + b.norm(dim=-1, keepdim=True)
        scale = _clip_scale(torch.maximum(t.norm(dim=-1, keepdim=True), reach), limit)
        t = t * scale
        y = manifold.mobius_pointwise_mul(r, manifold.expmap0(t))  # r ⊗_k exp0(t)
        # = exp0(r ⊙ t) inside the chart; geoopt's r ⊗_k has a zero derivative where
        # r ⊙ t = 0 (a zero embedding or relation row), so those rows take r ⊙ t, which
        # equals exp0(r ⊙ t) = 0 there and has exp0's derivative at 0, the identity
        y = torch.where((rt == 0).all(dim=-1, keepdim=True), rt * scale, y)
        if b is not None:
            y = manifold.mobius_add(y, manifold.expmap0(b * scale))  # ⊕_k exp0(b_r)
        # geoopt's log0 has a derivative 5 % off the identity at exactly 0 (k = -1)
        return torch.where((y == 0).all(dim=-1, keepdim=True), y, manifold.logmap0(y))

    def __repr__(self) -> str:
        curv = ", ".join(f"k_{n}={float(v.detach()):.3g}" for n, v in self.curvatures.items())
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"num_relations={self.num_relations}, experts={self.experts}, "
                f"variant={self.variant!r}" + (f", {curv}" if curv else "")
                + f", act={self._act_name}"
                + (", message_norm=True" if self.message_norm else "") + ")")

