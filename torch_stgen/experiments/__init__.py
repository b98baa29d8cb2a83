"""torch_stgen.experiments: the benchmark logic behind ``benchmarks/*.py`` and the
``torch-stgen`` command line (importable, testable, no top-level side effects)."""

import argparse
import os
from pathlib import Path

import torch


class DataError(ValueError):
    """The data a benchmark was given cannot be used (a file that does not follow the
    documented schema, windows longer than its training split, ...). The message names
    the file or flag; the command lines print it as an argparse error, without a
    traceback. A ``ValueError``, so code that catches those keeps working."""


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


def add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint-dir`` and ``--checkpoint-every``: resumable training of the diffusion
    models and the learned baselines (:class:`~torch_stgen.train.Checkpointer`; see
    :func:`checkpoint_path`)."""
    parser.add_argument("--checkpoint-dir", default=None,
                        help="write resumable training checkpoints here, one file per "
                             "dataset, method and seed; re-running the same command "
                             "continues a cut-off training (a finished one is loaded, not "
                             "retrained) (default: none)")
    parser.add_argument("--checkpoint-every", type=int, default=100,
                        help="iterations between checkpoints (default: 100)")


def checkpoint_path(args, dataset: str, method: str, seed: int):
    """``<--checkpoint-dir>/<dataset>_<method>_seed<seed>.pt``, or ``None`` without the
    flag."""
    root = getattr(args, "checkpoint_dir", None)
    if not root:
        return None
    from pathlib import Path
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"{dataset}_{method}")
    return Path(root) / f"{safe}_seed{int(seed)}.pt"


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
    if spec == "auto":              # then the TF32 switches below, as for an explicit cuda
        spec = "cuda" if torch.cuda.is_available() else "cpu"
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


def positive_int_arg(text: str) -> int:
    """argparse ``type``: a positive integer (argparse names the flag in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer (got {text})") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (got {text})")
    return value


def open_fraction_arg(text: str) -> float:
    """argparse ``type``: a fraction strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1) (got {text})") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1) (got {text})")
    return value


def prepare_output(flag: str, path, folder: bool = False) -> None:
    """Create the folder of an output file (or, with ``folder``, the folder itself) now,
    before any computation, so that a missing or unwritable folder cannot lose a finished
    run. Raises ``ValueError`` naming ``flag``."""
    if not path:
        return
    path = Path(path)
    target = path if folder else path.parent
    if not folder and path.is_dir():
        raise ValueError(f"{flag} {path} is a directory; give a file name")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{flag} {path}: cannot create the folder {target} "
                         f"({err.strerror})") from None
    if not os.access(target, os.W_OK):
        raise ValueError(f"{flag} {path}: the folder {target} is not writable")
