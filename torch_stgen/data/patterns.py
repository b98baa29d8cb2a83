r"""Sparse observation patterns: which cells / nodes are observed at each step.

The three patterns of DiffRecon (Sun et al., "From Incomplete Coarse-Grained to Complete
Fine-Grained: A Two-Stage Framework for Spatiotemporal Data Reconstruction",
https://arxiv.org/abs/2410.05323, §V-A): ``fixed`` (the same cells are missing at every
step), ``random`` (new missing cells at every step) and ``block`` (a contiguous region is
missing, by default the lower-right quarter, 25%). The observed mask :math:`C` is

.. math::
    C^t_{i,j} = \begin{cases} 0 & (i, j) \in \mathcal{M}^t \\ 1 & \text{otherwise,}
    \end{cases} \qquad |\mathcal{M}^t| = \operatorname{round}(r \cdot H W),

with :math:`\mathcal{M}^t = \mathcal{M}` for every :math:`t` in the ``fixed`` pattern.
"""
from typing import List, Optional, Sequence

import torch
from torch import Tensor

from .._checks import check_int

__all__ = ["SparsePattern"]

_KINDS = ("random", "fixed", "block")


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


class SparsePattern:
    r"""A seeded sparse observation pattern (DiffRecon §V-A).

    Calling ``pattern(T, H, W)`` returns the observed mask ``[T, H, W]`` (float, 1 observed,
    0 missing); ``pattern.node_mask(T, N)`` does the same on a set of ``N`` graph nodes
    (``fixed`` / ``random`` only). Masks are reproducible: the same seed gives the same mask
    on every call, a different seed a different one.

    * ``fixed``: one set of exactly ``round(ratio * H * W)`` missing cells, the same at
      every step.
    * ``random``: a fresh set of exactly ``round(ratio * H * W)`` missing cells at every
      step (uniform without replacement).
    * ``block``: the rectangle ``block = (row_start, row_stop, col_start, col_stop)``
      (Python slice bounds) is missing at every step; by default the lower-right quarter
      ``(H // 2, H, W // 2, W)``. ``ratio`` is not used by ``block``.

    ``round`` is Python's :func:`round` (halves go to the even neighbour).

    Args:
        kind (str, optional): ``'random'``, ``'fixed'`` or ``'block'``. (default: ``'random'``)
        ratio (float, optional): missing fraction :math:`r \in [0, 1)`. (default: ``0.4``)
        seed (int, optional): seed of the pattern's own generator. (default: ``0``)
        block (tuple, optional): missing rectangle for ``'block'``. (default: ``None``)

    Example::

        >>> SparsePattern.parse("fixed:0.4")(T=2, H=4, W=4).sum(dim=(1, 2))
        tensor([10., 10.])
    """

    def __init__(self, kind: str = "random", ratio: float = 0.4, seed: int = 0,
                 block: Optional[Sequence[int]] = None):
        if kind not in _KINDS:
            raise ValueError(f"'kind' must be one of {_KINDS} (got {kind!r})")
        ratio = float(ratio)
        if not (0.0 <= ratio < 1.0):
            raise ValueError(f"'ratio' must be in [0, 1) (got {ratio!r})")
        if block is not None:
            if kind != "block":
                raise ValueError(f"'block' is only used by kind='block' (got kind={kind!r})")
            block = tuple(int(b) for b in block)
            if len(block) != 4:
                raise ValueError(f"'block' must be (row_start, row_stop, col_start, "
                                 f"col_stop) (got {block!r})")
        self.kind, self.ratio, self.seed, self.block = kind, ratio, int(seed), block

    @classmethod
    def parse(cls, spec: str, seed: int = 0) -> "SparsePattern":
        """Build a pattern from a short spec: ``"fixed:0.4"``, ``"random:0.2"``,
        ``"block"`` (lower-right quarter) or ``"block:r0,r1,c0,c1"``."""
        if isinstance(spec, SparsePattern):
            return spec
        if not isinstance(spec, str):
            raise TypeError(f"'spec' must be a string like 'fixed:0.4' (got {spec!r})")
        kind, _, arg = spec.strip().partition(":")
        kind = kind.strip().lower()
        if kind == "block":
            if not arg:
                return cls("block", seed=seed)
            try:
                bounds = [int(v) for v in arg.split(",")]
            except ValueError:
                bounds = []
            if len(bounds) != 4:
                raise ValueError(f"'spec' {spec!r}: block takes no ratio; use 'block' or "
                                 f"'block:row_start,row_stop,col_start,col_stop'")
            return cls("block", seed=seed, block=bounds)
        if kind not in _KINDS:
            raise ValueError(f"'spec' {spec!r}: kind must be one of {_KINDS}")
        if not arg:
            return cls(kind, seed=seed)
        try:
            ratio = float(arg)
        except ValueError:
            raise ValueError(f"'spec' {spec!r}: the ratio after ':' must be a number") from None
        return cls(kind, ratio=ratio, seed=seed)

    @staticmethod
    def split_specs(text: str) -> List[str]:
        """Split a comma-separated list of specs, keeping ``block:r0,r1,c0,c1`` whole.

        A comma ends a spec unless the spec is an unfinished ``block:`` bound list, so
        ``"fixed:0.4,block:2,4,0,2,random:0.2"`` gives ``['fixed:0.4', 'block:2,4,0,2',
        'random:0.2']``. Empty entries are dropped. Only splits: :meth:`parse` checks each
        spec (a block with too few bounds is reported there).

        Example::

            >>> SparsePattern.split_specs("block:0,2,0,2, fixed:0.4")
            ['block:0,2,0,2', 'fixed:0.4']
        """
        if not isinstance(text, str):
            raise TypeError(f"'text' must be a comma-separated string of specs like "
                            f"'fixed:0.4,block' (got {type(text).__name__})")
        specs: List[str] = []
        bounds_left = 0                 # block bounds still to read into specs[-1]
        for part in (p.strip() for p in text.split(",")):
            if bounds_left and _is_int(part):
                specs[-1] += "," + part
                bounds_left -= 1
                continue
            bounds_left = 0
            if not part:
                continue
            kind, _, arg = part.partition(":")
            if kind.strip().lower() == "block" and _is_int(arg.strip()):
                bounds_left = 3
                part = f"{kind.strip()}:{arg.strip()}"
            specs.append(part)
        return specs

    @property
    def name(self) -> str:
        """Short spec for tables, the inverse of :meth:`parse` (``'fixed:0.4'``)."""
        if self.kind == "block":
            return "block" if self.block is None else "block:" + ",".join(map(str, self.block))
        return f"{self.kind}:{self.ratio:g}"

    @staticmethod
    def draw_mixture(patterns: Sequence["SparsePattern"], n: int, T: int, H: int, W: int,
                     generator: torch.Generator) -> Tensor:
        """``n`` observed masks ``[n, T, H, W]`` for training on a mixture of patterns: each
        from a uniformly drawn entry of ``patterns`` with a fresh seed from ``generator``
        (kind and ratio kept; the patterns' own seeds, used for evaluation, are never
        reused)."""
        if not patterns:
            raise ValueError("'patterns' must not be empty")
        kinds = torch.randint(len(patterns), (n,), generator=generator).tolist()
        seeds = torch.randint(2 ** 62, (n,), generator=generator).tolist()
        out = torch.empty(n, T, H, W)
        for i, (k, s) in enumerate(zip(kinds, seeds)):
            p = patterns[k]
            out[i] = SparsePattern(p.kind, p.ratio, seed=s, block=p.block)(T, H, W)
        return out

    def num_missing(self, n: int) -> int:
        """Number of missing cells per step among ``n`` (``fixed`` / ``random``):
        ``round(ratio * n)``. Drawing a mask refuses a count that hides all ``n`` (a map
        with nothing observed is not a sparse observation; e.g. ratio 0.6 on one node)."""
        return int(round(self.ratio * n))

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def _missing(self, T: int, n: int, unit: str = "cells") -> Tensor:
        """``[T, n]`` bool, True = missing, exactly ``num_missing(n)`` per row."""
        k = self.num_missing(n)
        if k >= n and self.ratio > 0:
            raise ValueError(f"pattern {self.name!r} hides all {n} {unit} of each step "
                             f"(round({self.ratio} * {n}) = {k}): use a smaller ratio or a "
                             f"larger map")
        gen = self._generator()
        rows = 1 if self.kind == "fixed" else T
        order = torch.rand(rows, n, generator=gen).argsort(dim=1)
        missing = torch.zeros(rows, n, dtype=torch.bool)
        missing.scatter_(1, order[:, :k], True)
        return missing.expand(T, n) if self.kind == "fixed" else missing

    def __call__(self, T: int, H: int, W: int) -> Tensor:
        r"""Observed mask of a ``T``-step series of ``H x W`` maps.

        Returns:
            float32 ``[T, H, W]``: 1 observed, 0 missing.
        """
        T, H, W = (check_int(name, v, 1) for name, v in (("T", T), ("H", H), ("W", W)))
        if self.kind == "block":
            r0, r1, c0, c1 = self.block if self.block is not None else (H // 2, H, W // 2, W)
            if not (0 <= r0 < r1 <= H and 0 <= c0 < c1 <= W):
                raise ValueError(f"'block' {(r0, r1, c0, c1)} must lie inside the "
                                 f"{H}x{W} map and be non-empty")
            if (r1 - r0) * (c1 - c0) == H * W:
                raise ValueError(f"'block' {(r0, r1, c0, c1)} hides the whole {H}x{W} map")
            mask = torch.ones(T, H, W)
            mask[:, r0:r1, c0:c1] = 0.0
            return mask
        return (~self._missing(T, H * W)).float().reshape(T, H, W).contiguous()

    def node_mask(self, T: int, N: int) -> Tensor:
        r"""Observed mask over a set of ``N`` graph nodes (``fixed`` / ``random``).

        Returns:
            float32 ``[T, N]``: 1 observed, 0 missing; exactly ``round(ratio * N)`` zeros
            per step.
        """
        if self.kind == "block":
            raise ValueError("kind='block' needs a grid: call pattern(T, H, W); "
                             "'node_mask' supports 'fixed' and 'random'")
        T, N = check_int("T", T, 1), check_int("N", N, 1)
        return (~self._missing(T, N, "nodes")).float().contiguous()

    def __repr__(self) -> str:
        extra = f", block={self.block}" if self.block is not None else ""
        ratio = "" if self.kind == "block" else f", ratio={self.ratio:g}"
        return f"{self.__class__.__name__}(kind={self.kind!r}{ratio}, seed={self.seed}{extra})"
