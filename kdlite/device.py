"""Where the work runs: the device helper, seeding, and waiting for a device to finish.

Everything in kdlite that needs a device takes it from the data or from :func:`get_device`, never from a hard-coded
``.cuda()``: CUDA, then Apple's MPS, then the CPU, unless ``device`` or ``$KDLITE_DEVICE`` says otherwise.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from ._checks import integer


def get_device(device: str | torch.device | None = None) -> torch.device:
    """The device to use: ``device`` if given, else ``$KDLITE_DEVICE``, else cuda, then mps, then cpu."""
    if device is None:
        device = os.environ.get("KDLITE_DEVICE") or None
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> int:
    """Seed Python's, NumPy's and torch's random generators (all devices). Returns the seed."""
    seed = integer(seed, "seed", 0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


def synchronize(device: str | torch.device) -> None:
    """Wait until the work queued on ``device`` is done: GPUs run asynchronously, so a timer must wait for them.

    Works for every device type with a ``torch.<type>.synchronize`` (CUDA, MPS, XPU, ...); the CPU has nothing to
    wait for.
    """
    device = torch.device(device)
    sync = getattr(getattr(torch, device.type, None), "synchronize", None)
    if device.type != "cpu" and sync is not None:
        sync(device) if device.type == "cuda" else sync()
