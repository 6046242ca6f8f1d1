"""Tests of kdlite.robust: each corruption and attack against a hand computation or an independent formula, and
the promises every function makes (shape, dtype, [0, 1], the ε-ball, a model left as it was)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from kdlite.robust import blur, contrast, fgsm, gaussian_noise, input_gradient, pgd, shift

DTYPES = [torch.float32, torch.float64]


def small_model(dtype=torch.float32, seed=0):
    """A CNN with BatchNorm and dropout, for the attacks' promises (not trained: its gradients are what they are)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).to(dtype)


def images(n=8, dtype=torch.float32, seed=1):
    """Inputs in [0, 1], some of them exactly 0 or 1 (where the clipping to [0, 1] is active)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 6, 6, generator=g, dtype=dtype)
    x[:, :, 0] = 0.0
    x[:, :, -1] = 1.0
    return x, torch.randint(0, 3, (n,), generator=g)


def blobs(n=400, d=20, seed=0):
    """Two classes in [0, 1]^d: Gaussian blobs around 0.4 and 0.6 (std 0.05), separable by the mean of x."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = (0.4 + 0.2 * y[:, None] + 0.05 * torch.randn(n, d, generator=g)).clamp(0, 1)
    return x, y


def trained_mlp(x, y):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(x.shape[1], 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(-1) == y).double().mean().item()


ATTACKS = {
    "fgsm": lambda m, x, y, eps: fgsm(m, x, y, eps),
    "pgd": lambda m, x, y, eps: pgd(m, x, y, eps, steps=5),
    "pgd-random-start": lambda m, x, y, eps: pgd(m, x, y, eps, steps=3, random_start=True,
                                                 generator=torch.Generator().manual_seed(0)),
}


# --- the promises every attack makes


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eps", [0.0, 1 / 255, 0.03, 0.1, 0.3, 2.0])
def test_attacks_stay_in_the_unit_box_and_the_eps_ball(attack, dtype, eps):
    model = small_model(dtype)
    x, y = images(dtype=dtype)
    x_before = x.clone()
    adv = ATTACKS[attack](model, x, y, eps)
    assert adv.shape == x.shape and adv.dtype == dtype and adv.device == x.device
    assert not adv.requires_grad and adv.grad_fn is None
    assert adv.min() >= 0 and adv.max() <= 1
    assert bool(((adv - x).abs() <= eps).all())  # exact, in x's dtype: no float rounding past ε
    assert torch.equal(x, x_before)  # x itself is not changed
    if eps == 0:
        assert torch.equal(adv, x)


def test_the_ball_is_exact_where_x_plus_eps_rounds_away_from_x():
    """Many values and radii in float32, where fl(x + ε) − x > ε happens: the projection moves that bound in."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20000, generator=g)
    model = nn.Linear(1, 2)  # acts on each value alone: the gradient's sign is sign(W_1 − W_0) or its opposite
    rounding = False
    for eps in (0.1, 0.3, 8 / 255, 1 / 3):
        rounding |= bool(((x + eps) - x > eps).any() or (x - (x - eps) > eps).any())
        for y in (0, 1):
            adv = fgsm(model, x[:, None], torch.full((len(x),), y), eps)
            assert bool(((adv - x[:, None]).abs() <= eps).all())
    assert rounding  # the case the test is about did occur


@pytest.mark.parametrize("attack", ATTACKS)
def test_attacks_leave_the_model_as_it_was(attack):
    """Parameters, buffers (BatchNorm's running statistics), .grad (None or a tensor), requires_grad and every
    submodule's mode, for a model in train mode with a frozen submodule in eval mode."""
    model = small_model().train()
    model[1].eval()  # a frozen BatchNorm inside a training model keeps its own mode
    model[0].weight.grad = torch.randn_like(model[0].weight)  # some gradients exist, others are None
    model[5].bias.requires_grad_(False)
    state = copy.deepcopy(model.state_dict())
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    needs = {n: p.requires_grad for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    x, y = images()
    ATTACKS[attack](model, x, y, 0.1)
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    for n, p in model.named_parameters():
        assert (p.grad is None) == (grads[n] is None) and (p.grad is None or torch.equal(p.grad, grads[n])), n
        assert p.requires_grad == needs[n], n
    assert {n: m.training for n, m in model.named_modules()} == modes


def test_attacks_run_the_model_in_eval_mode():
    """In train mode dropout would make every call differ, and BatchNorm would use the batch's statistics."""
    model = small_model().train()
    x, y = images()
    assert torch.equal(fgsm(model, x, y, 0.1), fgsm(model, x, y, 0.1))
    assert torch.equal(pgd(model, x, y, 0.1, steps=3), pgd(model.eval(), x, y, 0.1, steps=3))


def test_attacks_work_under_no_grad_and_on_inputs_that_require_grad():
    model, (x, y) = small_model(), images()
    expected = fgsm(model, x, y, 0.1)
    with torch.no_grad():
        assert torch.equal(fgsm(model, x, y, 0.1), expected)
    leaf = x.clone().requires_grad_(True)
    adv = pgd(model, leaf, y, 0.1, steps=2)
    assert not adv.requires_grad and leaf.grad is None


# --- the formulas


def test_fgsm_by_hand_on_a_two_by_two_linear_model():
    """W = [[1, −2], [0, 1]], b = 0, x = (0.5, 0.5), y = 0: logits (−0.5, 0.5), p = (σ(−1), σ(1)) = (0.269, 0.731),
    ∇ₓ CE = Wᵀ(p − e_0) = (−0.731, 0.731 · 2 + 0.731) = (−0.731, 2.193), whose sign is (−1, +1): with ε = 0.1,
    x' = (0.4, 0.6). A second example at (0.95, 0.02), y = 1: logits (0.91, 0.02), p − e_1 = (0.709, −0.709),
    ∇ = 0.709 · (1, −2) − 0.709 · (0, 1) = (0.709, −2.127), whose sign is (+1, −1): x' = (1.05 → 1, −0.08 → 0)."""
    model = nn.Linear(2, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0], [0.0, 1.0]]))
        model.bias.zero_()
    x = torch.tensor([[0.5, 0.5], [0.95, 0.02]], dtype=torch.float64)
    adv = fgsm(model, x, torch.tensor([0, 1]), 0.1)
    torch.testing.assert_close(adv, torch.tensor([[0.4, 0.6], [1.0, 0.0]], dtype=torch.float64), rtol=0, atol=1e-15)


def test_fgsm_is_the_sign_of_the_analytic_gradient():
    """For logits z = Wx + b, ∇ₓ CE(z, y) = Wᵀ(softmax(z) − e_y), computed here in float64 without autograd."""
    g = torch.Generator().manual_seed(3)
    model = nn.Linear(7, 4).double()
    x = torch.rand(32, 7, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (32,), generator=g)
    W, b = model.weight.detach(), model.bias.detach()
    p = torch.softmax(x @ W.T + b, -1)
    grad = (p - nn.functional.one_hot(y, 4).double()) @ W
    for eps in (0.05, 0.2):
        expected = (x + eps * grad.sign()).clamp(0, 1)
        torch.testing.assert_close(fgsm(model, x, y, eps), expected, rtol=0, atol=1e-15)


def test_input_gradient_is_the_analytic_gradient_and_leaves_the_model_as_it_was():
    """∇ₓ sum_n CE(Wx_n + b, y_n) = (softmax(z_n) − e_(y_n)) W for each n, in float64 without autograd."""
    g = torch.Generator().manual_seed(4)
    model = nn.Sequential(nn.Linear(5, 3), nn.Dropout(0.5)).double().train()
    x = torch.rand(16, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (16,), generator=g)
    W, b = model[0].weight.detach(), model[0].bias.detach()
    expected = (torch.softmax(x @ W.T + b, -1) - nn.functional.one_hot(y, 3).double()) @ W
    torch.testing.assert_close(input_gradient(model, x, y), expected, rtol=0, atol=1e-12)  # dropout off: eval mode
    assert model.training and model[0].weight.grad is None
    with pytest.raises(ValueError, match="x"):
        input_gradient(model, x + 2, y)


def test_pgd_with_one_step_of_size_eps_is_fgsm():
    model, (x, y) = small_model(), images()
    for eps in (0.02, 0.1, 0.5):
        assert torch.equal(pgd(model, x, y, eps, steps=1, step_size=eps), fgsm(model, x, y, eps))


def test_pgd_on_a_linear_two_class_model_ends_where_fgsm_does():
    """There ∇ₓ CE = (p_1 − 1[y = 1]) (W_1 − W_0): its sign never changes, so every step moves the same way, and
    after steps · α ≥ ε each input sits at its corner of the ball (clipped to [0, 1]), where FGSM puts it."""
    torch.manual_seed(0)
    model = nn.Linear(10, 2)
    x, y = torch.rand(50, 10), torch.randint(0, 2, (50,))
    assert torch.equal(pgd(model, x, y, 0.1), fgsm(model, x, y, 0.1))  # default α = 2.5 ε / steps
    assert torch.equal(pgd(model, x, y, 0.1, steps=4, step_size=0.03), fgsm(model, x, y, 0.1))


def test_pgd_takes_its_default_step_and_its_random_start_from_the_generator():
    model, (x, y) = small_model(), images()
    assert torch.equal(pgd(model, x, y, 0.1, steps=4), pgd(model, x, y, 0.1, steps=4, step_size=2.5 * 0.1 / 4))
    start = lambda seed: pgd(model, x, y, 0.1, steps=2, random_start=True,  # noqa: E731
                             generator=torch.Generator().manual_seed(seed))
    assert torch.equal(start(0), start(0)) and not torch.equal(start(0), start(1))
    assert not torch.equal(start(0), pgd(model, x, y, 0.1, steps=2))


def test_attacks_lower_a_trained_models_accuracy_as_eps_grows():
    """A small MLP trained on two blobs (means 0.4 and 0.6 in every coordinate): clean accuracy ~1, and an ε of
    0.1 (half the distance between the means, per coordinate) is enough to cross to the other class."""
    x, y = blobs()
    model = trained_mlp(x, y)
    epsilons = [0.0, 0.05, 0.08, 0.1, 0.12, 0.2]
    acc_fgsm = [accuracy(model, fgsm(model, x, y, e), y) for e in epsilons]
    acc_pgd = [accuracy(model, pgd(model, x, y, e), y) for e in epsilons]
    assert acc_fgsm[0] == acc_pgd[0] >= 0.99
    assert all(a >= b for a, b in zip(acc_fgsm, acc_fgsm[1:], strict=False)), acc_fgsm
    assert all(a >= b for a, b in zip(acc_pgd, acc_pgd[1:], strict=False)), acc_pgd
    assert acc_fgsm[-1] <= 0.05 and acc_pgd[-1] <= 0.05
    assert all(p <= f + 0.01 for p, f in zip(acc_pgd, acc_fgsm, strict=True)), (acc_pgd, acc_fgsm)
    noisy = accuracy(model, gaussian_noise(x, 0.1, torch.Generator().manual_seed(0)), y)
    assert noisy > acc_fgsm[3] + 0.3  # random noise of σ = ε hurts far less than the worst case


# --- corruptions


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_noise_statistics(dtype):
    """On x = 0.5: with σ = 0.05 the clipping is 10σ away, so x' − x has mean 0 and std σ; with σ = 1 a fraction
    Φ(−0.5) = 0.3085 of the values is clipped to 0 (and as many to 1)."""
    x = torch.full((400, 500), 0.5, dtype=dtype)
    out = gaussian_noise(x, 0.05, torch.Generator().manual_seed(0))
    assert out.dtype == dtype and out.shape == x.shape and torch.equal(x, torch.full_like(x, 0.5))
    d = (out - x).double()
    assert abs(d.mean().item()) < 5 * 0.05 / math.sqrt(x.numel())
    assert abs(d.std().item() / 0.05 - 1) < 0.01
    wide = gaussian_noise(x, 1.0, torch.Generator().manual_seed(1))
    phi = 0.5 * (1 + math.erf(-0.5 / math.sqrt(2)))
    assert abs((wide == 0).double().mean().item() - phi) < 0.005
    assert abs((wide == 1).double().mean().item() - phi) < 0.005
    assert wide.min() == 0 and wide.max() == 1


def test_gaussian_noise_is_reproducible_with_a_generator_and_zero_sigma_is_a_copy():
    x, _ = images()
    a = gaussian_noise(x, 0.1, torch.Generator().manual_seed(7))
    assert torch.equal(a, gaussian_noise(x, 0.1, torch.Generator().manual_seed(7)))
    assert not torch.equal(a, gaussian_noise(x, 0.1, torch.Generator().manual_seed(8)))
    torch.manual_seed(0)
    b = gaussian_noise(x, 0.1)
    torch.manual_seed(0)
    assert torch.equal(b, gaussian_noise(x, 0.1))  # without a generator: torch's global one
    same = gaussian_noise(x, 0)
    assert torch.equal(same, x) and same is not x and same.data_ptr() != x.data_ptr()
    leaf = x.clone().requires_grad_(True)
    assert not gaussian_noise(leaf, 0.1).requires_grad


def test_blur_of_a_point_is_the_outer_product_of_the_kernel():
    """σ = 0.5: r = ⌈1.5⌉ = 2, k ∝ exp(−i² / 0.5) = (e^−8, e^−2, 1, e^−2, e^−8); a single bright pixel far from the
    border becomes k kᵀ, in each channel on its own."""
    x = torch.zeros(2, 3, 9, 9, dtype=torch.float64)
    x[0, 1, 4, 4] = 1.0
    k = np.exp(-np.arange(-2, 3) ** 2 / 0.5)
    k /= k.sum()
    expected = torch.zeros_like(x)
    expected[0, 1, 2:7, 2:7] = torch.from_numpy(np.outer(k, k))
    torch.testing.assert_close(blur(x, 0.5), expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_blur_keeps_constants_shapes_and_the_unit_box(dtype):
    flat = torch.full((2, 3, 5, 7), 0.3, dtype=dtype)
    torch.testing.assert_close(blur(flat, 2.0), flat)  # the border repeats the edge: no dark frame
    x, _ = images(dtype=dtype)
    out = blur(x, 1.2)
    assert out.shape == x.shape and out.dtype == dtype and out.min() >= 0 and out.max() <= 1
    assert torch.equal(blur(x, 0), x) and blur(x, 0) is not x
    assert blur(x[0, 0], 1.0).shape == (6, 6)  # any (..., H, W)


def test_contrast_by_hand():
    """x = (0.2, 0.6) has mean 0.4: factor 2 gives (0.0, 0.8), factor 0 (0.4, 0.4), factor 3 (−0.2 → 0, 1.0); each
    example around its own mean (the second, (0.9, 0.7), around 0.8)."""
    x = torch.tensor([[0.2, 0.6], [0.9, 0.7]], dtype=torch.float64)
    torch.testing.assert_close(contrast(x, 2.0), torch.tensor([[0.0, 0.8], [1.0, 0.6]], dtype=torch.float64))
    torch.testing.assert_close(contrast(x, 0.0), torch.tensor([[0.4, 0.4], [0.8, 0.8]], dtype=torch.float64))
    torch.testing.assert_close(contrast(x, 3.0), torch.tensor([[0.0, 1.0], [1.0, 0.5]], dtype=torch.float64))
    torch.testing.assert_close(contrast(x, 1.0), x)


def test_shift_by_hand_and_against_slicing():
    x = torch.arange(1, 10, dtype=torch.float64).reshape(1, 1, 3, 3) / 10
    down_left = torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.3, 0.0], [0.5, 0.6, 0.0]], dtype=torch.float64)
    assert torch.equal(shift(x, (1, -1))[0, 0], down_left)
    assert torch.equal(shift(x, 0), x) and torch.equal(shift(x, 3), torch.zeros_like(x))
    assert torch.equal(shift(x, (-100, 0)), torch.zeros_like(x))
    imgs, _ = images()
    h, w = imgs.shape[-2:]
    for dy in range(-7, 8, 2):
        for dx in (-6, -1, 0, 2, 5):
            expected = torch.zeros_like(imgs)  # independent: pixel by pixel, x~[i, j] = x[i − dy, j − dx]
            for i in range(h):
                for j in range(w):
                    if 0 <= i - dy < h and 0 <= j - dx < w:
                        expected[..., i, j] = imgs[..., i - dy, j - dx]
            assert torch.equal(shift(imgs, (dy, dx)), expected), (dy, dx)
    assert not torch.equal(shift(imgs, (0, 1)), torch.roll(imgs, 1, -1))  # zero fill, no wrap-around


# --- errors


NAN = images()[0].clone()
NAN[0, 0, 2, 2] = float("nan")


@pytest.mark.parametrize("call, error, words", [
    (lambda m, x, y: fgsm(m, x, y, -0.1), ValueError, ["eps", "-0.1"]),
    (lambda m, x, y: pgd(m, x, y, float("nan")), ValueError, ["eps", "nan"]),
    (lambda m, x, y: pgd(m, x, y, 0.1, steps=0), ValueError, ["steps", "positive int", "0"]),
    (lambda m, x, y: pgd(m, x, y, 0.1, steps=2.5), ValueError, ["steps", "2.5"]),
    (lambda m, x, y: pgd(m, x, y, 0.1, step_size=-1), ValueError, ["step_size", "-1"]),
    (lambda m, x, y: fgsm(m, x * 2, y, 0.1), ValueError, ["x must hold inputs in [0, 1]", "max 2"]),
    (lambda m, x, y: fgsm(m, x - 0.5, y, 0.1), ValueError, ["[0, 1]", "min -0.5"]),
    (lambda m, x, y: fgsm(m, NAN, y, 0.1), ValueError, ["x contains 1 NaN"]),
    (lambda m, x, y: fgsm(m, x, y[:5], 0.1), ValueError, ["y must be", "8 integer class labels", "shape (5,)"]),
    (lambda m, x, y: fgsm(m, x, y.float(), 0.1), ValueError, ["y must be", "float32"]),
    (lambda m, x, y: fgsm(m, x, [0] * 8, 0.1), ValueError, ["y must be", "list"]),
    (lambda m, x, y: fgsm(m, x, y + 3, 0.1), ValueError, ["y must hold class labels in [0, 2]", "3 classes"]),
    (lambda m, x, y: fgsm(m, x.double(), y, 0.1), ValueError, ["weights are torch.float32", "inputs are"]),
    (lambda m, x, y: fgsm(None, x, y, 0.1), TypeError, ["model must be a torch.nn.Module", "NoneType"]),
    (lambda m, x, y: fgsm(m, x.numpy(), y, 0.1), TypeError, ["x must be a torch.Tensor", "ndarray"]),
    (lambda m, x, y: fgsm(m, (x * 255).long(), y, 0.1), ValueError, ["x must be a floating-point", "int64"]),
    (lambda m, x, y: gaussian_noise(x, -1.0), ValueError, ["sigma", "-1.0"]),
    (lambda m, x, y: gaussian_noise(x + 1, 0.1), ValueError, ["[0, 1]", "max 2"]),
    (lambda m, x, y: blur(x, -0.5), ValueError, ["sigma", "-0.5"]),
    (lambda m, x, y: blur(x[0, 0, 0], 1.0), ValueError, ["x must have at least 2 dimension(s)", "(6,)"]),
    (lambda m, x, y: contrast(x, -1), ValueError, ["factor", "-1"]),
    (lambda m, x, y: contrast(x[:0], 1), ValueError, ["x must not be empty", "(0, 1, 6, 6)"]),
    (lambda m, x, y: shift(x, (1, 2, 3)), ValueError, ["pixels", "(dy, dx)", "(1, 2, 3)"]),
    (lambda m, x, y: shift(x, 1.5), ValueError, ["pixels", "1.5"]),
    (lambda m, x, y: shift(x, True), ValueError, ["pixels", "True"]),
])
def test_bad_arguments_are_clear_errors(call, error, words):
    x, y = images()
    with pytest.raises(error) as e:
        call(small_model(), x, y)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
