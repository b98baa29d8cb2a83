import pytest
import torch


@pytest.fixture(autouse=True)
def _restore_threads():
    """The benchmark runs set torch's thread count (``--threads``); restore it after."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
