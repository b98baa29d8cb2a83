"""BestWeights: the early-stopping bookkeeping DiffRecon and the learned baselines share."""
import math

import pytest
import torch
from torch import nn

from torch_stgen.train import BestWeights


def _set(lin: nn.Linear, v: float):
    with torch.no_grad():
        lin.weight.fill_(v)
        lin.bias.fill_(v)


def test_it_keeps_the_weights_of_the_lowest_loss():
    lin = nn.Linear(2, 1)
    best = BestWeights(lin)
    for it, (w, loss) in enumerate([(1.0, 0.5), (2.0, 0.3), (3.0, 0.3), (4.0, 0.7)]):
        _set(lin, w)
        best.update(loss, it)
    assert (best.value, best.iteration) == (0.3, 1)      # the first of equal losses wins
    assert lin.weight[0, 0].item() == 4.0                # update copies, does not load
    assert best.restore() == 1
    assert lin.weight[0, 0].item() == 2.0 and lin.bias.item() == 2.0


def test_non_finite_losses_never_win_over_finite_ones():
    lin = nn.Linear(2, 1)
    best = BestWeights(lin)
    _set(lin, 1.0)
    assert best.update(float("nan"), 0)                  # nothing better yet
    _set(lin, 2.0)
    assert best.update(5.0, 1)                           # finite beats the stored NaN
    _set(lin, 3.0)
    assert not best.update(float("nan"), 2) and not best.update(math.inf, 3)
    assert not best.update(-math.inf, 4)                 # nor does minus infinity
    assert best.restore() == 1 and lin.weight[0, 0].item() == 2.0


def test_state_dict_round_trips_and_restore_needs_an_update():
    lin = nn.Linear(2, 1)
    with pytest.raises(RuntimeError, match="before any update"):
        BestWeights(lin).restore()
    best = BestWeights(lin)
    _set(lin, 7.0)
    best.update(0.1, 40)
    saved = best.state_dict()
    other_lin = nn.Linear(2, 1)
    other = BestWeights(other_lin)
    other.load_state_dict(saved)
    assert (other.value, other.iteration) == (0.1, 40)
    assert other.restore() == 40 and other_lin.weight[0, 0].item() == 7.0
