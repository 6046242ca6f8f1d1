"""Datasets that live on the device, and a loader that batches them by slicing.

The book's datasets are small enough to sit whole in memory (CIFAR-10's 50 000 training images are 600 MB as
float32), so instead of torch's ``DataLoader``, which collates one sample at a time in Python, a
:class:`DeviceLoader` keeps the tensors on the device and yields batches as slices.

- ``datasets``: :func:`load_dataset`, the offline datasets and the four that torchvision downloads;
- ``cache``: the cache folder (uint8, checked on load), :func:`import_dataset` for a local copy without a network;
- ``sources``: reading that local copy (an ``.npz`` file, or the files torchvision writes);
- ``loader``: :class:`DeviceLoader`, :func:`as_batches` (what every function does with its data) and batch
  augmentations (``random_crop``, ``random_flip``, ``crop_and_flip``);
- ``text``: Tiny Shakespeare, shipped with the package (:func:`load_text`), and :class:`TextLoader`, random blocks of
  it on the device for a language model.

``python -m kdlite.data --help`` lists the command-line tools (``import``, ``list``).
"""

from .cache import (
    DATASETS,
    DOWNLOADABLE_DATASETS,
    OFFLINE_DATASETS,
    DatasetCacheError,
    DatasetDownloadError,
    cache_note,
    data_root,
    dataset_name,
    import_dataset,
    is_cached,
)
from .datasets import describe_dataset, load_dataset
from .loader import DeviceLoader, as_batches, crop_and_flip, random_crop, random_flip
from .text import TEXTS, TextLoader, decode, encode, load_text

__all__ = [
    "DATASETS",
    "DOWNLOADABLE_DATASETS",
    "OFFLINE_DATASETS",
    "TEXTS",
    "DatasetCacheError",
    "DatasetDownloadError",
    "DeviceLoader",
    "TextLoader",
    "as_batches",
    "cache_note",
    "crop_and_flip",
    "data_root",
    "dataset_name",
    "decode",
    "describe_dataset",
    "encode",
    "import_dataset",
    "is_cached",
    "load_dataset",
    "load_text",
    "random_crop",
    "random_flip",
]
