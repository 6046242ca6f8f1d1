"""kdlite.losses against independent float64 computations written out here (loops, autograd, identities)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlite.losses import (
    attention_map,
    attention_transfer_loss,
    distillation_loss,
    dkd_loss,
    hint_loss,
    kd_loss,
    rkd_loss,
    similarity_preserving_loss,
    soft_targets,
)

# ----------------------------------------------------------------------------------------------------
# float64 references, one example (a list of floats) at a time


def softmax64(z, T=1.0):
    m = max(z)
    e = [math.exp((v - m) / T) for v in z]
    return [v / sum(e) for v in e]


def log_softmax64(z, T=1.0):
    m = max(z)
    log_sum = math.log(sum(math.exp((v - m) / T) for v in z))
    return [(v - m) / T - log_sum for v in z]


def kl64(q, p):
    return sum(qi * (math.log(qi) - math.log(pi)) for qi, pi in zip(q, p, strict=True) if qi > 0)


def kd64(s, t, T):
    """T^2 · mean over rows of sum_i q_i (log q_i - log p_i), from log-probabilities (no underflow)."""
    rows = []
    for sr, tr in zip(s.tolist(), t.tolist(), strict=True):
        log_p, log_q = log_softmax64(sr, T), log_softmax64(tr, T)
        rows.append(sum(math.exp(lq) * (lq - lp) for lq, lp in zip(log_q, log_p, strict=True)))
    return T * T * sum(rows) / len(rows)


def ce64(s, y):
    rows = s.tolist()
    return sum(-math.log(softmax64(r)[c]) for r, c in zip(rows, y.tolist(), strict=True)) / len(rows)


def logits(b=6, c=10, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(b, c, generator=g)


# ----------------------------------------------------------------------------------------------------
# soft targets and KD


def test_soft_targets_matches_reference():
    z = logits()
    for T in (0.5, 1.0, 4.0, 20.0):
        got = soft_targets(z, T).double()
        ref = torch.tensor([softmax64(r, T) for r in z.tolist()], dtype=torch.float64)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(got.sum(-1), torch.ones(len(z), dtype=torch.float64))


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0, 20.0])
def test_kd_loss_matches_float64_reference(T):
    s, t = logits(seed=1), logits(seed=2)
    got = kd_loss(s, t, T)
    assert got.dim() == 0 and got.dtype == torch.float32
    assert got.item() == pytest.approx(kd64(s, t, T), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("T", [1.0, 3.0, 20.0])
def test_kd_gradient_is_T_times_student_minus_teacher_probs_over_B(T):
    s, t = logits(seed=3).double(), logits(seed=4).double()
    s32 = s.float().requires_grad_()
    t32 = t.float().requires_grad_()
    kd_loss(s32, t32, T).backward()
    student_probs = torch.softmax(s / T, -1)
    teacher_probs = torch.softmax(t / T, -1)
    expected = T * (student_probs - teacher_probs) / len(s)
    torch.testing.assert_close(s32.grad.double(), expected, rtol=1e-4, atol=1e-6)
    assert t32.grad is None  # the teacher is a constant


def test_kd_loss_is_exactly_zero_when_distributions_match():
    s = logits(seed=5)
    assert kd_loss(s, s.clone(), 4.0).item() == 0.0
    assert kd_loss(s, s.clone(), 1.0).item() == 0.0
    assert abs(kd_loss(s, s + 7.0, 4.0).item()) < 1e-5  # a shift leaves softmax unchanged
    assert kd_loss(s, t := logits(seed=6), 4.0).item() > 0 and kd_loss(t, s, 4.0).item() > 0


def test_kd_loss_finite_for_extreme_logits():
    s = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3]])
    t = torch.tensor([[-1e4, 1e4, 0.0], [-1e4, 1e4, 5e3]])
    for T in (1.0, 4.0):
        got = kd_loss(s, t, T)
        assert torch.isfinite(got)
        assert got.item() == pytest.approx(kd64(s.double(), t.double(), T), rel=1e-5)
    s = s.requires_grad_()
    kd_loss(s, t, 1.0).backward()
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_kd_loss_low_precision_inputs(dtype):
    s, t = logits(seed=7).to(dtype), logits(seed=8).to(dtype)
    got = kd_loss(s, t, 4.0)
    assert got.dtype == torch.float32 and torch.isfinite(got)
    assert got.item() == pytest.approx(kd64(s.double(), t.double(), 4.0), rel=1e-5)
    big = torch.tensor([[6e4, -6e4, 0.0]], dtype=dtype)  # near fp16's largest value
    assert torch.isfinite(kd_loss(big, big.flip(-1), 1.0))
    s = s.requires_grad_()
    kd_loss(s, t, 4.0).backward()
    assert s.grad.dtype == dtype and torch.isfinite(s.grad.float()).all()


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.9, 1.0])
def test_distillation_loss_weights_soft_term_by_alpha(alpha):
    s, t = logits(seed=9), logits(seed=10)
    y = torch.tensor([0, 3, 9, 2, 2, 5])
    got = distillation_loss(s, t, y, 4.0, alpha)
    ref = alpha * kd64(s, t, 4.0) + (1 - alpha) * ce64(s, y)
    assert got.item() == pytest.approx(ref, rel=1e-5)


# ----------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("T", [0, 0.0, -1.0, math.inf, math.nan, "4"])
def test_bad_temperature(T):
    s = logits()
    for call in (lambda: kd_loss(s, s, T), lambda: soft_targets(s, T),
                 lambda: distillation_loss(s, s, torch.zeros(6, dtype=torch.long), T, 0.5),
                 lambda: dkd_loss(s, s, torch.zeros(6, dtype=torch.long), T, 1.0, 8.0)):
        with pytest.raises(ValueError, match="temperature"):
            call()


@pytest.mark.parametrize("T", [1e5, 1e20, 1e200])
def test_temperatures_beyond_float32_raise_in_the_losses(T):
    """Above 1e4, float32 turns T^2 · KL into noise, a NaN (1e20) or an overflow (1e200): a clear error instead."""
    s, y = logits(), torch.zeros(6, dtype=torch.long)
    for call in (lambda: kd_loss(s, s, T), lambda: distillation_loss(s, s, y, T, 0.5),
                 lambda: dkd_loss(s, s, y, T, 1.0, 8.0)):
        with pytest.raises(ValueError, match=r"temperature must be at most 10000.*got"):
            call()
    assert torch.isfinite(soft_targets(s, T)).all()  # a softmax alone has no such limit


def test_kd_gradient_stays_accurate_up_to_the_temperature_limit():
    """At T = 1e4 the loss value is rounding noise for small logits, but its gradient T (p - q) / B is not."""
    s, t = 0.1 * logits(seed=3), 0.1 * logits(seed=4)
    s32 = s.clone().requires_grad_()
    (g,) = torch.autograd.grad(kd_loss(s32, t, 1e4), s32)
    s64 = s.double().requires_grad_()
    log_p, log_q = torch.log_softmax(s64 / 1e4, -1), torch.log_softmax(t.double() / 1e4, -1)
    ref = 1e8 * (log_q.exp() * (log_q - log_p)).sum(-1).mean()
    (g64,) = torch.autograd.grad(ref, s64)
    assert ((g.double() - g64).norm() / g64.norm()).item() < 0.05


@pytest.mark.parametrize("alpha", [-0.1, 1.5, math.nan, math.inf])
def test_bad_alpha(alpha):
    s = logits()
    with pytest.raises(ValueError, match=r"alpha.*\[0\.0, 1\.0\]"):
        distillation_loss(s, s, torch.zeros(6, dtype=torch.long), 4.0, alpha)


def test_logits_of_different_shapes():
    with pytest.raises(ValueError, match=r"same shape.*\(6, 10\).*\(6, 12\)"):
        kd_loss(logits(c=10), logits(c=12), 2.0)
    with pytest.raises(ValueError, match="same shape"):
        distillation_loss(logits(b=6), logits(b=5), torch.zeros(6, dtype=torch.long), 2.0, 0.5)


def test_non_floating_logits():
    s = logits()
    with pytest.raises(ValueError, match=r"student_logits.*floating.*torch\.int64"):
        kd_loss(s.long(), s, 2.0)
    with pytest.raises(ValueError, match="teacher_logits.*floating"):
        kd_loss(s, s.long(), 2.0)
    with pytest.raises(TypeError, match="student_logits"):
        kd_loss(s.tolist(), s, 2.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_or_inf_in_logits(bad):
    s = logits()
    s_bad = s.clone()
    s_bad[2, 3] = bad
    y = torch.zeros(6, dtype=torch.long)
    with pytest.raises(ValueError, match="student_logits.*NaN or inf"):
        kd_loss(s_bad, s, 2.0)
    with pytest.raises(ValueError, match="teacher_logits.*NaN or inf"):
        distillation_loss(s, s_bad, y, 2.0, 0.5)
    with pytest.raises(ValueError, match="logits.*NaN or inf"):
        soft_targets(s_bad, 2.0)


def test_bad_targets():
    s = logits()
    with pytest.raises(ValueError, match=r"targets.*\[0, 9\].*\[0, 10\]"):
        distillation_loss(s, s, torch.tensor([0, 1, 2, 3, 4, 10]), 2.0, 0.5)
    with pytest.raises(ValueError, match=r"targets.*\[-1, 4\]"):
        distillation_loss(s, s, torch.tensor([0, 1, 2, 3, 4, -1]), 2.0, 0.5)
    with pytest.raises(ValueError, match="targets.*shape"):
        distillation_loss(s, s, torch.zeros(5, dtype=torch.long), 2.0, 0.5)
    with pytest.raises(ValueError, match="targets.*integer"):
        distillation_loss(s, s, torch.zeros(6), 2.0, 0.5)
    with pytest.raises(ValueError, match="targets"):
        dkd_loss(s, s, torch.full((6,), 10), 2.0, 1.0, 8.0)


# ----------------------------------------------------------------------------------------------------
# decoupled KD


def dkd64(s, t, y, T, alpha, beta):
    tckd = nckd = 0.0
    for sr, tr, c in zip(s.tolist(), t.tolist(), y.tolist(), strict=True):
        p, q = softmax64(sr, T), softmax64(tr, T)
        tckd += kl64([q[c], 1 - q[c]], [p[c], 1 - p[c]])
        p_hat = [v / (1 - p[c]) for j, v in enumerate(p) if j != c]
        q_hat = [v / (1 - q[c]) for j, v in enumerate(q) if j != c]
        nckd += kl64(q_hat, p_hat)
    return T * T * (alpha * tckd + beta * nckd) / len(y)


@pytest.mark.parametrize("T,alpha,beta", [(1.0, 1.0, 8.0), (4.0, 1.0, 8.0), (4.0, 0.5, 2.0), (2.0, 0.0, 1.0)])
def test_dkd_matches_float64_reference(T, alpha, beta):
    s, t = logits(seed=11, scale=2.0), logits(seed=12, scale=2.0)
    y = torch.tensor([1, 0, 7, 7, 3, 9])
    got = dkd_loss(s, t, y, T, alpha, beta)
    assert got.item() == pytest.approx(dkd64(s, t, y, T, alpha, beta), rel=1e-4, abs=1e-6)


def test_dkd_decomposes_classic_kd():
    """Zhao et al.'s identity, one example at a time: KD = TCKD + (1 - q_y) NCKD."""
    s, t = logits(seed=13), logits(seed=14)
    y = torch.tensor([2, 5, 5, 0, 8, 1])
    T = 3.0
    for i in range(len(y)):
        q_y = torch.softmax(t[i].double() / T, -1)[y[i]].item()
        dkd = dkd_loss(s[i : i + 1], t[i : i + 1], y[i : i + 1], T, 1.0, 1 - q_y)
        assert dkd.item() == pytest.approx(kd_loss(s[i : i + 1], t[i : i + 1], T).item(), rel=1e-4, abs=1e-6)


def test_dkd_finite_for_extreme_logits_and_teacher_detached():
    s = torch.tensor([[1e4, -1e4, 0.0, 3.0]], requires_grad=True)
    t = torch.tensor([[-1e4, 1e4, 0.0, 2.0]], requires_grad=True)
    loss = dkd_loss(s, t, torch.tensor([1]), 1.0, 1.0, 8.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all() and t.grad is None


def test_dkd_bad_weights():
    s = logits()
    y = torch.zeros(6, dtype=torch.long)
    with pytest.raises(ValueError, match="beta"):
        dkd_loss(s, s, y, 4.0, 1.0, math.nan)
    with pytest.raises(ValueError, match="alpha"):
        dkd_loss(s, s, y, 4.0, -1.0, 8.0)


# ----------------------------------------------------------------------------------------------------
# feature losses


def feats(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_hint_loss_is_mse_after_connector():
    s, t = feats(4, 3, 5, 5, seed=1), feats(4, 6, 5, 5, seed=2)
    conn = nn.Conv2d(3, 6, 1)
    got = hint_loss(s, t, conn)
    w, b = conn.weight.detach().double()[:, :, 0, 0], conn.bias.detach().double()
    mapped = torch.einsum("oc,nchw->nohw", w, s.double()) + b.view(1, -1, 1, 1)
    assert got.item() == pytest.approx(((mapped - t.double()) ** 2).mean().item(), rel=1e-5)
    same = feats(4, 6, 5, 5, seed=3)
    ref = ((same.double() - t.double()) ** 2).mean().item()
    assert hint_loss(same, t).item() == pytest.approx(ref, rel=1e-6)


def test_hint_loss_gradients_reach_connector_and_student_not_teacher():
    s, t = feats(4, 8, seed=1).requires_grad_(), feats(4, 16, seed=2).requires_grad_()
    conn = nn.Linear(8, 16)
    hint_loss(s, t, conn).backward()
    assert s.grad is not None and conn.weight.grad is not None and t.grad is None


def test_hint_loss_shape_mismatch_names_a_connector():
    with pytest.raises(ValueError, match=r"connector.*Conv2d\(16, 32, kernel_size=\(1, 1\).*BatchNorm2d\(32"):
        hint_loss(feats(2, 16, 4, 4), feats(2, 32, 4, 4))
    with pytest.raises(ValueError, match=r"Linear\(in_features=8, out_features=12"):
        hint_loss(feats(2, 8), feats(2, 12))
    with pytest.raises(ValueError, match="spatial"):
        hint_loss(feats(2, 16, 4, 4), feats(2, 32, 8, 8))
    with pytest.raises(ValueError, match=r"connector\(student_feat\).*\(2, 4\)"):
        hint_loss(feats(2, 8), feats(2, 12), nn.Linear(8, 4))


def test_attention_maps_are_l2_normalised_channel_means():
    a = feats(3, 5, 4, 6, seed=4)
    for p in (1, 2, 4):
        q = attention_map(a, p)
        assert q.shape == (3, 24)
        torch.testing.assert_close(q.norm(dim=1), torch.ones(3))
        for n in range(3):  # the direction of the channel mean of |a|^p
            cells = [(i, j) for i in range(4) for j in range(6)]
            m = [sum(abs(a[n, c, i, j].item()) ** p for c in range(5)) / 5 for i, j in cells]
            norm = math.sqrt(sum(v * v for v in m))
            torch.testing.assert_close(q[n].double(), torch.tensor(m, dtype=torch.float64) / norm)
    assert attention_map(torch.zeros(2, 3, 4, 4)).abs().sum() == 0  # no NaN for a dead layer


def test_attention_transfer_loss_reference_and_channel_counts():
    s, t = feats(3, 4, 5, 5, seed=5), feats(3, 9, 5, 5, seed=6)  # different channel counts are fine

    def q64(a):
        m = (a.double() ** 2).mean(1).flatten(1)
        return m / m.norm(dim=1, keepdim=True)

    ref = ((q64(s) - q64(t)) ** 2).sum().item() / (3 * 25)
    assert attention_transfer_loss(s, t).item() == pytest.approx(ref, rel=1e-5)
    assert attention_transfer_loss(t, t.clone()).item() == 0.0
    with pytest.raises(ValueError, match="spatial size.*adaptive_avg_pool2d"):
        attention_transfer_loss(feats(3, 4, 8, 8), feats(3, 4, 4, 4))
    with pytest.raises(ValueError, match="p must be"):
        attention_transfer_loss(s, t, p=0)


def huber64(x):
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def rkd64(s, t, wd, wa):
    n = len(s)
    s, t = s.double().flatten(1), t.double().flatten(1)

    def dist(e):
        d = [[(e[i] - e[j]).norm().item() for j in range(n)] for i in range(n)]
        mu = sum(d[i][j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        return [[v / mu for v in row] for row in d]

    def angle(e, i, j, k):
        u, v = e[i] - e[j], e[k] - e[j]
        if u.norm() == 0 or v.norm() == 0:
            return 0.0
        return (u @ v).item() / (u.norm() * v.norm()).item()

    ds, dt = dist(s), dist(t)
    loss_d = sum(huber64(ds[i][j] - dt[i][j]) for i in range(n) for j in range(n)) / n**2
    r = range(n)
    loss_a = sum(huber64(angle(s, i, j, k) - angle(t, i, j, k)) for i in r for j in r for k in r) / n**3
    return wd * loss_d + wa * loss_a


def test_rkd_loss_matches_float64_reference():
    s, t = feats(5, 3, seed=7), 4 * feats(5, 7, seed=8)  # distances of different scales and dims
    for wd, wa in ((1.0, 2.0), (25.0, 50.0), (1.0, 0.0), (0.0, 1.0)):
        got = rkd_loss(s, t, distance_weight=wd, angle_weight=wa)
        assert got.item() == pytest.approx(rkd64(s, t, wd, wa), rel=1e-4, abs=1e-7)
    # invariant to scaling the teacher's embedding (relations, not positions), and finite gradients
    assert rkd_loss(s, s * 3).item() == pytest.approx(0.0, abs=1e-6)
    s = s.requires_grad_()
    rkd_loss(s, t).backward()
    assert torch.isfinite(s.grad).all()
    with pytest.raises(ValueError, match="batch size"):
        rkd_loss(feats(5, 3), feats(4, 3))


def test_similarity_preserving_loss_matches_float64_reference():
    s, t = feats(6, 2, 3, 3, seed=9), feats(6, 11, seed=10)
    n = 6
    ref = 0.0
    a_s, a_t = s.double().flatten(1), t.double().flatten(1)
    g_s, g_t = a_s @ a_s.T, a_t @ a_t.T
    for i in range(n):
        rs, rt = g_s[i] / g_s[i].norm(), g_t[i] / g_t[i].norm()
        ref += ((rs - rt) ** 2).sum().item()
    assert similarity_preserving_loss(s, t).item() == pytest.approx(ref / n**2, rel=1e-5)
    with pytest.raises(ValueError, match="batch size"):
        similarity_preserving_loss(feats(6, 3), feats(5, 3))


def test_feature_losses_reject_nan_and_integer_features():
    good = feats(2, 4, 3, 3)
    bad = good.clone()
    bad[0, 0, 0, 0] = math.nan
    for fn in (hint_loss, attention_transfer_loss, rkd_loss, similarity_preserving_loss):
        with pytest.raises(ValueError, match="student_feat.*NaN"):
            fn(bad, good)
        with pytest.raises(ValueError, match="teacher_feat.*floating"):
            fn(good, good.long())


def test_losses_are_scalars_that_backprop():
    s = feats(4, 10, seed=1).requires_grad_()
    t = feats(4, 10, seed=2)
    y = torch.tensor([0, 1, 2, 3])
    for loss in (kd_loss(s, t, 2.0), distillation_loss(s, t, y, 2.0, 0.5), dkd_loss(s, t, y, 2.0, 1.0, 8.0),
                 rkd_loss(s, t), similarity_preserving_loss(s, t), hint_loss(s, t)):
        assert loss.dim() == 0
        (g,) = torch.autograd.grad(loss, s)
        assert torch.isfinite(g).all()
    assert F.mse_loss(s, t).dim() == 0


def test_attention_map_survives_large_exponents_and_refuses_p_below_one():
    a = torch.relu(feats(2, 3, 4, 4, seed=7)) * 1e5  # |a|^8 ~ 1e40 overflows float32 if computed directly
    for p in (8, 100):
        m = (a.double() / a.double().flatten(1).amax(1).view(-1, 1, 1, 1)) ** p  # float64, rescaled first
        ref = m.mean(1).flatten(1)
        ref = ref / ref.norm(dim=1, keepdim=True)
        q = attention_map(a, p)
        assert torch.isfinite(q).all()
        torch.testing.assert_close(q.double(), ref, rtol=1e-4, atol=1e-6)
    s = torch.relu(feats(2, 3, 4, 4, seed=8)).requires_grad_()
    attention_transfer_loss(s, torch.relu(feats(2, 5, 4, 4, seed=9)), p=1).backward()
    assert torch.isfinite(s.grad).all()  # exact zeros in ReLU features are fine for p >= 1
    with pytest.raises(ValueError, match="p must be a finite number >= 1"):
        attention_map(s, p=0.5)


def test_losses_refuse_empty_batches():
    empty = torch.zeros(0, 10)
    for call in (lambda: kd_loss(empty, empty, 4.0),
                 lambda: distillation_loss(empty, empty, torch.zeros(0, dtype=torch.long), 4.0, 0.5),
                 lambda: dkd_loss(empty, empty, torch.zeros(0, dtype=torch.long), 4.0, 1.0, 8.0),
                 lambda: hint_loss(empty, empty),
                 lambda: similarity_preserving_loss(empty, empty)):
        with pytest.raises(ValueError, match="empty"):
            call()


def test_hint_loss_names_batch_mismatch_and_bad_connectors():
    with pytest.raises(ValueError, match="same batch size"):
        hint_loss(torch.randn(4, 8), torch.randn(3, 8))
    with pytest.raises(TypeError, match="connector must be a module"):
        hint_loss(torch.randn(4, 8), torch.randn(4, 8), connector="conv")
    with pytest.raises(ValueError, match=r"connector .* cannot take student_feat of shape \(4, 8\)"):
        hint_loss(torch.randn(4, 8), torch.randn(4, 16), connector=nn.Linear(6, 16))
