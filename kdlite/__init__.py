"""kdlite: a small, readable PyTorch library for model compression, the library of an open textbook.

One concept per module: ``scale`` (experiment sizes), ``data`` (datasets and the device loader), ``models``,
``train`` (fit, evaluate), ``measure`` (size and speed), ``report`` (mean ± std, tables), ``prune`` (magnitude and
iterative pruning, the lottery ticket) and ``structured`` (channel pruning).
"""

from . import data, measure, models, prune, report, structured, train
from .data import DeviceLoader, load_dataset
from .scale import Scale, scale
from .train import History, evaluate, fit, get_device, seed_everything

__version__ = "0.1.0"

__all__ = [
    "DeviceLoader",
    "History",
    "Scale",
    "data",
    "evaluate",
    "fit",
    "get_device",
    "load_dataset",
    "measure",
    "models",
    "prune",
    "report",
    "scale",
    "structured",
    "seed_everything",
    "train",
]
