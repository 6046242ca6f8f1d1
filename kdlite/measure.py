"""How big and how fast is a model? Parameters, bytes, FLOPs and latency, measured the same way in every chapter;
and how far can its confidence be trusted (calibration)."""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Mapping

import torch
from torch import nn

from . import _checks as checks
from .device import eval_mode, named_input_errors, runs_int8, synchronize
from .huffman import encoded_bits
from .masks import PRUNABLE
from .quant.sharing import SharedWeight, kmeans_quantize


def _packed_weights(module: nn.Module) -> list[torch.Tensor]:
    """The weight and bias of a quantized Linear/Conv, which keeps them packed: ``weight()`` and ``bias()`` are
    methods there, not parameters."""
    if not runs_int8(module) or not callable(getattr(module, "weight", None)):
        return []
    tensors = [module.weight()]
    bias = module.bias() if callable(getattr(module, "bias", None)) else None
    return tensors if bias is None else [*tensors, bias]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (each shared tensor counted once), including the packed weights and biases of
    quantized modules (e.g. from ``quant.to_int8``); those are not trainable, so ``trainable_only`` skips them."""
    checks.module(model), checks.flag(trainable_only, "trainable_only")
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    if not trainable_only:
        total += sum(t.numel() for m in model.modules() for t in _packed_weights(m))  # modules() yields each once
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
    weights of some quantized backends) are measured by serialising the state_dict instead. A pruned model counts
    its dense weights and its masks; ``kdlite.prune.sparse_storage_bytes`` and :func:`deep_compression_size` count
    what a sparse format stores.
    """
    state = checks.module(model).state_dict()
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
    multiply-add of matrix multiplications and convolutions (element-wise work is not counted).

    Quantized models (``quant.to_int8``) raise a ValueError: the flop counter does not see their int8 kernels
    and would report 0. Count the float model instead: int8 does the same multiply-adds.
    """
    from torch.utils.flop_counter import FlopCounterMode

    _check_model_input(model, example_input)
    quantized = next((name for name, m in model.named_modules() if runs_int8(m)), None)
    if quantized is not None:
        kind = type(model.get_submodule(quantized)).__name__
        raise ValueError(
            f"count_flops cannot count {type(model).__name__}: it has quantized modules (e.g. {quantized!r}, a "
            f"quantized {kind}) whose int8 kernels torch's FlopCounterMode does not see, so it would report 0; "
            f"count the float model instead (int8 does the same multiply-adds)"
        )
    with eval_mode(model), FlopCounterMode(display=False) as counter:
        with named_input_errors(model, example_input, "example"):
            model(example_input)
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

    The model runs in eval mode without autograd; on a GPU (CUDA, MPS, XPU) each pass waits for the device to finish
    (``kdlite.device.synchronize``), so that the time is that of the computation, not of launching it. ``threads`` sets
    ``torch.set_num_threads`` for the measurement (restored afterwards).
    """
    _check_timing(model, example_input, warmup, repeats, threads)
    device = example_input.device
    sync = (lambda: None) if device.type == "cpu" else (lambda: synchronize(device))  # nothing to wait for on a CPU
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with eval_mode(model), named_input_errors(model, example_input, "example"):
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
    rounds = checks.integer(rounds, "rounds", 1, what="an int >= 1")
    for name, model in _check_models(models).items():
        _check_timing(model, example_input, warmup, repeats, threads, name=f"models[{name!r}]")
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            times[name].append(latency(model, example_input, warmup, repeats, threads))
    return {name: min(t) for name, t in times.items()}


def profile(model: nn.Module, example_input: torch.Tensor, **latency_kwargs) -> dict[str, float | None]:
    """All four measurements at once: ``params``, ``bytes``, ``flops`` and ``latency`` (seconds, the median of one
    forward pass, as :func:`latency` returns it; print it in ms with ``1e3 * p["latency"]``).

    ``flops`` is None for a quantized model (``quant.to_int8``), whose int8 kernels the flop counter does not
    see (see :func:`count_flops`): take the float model's FLOPs instead.
    """
    _check_model_input(model, example_input)
    quantized = any(runs_int8(m) for m in model.modules())
    return {
        "params": count_params(model),
        "bytes": model_size_bytes(model),
        "flops": None if quantized else count_flops(model, example_input),
        "latency": latency(model, example_input, **latency_kwargs),
    }


def deep_compression_size(
    model: nn.Module, *, weight_bits: int | None = None, index_bits: int | None = None, huffman: bool = False
) -> dict:
    """The storage of ``model``'s prunable layers (``masks.PRUNABLE``) as Deep Compression counts it (Han et al.,
    2016): "how big would this be" after pruning, weight sharing and Huffman coding. Per layer, weights read
    row-major, zeros being the pruned ones:

    - **positions.** With ``index_bits = b`` only the non-zero weights are stored, each with the gap
      d = p_k − p_(k−1) to the previous one (p_0 = −1) in b bits, gaps 1 .. 2^b; a longer gap first stores
      ⌈d / 2^b⌉ − 1 filler zeros (each a stored entry with gap 2^b). With ``index_bits=None`` every weight is
      stored, zeros included, and there are no indices.
    - **values.** A stored entry takes ``weight_bits`` bits, its index in a codebook of 2^weight_bits float32
      centroids (the codebook counted too); with ``weight_bits=None`` a 32-bit float.
    - **Huffman** (``huffman=True``): the centroid indices and the gaps are Huffman-coded separately, each with the
      code of its own counts (``kdlite.huffman``; code tables not counted). A layer not weight-shared yet (no
      ``quant.SharedWeight``) is counted as if it were: k-means with linear initialisation over its non-zero
      weights. Fillers and stored zeros get a symbol of their own.
    - **biases**: 32 bits each.

    ``dense_bytes`` is the float32 storage of the same layers, 4 · (weights + biases); ``ratio`` = dense_bytes /
    bytes (1.0 with the defaults). Returns ``{"bytes", "dense_bytes", "ratio", "layers": {name: {"weights",
    "nonzero", "fillers", "value_bits", "index_bits", "codebook_bits", "bias_bits", "bytes", "dense_bytes"}}}``.
    """
    huffman = checks.flag(huffman, "huffman")
    weight_bits, index_bits = _check_compression(model, weight_bits, index_bits, huffman)
    layers = {}
    for name, m in model.named_modules():
        if not isinstance(m, PRUNABLE):
            continue
        w = m.weight.detach().reshape(-1)
        stored, gaps, fillers = _stored_entries(w, index_bits)  # stored: the weight's position, or -1 (a filler)
        values = len(stored) * (weight_bits or 32)
        if weight_bits and huffman:
            labels = _centroid_labels(m, w, weight_bits)
            values = _huffman_bits(torch.where(stored >= 0, labels[stored.clamp(min=0)], -1))
        index = 0 if index_bits is None else _huffman_bits(gaps) if huffman else len(stored) * index_bits
        bias = 0 if m.bias is None else 32 * m.bias.numel()
        codebook = 32 * 2**weight_bits if weight_bits else 0
        total = values + index + codebook + bias
        dense = 32 * (w.numel() + (0 if m.bias is None else m.bias.numel()))
        layers[name] = {"weights": w.numel(), "nonzero": int((w != 0).sum()), "fillers": fillers,
                        "value_bits": values, "index_bits": index, "codebook_bits": codebook, "bias_bits": bias,
                        "bytes": total / 8, "dense_bytes": dense / 8}
    size, dense = sum(v["bytes"] for v in layers.values()), sum(v["dense_bytes"] for v in layers.values())
    return {"bytes": size, "dense_bytes": dense, "ratio": dense / size if size else float("inf"), "layers": layers}


def _stored_entries(w: torch.Tensor, index_bits: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(which weight each stored entry holds, −1 for a filler zero; the gaps; the number of fillers)."""
    if index_bits is None:
        return torch.arange(len(w), device=w.device), torch.empty(0, dtype=torch.long), 0
    positions = (w != 0).nonzero().reshape(-1)
    gaps = torch.diff(positions, prepend=torch.tensor([-1], device=w.device))
    span = 2**index_bits
    fill = (gaps - 1) // span  # = ceil(d / 2^b) - 1 filler zeros before this weight
    n_fill = int(fill.sum())
    stored = torch.cat([positions, torch.full((n_fill,), -1, device=w.device)])
    return stored, torch.cat([gaps - fill * span, torch.full((n_fill,), span, device=w.device)]), n_fill


def _centroid_labels(layer: nn.Module, w: torch.Tensor, bits: int) -> torch.Tensor:
    """Each weight's centroid index: the layer's own (a SharedWeight) or k-means over its non-zero weights; −1 for a
    zero."""
    shared = getattr(getattr(layer, "parametrizations", None), "weight", [])
    own = next((p.labels.reshape(-1) for p in shared if isinstance(p, SharedWeight)), None)
    labels = torch.full_like(w, -1, dtype=torch.long)
    if own is not None:
        return torch.where(w != 0, own.to(w.device), labels)
    if bool((w != 0).any()):
        labels[w != 0] = kmeans_quantize(w[w != 0], bits)[1]
    return labels


def _huffman_bits(symbols: torch.Tensor) -> int:
    """Huffman-coded bits of ``symbols`` (0 for none)."""
    return encoded_bits(symbols) if len(symbols) else 0


# --- calibration: does a confidence of 0.8 mean 80% correct?


def reliability(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict[str, torch.Tensor]:
    """The reliability diagram's numbers: the predictions binned by confidence (the largest softmax probability)
    into ``n_bins`` equal-width bins B_b = (b / n_bins, (b + 1) / n_bins], open on the left, closed on the right
    (the first bin also holds a confidence of exactly 0), and per bin::

        count_b = |B_b|,   confidence_b = 1/|B_b| · sum_{i in B_b} max_k p_ik,
        accuracy_b = 1/|B_b| · sum_{i in B_b} 1[ŷ_i = y_i],   p_i = softmax(logits_i),  ŷ_i = argmax_k p_ik

    Returns ``{"edges": (n_bins + 1,), "count": (n_bins,), "confidence": (n_bins,), "accuracy": (n_bins,)}``, in
    float64 (``count`` int64) on the CPU, computed there in float64 (small, and ready to plot); an empty bin has NaN
    confidence and accuracy.
    """
    _check_calibration(logits, labels, n_bins)
    confidence, predicted = logits.detach().cpu().double().softmax(-1).max(-1)  # to float64 on the CPU (MPS has none)
    edges = torch.arange(n_bins + 1, dtype=torch.float64) / n_bins
    b = (torch.bucketize(confidence, edges) - 1).clamp(min=0)  # edges[b] < confidence <= edges[b + 1]
    count = torch.bincount(b, minlength=n_bins)
    confidences = torch.bincount(b, weights=confidence, minlength=n_bins)
    correct = torch.bincount(b, weights=(predicted == labels.cpu()).double(), minlength=n_bins)
    return {"edges": edges, "count": count, "confidence": confidences / count, "accuracy": correct / count}


def calibration_error(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """The expected calibration error (Naeini et al., 2015; Guo et al., 2017) over the bins of :func:`reliability`::

        ECE = sum_b |B_b| / n · |accuracy_b − confidence_b|      (empty bins add 0)

    0 for a model whose confidence is its accuracy in every bin; at most 1.
    """
    r = reliability(logits, labels, n_bins)
    full = r["count"] > 0
    weight = r["count"][full].double() / len(labels)  # |B_b| / n, in float64 (int / int would give float32)
    return float((weight * (r["accuracy"][full] - r["confidence"][full]).abs()).sum())


# --- argument checks, out of the reader's way


def _check_model_input(model, example_input, name: str = "model") -> None:
    checks.module(model, name)
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a torch.Tensor (one batch, passed as model(example_input)); got "
                        f"{type(example_input).__name__}")


def _check_timing(model, example_input, warmup, repeats, threads, name: str = "model") -> None:
    _check_model_input(model, example_input, name)
    checks.integer(warmup, "warmup", 0, what="an int >= 0"), checks.integer(repeats, "repeats", 1, what="an int >= 1")
    if threads is not None:
        checks.integer(threads, "threads", 1, what="an int >= 1")


def _check_models(models) -> dict:
    example = "e.g. {'dense': m1, 'pruned': m2}"
    if not isinstance(models, Mapping):
        raise TypeError(f"models must be a dict of name -> model, {example}; got {type(models).__name__}")
    if not models:
        raise ValueError(f"models must name at least one model, {example}")
    return dict(models)


def _check_compression(model, weight_bits, index_bits, huffman) -> tuple[int | None, int | None]:
    checks.layers_of(model, PRUNABLE, "deep_compression_size", "Linear and Conv")
    weight_bits = None if weight_bits is None else checks.bits(weight_bits, "weight_bits")
    index_bits = None if index_bits is None else checks.integer(index_bits, "index_bits", 1, 32, "an int from 1 to 32")
    if huffman and weight_bits is None and index_bits is None:
        raise ValueError("huffman=True codes the centroid indices (weight_bits) and the gaps (index_bits); give at "
                         "least one of them, e.g. weight_bits=5, index_bits=4")
    return weight_bits, index_bits


def _check_calibration(logits, labels, n_bins) -> None:
    """2-D finite logits (examples, classes), one integer label per row among the classes, ``n_bins`` >= 1."""
    checks.float_tensor("logits", logits, min_dim=2)
    if logits.dim() != 2:
        raise ValueError(f"logits must be 2-D (examples, classes); got shape {tuple(logits.shape)}")
    try:
        checks.targets(labels, logits)
    except (TypeError, ValueError) as e:
        raise type(e)(str(e).replace("targets", "labels", 1)) from None
    checks.integer(n_bins, "n_bins", 1)
    checks.not_probabilities(logits, "logits")
