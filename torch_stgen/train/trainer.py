r"""The optimisation loop that :meth:`DiffRecon.fit <torch_stgen.models.DiffRecon.fit>` and
:meth:`KGDiff.fit <torch_stgen.models.KGDiff.fit>` share, open to a user's own model.

A :class:`Trainer` owns everything a diffusion training loop does besides computing its
loss: resumable checkpoints (:class:`~torch_stgen.train.Checkpointer`), data-parallel
gradient averaging (:class:`~torch_stgen.train.DataParallelLoss`), gradient clipping with
a divergence check, the learning-rate schedule, an optional EMA of the weights
(:class:`~torch_stgen.train.EMA`), the per-iteration loss history and a progress bar.
The model supplies a loss closure and, where it needs them, hooks; its random draws come
from the trainer's generator, which the checkpoints save, so a run cut off and resumed
ends with exactly the weights of an uninterrupted one.

Example::

    from torch_stgen.train import Trainer, data_fingerprint, rank_seed

    model = MyDiffusion(...)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(rank_seed(0))
    trainer = Trainer(model, opt, total=2000, generator=gen, checkpoint="run.pt",
                      fingerprint={"model": "MyDiffusion", "x": data_fingerprint(x)})
    trainer.resume()                    # no-op without a checkpoint file
    trainer.run(lambda it: model.loss(x[torch.randint(len(x), (64,), generator=gen)],
                                      generator=gen))
    trainer.history["loss"]             # one float per iteration
"""
import math
import numbers
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._checks import check_int
from .checkpoint import Checkpointer, _plain
from .distributed import DataParallelLoss, is_distributed, is_main_process
from .ema import EMA

__all__ = ["Trainer"]

Losses = Union[Tensor, Dict[str, Tensor]]


#: optimiser hyperparameters a checkpoint must agree on (implementation switches such as
#: ``foreach`` / ``fused``, and keys a PyTorch version adds, are left out on purpose)
_HYPERPARAMETERS = ("lr", "initial_lr", "betas", "eps", "weight_decay", "momentum",
                    "dampening", "nesterov", "alpha", "centered", "amsgrad", "maximize",
                    "decoupled_weight_decay", "lr_decay", "rho")


def _clip_group(i: int, group) -> List[nn.Parameter]:
    """One entry of ``clip_groups`` as a list of leaf tensors. A flat
    ``model.parameters()`` given as the groups made every parameter a "group" of its rows
    (views without gradients): the norms read 0 and nothing was clipped or checked."""
    if isinstance(group, torch.Tensor):
        raise TypeError(f"'clip_groups[{i}]' is a single tensor; 'clip_groups' is a list of "
                        f"parameter groups, e.g. [stage_a.parameters(), "
                        f"stage_b.parameters()] (None: one group of all parameters)")
    params = list(group)
    for p in params:
        if not isinstance(p, torch.Tensor) or not p.is_leaf:
            got = "a non-leaf tensor" if isinstance(p, torch.Tensor) else type(p).__name__
            raise TypeError(f"'clip_groups[{i}]' must hold parameters (leaf tensors; got "
                            f"{got})")
    return params


def _is_real(value, low: float, high: float = math.inf, high_open: bool = False) -> bool:
    """``value`` is a real number (not a bool or a string) in ``[low, high]`` (or
    ``[low, high)``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    v = float(value)
    return low <= v and (v < high if high_open else v <= high)


def _optimizer_fingerprint(optimizer: torch.optim.Optimizer) -> list:
    """The optimiser's class and each parameter group's hyperparameters
    (:data:`_HYPERPARAMETERS`) as the run starts: resuming with another optimiser or other
    hyperparameters is refused by name (``load_state_dict`` would otherwise keep the saved
    learning rate silently, or fail on a missing key). A one-element tensor setting counts
    as its number; anything else that is not plain data as its ``repr``."""
    def plain(v):
        if isinstance(v, Tensor) and v.numel() == 1:
            v = v.item()
        try:
            return _plain(v, "optimizer")
        except TypeError:
            return repr(v)
    groups = [{k: plain(g[k]) for k in _HYPERPARAMETERS if k in g}
              for g in optimizer.param_groups]
    return [type(optimizer).__name__, groups]


def _check_losses(out, it: int) -> Dict[str, Tensor]:
    """``loss_fn``'s result as ``{name: scalar tensor}``, refused by name otherwise (no
    host sync: only types, sizes and ``requires_grad`` are read)."""
    losses = out if isinstance(out, dict) else {"loss": out}
    if not losses:
        raise TypeError(f"'loss_fn' returned an empty dict at iteration {it}")
    for name, v in losses.items():
        if not isinstance(v, Tensor):
            raise TypeError(f"'loss_fn' must return a tensor or a dict of tensors; loss "
                            f"{name!r} at iteration {it} is a {type(v).__name__}")
        if v.numel() != 1:
            raise ValueError(f"'loss_fn' loss {name!r} must be a scalar (got shape "
                             f"{tuple(v.shape)} at iteration {it})")
    if not any(v.requires_grad for v in losses.values()):   # a constant part is allowed
        raise ValueError(f"'loss_fn' returned losses {sorted(losses)} of which none depends "
                         f"on a trained parameter (requires_grad=False at iteration {it})")
    return losses


class Trainer:
    r"""One optimisation loop: checkpoints, data parallelism, clipping, schedule, EMA,
    history and progress around a user's loss.

    Iteration :math:`i` of :meth:`run` (:math:`i` = the resumed iteration, ...,
    ``total - 1``):

    1. write a checkpoint when one is due (before the iteration, so the file holds the
       state that iteration starts from);
    2. ``before_step(i)``: the model's own work between iterations (validation checks,
       refreshing samples it trains on, ...);
    3. ``loss_fn(i)`` inside :class:`~torch_stgen.train.DataParallelLoss`: a scalar
       tensor, or a dict of named scalar tensors whose **sum** is minimised (one
       optimiser step on :math:`\sum_k \mathcal{L}_k`; each name gets its own history);
    4. backward; every entry of ``clip_groups`` has its gradient norm clipped to
       ``grad_clip`` on its own (``None``: measured, not clipped); a norm that is not
       finite (or, on a single process, a loss that is not finite) raises
       :class:`FloatingPointError` naming the iteration, the losses and the peak and
       current learning rates (the losses of that iteration are already in
       :attr:`history`; its optimiser step is not taken). Under data parallelism the norm
       is that of the rank-averaged gradient, the same on every rank, so all ranks stop
       together;
    5. optimiser step, ``scheduler`` step, EMA update; the bar shows each loss's mean
       over the last ``log_every`` iterations.

    A checkpoint's fingerprint holds ``fingerprint`` (plain data: numbers, strings, and
    lists / tuples / dicts of them; fingerprint tensors with
    :func:`~torch_stgen.train.data_fingerprint`) and the trainer's own settings
    (``total``, ``grad_clip``, the number of clip groups, ``ema_decay``, the scheduler's
    class, the optimiser's class and hyperparameters), so a file of another schedule or
    optimiser is refused by name. :meth:`run` resumes
    from the checkpoint by itself; call :meth:`resume` first when the model has its own
    entries to restore (``extra_state``).

    After the last iteration the finished state is checkpointed, buffers are copied from
    rank 0 to every rank (values a model set during training) and, with ``ema_decay``,
    the EMA weights replace the last iterate.

    Args:
        module (nn.Module): the model (all of its parameters with gradients are trained).
        optimizer (torch.optim.Optimizer): over ``module``'s parameters.
        scheduler (LRScheduler, optional): stepped once per iteration.
            (default: ``None``, constant learning rate)
        total (int): number of iterations of the whole run (a resumed run continues to
            it).
        generator (torch.Generator): the run's generator, which ``loss_fn`` and the hooks
            draw from; saved and restored by the checkpoints.
        checkpoint (str or Path, optional): checkpoint file (see
            :class:`~torch_stgen.train.Checkpointer`); ``None`` writes none.
            (default: ``None``)
        checkpoint_every (int): iterations between checkpoints. (default: ``100``)
        fingerprint (dict, optional): what identifies the run (arguments, data
            fingerprints, architecture); a checkpoint with another fingerprint is refused
            by name. (default: ``None``)
        resume (bool): continue from an existing checkpoint file. (default: ``True``)
        grad_clip (float, optional): maximum gradient norm per clip group; ``None`` or
            ``0``: no clipping (the norm is still computed, in the gradients' dtype, and
            checked: float32 gradients beyond ~1e19 overflow it and count as diverged).
            (default: ``1.0``)
        clip_groups (sequence of parameter iterables, optional): groups clipped
            separately (e.g. two stages that share no parameter, so that one stage's
            large gradient does not shrink the other's step). (default: ``None``, all of
            ``module``'s parameters as one group)
        ema_decay (float, optional): keep an :class:`~torch_stgen.train.EMA` of the
            weights and end with it. (default: ``None``, off)
        progress (bool): tqdm bar (rank 0 only). (default: ``False``)
        desc (str): the bar's label. (default: ``"train"``)
        leave (bool): keep the bar on screen after the run. (default: ``True``)
        log_every (int): iterations averaged in the bar's loss figures.
            (default: ``50``)

    Attributes:
        history (dict): ``{name: [float per iteration]}`` of this rank's losses (a single
            tensor loss is named ``"loss"``), restored on resume.
        start (int): the iteration this run started from (after :meth:`resume`).
        ema (EMA or None): the moving average, when ``ema_decay`` is set.
    """

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None, *,
                 total: int, generator: torch.Generator,
                 checkpoint: Optional[Union[str, Path]] = None, checkpoint_every: int = 100,
                 fingerprint: Optional[dict] = None, resume: bool = True,
                 grad_clip: Optional[float] = 1.0,
                 clip_groups: Optional[Sequence[Iterable[nn.Parameter]]] = None,
                 ema_decay: Optional[float] = None, progress: bool = False,
                 desc: str = "train", leave: bool = True, log_every: int = 50):
        # None, "x" or 2.5 gave raw int() / float() errors naming no argument
        total = check_int("total", total, 0, low_text="")
        if grad_clip is not None and not _is_real(grad_clip, 0.0):
            raise ValueError(f"'grad_clip' must be None or a number >= 0 (got {grad_clip!r})")
        log_every = check_int("log_every", log_every)
        if ema_decay is not None and not _is_real(ema_decay, 0.0, 1.0, high_open=True):
            raise ValueError(f"'ema_decay' must be None or a number in [0, 1) "
                             f"(got {ema_decay!r})")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"'generator' must be a torch.Generator (the stream of the "
                            f"loss's random draws, checkpointed with the run; got "
                            f"{type(generator).__name__})")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"'optimizer' must be a torch.optim.Optimizer "
                            f"(got {type(optimizer).__name__})")
        for group in optimizer.param_groups:    # numpy scalars (e.g. lr=np.float64(1e-3))
            for k, v in group.items():         # would make the checkpoint unreadable
                if isinstance(v, np.generic):
                    group[k] = v.item()
        self.module = module
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.total = int(total)
        self.generator = generator
        self.grad_clip = float(grad_clip) if grad_clip else math.inf
        self.clip_groups: List[List[nn.Parameter]] = (
            [list(module.parameters())] if clip_groups is None
            else [_clip_group(i, group) for i, group in enumerate(clip_groups)])
        self.progress, self.desc, self.leave = bool(progress), desc, bool(leave)
        self.log_every = int(log_every)
        fingerprint = dict(fingerprint or {}, trainer={
            "total": self.total, "grad_clip": self.grad_clip,
            "clip_groups": len(self.clip_groups), "ema_decay": ema_decay,
            "scheduler": None if scheduler is None else type(scheduler).__name__,
            "optimizer": _optimizer_fingerprint(optimizer)})
        self.checkpointer = Checkpointer(checkpoint, checkpoint_every,
                                         fingerprint=fingerprint, resume=resume)
        # under DDP: rank 0's weights go to every rank here, before the EMA copies them
        self.ddp_loss = DataParallelLoss(module)
        self.ema = None if ema_decay is None else EMA(module, ema_decay)
        self.history: Dict[str, List[float]] = {}
        self.start = 0
        self._extra_state: Optional[Callable[[], Dict[str, object]]] = None
        self._resumed: Optional[Dict[str, object]] = None
        self._t0, self._elapsed = time.perf_counter(), 0.0
        self._state = "new"                 # -> "resumed" -> "running", or -> "refused"
        self._refusal = ""

    # ------------------------------------------------------------------ state
    def resume(self) -> Optional[Dict[str, object]]:
        """Load the checkpoint, if there is one for this run: weights, optimiser,
        schedule, generator, EMA and history are restored here. Returns the saved state
        (the model's own entries as given by ``extra_state`` to :meth:`run`; this rank's
        per-rank entries under ``"rank"``), or ``None`` for a fresh start. Collective
        under data-parallel training. A second call returns the same state; a call after
        :meth:`run` raises ``RuntimeError``."""
        if self._state == "running":
            raise RuntimeError("Trainer.resume() must come before run()")
        if self._state == "resumed":
            return self._resumed
        if self._state == "refused":        # a retry would train over the other run's file
            raise RuntimeError(f"this Trainer's checkpoint was refused ({self._refusal}); "
                               f"build a new Trainer with another 'checkpoint' path")
        try:
            saved = self._restore()
        except Exception as err:
            self._state, self._refusal = "refused", f"{type(err).__name__}: {err}"
            raise
        self._state = "resumed"
        return saved

    def _restore(self) -> Optional[Dict[str, object]]:
        saved = self.checkpointer.load()
        if saved is None:
            return None
        self.module.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["opt"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved["sched"])
        own = saved["rank"]
        self.generator.set_state(own["gen"])
        self.history = {k: list(v) for k, v in own["history"].items()}
        if self.ema is not None:
            self.ema.load_state_dict(saved["ema"])
        self.start = int(saved["iteration"])
        self._elapsed = float(saved.get("elapsed", 0.0))
        self._resumed = saved
        return saved

    def state_dict(self) -> Dict[str, object]:
        """What a checkpoint holds: the loop's state, this rank's generator and history
        under ``"rank"``, and the model's own entries (``extra_state``)."""
        extra = {} if self._extra_state is None else dict(self._extra_state())
        rank = dict(extra.pop("rank", {}), gen=self.generator.get_state(),
                    history=self.history)
        return {**extra, "model": self.module.state_dict(),
                "opt": self.optimizer.state_dict(),
                "sched": None if self.scheduler is None else self.scheduler.state_dict(),
                "ema": None if self.ema is None else self.ema.state_dict(), "rank": rank,
                "elapsed": self.seconds}

    @property
    def seconds(self) -> float:
        """Wall seconds of the run so far since this trainer was built, plus those a
        resumed checkpoint had already spent."""
        return self._elapsed + time.perf_counter() - self._t0

    def last(self, name: str = "loss") -> float:
        """The last recorded value of loss ``name`` (``nan`` before any iteration)."""
        values = self.history.get(name, [])
        return values[-1] if values else math.nan

    # ------------------------------------------------------------------- loop
    def run(self, loss_fn: Callable[[int], Losses],
            before_step: Optional[Callable[[int], None]] = None,
            extra_state: Optional[Callable[[], Dict[str, object]]] = None,
            postfix: Optional[Callable[[int], Dict[str, object]]] = None
            ) -> Dict[str, List[float]]:
        """Run the iterations from :attr:`start` to ``total``.

        Args:
            loss_fn (callable): ``loss_fn(i) -> Tensor or {name: Tensor}``, the loss of
                iteration ``i`` on this rank's batch.
            before_step (callable, optional): ``before_step(i)``, called before each
                iteration's loss (after its checkpoint).
            extra_state (callable, optional): ``() -> dict`` of the model's own entries
                to checkpoint (tensors and plain containers; per-rank ones under
                ``"rank"``); :meth:`resume` returns them.
            postfix (callable, optional): ``postfix(i) -> dict`` of extra bar fields.

        Returns:
            :attr:`history`.
        """
        if self._state == "running":
            raise RuntimeError("Trainer.run() was already called; build a new Trainer")
        self.resume()                       # a no-op when the caller already resumed
        self._state = "running"
        self._extra_state = extra_state
        ckpt = self.checkpointer
        bar = tqdm(range(self.start, self.total), initial=self.start, total=self.total,
                   disable=not self.progress or not is_main_process(), desc=self.desc,
                   leave=self.leave)
        for it in bar:
            if ckpt.due(it):
                ckpt.save(it, self.state_dict())
            if before_step is not None:
                before_step(it)
            out = self.ddp_loss(lambda: loss_fn(it))
            losses = _check_losses(out, it)
            self.optimizer.zero_grad(set_to_none=True)
            # also the module's parameters the optimiser does not own (a frozen part that
            # still requires grad): their gradients would pile up in the clipped norm
            self.module.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            norms = [float(nn.utils.clip_grad_norm_(group, self.grad_clip))
                     for group in self.clip_groups]
            # each loss read once (with the norms above: host syncs on an accelerator)
            values = {k: float(v.detach()) for k, v in losses.items()}
            for k, v in values.items():
                self.history.setdefault(k, []).append(v)
            if not all(map(math.isfinite, norms)) or \
                    (not is_distributed() and not all(map(math.isfinite, values.values()))):
                group = self.optimizer.param_groups[0]
                peak = group.get("initial_lr", group["lr"])
                raise FloatingPointError(
                    f"{self.desc} diverged at iteration {it} (losses {values}, gradient "
                    f"norms {norms}); lower 'lr' (peak {peak:g}, at this iteration "
                    f"{group['lr']:g})")
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            if self.ema is not None:
                self.ema.update()
            if self.progress and (it + 1) % self.log_every == 0:
                n = self.log_every
                fields = {k: f"{sum(v[-n:]) / len(v[-n:]):.4f}"
                          for k, v in self.history.items()}
                if postfix is not None:
                    fields.update(postfix(it))
                bar.set_postfix(fields)
        ckpt.finish(self.total, self.state_dict)
        self.ddp_loss.sync_buffers()            # e.g. scalers or cached scales
        if self.ema is not None:
            self.ema.copy_to(self.module)
        return self.history

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(total={self.total}, start={self.start}, "
                f"grad_clip={self.grad_clip}, clip_groups={len(self.clip_groups)}, "
                f"ema={self.ema is not None}, checkpoint={self.checkpointer!r})")
