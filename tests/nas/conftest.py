import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These small convnets run best on one thread; the machine's cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
