"""Input checks shared across the package (private)."""
import operator
from typing import Optional

import torch
from torch import Tensor

__all__ = ["check_binary_mask", "check_int", "check_seed", "is_integer_dtype",
           "match_input_dtype"]


def is_integer_dtype(t: Tensor) -> bool:
    """Whether ``t`` holds integers proper: not floats (a ``.long()`` would truncate them),
    complex numbers or booleans (which index as masks)."""
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


def check_binary_mask(name: str, mask: Tensor, meaning: str = "1 = observed") -> None:
    """Raise ``ValueError`` naming ``name`` unless every entry of ``mask`` is 0 or 1.

    Boolean masks pass as they are. NaN, negative values, fractions and values above 1 are
    refused: a mask weights a loss or a mean, and any of them would give a silently wrong
    (negative, NaN or re-weighted) result. One host synchronisation on accelerators.
    """
    if mask.dtype == torch.bool:
        return
    if mask.is_complex():
        raise ValueError(f"'{name}' must be a real 0/1 mask ({meaning}) (got {mask.dtype})")
    bad = (mask != 0) & (mask != 1)             # NaN != 0 and NaN != 1: caught too
    if bool(bad.any()):
        example = mask[bad].reshape(-1)[0].item()
        raise ValueError(f"'{name}' must contain only 0 and 1 ({meaning}) "
                         f"(got {example!r})")


def check_float32_model(module: torch.nn.Module) -> None:
    """Refuse a model whose floating parameters are not float32 (after ``.double()`` or
    ``.half()``): the models cast their inputs to float32, so such a model failed with a
    raw dtype error deep inside (DiffRecon) or sampled in float32 anyway (KGDiff). No
    device sync: it reads the dtypes only."""
    for p in module.parameters():
        if p.is_floating_point() and p.dtype != torch.float32:
            raise TypeError(
                f"{type(module).__name__} runs in float32, but its parameters are "
                f"{p.dtype} (after .double() / .half()?); call .float(), and use "
                f"torch.autocast for mixed precision")


def match_input_dtype(name: str, x: Tensor, weight: Tensor) -> Tensor:
    """``x`` ready for a layer whose parameters have ``weight``'s dtype: integer and boolean
    inputs (counts, flags) are cast to it; a floating input of another dtype is refused
    with a ``TypeError`` naming ``name`` (``torch.nn.Linear`` raised "mat1 and mat2 must
    have the same dtype" from inside the layer), unless autocast is on for its device,
    which casts it. No device sync."""
    if not x.is_floating_point():
        return x.to(weight.dtype)
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"'{name}' is {x.dtype} but the layer's parameters are "
                        f"{weight.dtype}; cast one to the other (x.to({weight.dtype}) or "
                        f"layer.to({x.dtype})), or run under torch.autocast")
    return x


def check_seed(seed, name: str = "seed") -> int:
    """``seed`` as an int in ``[0, 2**63)``. ``torch.Generator.manual_seed`` takes
    ``[-2**63, 2**64)``; the narrower range leaves headroom for the offsets the models add
    to a seed (e.g. DiffRecon's validation draws), which overflowed inside torch with an
    unnamed error. Any integer type passes (e.g. ``numpy.int64``); floats and bools do
    not."""
    try:
        value = check_int(name, seed, 0)
    except ValueError:
        value = None
    if value is None or value >= 2 ** 63:
        raise ValueError(f"'{name}' must be an integer in [0, 2**63) (got {seed!r})")
    return value


def check_int(name: str, value, low: int = 1, low_text: Optional[str] = None) -> int:
    """``value`` as a Python int ``>= low``: any integer type passes (``numpy.int64``
    too); bools, floats (even ``4.0``) and strings are refused with a ``ValueError``
    naming ``name``. The message reads "a positive integer" for ``low=1`` without
    ``low_text``, else "an integer >= {low_text}{low}" (e.g. ``"-history = "``)."""
    try:
        if isinstance(value, bool) or (isinstance(value, Tensor) and (
                value.dim() > 0 or value.dtype == torch.bool)):
            raise TypeError
        out = operator.index(value)
    except TypeError:
        out = None
    if out is None or out < low:
        bound = ("a positive integer" if low == 1 and low_text is None
                 else f"an integer >= {low_text or ''}{low}")
        raise ValueError(f"'{name}' must be {bound} (got {value!r})")
    return out
