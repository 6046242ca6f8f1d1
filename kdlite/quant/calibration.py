"""Observed ranges: activation quantizers (``ActQuant``) and the calibration that sets their ranges from data.

Calibration runs a few batches through a model and records each quantized activation's range, by min/max, a
percentile or the histogram clip with the least error; QAT then fine-tunes with those ranges, and PTQ uses them
as they are. The batches come from any data source (``CalibrationData``).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import TensorDataset

from .._checks import finite, integer
from .affine import _RANGES, _check_bits, _check_method, _fake_quantize, scale_zero_point

CalibrationData = torch.Tensor | TensorDataset | Iterable[torch.Tensor | Sequence[torch.Tensor]]
"""What calibration takes: one batch, a ``TensorDataset``, or an iterable of batches (tensors or ``(x, y)``)."""


def _inputs(
    data: CalibrationData, num_batches: int, device: torch.device, name: str = "calibration_data"
) -> Iterator[torch.Tensor]:
    """The first ``num_batches`` input tensors of ``data``, on ``device``, each checked to be a non-empty,
    finite floating-point tensor (``name``: the argument that ``data`` came in as, for the messages).

    ``data`` is a tensor (one batch), a ``TensorDataset`` (batches of 256, in order) or any iterable of
    batches, each a tensor or an ``(x, y, ...)`` tuple whose first element is the input.
    """
    num_batches = integer(num_batches, "num_batches", 1)
    if isinstance(data, torch.Tensor):
        data = [data]
    elif isinstance(data, TensorDataset):
        x = data.tensors[0]
        data = [x[i : i + 256] for i in range(0, len(x), 256)]
    elif not isinstance(data, Iterable):
        raise TypeError(
            f"{name} (the calibration data) must be a tensor, a TensorDataset or an iterable of batches; got "
            f"{type(data).__name__}"
        )
    n = 0
    for batch in data:
        if n == num_batches:
            return
        x = batch if isinstance(batch, torch.Tensor) else batch[0]
        _check_batch(x, f"{name} batch {n}")
        yield x.to(device)
        n += 1
    if n == 0:
        raise ValueError(f"{name} (the calibration data) is empty: expected at least one batch")


def _check_batch(x, where: str) -> None:
    """A calibration input must be a non-empty, finite floating-point tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}: calibration inputs must be tensors (or (x, y) tuples); got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{where}: calibration inputs must be floating-point tensors; got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{where}: calibration inputs must not be empty; got shape {tuple(x.shape)}")
    finite(x, f"{where}: calibration inputs")


class ActQuant(nn.Module):
    """Fake-quantizes activations (unsigned, per tensor) over a range [lo, hi] tracked by an observer.

    Training: exponential moving average of each batch's min and max (lo ← lo + m (min(x) − lo)).
    Calibration (``observing = True``, set by :func:`calibrate`): the running min and max over all batches,
    with quantization off so that later layers see float inputs. Eval: fake-quantizes with the stored range.
    """

    def __init__(self, bits: int = 8, momentum: float = 0.01):
        super().__init__()
        _check_bits(bits)
        if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0 < momentum <= 1:
            raise ValueError(f"momentum must be a number in (0, 1]; got {momentum!r}")
        self.bits, self.momentum, self.observing = bits, momentum, False
        self.register_buffer("lo", torch.tensor(float("inf")))
        self.register_buffer("hi", torch.tensor(float("-inf")))

    def reset(self) -> None:
        """Forget the observed range: the next batch (training) or calibration starts it afresh."""
        self.lo.fill_(float("inf")), self.hi.fill_(float("-inf"))

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        lo, hi = x.min().to(self.lo.dtype), x.max().to(self.hi.dtype)
        if self.observing:
            self.lo.copy_(torch.minimum(self.lo, lo)), self.hi.copy_(torch.maximum(self.hi, hi))
        else:
            fresh = torch.isinf(self.lo)
            self.lo.copy_(torch.where(fresh, lo, self.lo + self.momentum * (lo - self.lo)))
            self.hi.copy_(torch.where(fresh, hi, self.hi + self.momentum * (hi - self.hi)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.observing:
            self._observe(x)
        if self.observing:
            return x
        if not bool(torch.isfinite(self.lo) & torch.isfinite(self.hi)):  # the one device sync of a step
            raise self._range_error()
        return _fake_quantize(x, *scale_zero_point(self.lo, self.hi, self.bits, False), self.bits, False, None)

    def _range_error(self) -> Exception:
        lo, hi = self.lo.item(), self.hi.item()
        if lo == float("inf") and hi == float("-inf"):
            return RuntimeError("ActQuant has no range yet: run calibrate(model, data) or train the model first")
        return ValueError(
            f"ActQuant's range [lo, hi] = [{lo}, {hi}] is not finite: the inputs it observed (in training or "
            f"calibration) contained NaN or inf; call reset() and observe finite inputs"
        )

    def extra_repr(self) -> str:
        return f"bits={self.bits}, lo={self.lo.item():.4g}, hi={self.hi.item():.4g}"


def calibrate(
    model: nn.Module,
    data: CalibrationData,
    num_batches: int = 8,
    method: str = "minmax",
    percentile: float = 99.99,
) -> nn.Module:
    """Set the range [lo, hi] of every :class:`ActQuant` in ``model`` from its float inputs over the first
    ``num_batches`` batches of ``data`` (a tensor, a TensorDataset or an iterable of batches). In place.

    ``method`` as in :func:`qparams`: "minmax" (the running min and max), "percentile" (clip the rarest
    ``100 - percentile`` % at each end) or "histogram" (the clip with the least quantization MSE). The last two
    keep every observed input in memory until the ranges are set. NaN or inf in ``data``, or in the activations
    it produces, raises a ValueError.
    """
    return _calibrate(model, data, num_batches, method, percentile, "data")


@torch.no_grad()
def _calibrate(model: nn.Module, data, num_batches: int, method: str, percentile: float, name: str) -> nn.Module:
    """:func:`calibrate`, with ``name`` the argument ``data`` came in as (for the messages)."""
    _check_method(method, percentile)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    quants = [m for m in model.modules() if isinstance(m, ActQuant)]
    if not quants:
        raise ValueError("model has no ActQuant layers to calibrate; expected a model from prepare_qat")
    device = next(model.parameters()).device
    seen: dict[ActQuant, list[torch.Tensor]] = {q: [] for q in quants}
    hooks = [] if method == "minmax" else [
        q.register_forward_pre_hook(lambda m, args: seen[m].append(args[0].detach().flatten())) for q in quants
    ]
    was_training = model.training
    model.eval()
    for q in quants:
        q.reset()
        q.observing = True
    try:
        for x in _inputs(data, num_batches, device, name):
            model(x)
    finally:
        for q in quants:
            q.observing = False
        for h in hooks:
            h.remove()
        model.train(was_training)
    _check_ranges(model)
    if method != "minmax":
        for q in quants:
            if seen[q]:  # an ActQuant that the forward pass skips keeps no range
                lo, hi = _RANGES[method](torch.cat(seen[q])[None].float(), q.bits, False, percentile)
                q.lo.fill_(lo.item()), q.hi.fill_(hi.item())
    return model


def _check_ranges(model: nn.Module) -> None:
    """Raise if calibration gave an ActQuant a NaN or infinite range (its inputs held NaN or inf)."""
    for name, q in model.named_modules():
        if isinstance(q, ActQuant) and not (q.lo.item() == float("inf") and q.hi.item() == float("-inf")):
            if not bool(torch.isfinite(q.lo) & torch.isfinite(q.hi)):
                raise ValueError(
                    f"calibration gave the ActQuant {name!r} the range [{q.lo.item()}, {q.hi.item()}]: the "
                    f"activations there contain NaN or inf although the calibration inputs are finite; check "
                    f"the model's weights"
                )
