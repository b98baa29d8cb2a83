"""torch_stgen.experiments: the benchmark logic behind ``benchmarks/*.py`` and the
``torch-stgen`` command line (importable, testable, no top-level side effects)."""

import argparse

import torch


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--tf32``, shared by the benchmarks (see :func:`resolve_device`)."""
    parser.add_argument("--device", default="cpu",
                        help="where the models train and sample: cpu, cuda, cuda:N or auto "
                             "(data preparation and random draws stay on the CPU, so a seed "
                             "draws the same stream on every device) (default: cpu)")
    parser.add_argument("--tf32", action="store_true",
                        help="on CUDA, allow TF32 matmuls / convolutions (faster, ~1e-3 "
                             "relative error per operation; default: float32, comparable "
                             "to the CPU)")


def resolve_device(spec: str, tf32: bool = False) -> torch.device:
    """``--device`` of the benchmarks: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when
    available, else CPU). Raises a ``ValueError`` naming the flag when CUDA is asked for
    but absent.

    On CUDA it also sets PyTorch's TF32 switches (matmul and cuDNN) to ``tf32``: off by
    default, so that a benchmark computes in float32 on every device. (cuDNN convolutions
    default to TF32, ~1e-3 relative error per operation; measured on the KGDiff ``--quick``
    run, that alone moved the unconditional model's MAE from 11.34 to 9.37, while float32
    on the GPU gave 11.35.)"""
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
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(tf32)
    return dev
