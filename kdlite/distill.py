"""Knowledge distillation as a training step: ``distill`` is ``kdlite.fit`` with a step that asks a frozen
teacher.

There is no second training loop. ``distill`` builds a ``step(student, batch)`` that runs the teacher without
autograd and returns the distillation loss, hands it to ``fit`` together with any extra trainable parameters
(connectors), and guards the teacher: eval mode for the whole run, never updated, and afterwards back in the
train/eval modes and ``requires_grad`` flags it had, even if training fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import TensorDataset

from . import _checks as checks
from .data import DeviceLoader, as_batches
from .device import eval_mode, named_extra_loss_errors, named_input_errors
from .features import tapped_modules
from .losses import MAX_TEMPERATURE, distillation_loss
from .train import Batch, History, fit, training_device

ExtraLoss = Callable[[torch.Tensor, torch.Tensor, Batch], torch.Tensor]
Weight = float | Callable[[int], float]  # a number, or a function of the epoch (1, 2, ...)


def distill(
    student: nn.Module,
    teacher: nn.Module,
    train: Iterable[Batch] | TensorDataset,
    epochs: int,
    *,
    temperature: float,
    alpha: float,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float | None = None,
    extra_losses: Sequence[tuple[Weight, ExtraLoss]] = (),
    cache_teacher: bool = False,
    val: Iterable[Batch] | TensorDataset | None = None,
    **fit_kwargs,
) -> History:
    """Train ``student`` to match ``teacher`` and the labels for ``epochs`` epochs; return fit's History.

    Each step minimises::

        loss = alpha · T^2 · KL(q || p) + (1 - alpha) · CE(s, y) + sum_k w_k · fn_k(s, t, batch)

    with ``s = student(x)``, ``t = teacher(x)`` (under ``torch.no_grad()``, teacher in eval mode) and
    ``distillation_loss`` for the first two terms: alpha weighs the teacher's soft targets.

    Extra losses: ``extra_losses`` is a sequence of ``(weight, fn)`` pairs; ``fn(student_logits,
    teacher_logits, batch)`` returns a scalar. The batch is what the loader yields (``batch[0]`` inputs,
    ``batch[1]`` labels). A weight is a number or a function of the epoch, ``w(epoch) -> float`` with
    ``epoch = 1, 2, ..., epochs`` (called at every step), e.g. the linear warm-up of DKD's published recipe,
    ``lambda epoch: min(epoch / 20, 1.0)``; it needs a ``train`` with a length (a ``TensorDataset``, a
    ``DeviceLoader``, a ``DataLoader``), since the epoch is counted in steps. A feature loss reads
    intermediate features from ``kdlite.features.FeatureTap``s kept open around the call::

        conn = connector(s_shape, t_shape)
        with FeatureTap(student, "features.3") as st, FeatureTap(teacher, "features.7") as tt:
            distill(student, teacher, train, 10, temperature=4, alpha=0.9, extra_params=conn.parameters(),
                    extra_losses=[(1.0, lambda s, t, b: hint_loss(st.features["features.3"],
                                                               tt.features["features.7"], conn))])

    Trainable connectors go in ``extra_params`` (passed to ``fit``'s default optimizer, or already in your
    ``optimizer``); they are not added to the student. On the first step ``distill`` checks that every
    parameter the loss depends on is being optimised, and raises ``ValueError`` if one is not (the known bug
    of adapters left out of the optimizer). Create connectors on the training device.

    Args:
        student, teacher: modules returning logits of the same shape. The teacher is moved to the training
            device (like the student) but otherwise left bit-identical.
        train: as in ``fit``; a ``TensorDataset`` becomes a shuffling ``DeviceLoader`` of batch 128.
        epochs, optimizer, lr, val, **fit_kwargs: passed to ``kdlite.fit`` (not ``step``: that is ours).
        temperature: 0 < T <= 1e4 (see ``kd_loss``).  alpha: in [0, 1], the weight of the soft term.
        cache_teacher: compute the teacher's logits once, on the un-augmented training set, and reuse them
            every epoch (they arrive as ``batch[-1]``). Only for a ``TensorDataset``, a tuple ``(x, y)`` or a
            ``DeviceLoader`` without ``augment``: with augmentation the teacher must see the student's view
            (Beyer et al., 2022). Feature losses that tap the teacher need the live teacher: a teacher with an open
            ``FeatureTap`` raises ``ValueError``.
    """
    temperature, alpha = checks.temperature(temperature, MAX_TEMPERATURE), checks.weight("alpha", alpha, 0.0, 1.0)
    checks.student_and_teacher(student, teacher, shared_tensors)
    extra_losses, cache_teacher = checks.extra_losses(extra_losses), checks.flag(cache_teacher, "cache_teacher")
    _check_no_step(fit_kwargs)
    extra_params = list(fit_kwargs.pop("extra_params", ()))
    fit_kwargs.setdefault("desc", "distill")  # the progress bar's label
    device = training_device(fit_kwargs.get("device"), train)

    teacher.to(device)
    with frozen_teacher(teacher):
        if cache_teacher:
            train = _with_teacher_logits(teacher, train, device)
        steps_per_epoch = None
        if any(callable(weight) for weight, _ in extra_losses):
            train = as_batches(train, 128, shuffle=True, device=device, name="train")  # what fit would do
            steps_per_epoch = _sized(train, "an extra loss weight that depends on the epoch")
        trained = [p for p in student.parameters() if p.requires_grad] + extra_params
        if optimizer is not None:
            trained = [p for group in optimizer.param_groups for p in group["params"]]
        step = _make_step(teacher, temperature, alpha, extra_losses, cache_teacher, trained, steps_per_epoch)
        return fit(student, train, epochs, optimizer=optimizer, lr=lr, val=val, step=step,
                   extra_params=extra_params, **fit_kwargs)


@contextlib.contextmanager
def frozen_teacher(teacher: nn.Module) -> Iterator[nn.Module]:
    """Inside the ``with`` block the teacher is in eval mode (dropout off, BatchNorm on its running statistics)
    with every ``requires_grad`` off; afterwards each module's mode and each parameter's flag are as they were,
    even if training failed."""
    flags = {p: p.requires_grad for p in teacher.parameters()}
    try:
        with eval_mode(teacher):
            yield teacher.requires_grad_(False)
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)


def teacher_logits(teacher: nn.Module, batch: Batch, cached: bool = False) -> torch.Tensor:
    """The teacher's logits for ``batch = (x, y, ...)``: ``batch[-1]`` when ``cached`` (computed once, before
    training: ``distill(..., cache_teacher=True)``), else a forward pass of the teacher without autograd."""
    if cached:
        return batch[-1]
    with torch.no_grad(), named_input_errors(teacher, batch[0], "training", who="teacher"):
        return teacher(batch[0])


def shared_tensors(student: nn.Module, teacher: nn.Module) -> list[str]:
    """Names (in the teacher) of the parameters and buffers that are also the student's."""
    mine = {id(t) for t in [*student.parameters(), *student.buffers()]}
    return [name for name, t in [*teacher.named_parameters(), *teacher.named_buffers()] if id(t) in mine]


def leaf_parameters(loss: torch.Tensor) -> list[torch.Tensor]:
    """The leaf tensors (parameters) that ``loss`` depends on: its autograd graph walked back to the leaves."""
    seen, stack, leaves = set(), [loss.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        leaf = getattr(node, "variable", None)  # AccumulateGrad nodes hold the leaf tensor
        if leaf is not None:
            leaves.append(leaf)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return leaves


def _make_step(teacher, temperature, alpha, extra_losses, cached, trained, steps_per_epoch=None):
    """The ``step(student, batch) -> (loss, logits)`` that ``fit`` minimises. With ``steps_per_epoch``, the
    epoch (1, 2, ...) is counted from the number of steps taken, for the weights that are functions of it."""
    unchecked = [True]
    steps = [0]

    def step(student: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        s = student(batch[0])
        t = teacher_logits(teacher, batch, cached)
        loss = distillation_loss(s, t, batch[1], temperature, alpha, check=unchecked[0])  # checked on step 1
        epoch = steps[0] // steps_per_epoch + 1 if steps_per_epoch else None
        steps[0] += 1
        for k, (weight, fn) in enumerate(extra_losses):
            weight = checks.epoch_weight(k, epoch, weight(epoch)) if callable(weight) else weight
            with named_extra_loss_errors(k, fn):
                term = fn(s, t, batch)
            loss = loss + weight * checks.scalar_loss(k, term, finite=unchecked[0])
        if unchecked[0]:  # once: is every parameter the loss depends on being trained?
            _check_all_trained(leaf_parameters(loss), trained)
            unchecked[0] = False
        return loss, s

    return step


@torch.no_grad()
def _with_teacher_logits(teacher: nn.Module, train, device: torch.device) -> DeviceLoader:
    """A loader over the training set with the teacher's logits appended as the last tensor of every batch."""
    train = as_batches(train, 128, shuffle=True, device=device, name="train") if isinstance(train, tuple) else train
    train = _check_cacheable(train, teacher)
    if isinstance(train, DeviceLoader):
        tensors, batch_size = train.tensors, train.batch_size
        shuffle, drop_last = train.shuffle, train.drop_last
    else:
        tensors, batch_size, shuffle, drop_last = train.tensors, 128, True, False
    x = tensors[0].to(device)
    with named_input_errors(teacher, x, "training", who="teacher"):
        logits = torch.cat([teacher(x[i : i + 1024]).float() for i in range(0, len(x), 1024)])
    loader = DeviceLoader((*tensors, logits), batch_size, shuffle=shuffle, device=device, drop_last=drop_last)
    if isinstance(train, DeviceLoader):
        loader.generator = train.generator  # the same shuffling stream as the loader it replaces
    return loader


# --- checks of distill's own arguments


def _check_no_step(fit_kwargs: dict) -> None:
    if "step" in fit_kwargs:
        raise ValueError("distill builds its own step; pass extra terms through extra_losses, not step=")


def _sized(train, why: str) -> int:
    """``len(train)``, the number of batches in one epoch, which ``why`` needs."""
    try:
        return len(train)
    except TypeError:
        raise ValueError(f"{why} needs a train with a length (a TensorDataset, a DeviceLoader or a DataLoader) to "
                         f"count epochs in steps; got {type(train).__name__}, which has none") from None


def _check_cacheable(train, teacher: nn.Module):
    """A training set whose teacher logits can be computed once: a non-empty TensorDataset, or a DeviceLoader
    without augmentation; and a teacher without an open FeatureTap, whose features cached logits would leave stale."""
    tapped = [name or type(teacher).__name__ for name in tapped_modules(teacher)]
    if tapped:
        raise ValueError(f"cache_teacher=True runs the teacher once, before training, but a FeatureTap is open on its "
                         f"{', '.join(tapped[:4])}: a feature loss would read stale features. Use "
                         f"cache_teacher=False, so that the teacher runs on every batch")
    if isinstance(train, DeviceLoader) and train.augment is not None:
        raise ValueError(f"cache_teacher=True with an augmenting loader (augment="
                         f"{getattr(train.augment, '__name__', train.augment)}): cached logits belong to the "
                         f"un-augmented images, but the teacher must see the student's augmented view (Beyer et al., "
                         f"2022). Use cache_teacher=False, or a loader without augment")
    if not isinstance(train, (DeviceLoader, TensorDataset)):
        raise ValueError(f"cache_teacher=True needs the whole training set: a TensorDataset or a kdlite "
                         f"DeviceLoader (or a tuple (x, y) of tensors); got {type(train).__name__}")
    if len(train.tensors[0]) == 0:
        raise ValueError("cache_teacher=True got an empty training set; expected at least one example")
    return train


def _check_all_trained(leaves: list[torch.Tensor], trained: list[torch.Tensor]) -> None:
    """Every leaf the loss depends on is trained: the known bug of a connector left out of the optimizer."""
    known = {id(p) for p in trained}
    missing = [p for p in leaves if id(p) not in known]
    if missing:
        shapes = ", ".join(str(tuple(p.shape)) for p in missing[:8])
        raise ValueError(f"the distillation loss depends on {len(missing)} parameter tensor(s) that the optimizer "
                         f"does not train (shapes {shapes}); a connector's parameters must be trained with the "
                         f"student: pass extra_params=connector.parameters() to distill (or put them in your "
                         f"optimizer)")
