r"""Training checkpoints that a re-run resumes from, bit for bit.

A long :meth:`DiffRecon.fit <torch_stgen.models.DiffRecon.fit>` or
:meth:`KGDiff.fit <torch_stgen.models.KGDiff.fit>` cut off at iteration :math:`k` should
not cost its first :math:`k` iterations. With ``fit(..., checkpoint=PATH)`` the loop
(:class:`~torch_stgen.train.Trainer`) writes, every ``checkpoint_every`` iterations and once more after the last, everything the
rest of the run depends on: the module's ``state_dict``, the optimiser and learning-rate
schedule, the run's CPU generator, PyTorch's global CPU (and CUDA) generators, and the
loop's own bookkeeping (losses, validation curve, best weights, ...). Calling the same
``fit`` again with the same ``checkpoint`` continues from the last write; because every
random draw comes from the saved generators, the resumed run ends with exactly the weights
an uninterrupted run would have (``tests/train/test_checkpoint.py`` checks this for both
models).

A checkpoint records a *fingerprint* of the run: the ``fit`` arguments that shape the
random stream and the schedule, the shape, sum and a content hash of the training data,
and a hash of the model's parameter names and shapes. Resuming
with a different fingerprint raises a ``ValueError`` naming the differing entries instead
of continuing a different run. ``resume=False`` ignores (and overwrites) an existing file.

Files are written atomically (a temporary file in the same folder, flushed to disk with
:func:`os.fsync`, then :func:`os.replace`, then the folder synced where the OS allows), so
a run killed while writing, or a machine that loses power, leaves the previous checkpoint
or the new one, never a truncated file.
They are read with ``torch.load(weights_only=True)``: only tensors and plain Python
containers, no pickled code.

Under data-parallel training (:mod:`torch_stgen.train.distributed`) every rank calls the
same methods: :meth:`save` gathers each rank's own entries (its generators, and whatever
the loop puts under ``"rank"``) and rank 0 alone writes; :meth:`load` hands each rank its
own entries back. The number of ranks is part of the fingerprint, and a
:class:`Checkpointer` refuses to start (``ValueError``, on every rank) when the ranks'
fingerprints differ, e.g. when each rank was passed its own part of the data.
"""
import hashlib
import math
import os
from pathlib import Path
from typing import Callable, Dict, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from .._checks import check_int
from .distributed import (all_gather_objects, gather_objects_to_main, get_rank,
                          get_world_size)

__all__ = ["Checkpointer", "architecture_fingerprint", "data_fingerprint"]

#: Layout of the files :meth:`Checkpointer.save` writes; files of another layout are
#: refused by name. 2: per-rank entries under ``"ranks"``, each with the loop's generator
#: and loss ``history`` (:class:`~torch_stgen.train.Trainer`); 3: early-stopping state as
#: :class:`~torch_stgen.train.BestWeights` state dicts.
FORMAT = 3


def _fsync_dir(folder: Path) -> None:
    """Sync a folder's entries (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def data_fingerprint(x: Optional[Tensor]) -> Optional[list]:
    """Shape, float64 sum and a hash of the bytes of ``x`` (``None`` stays ``None``):
    evidence that a resumed run trains on the same data. The hash tells apart data of the
    same sum, e.g. flags shifted by one day; shape and sum make a refusal readable."""
    if x is None:
        return None
    flat = x.detach().cpu().contiguous().reshape(-1)
    digest = hashlib.sha1(str(x.dtype).encode())
    digest.update(flat.view(torch.uint8).numpy().tobytes())
    total = float(flat.double().sum())
    if math.isnan(total):   # NaN at missing entries (KGDiff accepts them): a readable sum
        total = float(flat.double().nansum())   # of the rest; the hash covers the NaNs
    return [list(x.shape), total, digest.hexdigest()[:16]]


def _plain(value, where: str):
    """``value`` as plain Python data (numpy scalars become numbers), refused with a
    ``TypeError`` naming ``where`` when it holds anything a checkpoint cannot reload with
    ``weights_only=True`` or compare (e.g. a tensor: fingerprint it with
    :func:`data_fingerprint`)."""
    if isinstance(value, np.generic):      # before the builtins: np.float64 is a float
        if value.dtype.kind in "biufU":
            return value.item()
    elif value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, dict):
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    hint = " (use data_fingerprint(tensor))" if isinstance(value, Tensor) else ""
    raise TypeError(f"'fingerprint' entry {where} must be plain data (None, bool, int, "
                    f"float, str, or lists / tuples / dicts of them){hint}; got "
                    f"{type(value).__name__}")


def _same(a, b) -> bool:
    """Equality of fingerprint values in which NaN equals NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return (type(a) is type(b) and len(a) == len(b)
                and all(_same(x, y) for x, y in zip(a, b)))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _settings_repr(module: nn.Module) -> str:
    """A module's settings for :func:`architecture_fingerprint`: its ``extra_repr``, or
    ``_fingerprint_repr`` where ``extra_repr`` also shows learnt values (a curvature)."""
    own = getattr(module, "_fingerprint_repr", None)
    return own() if callable(own) else module.extra_repr()


def architecture_fingerprint(module: nn.Module) -> str:
    """A short hash of ``module``'s parameter and buffer names and shapes and of every
    submodule's settings (its ``extra_repr``, e.g. T-PatternNet's ``top_k``, which owns no
    parameter): a checkpoint of another architecture is refused by name instead of
    failing inside ``load_state_dict`` or resuming a different model."""
    spec = ";".join(f"{k}:{tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__}"
                    for k, v in module.state_dict().items())
    spec += "|" + ";".join(f"{name}:{type(m).__name__}({_settings_repr(m)})"
                           for name, m in module.named_modules())
    return hashlib.sha1(spec.encode()).hexdigest()[:12]


def _rng_state() -> Dict[str, object]:
    state: Dict[str, object] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, object]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    r"""Periodic, atomic checkpoints of one training loop.

    Args:
        path (str or Path, optional): checkpoint file; ``None`` disables everything
            (:meth:`load` returns ``None``, :meth:`due` is always ``False``).
        every (int): iterations between writes. (default: ``100``)
        fingerprint (dict): what identifies the run (plain Python values); compared on
            resume.
        resume (bool): continue from an existing file; ``False`` starts afresh and
            overwrites it. (default: ``True``)

    The training loop calls :meth:`load` once before its first iteration (and restores
    from the returned dict), :meth:`due` at the top of each iteration (then :meth:`save`)
    and :meth:`finish` after the last iteration. :meth:`save` adds the global RNG states
    and the iteration; :meth:`load` restores the global RNG states itself.

    The state passed to :meth:`save` may hold a ``"rank"`` dict of entries that differ
    between ranks (:class:`~torch_stgen.train.Trainer` puts the run's generator and loss
    history there); :meth:`load` returns this rank's ``"rank"`` dict again.
    """

    def __init__(self, path: Optional[Union[str, Path]], every: int = 100,
                 fingerprint: Optional[dict] = None, resume: bool = True):
        self.path = None if path is None else Path(path)
        self.every = check_int("checkpoint_every", every)   # None gave a raw int() error
        self.fingerprint = dict(fingerprint or {})
        if path is not None or get_world_size() > 1:    # it is saved or compared: plain
            self.fingerprint = {k: _plain(v, repr(k)) for k, v in self.fingerprint.items()}
        self.resume = bool(resume)
        self.start = 0          # the iteration this run starts from (set by :meth:`load`)
        if get_world_size() > 1:
            self.fingerprint["world_size"] = get_world_size()
            # every rank must train the same run (same data, arguments and architecture)
            # and checkpoint it the same way (one shared file)
            mine = dict(self.fingerprint, checkpoint=None if path is None else str(path),
                        checkpoint_every=self.every, resume=self.resume)
            seen = all_gather_objects(mine)
            diff = sorted(k for k in mine if any(not _same(other.get(k), mine[k])
                                                 for other in seen))
            if diff:
                detail = "; ".join(f"{k}: {[other.get(k) for other in seen]!r}" for k in diff)
                raise ValueError(f"data-parallel ranks were given different runs ({detail}, "
                                 f"by rank); pass every rank the same data and arguments "
                                 f"(each rank draws its own batches from them)")

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def due(self, iteration: int) -> bool:
        """Whether to write before running ``iteration`` (never before the first one this
        run executes: that state is already on disk or is the fresh start)."""
        return self.enabled and iteration > self.start and iteration % self.every == 0

    def finish(self, total: int, snapshot: Callable[[], Dict[str, object]]) -> None:
        """After the last iteration: write ``snapshot()`` as the finished state, unless
        checkpointing is off or this run trained nothing (it resumed a finished file)."""
        if self.enabled and self.start < int(total):
            self.save(total, snapshot())

    def load(self) -> Optional[Dict[str, object]]:
        """The saved state of this run, or ``None`` (no file, disabled, or
        ``resume=False``). Restores the global RNG states as a side effect. Under
        data-parallel training every rank must find the same state (a ``ValueError``
        names the iteration each rank found otherwise)."""
        state = self._read()
        starts = all_gather_objects(0 if state is None else int(state["iteration"]))
        if len(set(starts)) > 1:
            raise ValueError(f"'checkpoint' {str(self.path)!r}: the data-parallel ranks found "
                             f"different states (iteration {starts}, by rank); the file "
                             f"must be on a filesystem every rank shares")
        return state

    def _read(self) -> Optional[Dict[str, object]]:
        if not self.enabled or not self.resume or not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # a truncated or foreign file: say which one
            raise ValueError(f"'checkpoint' {str(self.path)!r} could not be read as a "
                             f"torch-stgen training checkpoint ({err})") from None
        if not isinstance(state, dict) or "fingerprint" not in state:
            raise ValueError(f"'checkpoint' {str(self.path)!r} is not a torch-stgen "
                             f"training checkpoint")
        saved = state["fingerprint"]
        diff = sorted(k for k in set(saved) | set(self.fingerprint)
                      if not _same(saved.get(k), self.fingerprint.get(k)))
        if diff:
            detail = "; ".join(f"{k}: saved {saved.get(k)!r}, now {self.fingerprint.get(k)!r}"
                               for k in diff)
            raise ValueError(f"'checkpoint' {str(self.path)!r} belongs to a different run "
                             f"({detail}); pass resume=False (or delete the file) to start afresh")
        if state.get("format") != FORMAT:   # an older layout (e.g. no per-rank entries)
            raise ValueError(f"'checkpoint' {str(self.path)!r} was written by another "
                             f"torch-stgen version (checkpoint layout "
                             f"{state.get('format', 'unnumbered')}, this version reads "
                             f"{FORMAT}); pass resume=False (or delete the file) to start "
                             f"afresh")
        state["rank"] = state.pop("ranks")[get_rank()]
        _set_rng_state(state["rank"]["rng"])
        self.start = int(state["iteration"])
        return state

    def save(self, iteration: int, state: Dict[str, object]) -> None:
        """Write ``state`` (tensors and plain containers) as the run's state before
        ``iteration``. Collective under data-parallel training; rank 0 writes."""
        if not self.enabled:
            return
        ranks = gather_objects_to_main(dict(state.get("rank", {}), rng=_rng_state()))
        if ranks is None:                       # not rank 0: rank 0 writes
            return
        full = {k: v for k, v in state.items() if k != "rank"}
        full.update(ranks=ranks, iteration=int(iteration), fingerprint=self.fingerprint,
                    format=FORMAT)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as fh:
            torch.save(full, fh)
            fh.flush()
            os.fsync(fh.fileno())       # on disk before the rename makes it the checkpoint
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)    # and the rename itself survives a power cut

    def __repr__(self) -> str:
        path = None if self.path is None else str(self.path)
        return (f"{self.__class__.__name__}(path={path!r}, every={self.every}, "
                f"resume={self.resume})")
