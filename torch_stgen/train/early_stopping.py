r"""Early stopping that keeps the best weights: the validation-loss bookkeeping that
:meth:`DiffRecon.fit <torch_stgen.models.DiffRecon.fit>` (once per stage) and
:func:`~torch_stgen.models.baselines.fit_upsampler` share, and a model of your own can use
from a :class:`~torch_stgen.train.Trainer` hook::

    best = BestWeights(model)
    saved = trainer.resume()
    if saved is not None:                   # the checks made before the checkpoint
        best.load_state_dict(saved["best"])

    def before_step(it):
        if it and it % 100 == 0:
            best.update(validation_loss(model), it)

    trainer.run(loss_fn, before_step, extra_state=lambda: {"best": best.state_dict()})
    best.update(validation_loss(model), trainer.total)
    best.restore()                      # the weights of the lowest validation loss
"""
import copy
import math
from typing import Dict, Optional

from torch import nn

__all__ = ["BestWeights"]


class BestWeights:
    r"""The weights of ``module`` at the check where its validation loss was lowest.

    :meth:`update` keeps a copy of the weights when the loss is strictly lower than every
    earlier one (the first of equal losses wins). A non-finite loss never beats a
    finite one, and a finite one always beats a stored non-finite one.

    Args:
        module (nn.Module): the module whose ``state_dict`` is kept.

    Attributes:
        value (float or None): the lowest loss so far.
        iteration (int or None): the iteration it was measured at.
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self.value: Optional[float] = None
        self.iteration: Optional[int] = None
        self._state: Optional[Dict[str, object]] = None

    def update(self, value: float, iteration: int) -> bool:
        """Record the validation loss ``value`` measured at ``iteration``; returns whether
        it is the new best (its weights are copied)."""
        value = float(value)
        better = self.value is None or (math.isfinite(value) and (
            not math.isfinite(self.value) or value < self.value))
        if better:
            self.value, self.iteration = value, int(iteration)
            self._state = copy.deepcopy(self.module.state_dict())
        return better

    def restore(self) -> int:
        """Load the best weights into the module; returns their iteration."""
        if self._state is None:
            raise RuntimeError("BestWeights.restore() before any update()")
        self.module.load_state_dict(self._state)
        return self.iteration

    def state_dict(self) -> Dict[str, object]:
        """For checkpoints (plain values and tensors)."""
        return {"value": self.value, "iteration": self.iteration, "state": self._state}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        self.value, self.iteration = state["value"], state["iteration"]
        self._state = state["state"]

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(value={self.value}, "
                f"iteration={self.iteration})")
