"""Checks of dataset files, for ``kdlite.data.sources`` (``where``: the file a value came from; ``key``: its name
there). Each raises an error that names the file, the key, what it holds and what was expected."""

from __future__ import annotations

import numpy as np


def check_keys(found, where, keys, expected: str) -> None:
    missing = next((k for k in keys if k not in found), None)
    if missing is not None:
        raise ValueError(f"{where}: missing key {missing!r}; expected {expected}")


def check_images(x: np.ndarray, where, key: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    if x.dtype != np.uint8 or x.ndim != 1 + len(shape) or x.shape[1:] != shape or len(x) == 0:
        raise ValueError(f"{where}: {key} has shape {x.shape} and dtype {x.dtype}; expected "
                         f"(N, {', '.join(map(str, shape))}) uint8 {what}, N ≥ 1")
    return x


def check_labels(y: np.ndarray, where, key: str, n: int, classes: int) -> np.ndarray:
    """``n`` integer labels in 0 .. classes − 1, of shape (n,) or (n, 1); returned flat."""
    if not np.issubdtype(y.dtype, np.integer) or y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] != 1):
        raise ValueError(f"{where}: {key} has shape {y.shape} and dtype {y.dtype}; expected integer labels of shape "
                         f"(N,) or (N, 1)")
    y = y.reshape(-1)
    if len(y) != n:  # per CIFAR batch too: a short one would shift every later label
        raise ValueError(f"{where}: {key} holds {len(y)} labels for {n} images; expected one label per image")
    if y.min() < 0 or y.max() >= classes:
        raise ValueError(f"{where}: {key} has labels from {y.min()} to {y.max()}; expected 0 .. {classes - 1}")
    return y
