"""Training and evaluation: one loop for every chapter.

``fit`` trains any model on any iterable of ``(x, y, ...)`` batches (a ``DeviceLoader`` or a torch
``DataLoader``) and returns a :class:`History`. What is minimised is a ``step`` function
``step(model, batch) -> (loss, logits)``; the default is cross-entropy, and ``kdlite.distill`` passes its own.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import time
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from . import _checks as checks
from ._checks import integer
from .data import as_batches
from .device import eval_mode, get_device, named_input_errors, runs_int8, seed_everything  # noqa: F401  (kdlite.train.get_device, as before)
from .progress import progress_bar, show_progress

Batch = Sequence[torch.Tensor]
Step = Callable[[nn.Module, Batch], tuple[torch.Tensor, torch.Tensor]]


class History:
    """Per-epoch metrics of a training run: ``history["val_accuracy"]`` is a list, ``history.last`` a dict.
    ``"val_acc"`` and ``"train_acc"``, the names of kdlite 0.1, still index the accuracies."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def append(self, **metrics: float) -> None:
        self.epochs.append(dict(metrics))

    def __getitem__(self, key: str) -> list[float]:
        key = {"val_acc": "val_accuracy", "train_acc": "train_accuracy"}.get(key, key)
        if self.epochs and key not in self.epochs[-1]:
            raise KeyError(f"no metric {key!r}; this history has: {', '.join(self.epochs[-1])}")
        return [e[key] for e in self.epochs if key in e]

    def __len__(self) -> int:
        return len(self.epochs)

    @property
    def last(self) -> dict[str, float]:
        return self.epochs[-1] if self.epochs else {}

    def plot(self, keys: Sequence[str] | None = None, ax=None):
        """Plot the losses and accuracies against the epoch; returns the matplotlib axes (two of them)."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(1, 2, figsize=(9, 3.2))
        keys = keys or [k for k in self.last if k.endswith(("loss", "accuracy"))]
        epochs = range(1, len(self) + 1)
        for k in keys:
            a = ax[0] if k.endswith("loss") else ax[1]
            a.plot(epochs, self[k], marker="o", ms=3, label=k)
        for a, name in zip(ax, ("loss", "accuracy"), strict=True):
            a.set_xlabel("epoch")
            a.set_ylabel(name)
            a.grid(alpha=0.3)
            if a.lines:
                a.legend()
        return ax

    def __repr__(self) -> str:
        last = ", ".join(f"{k}={v:.4g}" for k, v in self.last.items())
        return f"History({len(self)} epochs; last: {last})"


def cross_entropy_step(
    model: nn.Module, batch: Batch, check_labels: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The default training step: ``logits = model(x)``, loss = cross-entropy(logits, y).

    Classes are the last dimension: a language model's ``(B, T, V)`` logits with ``(B, T)`` targets give the mean
    cross-entropy over all ``B·T`` tokens. ``check_labels`` (``fit`` sets it on its first batch) checks that ``y``
    holds class indices the logits can take: a clear error instead of torch's "Target 7 is out of bounds", or a CUDA
    device-side assert."""
    x, y = batch[0], batch[1]
    logits = model(x)
    if check_labels:
        _check_logits(logits)
        _check_labels(y, logits, "the training data")
    return F.cross_entropy(logits.float().flatten(0, -2), y.long().flatten()), logits  # any integer labels


def _check_labels(y: torch.Tensor, logits: torch.Tensor, where: str) -> None:
    try:
        checks.targets(y, logits)
    except (TypeError, ValueError) as e:
        message = str(e).replace("targets", "labels", 1)
        raise ValueError(f"labels of {where}: {message}; the model outputs {logits.shape[-1]} classes") from None


def _finite(value) -> bool:
    """Is ``value`` a finite real number (not a bool, not a string)?"""
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


def _data_device(data) -> torch.device | None:
    return getattr(data, "device", None)


def training_device(device: str | torch.device | None, data) -> torch.device:
    """Where training runs: ``device`` if given, else the data's (a ``DeviceLoader``'s), else ``get_device()``."""
    return get_device(device) if device is not None else (_data_device(data) or get_device())


def _bf16_native(device: torch.device) -> bool:
    """Does this CUDA GPU compute in bf16 natively (Ampere and newer)? A T4 emulates it, slowly."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch without the argument
        return torch.cuda.get_device_capability(device)[0] >= 8


def _autocast(device: torch.device, amp: bool | None):
    """bf16 autocast by default on CUDA GPUs that compute bf16 natively, float32 elsewhere; amp=True forces
    it on any device, amp=False turns it off.

    bf16 keeps float32's exponent range, so no loss scaling is needed; on older GPUs (a T4) and most CPUs it is
    emulated and slower than float32, so it is off there unless amp=True asks for it (CPUs with AMX units,
    recent Intel Xeons, train a ResNet about twice as fast with it)."""
    enabled = checks.flag(amp, "amp") if amp is not None else device.type == "cuda" and _bf16_native(device)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Iterable[Batch] | TensorDataset,
    device: str | torch.device | None = None,
    amp: bool | None = None,
) -> dict[str, float]:
    """Mean cross-entropy ``"loss"`` and ``"accuracy"`` (a fraction) of ``model`` on ``data``, in eval mode, over
    ``"n"`` targets: examples, or the tokens of a language model's ``(B, T)`` targets (its logits ``(B, T, V)``).

    ``data`` is any iterable of ``(x, y, ...)`` batches, or a ``TensorDataset``. The model's train/eval mode is
    restored afterwards.
    """
    checks.module(model)
    device = get_device(device) if device is not None else (_data_device(data) or _model_device(model))
    data = as_batches(data, 1024, shuffle=False, device=device)
    total_loss, correct, n = torch.zeros((), device=device), torch.zeros((), device=device), 0
    with eval_mode(model):
        for i, batch in enumerate(data):
            x, y, *_ = _on_device(batch, device, first=i == 0, what="evaluation")
            with _autocast(device, amp), named_input_errors(model, x, "evaluation"):
                logits = model(x)
            if n == 0:
                _check_logits(logits)
                _check_labels(y, logits, "the evaluation data")
                checks.all_labels(data, logits, "the evaluation data")  # a whole-tensor loader: every label, once
            with _label_errors(f"the evaluation data (batch {i})"):
                total_loss += F.cross_entropy(logits.float().flatten(0, -2), y.long().flatten(), reduction="sum")
            correct += (logits.argmax(-1) == y).sum()
            n += y.numel()
    if n == 0:
        raise ValueError("evaluate got no batches: data is empty (a generator is used up after one pass)")
    loss = total_loss.item() / n
    if not math.isfinite(loss):
        raise FloatingPointError(f"evaluate: the loss on the data is {loss} (NaN or inf inputs, or a model whose "
                                 f"weights are no longer finite); accuracy on such outputs means nothing")
    return {"loss": loss, "accuracy": correct.item() / n, "n": n}


def _model_device(model: nn.Module) -> torch.device:
    """Where the model's tensors live: its first parameter's device, else its first buffer's (an int8 model
    has no float parameters), else ``get_device()``."""
    t = next(iter(model.parameters()), None)
    if t is None:
        t = next(iter(model.buffers()), None)
    return t.device if t is not None else get_device()


def fit(
    model: nn.Module,
    train: Iterable[Batch] | TensorDataset,
    epochs: int,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float | None = None,
    weight_decay: float = 5e-4,
    scheduler: str | None = "onecycle",
    val: Iterable[Batch] | TensorDataset | None = None,
    step: Step = cross_entropy_step,
    extra_params: Iterable[nn.Parameter] = (),
    after_step: Callable[[], None] | None = None,
    device: str | torch.device | None = None,
    amp: bool | None = None,
    progress: bool | None = None,
    desc: str = "train",
) -> History:
    """Train ``model`` for ``epochs`` epochs; return a :class:`History` (``train_loss``, ``train_accuracy``, and
    ``val_loss``, ``val_accuracy`` when ``val`` is given, ``lr``, ``time``).

    Each epoch calls ``model.train()``, which puts every submodule in train mode, as a plain PyTorch loop does: a
    part you want kept in eval mode (a BatchNorm's frozen statistics) needs a ``step`` that sets it back to eval
    before its forward pass.

    Args:
        model: any module returning logits.
        train: an iterable of ``(x, y, ...)`` batches; a ``TensorDataset`` is wrapped in a shuffling
            ``DeviceLoader`` of batch 128.
        epochs: number of passes over ``train``.
        optimizer: your own optimizer (then no scheduler is added unless you ask). The default, which trains the
            book's models well without tuning, is AdamW(lr=5e-3, weight_decay=5e-4) with a one-cycle schedule.
        lr: learning rate of the default optimizer (cannot be combined with ``optimizer``).
        weight_decay: of the default optimizer.
        scheduler: ``"onecycle"`` (warm-up, then cosine decay, stepped per batch; runs of fewer than 10 steps
            use ``"cosine"``), ``"cosine"`` or ``None``.
        val: data evaluated after every epoch.
        step: ``step(model, batch) -> (loss, logits)``; the default is cross-entropy on ``batch[:2]``. Accuracy
            counts the targets ``y = batch[1]`` predicted right: per token for a language model's ``(B, T)``.
        extra_params: more parameters for the default optimizer (e.g. feature-distillation connectors).
        after_step: called after each optimizer step (e.g. to re-apply pruning masks).
        device: default: the data's device (a ``DeviceLoader``'s), else ``kdlite.get_device()``.
        amp: bf16 autocast (default: on CUDA GPUs with native bf16, Ampere and newer; ``True`` forces it on
            any device, a CPU included; ``False`` turns it off).
        progress: a tqdm progress bar with live loss and accuracy (default on; off with ``KDLITE_PROGRESS=0``).
        desc: the progress bar's label.
    """
    epochs = integer(epochs, "epochs", 0)
    _check_fit(model, optimizer, lr, weight_decay, scheduler)
    device = training_device(device, train)
    train = as_batches(train, 128, shuffle=True, device=device, name="train")
    val = None if val is None else as_batches(val, 1024, shuffle=False, device=device, name="val")
    model.to(device)
    steps = len(train) if hasattr(train, "__len__") else None  # per epoch; a plain generator has no length
    sched = None
    if optimizer is None:
        optimizer, sched = default_optimizer(model, extra_params, lr, weight_decay, scheduler, epochs * (steps or 0))
    peak = max(g.get("max_lr", g["lr"]) for g in optimizer.param_groups)  # one-cycle's peak, else lr
    history, bar = History(), progress_bar(progress, epochs, steps, desc)
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            t0, last_good = time.perf_counter(), {k: v.detach().clone() for k, v in model.state_dict().items()}
            loss_sum, correct, n = torch.zeros((), device=device), torch.zeros((), device=device), 0
            for i, batch in enumerate(train):
                batch = _on_device(batch, device, first=epoch == 1 and i == 0)
                with _autocast(device, amp):
                    loss, logits = _first_step(step, model, batch, train) if epoch == 1 and i == 0 else \
                        _labelled(step, model, batch, i, epoch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if sched is not None:
                    sched.step()
                if after_step is not None:
                    after_step()
                y = batch[1]  # (B,) labels, or (B, T) tokens: accuracy is per label or per token
                loss_sum += loss.detach().float() * y.numel()
                correct += (logits.detach().argmax(-1).reshape(y.shape) == y).sum()
                n += y.numel()
                show_progress(bar, i, epoch, loss_sum, correct, n)
            try:
                metrics = {"epoch": epoch, **_epoch_metrics(loss_sum, correct, n, epoch, peak)}
            except FloatingPointError:
                model.load_state_dict(last_good)  # the weights the epoch started with, not NaN ones
                raise
            if val is not None:
                ev = evaluate(model, val, device=device, amp=amp)
                metrics.update(val_loss=ev["loss"], val_accuracy=ev["accuracy"])
            metrics.update(lr=optimizer.param_groups[0]["lr"], time=time.perf_counter() - t0)
            history.append(**metrics)
    finally:
        if bar is not None:
            bar.close()
    return history


def default_optimizer(
    model: nn.Module,
    extra_params: Iterable[nn.Parameter] = (),
    lr: float | None = None,
    weight_decay: float = 5e-4,
    scheduler: str | None = "onecycle",
    total_steps: int = 0,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """``fit``'s recipe: AdamW (lr 5e-3 unless given) over the model's trainable parameters and ``extra_params``,
    and a schedule over ``total_steps``, stepped per batch: ``"onecycle"`` (20% warm-up, then cosine decay; runs of
    fewer than 10 steps get plain cosine decay, which needs no warm-up room), ``"cosine"``, or ``None`` (constant
    learning rate, as with ``total_steps=0``). Returns ``(optimizer, scheduler or None)``."""
    params = [p for p in model.parameters() if p.requires_grad] + list(extra_params)
    _check_trainable(params, model)
    lr = 5e-3 if lr is None else lr
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if scheduler is None or total_steps <= 0:
        return optimizer, None
    if scheduler == "onecycle" and total_steps >= 10:
        return optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=total_steps, pct_start=0.2)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)


def _check_fit(model, optimizer, lr, weight_decay, scheduler) -> None:
    checks.trained_by(optimizer, model)
    if optimizer is not None and lr is not None:
        raise ValueError("pass either optimizer or lr, not both: lr sets the default optimizer's learning rate")
    if lr is not None and not (_finite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number; got {lr!r}")
    if not (_finite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0; got {weight_decay!r}")
    if scheduler not in ("onecycle", "cosine", None):
        raise ValueError(f"scheduler must be 'onecycle', 'cosine' or None; got {scheduler!r}")


def _check_trainable(params: list, model: nn.Module) -> None:
    if not params:
        why = ("it runs int8 kernels (from to_int8 or dynamic_int8), which do not train: train the float model, or "
               "prepare_qat(model) to train for int8") if any(runs_int8(m) for m in model.modules()) else \
              "every parameter has requires_grad=False: unfreeze what should train, or pass extra_params"
        raise ValueError(f"fit has nothing to train: {type(model).__name__} has no trainable parameters and no "
                         f"extra_params; {why}")


def _first_step(step: Step, model: nn.Module, batch: Batch, train) -> tuple[torch.Tensor, torch.Tensor]:
    """The first step of a run, with the label checks (the batch's labels, then every label of the loader) and a
    model whose dtype does not match the inputs named as such."""
    with named_input_errors(model, batch[0], "training", forward_only=True):
        if step is cross_entropy_step:
            loss, logits = step(model, batch, check_labels=True)
        else:
            loss, logits = _labelled(step, model, batch, 0, 1)
    checks.all_labels(train, logits)  # a whole-tensor loader: every label, once
    return loss, logits


def _epoch_metrics(loss_sum, correct, n: int, epoch: int, peak: float) -> dict:
    """``train_loss`` and ``train_accuracy`` of an epoch; a non-finite loss raises, naming the learning rate and the
    inputs as the usual suspects (``fit`` then restores the weights the epoch started with)."""
    if n == 0:
        why = ("train gave batches in epoch 1 but none now: a generator is used up after one epoch (any one-shot "
               "iterator is); pass a TensorDataset, a DeviceLoader or a list of batches") if epoch > 1 else \
              ("the training data is empty, or drop_last=True with a batch_size larger than the data leaves no batch")
        raise ValueError(f"fit got no batches in epoch {epoch}: {why}")
    train_loss = loss_sum.item() / n
    if not math.isfinite(train_loss):
        raise FloatingPointError(
            f"training loss became {train_loss} in epoch {epoch}; the learning rate (peak {peak:.3g}) may be too "
            f"high, or the inputs contain NaN/inf. The model's weights are restored to those it had at the start "
            f"of epoch {epoch}.")
    return {"train_loss": train_loss, "train_accuracy": correct.item() / n}


# --- torch's errors said in kdlite's words


def _labelled(step, model: nn.Module, batch, i: int, epoch: int):
    """``step(model, batch)``, with torch's "Target 7 is out of bounds" said in kdlite's words."""
    with _label_errors(f"the training data (batch {i} of epoch {epoch})"):
        return step(model, batch)


@contextlib.contextmanager
def _label_errors(where: str):
    """torch's "Target 7 is out of bounds" (a bad label after the checked first batch) as a ValueError, and where."""
    try:
        yield
    except IndexError as e:
        if "out of bounds" not in str(e):
            raise
        raise ValueError(f"labels of {where}: {e} Expected class indices in [0, C - 1] for a model with C "
                         f"outputs.") from None


def _on_device(batch, device: torch.device, first: bool, what: str = "training") -> list[torch.Tensor]:
    """The batch's tensors on ``device``; the first batch of a run must be a tuple or list (x, y, ...) of tensors."""
    listed = isinstance(batch, (tuple, list))
    if first and not (listed and len(batch) >= 2 and all(isinstance(t, torch.Tensor) for t in batch)):
        of = f" of {[type(t).__name__ for t in batch]}" if listed else ""
        raise TypeError(f"each {what} batch must be a tuple or list (x, y, ...) of tensors, inputs then labels; "
                        f"the first batch is a {type(batch).__name__}{of}")
    return [t.to(device, non_blocking=True) for t in batch]


def _check_logits(value) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"the model must return a tensor of logits; it returned a {type(value).__name__} (for "
                        f"(logits, features): fit takes a step= that picks them; evaluate takes logits only)")
