"""Tiny grid series shared by the model, device and checkpoint tests (importable because
pytest puts ``tests/`` on ``sys.path`` for ``tests/conftest.py``)."""
import math

import torch


def daily_grid_series(T: int = 40, C: int = 2, H: int = 8, W: int = 4, seed: int = 0):
    """``(fine [T, C, H, W], time [T, 3])``: an hourly daily cycle times fixed per-cell
    shares plus uniform noise, and its hour / weekday / holiday calendar."""
    g = torch.Generator().manual_seed(seed)
    hours = torch.arange(T) % 24
    base = 5 + 4 * torch.sin(2 * math.pi * hours / 24)                     # daily cycle
    shares = torch.rand(C, H, W, generator=g) + 0.5
    fine = base[:, None, None, None] * shares + torch.rand(T, C, H, W, generator=g)
    time = torch.stack([hours.float(), ((torch.arange(T) // 24) % 7).float(),
                        torch.zeros(T)], 1)
    return fine, time
