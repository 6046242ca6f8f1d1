"""kdlite: a small, readable PyTorch library for model compression, the library of an open textbook.

One concept per module:

- ``scale``: experiment sizes (smoke, cpu, gpu);  ``data``: datasets and the device loader;  ``models``;
- ``device``: get_device, seed_everything, synchronize;  ``train``: fit, evaluate;  ``measure``: size and speed;
  ``report``: mean ± std, tables, figures;
- ``losses``: soft targets, KD, DKD and feature losses;  ``distill``: the distillation loop;
  ``features``: feature taps and connectors;
- ``masks``: W = W_orig ⊙ M;  ``prune``: magnitude and iterative pruning, the lottery ticket;
  ``structured``: channel pruning;
- ``quant`` (a package): affine quantization, calibration, QAT and PTQ, k-means weight sharing, real int8 kernels
  (``kdlite.int8.to_int8`` is ``kdlite.quant.to_int8``).

One rule for models: what trains or prunes a model changes the one you pass, in place (``fit`` and ``distill``
return a ``History``, ``magnitude_prune`` the masks; ``apply_masks``, ``remove_masks``, ``rewind`` and ``calibrate``
return the same model); what changes a model's structure returns a new model and leaves yours as it was
(``channel_prune``, ``fold_all_batchnorm``, ``prepare_qat``, ``quantize_ptq``, ``share_weights``, ``to_int8``).
"""

from . import data, distill, features, int8, losses, measure, models, prune, quant, report, structured, train
from .data import DeviceLoader, load_dataset
from .device import get_device, seed_everything
from .scale import Scale, scale
from .train import History, evaluate, fit

__version__ = "0.1.0"

__all__ = [
    "DeviceLoader",
    "History",
    "Scale",
    "data",
    "distill",
    "evaluate",
    "features",
    "fit",
    "get_device",
    "int8",
    "load_dataset",
    "losses",
    "measure",
    "models",
    "prune",
    "quant",
    "report",
    "scale",
    "structured",
    "seed_everything",
    "train",
]
