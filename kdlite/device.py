"""Where and how the work runs: the device helper, seeding, waiting for a device to finish, and eval mode.

Everything in kdlite that needs a device takes it from the data or from :func:`get_device`, never from a hard-coded
``.cuda()``: CUDA, then Apple's MPS, then the CPU, unless ``device`` or ``$KDLITE_DEVICE`` says otherwise.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

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


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the ``with`` block ``model`` is in eval mode (dropout off, BatchNorm on its running statistics);
    afterwards every submodule is back in the mode it had (a frozen submodule stays in eval), even after an error.

    The one way kdlite evaluates, measures or calibrates a model without changing it."""
    modes = {m: m.training for m in model.modules()}
    try:
        yield model.eval()
    finally:
        for m, was_training in modes.items():
            m.training = was_training


@contextlib.contextmanager
def named_input_errors(model: nn.Module, x: torch.Tensor, what: str, who: str = "model") -> Iterator[None]:
    """Inside the ``with`` block, torch's errors about inputs the model cannot take ("mat1 and mat2 must have the
    same dtype", "Input type (float) and bias type (double) should be the same", "expected input[2, 3, 8, 8] to
    have 1 channels", "mat1 and mat2 shapes cannot be multiplied", and the int8 kernels' oneDNN and fbgemm errors)
    become a ValueError that names the inputs (``what``: "training", "calibration", ...), their shape and dtype,
    the model's dtype and what its first layer takes; ``who`` names the model ("the teacher")."""
    try:
        yield
    except (RuntimeError, ValueError) as e:  # ValueError: the int8 kernels' "Input shape must be (N, C, H, W)"
        message, weight = str(e).splitlines()[0], next(
            (p.dtype for p in model.parameters() if p.is_floating_point()), x.dtype)
        if isinstance(e, ValueError) and not message.startswith("Input shape must be"):
            raise  # a ValueError that is not the int8 kernels' is the model's own, already clear
        if x.dtype != weight and any(w in message for w in ("dtype", "scalar type", "type (", "Type (")):
            fix = f"{who}.to({x.dtype}) or x.to({weight})" if x.is_floating_point() else f"x.to({weight})"
            raise ValueError(f"the {who}'s weights are {weight} but the {what} inputs are {x.dtype}; expected "
                             f"inputs of the {who}'s floating dtype ({fix})") from None
        if any(w in message for w in ("cannot be multiplied", "expected input", "to have", "must match the size",
                                      "primitive descriptor", "Input shape must be", "packB")):  # last 3: int8
            raise ValueError(f"the {who} cannot take the {what} inputs of shape {tuple(x.shape)}{_first_layer(model)}: "
                             f"{message}") from None
        raise


def _first_layer(model: nn.Module) -> str:
    """What the model's first layer with weights takes ("; its first layer, net.0, takes 1 input channels"), or ""
    when that layer (an embedding, a norm) does not say."""
    for name, m in model.named_modules():
        n, unit = next(((n, u) for n, u in ((getattr(m, "in_channels", None), "channels"),
                                            (getattr(m, "in_features", None), "features")) if isinstance(n, int)),
                       (None, ""))
        if n is not None:
            return f"; its first layer, {name or type(m).__name__}, takes {n} input {unit}"
        if next(m.children(), None) is None and next(m.parameters(recurse=False), None) is not None:
            return ""
    return ""
