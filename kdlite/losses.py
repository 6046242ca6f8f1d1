"""Distillation losses: from a teacher's soft outputs (chapters 2-3) and from its features (chapter 4).

Every function takes tensors and returns a scalar tensor, in the style of ``torch.nn.functional``. Notation: a
batch of ``B`` examples, ``C`` classes, student logits ``s``, teacher logits ``t``, temperature ``T``, and the
softened distributions ``p = softmax(s / T)`` (student) and ``q = softmax(t / T)`` (teacher). The teacher is
always treated as a constant (``.detach()``): gradients reach the student, and any connector, only.

Logit losses compute in float32 from ``log_softmax``, so they stay finite for logits of ±1e4 and for bf16/fp16
inputs. Bad input raises ``ValueError`` naming the argument, what was given and what was expected; a NaN loss
is never returned silently (unless a training loop that checked its first batch passes ``check=False``).
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from . import _checks as checks
from ._checks import MAX_TEMPERATURE, MIN_TEMPERATURE  # noqa: F401  (kdlite.losses.MAX_TEMPERATURE)

# ------------------------------------------------------------------------------------------------------------
# Soft targets and knowledge distillation (Hinton, Vinyals & Dean, 2015).


def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The softened distribution ``softmax(z / T)`` over the last dimension::

        softmax(z / T)_i = exp(z_i / T) / sum_j exp(z_j / T)

    T = 1 is the ordinary softmax; larger T spreads probability over the wrong classes ("dark knowledge").
    """
    temperature = checks.temperature(temperature)
    checks.float_tensor("logits", logits)
    return torch.softmax(logits / temperature, dim=-1)


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, *, check: bool = True
) -> torch.Tensor:
    """Hinton's soft-target loss ``T^2 · KL(q || p)``, summed over classes and averaged over the batch::

        L_KD = T^2 / B · sum_b sum_i q_bi (log q_bi - log p_bi),   q = softmax(t/T), p = softmax(s/T)

    Its gradient with respect to the student logits is ``T (p - q) / B``: the ``T^2`` keeps the gradient's
    size independent of T (chapter 2). Computed from ``log_softmax`` in float32; the teacher is detached, so
    the loss back-propagates into ``student_logits`` only. Logits are ``(B, C)`` (more leading dimensions are
    averaged over like the batch). Zero exactly when ``s == t``.

    Precision: float32 rounds ``log p`` and ``log q`` to about 1e-7 and the ``T^2`` multiplies that error, so
    the loss *value* degrades when T is large against the logits' spread. Measured relative errors: logits of
    standard deviation 1, about 4e-4 at T = 100 and 2% at T = 1000; standard deviation 0.1, 0.3% at T = 100
    and over 100% (even a negative loss) at T = 1000. The gradient stays accurate (its error grows only like
    T). Temperatures above ``MAX_TEMPERATURE`` (1e4) raise: a guard against nonsense (a NaN at T = 1e20),
    not a promise that every value below it is meaningful.

    ``check=False`` skips the argument checks (their device syncs): for a training loop that checked its
    first batch, as ``kdlite.distill`` does.
    """
    temperature = checks.kd_args(student_logits, teacher_logits, temperature) if check else temperature
    log_p = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_q = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    kl = (log_q.exp() * (log_q - log_p)).sum(-1)  # one KL(q || p) per example
    return temperature**2 * kl.mean()


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    alpha: float,
    *,
    check: bool = True,
) -> torch.Tensor:
    """The full KD objective ``alpha · L_KD + (1 - alpha) · CE(s, y)``.

    ``alpha`` weighs the SOFT (teacher) term: alpha = 1 is pure distillation, alpha = 0 ordinary training on
    the labels ``targets`` (class indices in [0, C), any integer dtype). Some libraries put alpha on the hard
    term instead; here it is always the teacher's share. ``check=False``: as in :func:`kd_loss`.
    """
    if check:
        temperature = checks.kd_args(student_logits, teacher_logits, temperature, targets)
        alpha = checks.weight("alpha", alpha, 0.0, 1.0)
    soft = kd_loss(student_logits, teacher_logits, temperature, check=False)
    hard = F.cross_entropy(student_logits.float().reshape(-1, student_logits.shape[-1]), targets.reshape(-1).long())
    return alpha * soft + (1 - alpha) * hard


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    alpha: float,
    beta: float,
) -> torch.Tensor:
    """Decoupled KD (Zhao et al., 2022): ``alpha · TCKD + beta · NCKD``, each with ``T^2`` and a batch mean.

    With ``y`` the target class, the binary distributions ``b = [p_y, 1 - p_y]`` (student) and
    ``b^T = [q_y, 1 - q_y]`` (teacher), and ``p^, q^`` the softmax over the non-target logits only::

        TCKD = T^2 / B · sum_b KL(b^T || b)        (how confident the teacher is about the target)
        NCKD = T^2 / B · sum_b KL(q^ || p^)        (how it ranks the wrong classes)

    Classic KD is ``TCKD + (1 - q_y) · NCKD``; DKD frees NCKD from the ``(1 - q_y)`` factor that suppresses it
    exactly where the teacher is confident. Add the cross-entropy on the labels yourself (in ``distill``:
    ``alpha=0`` there, and this loss in ``extra_losses``). Needs C >= 2.

    No warm-up: this is the loss of one batch. The published recipe (the authors' mdistiller code) multiplies it
    by ``min(epoch / 20, 1)``, ramping it up linearly over the first 20 of 240 epochs (epochs counted from 1);
    to do the same, give ``distill`` a weight that is a function of the epoch,
    ``extra_losses=[(lambda epoch: min(epoch / 20, 1.0), lambda s, t, b: dkd_loss(s, t, b[1], 4.0, 1.0, 8.0))]``.
    """
    temperature = checks.temperature(temperature, MAX_TEMPERATURE)
    alpha = checks.weight("alpha", alpha)
    beta = checks.weight("beta", beta)
    checks.logit_pair(student_logits, teacher_logits)
    if student_logits.shape[-1] < 2:
        raise ValueError(
            f"dkd_loss needs at least 2 classes; got logits of shape {tuple(student_logits.shape)}"
        )
    checks.targets(targets, student_logits)
    c = student_logits.shape[-1]
    s = student_logits.float().reshape(-1, c) / temperature
    t = teacher_logits.detach().float().reshape(-1, c) / temperature
    is_target = F.one_hot(targets.reshape(-1).long(), c).bool()

    def binary_log_probs(z: torch.Tensor) -> torch.Tensor:  # log [p_y, 1 - p_y], shape (B, 2)
        log_p = F.log_softmax(z, dim=-1)
        log_target = log_p[is_target]
        log_rest = log_p.masked_fill(is_target, -math.inf).logsumexp(-1)
        return torch.stack([log_target, log_rest], dim=-1)

    def kl(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:  # KL(q || p) per row
        return (log_q.exp() * (log_q - log_p)).sum(-1)

    tckd = kl(binary_log_probs(t), binary_log_probs(s))
    non_target = lambda z: F.log_softmax(z[~is_target].view(-1, c - 1), dim=-1)  # noqa: E731
    nckd = kl(non_target(t), non_target(s))
    return temperature**2 * (alpha * tckd.mean() + beta * nckd.mean())


def sequence_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
                     kind: str = "forward", beta: float = 0.5, mask: torch.Tensor | None = None, *,
                     check: bool = True) -> torch.Tensor:
    """Token-level distillation of a language model: a divergence between the softened next-token distributions
    ``q = softmax(t / T)`` (teacher) and ``p = softmax(s / T)`` (student) at every position of logits (B, T, V),
    averaged over the positions where ``mask`` (B, T) is True or 1 (all when None) and scaled by ``T^2``::

        forward:  KL(q || p) = sum_v q_v (log q_v - log p_v)          (kd_loss, per token: mode-covering)
        reverse:  KL(p || q) = sum_v p_v (log p_v - log q_v)          (mode-seeking, as in MiniLLM)
        jsd:      beta · KL(q || m) + (1 - beta) · KL(p || m),   m = beta · q + (1 - beta) · p   (as in GKD)

    ``log m`` is a logsumexp of ``log beta + log q`` and ``log(1 - beta) + log p``; everything is computed from
    ``log_softmax`` in float32 (float64 stays float64). ``beta`` must lie in (0, 1): at 0 or 1 the mixture ``m``
    is one of the two distributions and this JSD is zero for any logits (use "forward" or "reverse" for the KLs).
    Any leading dimensions are positions, as in :func:`kd_loss` (logits (N, V) with a mask (N,) work too; without
    a mask, "forward" is ``kd_loss``). Zero for identical logits (for "jsd", up to float rounding). The teacher is
    detached. Logits must be finite: a vocabulary masked with −inf gives 0 · ∞ = NaN in the KL, so mask it with a
    large negative number (−1e4) instead. ``check=False``: as in :func:`kd_loss`.
    """
    if check:
        temperature = checks.kd_args(student_logits, teacher_logits, temperature)
        beta = _check_beta_and_mask(beta, mask, student_logits.shape[:-1], kind)
    compute = torch.promote_types(student_logits.dtype, torch.float32)
    log_p = F.log_softmax(student_logits.to(compute) / temperature, dim=-1)
    log_q = F.log_softmax(teacher_logits.detach().to(compute) / temperature, dim=-1)
    kl = lambda log_a, log_b: (log_a.exp() * (log_a - log_b)).sum(-1)  # noqa: E731  KL(a || b), one per position
    if kind == "forward":
        per_token = kl(log_q, log_p)
    elif kind == "reverse":
        per_token = kl(log_p, log_q)
    elif kind == "jsd":
        log_m = torch.logaddexp(math.log(beta) + log_q, math.log(1 - beta) + log_p)
        per_token = beta * kl(log_q, log_m) + (1 - beta) * kl(log_p, log_m)
    else:
        raise ValueError(f"kind must be 'forward', 'reverse' or 'jsd'; got {kind!r}")
    if mask is None:
        return temperature**2 * per_token.mean()
    mask = mask.bool()  # True (or 1) where a position counts
    return temperature**2 * per_token.masked_fill(~mask, 0).sum() / mask.sum()


# ------------------------------------------------------------------------------------------------------------
# Feature losses (chapter 4). The teacher's features are detached; connectors and the student are trained.


def hint_loss(
    student_feat: torch.Tensor, teacher_feat: torch.Tensor, connector: nn.Module | None = None
) -> torch.Tensor:
    """FitNets' hint loss (Romero et al., 2015): the mean squared error between the teacher's hint and the
    student's guided layer mapped by a learnable connector ``r``::

        L_hint = 1 / numel · || r(u_s) - u_t ||^2      (mean over every element, as ``F.mse_loss``)

    (The paper writes ``1/2 ||.||^2``; the mean only rescales it.) Without a connector the shapes must match;
    if they do not, the error says which ``kdlite.features.connector`` would fit. The connector's parameters
    must be trained with the student (``distill(..., extra_params=connector.parameters())``).
    """
    checks.float_tensor("student_feat", student_feat)
    checks.float_tensor("teacher_feat", teacher_feat)
    checks.same_batch(student_feat, teacher_feat)
    if connector is not None:
        if not callable(connector):
            raise TypeError(f"connector must be a module (e.g. kdlite.features.connector(...)); got {connector!r}")
        try:
            mapped = connector(student_feat)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as e:
            raise ValueError(
                f"connector {connector} cannot take student_feat of shape {tuple(student_feat.shape)}: {e}"
            ) from None
    else:
        mapped = student_feat
        if student_feat.shape != teacher_feat.shape:
            raise ValueError(_connector_hint(student_feat.shape, teacher_feat.shape))
    if mapped.shape != teacher_feat.shape:
        raise ValueError(
            f"connector(student_feat) has shape {tuple(mapped.shape)} but teacher_feat has shape "
            f"{tuple(teacher_feat.shape)}; expected the connector to map one onto the other"
        )
    loss = F.mse_loss(mapped.float(), teacher_feat.detach().float())
    if not torch.isfinite(loss):  # finite features whose squared difference exceeds float32 (|u| ~ 1e19 or more)
        raise ValueError(f"hint_loss overflows float32 (got {loss.item()}): the features reach "
                         f"{max(mapped.abs().max().item(), teacher_feat.abs().max().item()):.3g}; expected "
                         f"features whose squared difference float32 can hold (below about 1e19)")
    return loss


def _connector_hint(student_shape: torch.Size, teacher_shape: torch.Size) -> str:
    from .features import connector  # lazy: features imports nothing from here, but keep the modules apart

    msg = (
        f"student_feat has shape {tuple(student_shape)} but teacher_feat has shape {tuple(teacher_shape)}; "
        f"without a connector they must match."
    )
    try:
        fit = connector(student_shape, teacher_shape)
    except ValueError as e:
        return f"{msg} No connector fits either: {e}"
    layers = fit if isinstance(fit, nn.Sequential) else [fit]
    adapter = " + ".join(f"{type(m).__name__}({m.extra_repr()})" for m in layers)
    n_params = sum(p.numel() for p in fit.parameters())
    return (
        f"{msg} A connector that fits: "
        f"kdlite.features.connector({tuple(student_shape)}, {tuple(teacher_shape)}) "
        f"= {adapter} ({n_params} parameters); pass it as connector= and train its parameters with the "
        f"student (extra_params=connector.parameters())."
    )


def attention_map(feat: torch.Tensor, p: float = 2) -> torch.Tensor:
    """The spatial attention map of Zagoruyko & Komodakis (2017): the channel mean of ``|a|^p``, flattened and
    L2-normalised per example::

        Q = vec(F) / ||vec(F)||_2,   F = 1/C · sum_c |a_c|^p        (feat (N, C, H, W) -> Q (N, H·W))

    Every row of the result has unit L2 norm (an all-zero map stays zero). Q does not change when an example's
    activations are scaled, so each is first divided by its largest |a|: |a|^p cannot overflow for large p.
    p < 1 is refused: the gradient of |a|^p is infinite at a = 0, which every ReLU output has.
    """
    checks.float_tensor("feat", feat, min_dim=3)
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (math.isfinite(p) and p >= 1):
        raise ValueError(f"p must be a finite number >= 1 (the exponent of |a|^p; the paper uses 2); got {p!r}")
    a = feat.float().abs()
    biggest = a.detach().flatten(1).amax(1).clamp_min(torch.finfo(a.dtype).tiny)
    a = (a / biggest.view(-1, *[1] * (a.dim() - 1))).pow(p).mean(dim=1)
    return F.normalize(a.flatten(1), p=2, dim=1)


def attention_transfer_loss(
    student_feat: torch.Tensor, teacher_feat: torch.Tensor, p: float = 2
) -> torch.Tensor:
    """Attention transfer (Zagoruyko & Komodakis, 2017): the squared distance between the two L2-normalised
    attention maps, averaged over examples and positions (as in the authors' code)::

        L_AT = 1 / (N · H·W) · sum_n || Q_s,n - Q_t,n ||^2,    Q = attention_map(feat, p)

    The paper weights it with beta = 1000 (use it as the weight in ``extra_losses``). Works across different
    channel counts (the map averages channels away); different spatial sizes raise ``ValueError`` unless you
    resize one side first (``F.interpolate`` or ``F.adaptive_avg_pool2d``).
    """
    checks.float_tensor("student_feat", student_feat, min_dim=3)
    checks.float_tensor("teacher_feat", teacher_feat, min_dim=3)
    checks.same_batch(student_feat, teacher_feat)
    if student_feat.shape[2:] != teacher_feat.shape[2:]:
        raise ValueError(
            f"student_feat and teacher_feat must have the same spatial size; got "
            f"{tuple(student_feat.shape[2:])} and {tuple(teacher_feat.shape[2:])} "
            f"(shapes {tuple(student_feat.shape)}, {tuple(teacher_feat.shape)}); "
            f"resize one of them first, e.g. F.adaptive_avg_pool2d(feat, {tuple(teacher_feat.shape[2:])})"
        )
    q_s = attention_map(student_feat, p)
    q_t = attention_map(teacher_feat.detach(), p)
    return (q_s - q_t).pow(2).mean()


def _unit_scale(e: torch.Tensor) -> torch.Tensor:
    """``e / max|e|``: the relational losses do not change when all embeddings are scaled alike, and this keeps
    their squares inside float32 for any finite input (the factor is a constant for autograd)."""
    return e / e.abs().amax().detach().clamp_min(torch.finfo(e.dtype).tiny)


def _distances(e: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances of the rows of ``e`` (N, D), with an exact zero diagonal and a gradient
    that stays finite there (a plain ``sqrt`` of 0 has an infinite derivative)."""
    sq = e.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp(min=1e-12)
    return d2.sqrt() * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def _angles(e: torch.Tensor) -> torch.Tensor:
    """``cos`` of the angle at vertex j of every triplet, ``<unit(e_i - e_j), unit(e_k - e_j)>``, of shape
    (N, N, N) indexed ``[j, i, k]``; zero when two points coincide."""
    diff = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)  # diff[j, i] = unit(e_i - e_j)
    return diff @ diff.transpose(1, 2)


def rkd_loss(
    student_feat: torch.Tensor,
    teacher_feat: torch.Tensor,
    distance_weight: float = 1.0,
    angle_weight: float = 2.0,
) -> torch.Tensor:
    """Relational KD (Park et al., 2019): match the *relations* between examples, not the examples. Features
    are flattened to embeddings (N, D_s) and (N, D_t); D_s and D_t may differ::

        psi_D(i, j)    = ||e_i - e_j||_2 / mu,   mu = mean distance over the pairs i != j
        psi_A(i, j, k) = < unit(e_i - e_j), unit(e_k - e_j) >
        L_RKD = w_D · mean_{i,j} huber(psi_D^s - psi_D^t) + w_A · mean_{i,j,k} huber(psi_A^s - psi_A^t)

    ``huber`` is ``F.smooth_l1_loss`` with delta = 1, and the means run over all N^2 pairs and N^3 triplets
    (degenerate ones contribute zero), as in the authors' code. Park et al. use w_D = 1, w_A = 2 for metric
    learning (the defaults); CIFAR benchmarks often use 25 and 50. Memory is O(N^2 · D): apply it to
    pooled embeddings. Needs N >= 2.
    """
    checks.float_tensor("student_feat", student_feat)
    checks.float_tensor("teacher_feat", teacher_feat)
    checks.same_batch(student_feat, teacher_feat)
    distance_weight = checks.weight("distance_weight", distance_weight)
    angle_weight = checks.weight("angle_weight", angle_weight)
    n = student_feat.shape[0]
    if n < 2:
        raise ValueError(
            f"rkd_loss needs a batch of at least 2 examples; got shapes {tuple(student_feat.shape)}"
        )
    s = _unit_scale(student_feat.float().reshape(n, -1))
    t = _unit_scale(teacher_feat.detach().float().reshape(n, -1))
    pairs = n * (n - 1)

    def psi_d(e: torch.Tensor) -> torch.Tensor:
        d = _distances(e)
        return d / (d.sum() / pairs).clamp(min=1e-12)

    loss_d = F.smooth_l1_loss(psi_d(s), psi_d(t), beta=1.0)
    loss_a = F.smooth_l1_loss(_angles(s), _angles(t), beta=1.0)
    return distance_weight * loss_d + angle_weight * loss_a


def similarity_preserving_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving KD (Tung & Mori, 2019): the student should find the same examples of a batch
    alike as the teacher. With ``A`` the features flattened to (N, D) and ``G~`` the Gram matrix ``A A^T``
    with each
    row L2-normalised::

        L_SP = 1 / N^2 · || G~_s - G~_t ||_F^2

    D_s and D_t may differ (only the N x N similarities are compared). The paper weights it with gamma = 3000.
    """
    checks.float_tensor("student_feat", student_feat)
    checks.float_tensor("teacher_feat", teacher_feat)
    checks.same_batch(student_feat, teacher_feat)
    n = student_feat.shape[0]

    def gram(feat: torch.Tensor) -> torch.Tensor:
        a = _unit_scale(feat.float().reshape(n, -1))  # the row normalisation undoes any common scale
        return F.normalize(a @ a.t(), p=2, dim=1)

    return (gram(student_feat) - gram(teacher_feat.detach())).pow(2).sum() / n**2


def _check_beta_and_mask(beta, mask, positions: torch.Size, kind: str):
    """``beta`` in (0, 1) for the JSD (the KLs ignore it); ``mask`` None or a boolean tensor (or one of 0/1
    integers, as a tokenizer's attention mask) of the logits' positions with one True at least."""
    if kind == "jsd" and (isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0 < beta < 1):
        raise ValueError(f"beta must be a number in (0, 1) (the teacher's weight in the JSD's mixture; at 0 or 1 "
                         f"the JSD is zero for any logits); got {beta!r}")
    if mask is not None and not (isinstance(mask, torch.Tensor) and mask.shape == positions and mask.any() and (
            mask.dtype == torch.bool or not mask.is_floating_point() and bool(((mask == 0) | (mask == 1)).all()))):
        got = (f"shape {tuple(mask.shape)}, dtype {mask.dtype}, {int(mask.count_nonzero())} True"
               if isinstance(mask, torch.Tensor) else type(mask).__name__)
        raise ValueError(f"mask must be None or a boolean (or 0/1 integer) tensor of shape {tuple(positions)} (one "
                         f"entry per position: True where it counts) with at least one True; got {got}")
    return float(beta) if kind == "jsd" else beta
