"""Robustness: input noise, local corruptions and adversarial attacks, on inputs in [0, 1].

Every function takes a batch ``x`` of inputs in [0, 1] (images scaled by 1/255, before any normalisation) and
returns new inputs of the same shape and dtype, in [0, 1], detached, on ``x``'s device; ``x`` itself is left as it
is. The corruptions (``gaussian_noise``, ``blur``, ``contrast``, ``shift``) need no model. The attacks (``fgsm``,
``pgd``) read the model only: they run it inside ``kdlite.device.eval_mode`` and take the gradient with respect to
the inputs alone, so the model's parameters, their ``.grad``, its BatchNorm statistics and every submodule's
train/eval mode are as they were.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from . import _checks as checks
from .device import eval_mode, named_input_errors

# --- corruptions: no model, one formula each


def gaussian_noise(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Additive Gaussian noise, clipped to the valid range::

        x~ = clip(x + σ · z, 0, 1),   z ~ N(0, 1) independently for every element

    ``sigma = 0`` returns a copy of ``x``. The noise is drawn on ``generator``'s device (then moved to ``x``'s), so
    a seeded CPU generator gives the same noise for data on any device.
    """
    _check_inputs(x)
    sigma = checks.weight("sigma", sigma, 0.0)
    device = x.device if generator is None else generator.device
    z = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
    return (x + sigma * z).clamp(0, 1).detach()


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of images ``(..., H, W)``, each channel on its own, with the separable kernel::

        k_i = exp(−i² / 2σ²) / sum_j exp(−j² / 2σ²),   i, j = −r .. r,   r = ⌈3σ⌉

    applied along the rows, then along the columns (``conv2d``); the border is extended by repeating the edge
    pixels, so that a constant image stays constant. ``sigma = 0`` returns a copy of ``x``.
    """
    _check_inputs(x, images=True)
    sigma = checks.weight(f"sigma (for {x.shape[-2]}×{x.shape[-1]} images, at most their larger side)", sigma, 0.0,
                          max(x.shape[-2:]))  # beyond it the image is flat, and the kernel's radius would be huge
    if sigma == 0:
        return x.detach().clone()
    r = math.ceil(3 * sigma)
    i = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(i**2) / (2 * sigma**2))
    k = k / k.sum()
    planes = F.pad(x.detach().reshape(-1, 1, *x.shape[-2:]), (r, r, r, r), mode="replicate")
    planes = F.conv2d(F.conv2d(planes, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
    return planes.reshape(x.shape).clamp(0, 1)


def contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Contrast scaled by ``factor`` around each example's mean m (over all its values: channels and pixels)::

        x~ = clip((x − m) · factor + m, 0, 1)

    ``factor`` < 1 lowers the contrast (0: a flat grey image at the mean), > 1 raises it, 1 returns a copy.
    """
    _check_inputs(x)
    factor = checks.weight("factor", factor, 0.0)
    mean = x.detach().mean(dim=tuple(range(1, x.dim())), keepdim=True)
    return ((x.detach() - mean) * factor + mean).clamp(0, 1)


def shift(x: torch.Tensor, pixels: int | tuple[int, int]) -> torch.Tensor:
    """Images ``(..., H, W)`` translated by whole pixels, down by ``dy`` and right by ``dx`` (negative: up, left),
    the uncovered pixels set to 0::

        x~[..., i, j] = x[..., i − dy, j − dx]   where that pixel exists, else 0

    ``pixels`` is ``(dy, dx)``, or one int ``n`` for ``(n, n)``. Unlike ``torch.roll``, nothing wraps around: a
    shift by the whole height or width leaves a black image.
    """
    _check_inputs(x, images=True)
    dy, dx = _check_pixels(pixels)
    h, w = x.shape[-2:]
    dy, dx = max(-h, min(dy, h)), max(-w, min(dx, w))  # beyond the image, everything is uncovered
    return F.pad(x.detach(), (dx, -dx, dy, -dy))  # a negative pad crops: pad one side, crop the other


# --- adversarial attacks: steps along the sign of the input gradient, kept in the ε-ball around x


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The gradient of the summed cross-entropy with respect to the inputs, the direction the attacks step along::

        g = ∇ₓ sum_n CE(f(x_n), y_n)

    The sum, not the mean: each example's gradient does not shrink with the batch size. ``model`` runs in eval mode
    and is left as it was; only ``x`` gets a gradient (the parameters' ``.grad`` are not touched). An example whose
    gradient is exactly 0 (a softmax saturated to 1.0 in the input's precision) cannot be moved by FGSM or PGD.
    """
    checks.module(model)
    _check_inputs(x)
    _check_labels(y, x)
    with eval_mode(model):
        return _gradient(model, x, y)


def _gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """:func:`input_gradient` without the checks, with the model as it is (the attacks call it inside eval_mode)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad(), named_input_errors(model, x, "attack", forward_only=True):
        logits = model(x)
        _check_classes(y, logits)
        loss = F.cross_entropy(logits, y.to(logits.device, torch.long), reduction="sum")
        return torch.autograd.grad(loss, x)[0]


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Back into the allowed inputs: the max-norm ball of radius ε around ``x``, then [0, 1]::

        Π(x') = clip(min(max(x', x − ε), x + ε), 0, 1)

    Exact in ``x``'s dtype: where rounding puts ``x ± ε`` more than ε from ``x``, the bound moves one float
    towards ``x``, so that ``(x_adv - x).abs() <= eps`` holds for every element.
    """
    lo, hi = x - eps, x + eps
    lo = torch.where(x - lo > eps, torch.nextafter(lo, x), lo)
    hi = torch.where(hi - x > eps, torch.nextafter(hi, x), hi)
    return torch.min(torch.max(x_adv, lo), hi).clamp(0, 1).detach()


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """The fast gradient sign method (Goodfellow et al., 2015): one step of size ε up the loss::

        x' = clip(x + ε · sign(∇ₓ CE(f(x), y)), 0, 1)

    ``y`` holds the true labels; ``model`` runs in eval mode and is left as it was. Inputs whose gradient is
    exactly 0 do not move.
    """
    checks.module(model)
    _check_inputs(x)
    _check_labels(y, x)
    eps = checks.weight("eps", eps, 0.0)
    with eval_mode(model):
        return _project(x + eps * _gradient(model, x, y).sign(), x, eps)


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected gradient descent in the max norm (Madry et al., 2018): ``steps`` FGSM steps of size α, each
    projected back into the ε-ball around ``x`` and into [0, 1]::

        x_(t+1) = Π(x_t + α · sign(∇ₓ CE(f(x_t), y))),   x_0 = x,   Π(x') = clip(min(max(x', x − ε), x + ε), 0, 1)

    with α = ``step_size``, by default 2.5 ε / steps (a total travel of 2.5 ε: enough to reach the edge of the ball
    from any start and to move along it, as in Madry et al.). With ``random_start=True``, x_0 = Π(x + u), u uniform
    in [−ε, ε] (drawn from ``generator``, on its device). ``steps=1, step_size=eps`` is :func:`fgsm`. ``model`` runs
    in eval mode and is left as it was.
    """
    checks.module(model)
    _check_inputs(x)
    _check_labels(y, x)
    eps = checks.weight("eps", eps, 0.0)
    steps = checks.integer(steps, "steps", 1)
    alpha = 2.5 * eps / steps if step_size is None else checks.weight("step_size", step_size, 0.0)
    generator, random_start = checks.generator(generator), checks.flag(random_start, "random_start")
    x_adv = x.detach()
    if random_start:
        device = x.device if generator is None else generator.device
        u = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
        x_adv = _project(x + eps * (2 * u - 1), x, eps)
    with eval_mode(model):
        for _ in range(steps):
            x_adv = _project(x_adv + alpha * _gradient(model, x_adv, y).sign(), x, eps)
    return x_adv


# --- argument checks, out of the reader's way


def _check_inputs(x, images: bool = False) -> None:
    """``x``: a non-empty floating tensor with values in [0, 1] (and, for ``images``, at least 2-D: (..., H, W))."""
    checks.float_tensor("x", checks.tensor(x, "x", nonempty=True), min_dim=2 if images else 1)
    lo, hi = x.min().item(), x.max().item()
    if lo < 0 or hi > 1:
        raise ValueError(f"x must hold inputs in [0, 1] (images scaled by 1/255, before any normalisation); got "
                         f"values from min {lo:g} to max {hi:g}")


def _check_pixels(pixels) -> tuple[int, int]:
    pair = tuple(pixels) if isinstance(pixels, (tuple, list)) else (pixels, pixels)
    if len(pair) != 2 or not all(isinstance(p, numbers.Integral) and not isinstance(p, bool) for p in pair):
        raise ValueError(f"pixels must be an int or a pair (dy, dx) of ints; got {pixels!r}")
    return int(pair[0]), int(pair[1])


def _check_labels(y, x: torch.Tensor) -> None:
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.dtype == torch.bool or y.shape != x.shape[:1]:
        got = f"dtype {y.dtype} and shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must be a tensor of {len(x)} integer class labels, one per example of x (shape "
                         f"{tuple(x.shape)}); got {got}")


def _check_classes(y: torch.Tensor, logits: torch.Tensor) -> None:
    checks.batch_logits(logits, len(y), "the attacks")
    if bool(((y < 0) | (y >= logits.shape[-1])).any()):
        raise ValueError(f"y must hold class labels in [0, {logits.shape[-1] - 1}] (the model outputs "
                         f"{logits.shape[-1]} classes); got values from {int(y.min())} to {int(y.max())}")
