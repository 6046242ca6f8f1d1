"""kdlite.losses.sequence_kd_loss against float64 loops over positions and vocabulary, autograd and identities."""

import math

import pytest
import torch

from kdlite.losses import kd_loss, sequence_kd_loss


def log_softmax64(z, T):
    m = max(z)
    log_sum = math.log(sum(math.exp((v - m) / T) for v in z))
    return [(v - m) / T - log_sum for v in z]


def kl64(log_a, log_b):
    return sum(math.exp(la) * (la - lb) for la, lb in zip(log_a, log_b, strict=True))


def reference(s, t, T, kind, beta=0.5, mask=None):
    """T^2 · the mean over the counted positions of the divergence, one position and one token at a time."""
    total, count = 0.0, 0
    rows_s, rows_t = s.reshape(-1, s.shape[-1]).tolist(), t.reshape(-1, t.shape[-1]).tolist()
    keep = [True] * len(rows_s) if mask is None else mask.reshape(-1).tolist()
    for zs, zt, k in zip(rows_s, rows_t, keep, strict=True):
        if not k:
            continue
        log_p, log_q = log_softmax64(zs, T), log_softmax64(zt, T)
        if kind == "forward":
            d = kl64(log_q, log_p)
        elif kind == "reverse":
            d = kl64(log_p, log_q)
        else:
            m = [beta * math.exp(a) + (1 - beta) * math.exp(b) for a, b in zip(log_q, log_p, strict=True)]
            log_m = [math.log(v) for v in m]
            d = beta * kl64(log_q, log_m) + (1 - beta) * kl64(log_p, log_m)
        total, count = total + d, count + 1
    return T * T * total / count


def logits(shape=(3, 5, 7), seed=0, scale=3.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g)).to(dtype)


def random_mask(shape=(3, 5), seed=0):
    mask = torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) < 0.5
    mask[0, 0] = True
    return mask


@pytest.mark.parametrize("kind", ["forward", "reverse", "jsd"])
@pytest.mark.parametrize("T", [1.0, 2.5])
@pytest.mark.parametrize("masked", [False, True])
def test_matches_float64_loops(kind, T, masked):
    s, t = logits(seed=1), logits(seed=2)
    mask = random_mask() if masked else None
    for beta in (0.5, 0.1, 0.9) if kind == "jsd" else (0.5,):
        got = sequence_kd_loss(s, t, T, kind, beta, mask)
        assert got.dim() == 0 and got.dtype == torch.float32
        assert got.item() == pytest.approx(reference(s, t, T, kind, beta, mask), rel=1e-5, abs=1e-6)
        got64 = sequence_kd_loss(s.double(), t.double(), T, kind, beta, mask)
        assert got64.dtype == torch.float64  # float64 stays float64
        assert got64.item() == pytest.approx(reference(s, t, T, kind, beta, mask), rel=1e-12, abs=1e-14)


def test_identities():
    s, t = logits(seed=3), logits(seed=4)
    for kind in ("forward", "reverse"):
        assert sequence_kd_loss(s, s.clone(), 2.0, kind).item() == 0.0  # zero for identical logits
    assert abs(sequence_kd_loss(s, s.clone(), 2.0, "jsd").item()) < 1e-6  # log m is log q up to rounding
    for kind in ("forward", "reverse", "jsd"):
        assert sequence_kd_loss(s, t, 2.0, kind).item() > 0
    torch.testing.assert_close(sequence_kd_loss(s, t, 3.0), kd_loss(s, t, 3.0))  # forward, unmasked: kd_loss
    torch.testing.assert_close(sequence_kd_loss(s, t, 1.0, "reverse"), sequence_kd_loss(t, s, 1.0, "forward"))
    torch.testing.assert_close(sequence_kd_loss(s, t, 1.0, "jsd", 0.3), sequence_kd_loss(t, s, 1.0, "jsd", 0.7))
    mask = random_mask()  # a mask is the same as taking the selected positions only
    torch.testing.assert_close(sequence_kd_loss(s, t, 2.0, "jsd", mask=mask),
                               sequence_kd_loss(s[mask], t[mask], 2.0, "jsd"))
    big = logits(scale=1e4, seed=5)  # finite for large logits (log space)
    assert math.isfinite(sequence_kd_loss(big, logits(scale=1e4, seed=6), 1.0, "jsd").item())


@pytest.mark.parametrize("kind", ["forward", "reverse", "jsd"])
def test_gradient_against_finite_differences(kind):
    s, t = logits((2, 3, 4), seed=7, dtype=torch.float64), logits((2, 3, 4), seed=8, dtype=torch.float64)
    mask = torch.tensor([[True, False, True], [True, True, False]])
    s.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: sequence_kd_loss(z, t, 1.7, kind, 0.3, mask), (s,))


def test_forward_gradient_is_T_times_p_minus_q_over_counted_positions():
    s, t, T = logits(seed=9).requires_grad_(True), logits(seed=10).requires_grad_(True), 2.0
    mask = random_mask(seed=1)
    sequence_kd_loss(s, t, T, "forward", mask=mask).backward()
    p, q = torch.softmax(s.detach() / T, -1), torch.softmax(t.detach() / T, -1)
    expected = T * (p - q) * mask[..., None] / mask.sum()
    torch.testing.assert_close(s.grad, expected, rtol=1e-4, atol=1e-6)
    assert t.grad is None  # the teacher is a constant


def test_check_false_skips_the_checks_only():
    s, t, mask = logits(seed=11), logits(seed=12), random_mask()
    for kind in ("forward", "reverse", "jsd"):
        assert sequence_kd_loss(s, t, 2.0, kind, 0.4, mask, check=False).item() == pytest.approx(
            sequence_kd_loss(s, t, 2.0, kind, 0.4, mask).item())


def test_two_dimensional_logits_are_positions():
    s, t = logits((6, 5), seed=13), logits((6, 5), seed=14)
    mask = torch.tensor([True, False, True, True, False, True])
    assert sequence_kd_loss(s, t, 1.5, "reverse", mask=mask).item() == pytest.approx(
        reference(s, t, 1.5, "reverse", mask=mask), rel=1e-5)


def test_a_0_1_integer_mask_is_an_attention_mask():
    s, t, mask = logits(seed=15), logits(seed=16), random_mask(seed=3)
    for ints in (mask.long(), mask.int(), mask.to(torch.uint8)):
        assert torch.equal(sequence_kd_loss(s, t, 2.0, "jsd", 0.3, ints), sequence_kd_loss(s, t, 2.0, "jsd", 0.3, mask))
    with pytest.raises(ValueError, match=r"mask must be None or a boolean \(or 0/1 integer\) tensor .* torch.int64"):
        sequence_kd_loss(s, t, mask=mask.long() * 2)


@pytest.mark.parametrize("change, words", [
    (dict(teacher_logits=logits((3, 5, 8))), "same shape"),
    (dict(student_logits=logits().masked_fill(random_mask()[..., None], math.nan)), "NaN"),
    (dict(student_logits=torch.ones(3, 5, 7, dtype=torch.long)), "floating"),
    (dict(mask=torch.ones(3, 4, dtype=torch.bool)), r"mask must be .* shape \(3, 5\)"),
    (dict(mask=torch.ones(3, 5)), "dtype torch.float32"),
    (dict(mask=torch.zeros(3, 5, dtype=torch.bool)), "0 True"),
    (dict(mask=[[True] * 5] * 3), "got list"),
    (dict(kind="kl"), "kind must be 'forward', 'reverse' or 'jsd'; got 'kl'"),
    (dict(temperature=0.0), "temperature"),
    (dict(temperature=-1.0), "temperature"),
    (dict(beta=0.0), r"beta must be a number in \(0, 1\)"),
    (dict(beta=1.0), "zero for any logits"),
    (dict(beta=math.nan), "beta"),
])
def test_errors(change, words):
    args = dict(student_logits=logits(), teacher_logits=logits(seed=1), temperature=1.0, kind="jsd", beta=0.5,
                mask=None)
    args.update(change)
    with pytest.raises(ValueError, match=words):
        sequence_kd_loss(**args)


@pytest.mark.parametrize("kind", ["forward", "reverse"])
def test_the_kls_ignore_beta(kind):
    """beta weighs the JSD's mixture only: a KL with any beta (say 1.0, or a leftover None) is the same loss."""
    s, t = logits(), logits(seed=1)
    expected = sequence_kd_loss(s, t, 2.0, kind)
    for beta in (1.0, 0.0, None):
        assert torch.equal(sequence_kd_loss(s, t, 2.0, kind, beta), expected)
