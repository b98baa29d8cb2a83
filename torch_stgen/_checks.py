"""Input checks shared across the package (private)."""
import torch
from torch import Tensor

__all__ = ["check_binary_mask"]


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
