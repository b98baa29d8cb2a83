import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(os.environ.get(
    "TORCH_STGEN_SHARED_DATA",
    Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def shared_dataset(name: str) -> Path:
    """Path of a folder of ``../shared/data``; skips the test (with the reason) if absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real dataset folder {path} is absent (set TORCH_STGEN_SHARED_DATA "
                    f"or place ../shared/data beside the checkout)")
    return path


@pytest.fixture
def bikenyc_root():
    return shared_dataset("bikenyc")


@pytest.fixture
def metr_la_root():
    return shared_dataset("metr_la")


@pytest.fixture
def nyc_kg_root():
    return shared_dataset("nyc_urban_kg")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(12345)
    yield
