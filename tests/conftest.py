import os

import pytest
import torch

os.environ.setdefault("KDLITE_PROGRESS", "0")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """Tests start from a known environment: no scale, offline flag or device override leaks in."""
    for var in ("KDLITE_SCALE", "KDLITE_OFFLINE", "KDLITE_DEVICE"):
        monkeypatch.delenv(var, raising=False)
