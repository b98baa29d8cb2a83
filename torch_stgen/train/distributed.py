r"""Data-parallel training over several processes with :mod:`torch.distributed`.

Past one device, :meth:`DiffRecon.fit <torch_stgen.models.DiffRecon.fit>` and
:meth:`KGDiff.fit <torch_stgen.models.KGDiff.fit>` train under PyTorch's
:class:`~torch.nn.parallel.DistributedDataParallel` (DDP): launch the script with
``torchrun --nproc_per_node K script.py``, call :func:`setup_distributed` at its top and
``fit`` as usual. Nothing here distributes by hand; DDP does the communication.

What changes when the process group has :math:`K > 1` ranks:

* **Batches.** Every rank draws its own batches and noise from a generator seeded with
  :func:`rank_seed` (``seed`` on rank 0, a different seed on every other rank), so one
  optimiser step sees :math:`K` different batches of ``batch_size``: the effective batch is
  :math:`K \cdot` ``batch_size``. With :math:`K = 1` nothing changes, bit for bit.
* **Gradients.** The loss of an iteration is computed inside DDP's forward
  (:class:`DataParallelLoss`), so ``backward()`` averages the gradients over the ranks
  before clipping and the optimiser step. DDP also copies rank 0's weights to every rank
  when it wraps the model, so all ranks start, and stay, identical.
* **Bookkeeping.** Validation losses are averaged over the ranks (so every rank keeps the
  same best weights); only rank 0 shows progress bars and writes checkpoints, which hold
  every rank's generators (a resumed run continues each rank's stream).

Sampling (:meth:`DiffRecon.reconstruct`, :meth:`KGDiff.generate`) is not collective: shard
its inputs with :func:`shard` (contiguous, so concatenating the ranks' parts in rank order
restores the order) and collect the results with :func:`all_gather_cat`.

Backends: ``gloo`` when the model is on the CPU, ``nccl`` on CUDA (:func:`setup_distributed`
picks one from the environment, or takes ``backend``).
"""
import inspect
import os
from typing import Callable, List, Optional, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["setup_distributed", "cleanup_distributed", "is_distributed", "get_rank",
           "get_world_size", "is_main_process", "rank_seed", "DataParallelLoss",
           "all_gather_objects", "all_gather_cat", "all_mean", "shard"]

T = TypeVar("T")


def is_distributed() -> bool:
    """Whether a process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank (``0`` outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of ranks (``1`` outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0 (or no process group): the process that prints, plots and writes files."""
    return get_rank() == 0


def setup_distributed(backend: Optional[str] = None) -> torch.device:
    r"""Join the process group that ``torchrun`` describes and return this rank's device.

    Reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (plus ``MASTER_ADDR`` /
    ``MASTER_PORT``) from the environment. Without them, or with ``WORLD_SIZE=1``, it
    initialises nothing and returns ``cuda`` if available, else ``cpu``: a script that
    calls it runs unchanged as a single process.

    Args:
        backend (str, optional): ``"gloo"`` or ``"nccl"``. (default: ``nccl`` when CUDA is
            available, else ``gloo``)

    Returns:
        ``cuda:LOCAL_RANK`` (its current device is set) or ``cpu``.
    """
    use_cuda = torch.cuda.is_available() and backend != "gloo"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return torch.device("cuda" if use_cuda else "cpu")
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
               if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={world} but {missing} not set: launch with "
                           f"'torchrun --nproc_per_node {world} script.py'")
    local = int(os.environ["LOCAL_RANK"])
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if use_cuda else "gloo"))
    return torch.device("cuda", local) if use_cuda else torch.device("cpu")


def cleanup_distributed() -> None:
    """Leave the process group (no-op outside one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int) -> int:
    r"""The training seed of this rank: ``seed`` on rank 0 (so a single process is
    unchanged), :math:`(\text{seed} + r \cdot c) \bmod 2^{64}` on rank :math:`r`, with the
    odd constant :math:`c = \lfloor 2^{32} / \varphi \rfloor`.

    PyTorch's CPU generator keeps only the low 32 bits of a seed, so an offset by a
    multiple of :math:`2^{32}` would give every rank the same stream; an odd :math:`c`
    makes the low 32 bits of every rank's seed differ."""
    return (int(seed) + get_rank() * 0x9E3779B9) % 2 ** 64


class _Closure(nn.Module):
    """Holds ``module`` so DDP sees its parameters; ``forward`` runs the loss closure."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, closure: Callable[[], Tensor]) -> Tensor:
        return closure()


class DataParallelLoss:
    r"""Compute a training loss so that its ``backward()`` averages gradients over ranks.

    ``loss = DataParallelLoss(model)(lambda: ...)`` calls the closure inside the forward of
    a :class:`~torch.nn.parallel.DistributedDataParallel` that wraps ``model``, which is
    what arms DDP's gradient all-reduce for the next ``backward()``; outside a process
    group (or with one rank) it just calls the closure. Wrapping copies rank 0's
    parameters and buffers to every rank; :meth:`sync_buffers` copies rank 0's buffers
    again (call it after training, for buffers the model set during training).

    Any computation may happen in the closure (several sub-modules, sampling without
    gradients, ...), as long as every rank calls it once per optimiser step.
    ``find_unused_parameters=True`` lets iterations use different parts of the model
    (e.g. a pre-training and a joint phase).

    Args:
        module (nn.Module): the model whose parameters the loss depends on.
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self.ddp = None
        if is_distributed():
            dev = next(module.parameters()).device
            # buffers are copied from rank 0 here and by sync_buffers(), not at every forward
            sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in
                    inspect.signature(nn.parallel.DistributedDataParallel).parameters
                    else {"broadcast_buffers": False})
            self.ddp = nn.parallel.DistributedDataParallel(
                _Closure(module), device_ids=[dev.index] if dev.type == "cuda" else None,
                find_unused_parameters=True, **sync)
            self.sync_buffers()     # older PyTorch leaves them out of the initial copy

    def __call__(self, closure: Callable[[], Tensor]) -> Tensor:
        return closure() if self.ddp is None else self.ddp(closure)

    @torch.no_grad()
    def sync_buffers(self) -> None:
        """Copy rank 0's buffers (scalers, cached scales, flags) to every rank.
        Collective; a no-op outside a process group."""
        if self.ddp is None:
            return
        for buf in self.module.buffers():
            if buf.dtype == torch.bool:        # not every backend broadcasts bool
                tmp = buf.to(torch.uint8)
                dist.broadcast(tmp, src=0)
                buf.copy_(tmp.bool())
            else:
                dist.broadcast(buf, src=0)


def all_gather_objects(obj: T) -> List[T]:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` outside a process group).
    Collective: every rank must call it."""
    if not is_distributed():
        return [obj]
    out: List[T] = [None] * get_world_size()  # type: ignore[list-item]
    dist.all_gather_object(out, obj)
    return out


def gather_objects_to_main(obj: T) -> Optional[List[T]]:
    """``[obj of rank 0, obj of rank 1, ...]`` on rank 0, ``None`` on the other ranks
    (``[obj]`` outside a process group). Collective."""
    if not is_distributed():
        return [obj]
    out: Optional[List[T]] = [None] * get_world_size() if is_main_process() else None
    dist.gather_object(obj, out, dst=0)
    return out


def all_mean(value: float) -> float:
    """The mean of ``value`` over the ranks (``value`` itself outside a process group).
    Collective."""
    if not is_distributed():
        return float(value)
    return sum(all_gather_objects(float(value))) / get_world_size()


def all_gather_cat(x: Tensor, dim: int = 0) -> Tensor:
    """Concatenate every rank's ``x`` along ``dim`` in rank order (sizes along ``dim`` may
    differ between ranks; the other dimensions must agree). Returns ``x`` outside a
    process group. Collective; the result is on ``x``'s device."""
    if not is_distributed():
        return x
    parts = all_gather_objects(x.detach().cpu())
    return torch.cat(parts, dim).to(x.device)


def shard(items: Sequence[T]) -> Sequence[T]:
    """This rank's contiguous part of ``items`` (sizes differ by at most one; rank ``r``
    gets the ``r``-th part), so ``all_gather_cat`` of per-item results restores the order.
    Returns ``items`` outside a process group."""
    n, k, r = len(items), get_world_size(), get_rank()
    lo, hi = r * n // k, (r + 1) * n // k
    return items[lo:hi]
