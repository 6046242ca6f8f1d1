"""kdlite: a small, readable PyTorch library for model compression, the library of an open textbook.

One concept per module: ``scale`` (experiment sizes), ``data`` (datasets and the device loader), ``models``,
``train`` (fit, evaluate), ``measure`` (size and speed).
"""

from . import data, measure, models, report, train
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
    "report",
    "scale",
    "seed_everything",
    "train",
]
