"""Observed ranges: activation quantizers (``ActQuant``) and the calibration that sets their ranges from data.

Calibration runs a few batches through a model and records each quantized activation's range, by min/max, a
percentile or the histogram clip with the least error; QAT then fine-tunes with those ranges, and PTQ uses them
as they are. The batches come from any data source (``CalibrationData``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import TensorDataset

from .. import _checks as checks
from ..data import as_batches
from ..device import eval_mode, named_input_errors
from ._checks import range_method
from .affine import RANGES, fake_quantize, scale_zero_point

CalibrationData = torch.Tensor | TensorDataset | Iterable[torch.Tensor | Sequence[torch.Tensor]]
"""What calibration takes: one batch, a ``TensorDataset``, or an iterable of batches (tensors or ``(x, y)``)."""


def calibration_inputs(
    data: CalibrationData, num_batches: int, device: torch.device, name: str = "data", token_ids: bool = False
) -> Iterator[torch.Tensor]:
    """The inputs of the first ``num_batches`` batches of ``data``, on ``device``, each checked to be a non-empty,
    finite floating-point tensor, or with ``token_ids=True`` (a model with an ``nn.Embedding``) also integer ids
    (``name``: the argument ``data`` came in as, for the messages).

    ``data`` is a tensor (one batch of inputs), or anything ``kdlite.data.as_batches`` takes (a ``TensorDataset``,
    a loader, an iterable of batches), in order, in batches of 256; a batch is a tensor or an ``(x, y, ...)``
    tuple whose first element is the input.
    """
    num_batches = checks.integer(num_batches, "num_batches", 1)
    what = f"{name} (the calibration data)"
    batches = [data] if isinstance(data, torch.Tensor) else as_batches(data, 256, device=device, name=what)
    n = 0
    for batch in batches:
        if n == num_batches:
            return
        x = batch if isinstance(batch, torch.Tensor) else batch[0]
        checks.tensor(x, "inputs", floating=not token_ids, nonempty=True, where=f"{name} batch {n}: calibration ")
        checks.finite(x, f"{name} batch {n}: calibration inputs")
        yield x.to(device)
        n += 1
    if n == 0:
        raise ValueError(f"{what} is empty: expected at least one batch")


class ActQuant(nn.Module):
    """Fake-quantizes activations (unsigned, per tensor) over a range [lo, hi] tracked by an observer.

    Training: exponential moving average of each batch's min and max (lo ← lo + m (min(x) − lo)).
    Calibration (``observing = True``, set by :func:`calibrate`): the running min and max over all batches,
    with quantization off so that later layers see float inputs. Eval: fake-quantizes with the stored range.
    """

    def __init__(self, bits: int = 8, momentum: float = 0.01):
        super().__init__()
        bits, momentum = checks.bits(bits), checks.real(momentum, "momentum", 0, 1)
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
        scale, zero_point = scale_zero_point(self.lo, self.hi, self.bits, False)
        return fake_quantize(x, scale, zero_point, self.bits, check=False)

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


def _reads_ids(model: nn.Module) -> bool:
    """Does ``model`` read token ids (it has an ``nn.Embedding``, as a language model does)?"""
    return any(isinstance(m, nn.Embedding) for m in model.modules())


@torch.no_grad()
def calibrate(
    model: nn.Module,
    data: CalibrationData,
    num_batches: int = 8,
    method: str = "minmax",
    percentile: float = 99.99,
) -> nn.Module:
    """Set the range [lo, hi] of every :class:`ActQuant` in ``model`` from its float inputs over the first
    ``num_batches`` batches of ``data`` (a tensor, a TensorDataset or an iterable of batches; token ids for a
    model with an ``nn.Embedding``, such as ``kdlite.models.GPT`` with a ``TextLoader``). In place.

    ``method`` as in :func:`qparams`: "minmax" (the running min and max), "percentile" (clip the rarest
    ``100 - percentile`` % at each end) or "histogram" (the clip with the least quantization MSE). The last two
    keep every observed input in memory until the ranges are set. NaN or inf in ``data``, or in the activations
    it produces, raises a ValueError; a calibration that fails leaves the ranges as they were.
    """
    range_method(method, percentile, RANGES)
    quants = [m for m in checks.module(model).modules() if isinstance(m, ActQuant)]
    if not quants:
        raise ValueError("model has no ActQuant layers to calibrate; expected a model from prepare_qat")
    device = next(model.parameters()).device
    seen: dict[ActQuant, list[torch.Tensor]] = {q: [] for q in quants}
    hooks = [] if method == "minmax" else [
        q.register_forward_pre_hook(lambda m, args: seen[m].append(args[0].detach().flatten())) for q in quants
    ]
    before = {q: (q.lo.clone(), q.hi.clone()) for q in quants}  # put back if calibration fails
    for q in quants:
        q.reset()
        q.observing = True
    try:
        with eval_mode(model):
            for x in calibration_inputs(data, num_batches, device, token_ids=_reads_ids(model)):
                with named_input_errors(model, x, "calibration"):
                    model(x)
        _check_ranges(model)
        if method != "minmax":
            for q in quants:
                if seen[q]:  # an ActQuant that the forward pass skips keeps no range
                    lo, hi = RANGES[method](torch.cat(seen[q])[None].float(), q.bits, False, percentile)
                    q.lo.fill_(lo.item()), q.hi.fill_(hi.item())
    except BaseException:
        for q, (lo, hi) in before.items():
            q.lo.copy_(lo), q.hi.copy_(hi)
        raise
    finally:
        for q in quants:
            q.observing = False
        for h in hooks:
            h.remove()
    return model


def _check_ranges(model: nn.Module) -> None:
    """Raise if calibration gave an ActQuant a NaN or infinite range (its inputs held NaN or inf)."""
    for name, q in model.named_modules():
        if isinstance(q, ActQuant) and not (q.lo.item() == float("inf") and q.hi.item() == float("-inf")):
            if not bool(torch.isfinite(q.lo) & torch.isfinite(q.hi)):
                raise ValueError(f"calibration gave the ActQuant {name!r} the range [{q.lo.item()}, {q.hi.item()}]: "
                                 f"the activations there contain NaN or inf although the calibration inputs are "
                                 f"finite; check the model's weights")
