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


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    """Tests use tiny tensors: a second OpenMP thread only adds barrier stalls (measured up
    to 7x slower on a busy 2-core machine), so the suite runs single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(12345)
    yield
