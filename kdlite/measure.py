"""How big and how fast is a model? Parameters, bytes, FLOPs and latency, measured the same way in every chapter."""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Mapping

import torch
from torch import nn


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (each shared tensor counted once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def _tensor_bytes(obj) -> int:
    """Bytes of the tensors inside ``obj`` (tensors, quantized tensors, and tuples/lists/dicts of them)."""
    if isinstance(obj, torch.Tensor):
        size = obj.numel() * obj.element_size()
        if obj.is_quantized:  # int8 storage plus its scale(s) and zero point(s)
            per_channel = obj.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
            size += _tensor_bytes((obj.q_per_channel_scales(), obj.q_per_channel_zero_points())) if per_channel else 8
        return size
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (tuple, list)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of the model as stored: every tensor of its ``state_dict`` (weights and buffers), at its own dtype.

    A float32 weight costs 4 bytes an element, bf16 2, int8 1. Objects that hold no plain tensor (packed
    weights of some quantized backends) are measured by serialising the state_dict instead.
    """
    state = model.state_dict()
    size = _tensor_bytes(state)
    opaque = [k for k, v in state.items() if not isinstance(v, torch.Tensor) and _tensor_bytes(v) == 0]
    if opaque:
        buf = io.BytesIO()
        torch.save({k: state[k] for k in opaque}, buf)
        size += buf.getbuffer().nbytes
    return size


@torch.no_grad()
def count_flops(model: nn.Module, example_input: torch.Tensor) -> int:
    """FLOPs of one forward pass on ``example_input``, as ``torch.utils.flop_counter`` counts them: 2 per
    multiply-add of matrix multiplications and convolutions (element-wise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(example_input)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


@torch.no_grad()
def latency(
    model: nn.Module,
    example_input: torch.Tensor,
    warmup: int = 5,
    repeats: int = 30,
    threads: int | None = None,
) -> float:
    """Median wall time in seconds of one forward pass on ``example_input``, after ``warmup`` untimed passes.

    The model runs in eval mode without autograd; on CUDA each pass is synchronised. ``threads`` sets
    ``torch.set_num_threads`` for the measurement (restored afterwards).
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1; got warmup={warmup}, repeats={repeats}")
    sync = torch.cuda.synchronize if example_input.device.type == "cuda" else (lambda: None)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    was_training = model.training
    model.eval()
    try:
        for _ in range(warmup):
            model(example_input)
        sync()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(example_input)
            sync()
            times.append(time.perf_counter() - t0)
    finally:
        model.train(was_training)
        torch.set_num_threads(old_threads)
    return statistics.median(times)


def compare_latency(
    models: Mapping[str, nn.Module],
    example_input: torch.Tensor,
    rounds: int = 5,
    warmup: int = 1,
    repeats: int = 5,
    threads: int | None = None,
) -> dict[str, float]:
    """Latency in seconds of each model on the same input, measured so that the numbers can be compared.

    The models take turns: in each of ``rounds`` rounds every model is timed once with :func:`latency` (the
    median of ``repeats`` passes after ``warmup``). A model's result is its fastest round: other processes can
    only slow a pass down, and taking turns exposes every model to the same load. A speed-up is a ratio of two
    results, e.g. ``t["dense"] / t["pruned"]``.
    """
    if not models:
        raise ValueError("models must name at least one model, e.g. {'dense': m1, 'pruned': m2}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive int; got {rounds!r}")
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            times[name].append(latency(model, example_input, warmup, repeats, threads))
    return {name: min(t) for name, t in times.items()}


def profile(model: nn.Module, example_input: torch.Tensor, **latency_kwargs) -> dict[str, float]:
    """All four measurements at once: ``params``, ``bytes``, ``flops`` and ``latency_ms`` (median, one forward)."""
    return {
        "params": count_params(model),
        "bytes": model_size_bytes(model),
        "flops": count_flops(model, example_input),
        "latency_ms": 1e3 * latency(model, example_input, **latency_kwargs),
    }
