import importlib
import os

import pytest
import torch

os.environ.setdefault("KDLITE_PROGRESS", "0")
torch.set_num_threads(1)  # tiny models: one thread is fastest, and immune to a busy machine


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path_factory):
    """Tests start from a known environment: no scale, offline flag, device override or output folder leaks in,
    the dataset cache is an empty folder of the test session's (never the reader's), and no test probes the network.
    """
    for var in ("KDLITE_SCALE", "KDLITE_OFFLINE", "KDLITE_DEVICE", "KDLITE_FIGURES", "KDLITE_RESULTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KDLITE_DATA", str(tmp_path_factory.getbasetemp() / "kdlite-data"))
    monkeypatch.setattr(importlib.import_module("kdlite.scale"), "_reachable", lambda name: False)
