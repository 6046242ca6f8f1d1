"""Where and how the work runs: the device helper, seeding, waiting for a device to finish, and eval mode.

Everything in kdlite that needs a device takes it from the data or from :func:`get_device`, never from a hard-coded
``.cuda()``: CUDA, then Apple's MPS, then the CPU, unless ``device`` or ``$KDLITE_DEVICE`` says otherwise.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from ._checks import integer


def get_device(device: str | torch.device | None = None) -> torch.device:
    """The device to use: ``device`` if given, else ``$KDLITE_DEVICE``, else cuda, then mps, then cpu."""
    if device is None:
        device = os.environ.get("KDLITE_DEVICE") or None
    if device is not None:
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must be a torch.device or a name such as 'cpu', 'cuda', 'cuda:1' or 'mps'; got "
                             f"{device!r}") from None
        return _check_available(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _check_available(device: torch.device) -> torch.device:
    """A CUDA or MPS device this machine has: torch's own error ("Found no NVIDIA driver") names no argument."""
    gpus, mps = torch.cuda.device_count(), getattr(torch.backends, "mps", None)
    if (device.type == "cuda" and (device.index or 0) >= gpus) or (device.type == "mps" and not (
            mps is not None and mps.is_available())):
        raise ValueError(f"device {str(device)!r} (the device argument, or $KDLITE_DEVICE) is not on this machine, "
                         f"which has {gpus} CUDA GPU(s); expected 'cpu', or device=None to pick the best one there is")
    return device


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


INT8_MODULES = ("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")  # static and dynamic, fused or not
INT8_SHAPE_ERRORS = ("could not create a primitive descriptor", "packB", "Input shape must be `(N, C, H, W)`")


def runs_int8(module: nn.Module) -> bool:
    """A torch.ao quantized module (``to_int8``'s Linear, ConvReLU2d, ...; ``dynamic_int8``'s Linear): its kernels
    are not plain float ops."""
    return type(module).__module__.startswith(INT8_MODULES)


@contextlib.contextmanager
def named_input_errors(model: nn.Module, x: torch.Tensor, what: str, who: str = "model",
                       forward_only: bool = False) -> Iterator[None]:
    """Inside the ``with`` block, torch's errors about inputs the model cannot take ("mat1 and mat2 must have the
    same dtype", "Input type (float) and bias type (double) should be the same", "expected input[2, 3, 8, 8] to
    have 1 channels", "mat1 and mat2 shapes cannot be multiplied"; an int8 model's oneDNN and fbgemm errors, which
    say nothing of the shape expected) become a ValueError that names the inputs (``what``: "training",
    "calibration", ...), their shape and dtype, and the model's dtype; ``who`` names the model ("teacher").

    ``forward_only``: for a block that also computes a loss (a training step), only errors raised inside
    ``model``'s own forward pass are translated, about the input it was called with; the loss's errors pass
    through unchanged. (A TorchScript model takes no hooks: there every error counts as its forward's.)"""
    hooks, failed = _track_forward(model) if forward_only and not isinstance(model, torch.jit.ScriptModule) else \
        ([], None)
    try:
        yield
    except (RuntimeError, ValueError, IndexError) as e:  # ValueError: the int8 conv says "Input shape must be ..."
        message, int8 = str(e).splitlines()[0], any(runs_int8(m) for m in model.modules())
        if isinstance(e, ValueError) and not (int8 and message.startswith(INT8_SHAPE_ERRORS[2])):
            raise  # the model's own ValueError, already clear
        raised = [t for error, t in failed or () if error is e]  # the input of the forward pass that raised e
        if failed is not None and not raised:
            raise  # raised outside the model's forward: the loss's own error
        x = raised[0] if raised and isinstance(raised[0], torch.Tensor) else x
        weight = next((p.dtype for p in model.parameters() if p.is_floating_point()),
                      torch.float32 if int8 else x.dtype)  # an int8 model takes float32 inputs
        if x.dtype != weight and any(w in message for w in ("dtype", "scalar type", "ype (", "Float Tensor")):
            fix = f"x.to({weight})"  # an int8 model, or integer inputs: only the inputs can change
            if x.is_floating_point() and not int8:  # a teacher: changing x would break the student
                fix = f"{who}.to({x.dtype})" if who != "model" else f"model.to({x.dtype}) or {fix}"
            weights = f"the {who} runs int8 kernels on {weight} inputs" if int8 else f"the {who}'s weights are {weight}"
            raise ValueError(f"{weights} but the {what} inputs are {x.dtype}; expected inputs of the {who}'s floating "
                             f"dtype ({fix})") from None
        int8_shape = int8 and any(w in message for w in INT8_SHAPE_ERRORS)
        float_shape = ("cannot be multiplied", "expected input", "to have", "must match the size", "Dimension out of")
        if int8_shape or any(w in message for w in float_shape):
            hint = _first_layer(model, x) if int8 else ""
            raise ValueError(f"the {who} cannot take the {what} inputs of shape {tuple(x.shape)}{hint}: {message}") \
                from None
        raise
    finally:
        for hook in hooks:
            hook.remove()


@contextlib.contextmanager
def named_extra_loss_errors(k: int, fn: Callable) -> Iterator[None]:
    """torch's size errors inside ``distill``'s extra loss ``k`` ("The size of tensor a (8) must match the size of
    tensor b (16)": features of different widths without a connector) become a ValueError naming that loss, rather
    than reaching ``fit``, which would blame the model's inputs. The loss's other errors pass through unchanged."""
    try:
        yield
    except RuntimeError as e:
        message = str(e).splitlines()[0]
        if not any(w in message for w in ("size of tensor", "shapes cannot be multiplied", "must match the size")):
            raise
        raise ValueError(f"extra_losses[{k}] ({getattr(fn, '__name__', type(fn).__name__)}) raised {message}; student "
                         f"and teacher features of different sizes need a connector (kdlite.features.connector)") from e


def _track_forward(model: nn.Module) -> tuple[list, list[tuple[BaseException, torch.Tensor | None]]]:
    """Hooks on ``model`` (remove them when done) that list ``(error, input)`` for each error raised inside its
    forward pass, ``input`` being the first tensor the forward was called with (errors are kept, not their ids,
    which a later error can reuse)."""
    inputs, failed = [], []

    def enter(module: nn.Module, args: tuple, kwargs: dict) -> None:
        inputs.append(next((t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)), None))

    def leave(module: nn.Module, args: tuple, kwargs: dict, output) -> None:  # always_call: also when it raised
        given, error = inputs.pop(), sys.exc_info()[1]
        if output is None and error is not None:
            failed.append((error, given))

    return [model.register_forward_pre_hook(enter, prepend=True, with_kwargs=True),
            model.register_forward_hook(leave, with_kwargs=True, always_call=True)], failed


def _first_layer(model: nn.Module, x: torch.Tensor) -> str:
    """For an int8 model's errors, which do not say what was expected: what its first layer takes ("; its first
    layer, conv1, takes 1 input channels"), or "" when ``x`` gives that and the mismatch is further in."""
    for name, m in model.named_modules():
        channels, features = getattr(m, "in_channels", None), getattr(m, "in_features", None)
        if isinstance(channels, int) and (x.ndim < 3 or x.shape[1] != channels):
            return f"; its first layer, {name}, takes {channels} input channels"
        if isinstance(features, int) and x.shape[-1] != features and x[0].numel() != features:
            return f"; its first layer, {name}, takes {features} input features"
        if isinstance(channels, int) or isinstance(features, int):
            break
    return ""
