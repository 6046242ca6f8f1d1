"""Checks for ``kdlite.data``: of dataset files, for ``kdlite.data.sources`` (``where``: the file a value came from;
``key``: its name there), and of the loaders', augmentations' and text helpers' arguments. Each raises an error that
names the file and key, or the argument, what it holds and what was expected."""

from __future__ import annotations

import numpy as np
import torch


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


def optional_function(value, name: str, what: str):
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be {what} or None; got {type(value).__name__}")
    return value


def image_batch(x, who: str, shape: str, low: int, high: int) -> None:
    """``x`` is a tensor of ``low`` to ``high`` dimensions: a batch of images (``shape`` names the layout)."""
    if not isinstance(x, torch.Tensor) or not low <= x.dim() <= high:
        got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else f"a {type(x).__name__}"
        raise ValueError(f"{who} expects x, a batch of images {shape}; got {got}")


def string(value, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str; got {type(value).__name__} {value!r:.40}")
    return value


def token_ids(value, name: str) -> torch.Tensor:
    """``value`` (a tensor, or a list of ints) as a tensor of integer token ids."""
    ids = None if isinstance(value, (str, bytes)) else value
    if ids is not None and not isinstance(ids, torch.Tensor):
        try:
            ids = torch.as_tensor(ids)
        except (TypeError, ValueError, RuntimeError):
            ids = None
    if ids is None or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"{name} must be integer token ids (a tensor or a list of ints); got {type(value).__name__} "
                        f"{value!r:.40}")
    return ids
