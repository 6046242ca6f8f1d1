"""A loader that keeps a small dataset whole on the device and batches it by slicing, and batch augmentations.

Torch's ``DataLoader`` collates one sample at a time in Python. A :class:`DeviceLoader` keeps the tensors on the
device, shuffles them once per epoch with one ``randperm``, and yields batches as slices. Augmentations are functions
of a whole batch ``(N, C, H, W)``, run on the device too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch.utils.data import TensorDataset

from .._checks import flag, integer
from ..device import get_device
from ._checks import image_batch, optional_function


def random_crop(x: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Pad each image by ``padding`` zeros and crop it back at a random offset: a shift of up to ±padding pixels.

    With ``padding=2`` on MNIST this is the "jitter by up to two pixels" of Hinton et al. (2015).
    """
    image_batch(x, "random_crop", "(N, C, H, W)", 4, 4)
    if integer(padding, "padding", 0, what="an int >= 0 (pixels of shift)") == 0:
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
    """Flip each image left-right (along its last dimension) with probability 1/2."""
    image_batch(x, "random_flip", "(N, ..., W)", 2, 8)
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


def crop_and_flip(x: torch.Tensor) -> torch.Tensor:
    """The standard CIFAR augmentation: ``random_flip(random_crop(x, padding=4))``."""
    return random_flip(random_crop(x, padding=4))


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
        batch_size = integer(batch_size, "batch_size", 1)
        if isinstance(dataset, TensorDataset):
            tensors = dataset.tensors
        elif isinstance(dataset, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in dataset):
            tensors = tuple(dataset)
        else:
            raise TypeError(f"dataset must be a TensorDataset or a tuple of tensors (e.g. from "
                            f"kdlite.load_dataset); got {type(dataset).__name__}")
        if not tensors or any(t.ndim == 0 or len(t) != len(tensors[0]) for t in tensors):
            raise ValueError(f"dataset must hold one or more tensors of the same length; got lengths "
                             f"{[len(t) if t.ndim else '0-d' for t in tensors]}")
        augment = optional_function(augment, "augment", "a function of a batch x (e.g. kdlite.data.crop_and_flip)")
        seed = None if seed is None else integer(seed, "seed", -(2**63), 2**64 - 1, what="an int")
        shuffle, drop_last = flag(shuffle, "shuffle"), flag(drop_last, "drop_last")
        self.device = get_device(device)
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


def _same_lengths(tensors: tuple[torch.Tensor, ...], name: str) -> tuple[torch.Tensor, ...]:
    if len({len(t) for t in tensors}) > 1:
        raise ValueError(f"{name} (x, y, ...) holds tensors of lengths {[len(t) for t in tensors]}; expected one "
                         f"length, one row per example (a tuple of tensors is one dataset; a list is batches)")
    return tensors


def as_batches(
    data, batch_size: int = 128, *, shuffle: bool = False, device: torch.device | str | None = None, name: str = "data"
) -> Iterable:
    """What every kdlite function that takes data does with it: a ``TensorDataset``, or a tuple ``(x, y)`` of
    tensors of one length, becomes a :class:`DeviceLoader` of ``batch_size``; any other iterable of batches (a
    ``DeviceLoader``, a torch ``DataLoader``, a list of batches) is used as it is. A tuple is the data, a list is
    batches: ``(x, y)`` is one dataset, ``[x1, x2]`` two batches. ``name`` is the argument's name in messages."""
    if isinstance(data, tuple) and len(data) >= 2 and all(isinstance(t, torch.Tensor) and t.ndim for t in data):
        data = TensorDataset(*_same_lengths(data, name))  # fit(model, (x, y), epochs)
    if isinstance(data, TensorDataset):
        return DeviceLoader(data, batch_size, shuffle=shuffle, device=device)
    if isinstance(data, (torch.Tensor, str, bytes)) or not isinstance(data, Iterable):
        hint = " (for tensors x, y pass TensorDataset(x, y) or (x, y))" if isinstance(data, torch.Tensor) else ""
        raise TypeError(f"{name} must be a TensorDataset, a kdlite DeviceLoader or an iterable of (x, y) batches; "
                        f"got {type(data).__name__}{hint}")
    return data
