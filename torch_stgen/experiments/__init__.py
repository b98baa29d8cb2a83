"""torch_stgen.experiments: the benchmark logic behind ``benchmarks/*.py`` and the
``torch-stgen`` command line (importable, testable, no top-level side effects)."""

import torch


def resolve_device(spec: str) -> torch.device:
    """``--device`` of the benchmarks: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when
    available, else CPU). Raises a ``ValueError`` naming the flag when CUDA is asked for
    but absent."""
    spec = str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"--device must be 'cpu', 'cuda', 'cuda:N' or 'auto' "
                         f"(got {spec!r})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {spec}: CUDA is not available in this PyTorch build or "
                         f"on this machine (use --device cpu or auto)")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be 'cpu', 'cuda', 'cuda:N' or 'auto' (got {spec!r})")
    return dev
