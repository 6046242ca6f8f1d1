"""kdlite.distill: the teacher stays frozen and untouched, caching, extra losses with trained connectors."""

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from kdlite.data import DeviceLoader, load_dataset, random_crop
from kdlite.distill import distill
from kdlite.features import FeatureTap, connector
from kdlite.losses import attention_transfer_loss, dkd_loss, hint_loss, kd_loss
from kdlite.measure import count_params
from kdlite.models import CNN, MLP
from kdlite.train import History, fit, seed_everything

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained_teacher(digits):
    """A teacher with BatchNorm and dropout, trained briefly."""
    seed_everything(0)
    teacher = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 10)
    )
    fit(teacher, DeviceLoader(digits[0], 64, device=CPU, seed=0), 6, progress=False)
    return teacher


def loader(train, **kw):
    return DeviceLoader(train, 64, device=CPU, seed=0, **kw)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_bit_identical(model, snap):
    state = model.state_dict()
    assert state.keys() == snap.keys()
    for k, v in snap.items():
        assert state[k].dtype == v.dtype and torch.equal(state[k], v), k


def test_teacher_bit_identical_and_back_in_train_mode(digits, trained_teacher):
    teacher = copy.deepcopy(trained_teacher).train()  # left in train mode by its user
    teacher[5].weight.requires_grad_(False)  # a flag of the user's own
    teacher[2].eval()  # and one submodule in eval mode
    modes = [m.training for m in teacher.modules()]
    snap = snapshot(teacher)
    seen = []

    def spy(module, inputs, output):  # what the teacher's forward sees during distillation
        seen.append((module.training, torch.is_grad_enabled(), output.requires_grad))

    hook = teacher.register_forward_hook(spy)
    h = distill(MLP(64, 32, 10), teacher, loader(digits[0]), 2, temperature=4.0, alpha=0.9, val=digits[1],
                progress=False)
    hook.remove()
    assert isinstance(h, History) and len(h) == 2 and {"train_loss", "val_accuracy"} <= set(h.last)
    assert seen and all(s == (False, False, False) for s in seen)  # eval mode, no autograd
    assert_bit_identical(teacher, snap)
    assert [m.training for m in teacher.modules()] == modes
    assert [p.requires_grad for p in teacher.parameters()] == [True, True, True, True, False, True]
    assert all(p.grad is None for p in teacher.parameters())


def test_teacher_restored_when_training_fails(digits, trained_teacher):
    teacher = copy.deepcopy(trained_teacher).train()
    snap = snapshot(teacher)

    def boom(s, t, batch):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        distill(MLP(64, 16, 10), teacher, loader(digits[0]), 1, temperature=2.0, alpha=0.5,
                extra_losses=[(1.0, boom)], progress=False)
    assert teacher.training and all(m.training for m in teacher.modules())
    assert all(p.requires_grad for p in teacher.parameters())
    assert_bit_identical(teacher, snap)


def test_distilled_student_learns(digits, trained_teacher):
    seed_everything(1)
    h = distill(MLP(64, 32, 10), trained_teacher, loader(digits[0]), 4, temperature=4.0, alpha=0.9,
                val=digits[1], progress=False)
    assert h["val_accuracy"][-1] > 0.5 and h["train_loss"][-1] < h["train_loss"][0]  # chance is 0.1


def test_cache_teacher_reuses_logits_of_unaugmented_data(digits, trained_teacher):
    teacher = copy.deepcopy(trained_teacher).train()
    snap = snapshot(teacher)
    calls, checked = [], []
    teacher.register_forward_hook(lambda m, i, o: calls.append(len(o)))

    def check(s, t, batch):  # the cached logits are the eval-mode teacher's on this very batch
        assert len(batch) == 3 and t is batch[-1]
        with torch.no_grad():
            checked.append(torch.allclose(t, teacher.eval()(batch[0]), atol=1e-5))
        return s.sum() * 0

    distill(MLP(64, 16, 10), teacher, loader(digits[0]), 2, temperature=4.0, alpha=0.9, cache_teacher=True,
            extra_losses=[(1.0, check)], progress=False)
    n = len(digits[0])
    # one pass over the data in chunks before training; every later call is check()'s own
    assert len(calls) == 2 + len(checked) and calls[:2] == [1024, n - 1024]
    assert checked and all(checked) and len(checked) == 2 * len(loader(digits[0]))
    assert_bit_identical(teacher, snap)
    assert teacher.training  # train mode restored


def test_cache_teacher_same_result_as_live_teacher(digits, trained_teacher):
    runs = []
    for cache in (False, True):
        seed_everything(2)
        h = distill(MLP(64, 16, 10), trained_teacher, loader(digits[0]), 2, temperature=4.0, alpha=0.7,
                    cache_teacher=cache, val=digits[1], progress=False)
        runs.append(h)
    assert runs[0]["train_loss"] == pytest.approx(runs[1]["train_loss"], rel=1e-3)
    assert runs[0]["val_accuracy"] == pytest.approx(runs[1]["val_accuracy"], abs=0.01)


def test_cache_teacher_refuses_augmentation(digits, trained_teacher):
    teacher = copy.deepcopy(trained_teacher).train()
    images = DeviceLoader(digits[0], 64, device=CPU, augment=lambda x: random_crop(x, 1))
    with pytest.raises(ValueError, match=r"cache_teacher.*augment.*student's.*view.*Beyer"):
        distill(MLP(64, 16, 10), teacher, images, 1, temperature=4.0, alpha=0.9, cache_teacher=True,
                progress=False)
    assert teacher.training
    with pytest.raises(ValueError, match="cache_teacher.*TensorDataset or a kdlite DeviceLoader"):
        distill(MLP(64, 16, 10), teacher, DataLoader(digits[0], 64), 1, temperature=4.0, alpha=0.9,
                cache_teacher=True, progress=False)
    with FeatureTap(teacher, "2"), pytest.raises(ValueError, match=r"cache_teacher=True .* a FeatureTap is open "
                                                                r"on its 2: .*stale"):
        distill(MLP(64, 16, 10), teacher, digits[0], 1, temperature=4.0, alpha=0.9, cache_teacher=True,
                device="cpu", progress=False)
    # a TensorDataset is fine: it is not augmented
    h = distill(MLP(64, 16, 10), teacher, digits[0], 1, temperature=4.0, alpha=0.9, cache_teacher=True,
                device="cpu", progress=False)
    assert len(h) == 1


def test_fitnets_connector_trained_but_not_part_of_student(digits):
    seed_everything(3)
    teacher, student = CNN(1, 10, widths=(8, 16)), CNN(1, 10, widths=(4, 8))
    n_student = count_params(student)
    train = DeviceLoader(digits[0], 128, device=CPU, seed=0)
    x = digits[0].tensors[0][:2]
    with FeatureTap(student, "features.1") as st, FeatureTap(teacher, "features.1") as tt:
        student(x), teacher(x)
        conn = connector(st.features["features.1"].shape, tt.features["features.1"].shape)
        before = copy.deepcopy(conn.state_dict())

        def hint(s, t, batch):
            return hint_loss(st.features["features.1"], tt.features["features.1"], conn)

        def attention(s, t, batch):
            return attention_transfer_loss(st.features["features.1"], tt.features["features.1"])

        h = distill(student, teacher, train, 1, temperature=4.0, alpha=0.9, extra_params=conn.parameters(),
                    extra_losses=[(1.0, hint), (100.0, attention)], progress=False)
    assert len(h) == 1 and all(not m._forward_hooks for m in (*student.modules(), *teacher.modules()))
    assert not torch.equal(conn[0].weight, before["0.weight"])  # the connector was trained
    assert not torch.equal(conn[1].running_mean, before["1.running_mean"])
    assert count_params(student) == n_student
    assert not {id(p) for p in conn.parameters()} & {id(p) for p in student.parameters()}


def test_connector_left_out_of_optimizer_is_an_error(digits):
    teacher, student = MLP(64, 32, 10), MLP(64, 16, 10)
    conn = nn.Linear(16, 32)
    with FeatureTap(student, "net.2") as st, FeatureTap(teacher, "net.2") as tt:
        extra = [(1.0, lambda s, t, b: hint_loss(st.features["net.2"], tt.features["net.2"], conn))]
        with pytest.raises(ValueError, match=r"2 parameter tensor\(s\).*extra_params"):
            distill(student, teacher, loader(digits[0]), 1, temperature=4.0, alpha=0.5, extra_losses=extra,
                    progress=False)
        opt = torch.optim.SGD(student.parameters(), lr=0.1)  # your own optimizer must hold it too
        with pytest.raises(ValueError, match="optimizer does not train"):
            distill(student, teacher, loader(digits[0]), 1, temperature=4.0, alpha=0.5, extra_losses=extra,
                    optimizer=opt, progress=False)
        opt = torch.optim.SGD([*student.parameters(), *conn.parameters()], lr=0.1)
        before = conn.weight.detach().clone()
        distill(student, teacher, loader(digits[0]), 1, temperature=4.0, alpha=0.5, extra_losses=extra,
                optimizer=opt, progress=False)
        assert not torch.equal(conn.weight, before)


def test_dkd_through_extra_losses(digits, trained_teacher):
    seed_everything(4)
    terms = []

    def dkd(s, t, batch):
        loss = dkd_loss(s, t, batch[1], 4.0, 1.0, 8.0)
        terms.append(loss.item())
        return loss

    h = distill(MLP(64, 32, 10), trained_teacher, loader(digits[0]), 2, temperature=4.0, alpha=0.0,
                extra_losses=[(1.0, dkd)], val=digits[1], progress=False)
    assert len(terms) == 2 * len(loader(digits[0])) and all(t > 0 for t in terms)
    assert h["train_loss"][-1] < h["train_loss"][0]


def test_step_loss_is_distillation_loss(digits, trained_teacher):
    """The loss fit sees is alpha · KD + (1 - alpha) · CE + sum w · extra, written out here."""
    student = MLP(64, 16, 10)
    seen = []

    def record(s, t, batch):
        ce = nn.functional.cross_entropy(s, batch[1])
        kd = kd_loss(s, t, 3.0)
        seen.append((0.25 * kd + 0.75 * ce + 2.0 * 0.5).item())
        return torch.tensor(0.5)

    h = distill(student, trained_teacher, loader(digits[0], shuffle=False), 1, temperature=3.0, alpha=0.25,
                extra_losses=[(2.0, record)], optimizer=torch.optim.SGD(student.parameters(), lr=0.0),
                progress=False)
    batches = [len(b[1]) for b in loader(digits[0])]
    mean = sum(v * n for v, n in zip(seen, batches, strict=True)) / sum(batches)
    assert h.last["train_loss"] == pytest.approx(mean, rel=1e-5)


def test_bad_arguments(digits, trained_teacher):
    teacher, student = copy.deepcopy(trained_teacher), MLP(64, 16, 10)
    train = loader(digits[0])
    kw = dict(progress=False)
    for T in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            distill(student, teacher, train, 1, temperature=T, alpha=0.5, **kw)
    with pytest.raises(ValueError, match=r"temperature must be at most 10000"):
        distill(student, teacher, train, 1, temperature=1e5, alpha=0.5, **kw)
    for a in (-0.5, 1.01, float("nan")):
        with pytest.raises(ValueError, match="alpha"):
            distill(student, teacher, train, 1, temperature=2.0, alpha=a, **kw)
    with pytest.raises(ValueError, match="same module"):
        distill(teacher, teacher, train, 1, temperature=2.0, alpha=0.5, **kw)
    with pytest.raises(ValueError, match="step"):
        distill(student, teacher, train, 1, temperature=2.0, alpha=0.5, step=lambda m, b: None, **kw)
    with pytest.raises(ValueError, match=r"extra_losses\[0\].*\(weight, fn\)"):
        distill(student, teacher, train, 1, temperature=2.0, alpha=0.5, extra_losses=[kd_loss], **kw)
    with pytest.raises(ValueError, match=r"extra_losses\[1\] weight"):
        distill(student, teacher, train, 1, temperature=2.0, alpha=0.5,
                extra_losses=[(1.0, kd_loss), (float("nan"), kd_loss)], **kw)
    with pytest.raises(ValueError, match=r"same shape.*\(64, 12\).*\(64, 10\)"):
        distill(MLP(64, 16, 12), teacher, train, 1, temperature=2.0, alpha=0.5, **kw)
    assert teacher.training


def test_extra_losses_must_give_finite_scalars(digits, trained_teacher):
    teacher, student = copy.deepcopy(trained_teacher), MLP(64, 16, 10)
    train, kw = loader(digits[0]), dict(temperature=2.0, alpha=0.5, progress=False)
    before = snapshot(student)
    with pytest.raises(ValueError, match=r"extra_losses\[1\] must return a scalar tensor; got shape \(64, 10\)"):
        distill(student, teacher, train, 1, extra_losses=[(1.0, lambda s, t, b: s.sum()), (1.0, lambda s, t, b: s)],
                **kw)
    with pytest.raises(ValueError, match=r"extra_losses\[0\] returned nan at this step"):
        distill(student, teacher, train, 1, extra_losses=[(1.0, lambda s, t, b: s.sum() * float("nan"))], **kw)
    assert_bit_identical(student, before)  # raised before any optimizer step
    empty = torch.utils.data.TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="empty training set"):
        distill(student, teacher, empty, 1, cache_teacher=True, **kw)


def test_extra_loss_weight_as_a_function_of_the_epoch(digits, trained_teacher):
    """A weight w(epoch) is called at every step with the epoch 1, 2, ...; a term of value 1 and zero gradient
    leaves the training unchanged and adds exactly w(epoch) to each epoch's mean training loss."""
    n = len(loader(digits[0]))
    seen = []

    def warmup(epoch):  # DKD's published warm-up, over 2 epochs instead of 20
        seen.append(epoch)
        return min(epoch / 2, 1.0)

    def one(s, t, batch):
        return s.sum() * 0.0 + 1.0

    runs = {}
    for name, extra in (("plain", []), ("warm-up", [(warmup, one)])):
        seed_everything(0)
        runs[name] = distill(MLP(64, 16, 10), trained_teacher, loader(digits[0]), 3, temperature=4.0, alpha=0.5,
                             extra_losses=extra, progress=False)
    assert seen == [1] * n + [2] * n + [3] * n
    added = [b - a for a, b in zip(runs["plain"]["train_loss"], runs["warm-up"]["train_loss"], strict=True)]
    assert added == pytest.approx([0.5, 1.0, 1.0], abs=1e-5)


@pytest.mark.parametrize("cache", [False, True])
def test_epoch_weights_with_a_tensor_dataset(digits, trained_teacher, cache):
    """A TensorDataset becomes fit's loader of batch 128 before the steps are counted, cached logits or not."""
    seen = []
    distill(MLP(64, 16, 10), trained_teacher, digits[0], 2, temperature=4.0, alpha=0.5, cache_teacher=cache,
            extra_losses=[(lambda epoch: seen.append(epoch) or 1.0, lambda s, t, b: kd_loss(s, t, 2.0))],
            progress=False)
    n = math.ceil(len(digits[0]) / 128)
    assert seen == [1] * n + [2] * n


def test_bad_epoch_weights(digits, trained_teacher):
    student, kw = MLP(64, 16, 10), dict(temperature=2.0, alpha=0.5, progress=False)
    before = snapshot(student)
    term = lambda s, t, b: kd_loss(s, t, 2.0)  # noqa: E731
    for bad in (float("nan"), "1", None, True):
        with pytest.raises(ValueError, match=rf"extra_losses\[1\] weight function returned {bad!r} at epoch 1; "
                                             r"expected a finite number"):
            distill(student, trained_teacher, loader(digits[0]), 1,
                    extra_losses=[(1.0, term), (lambda epoch, bad=bad: bad, term)], **kw)
    assert_bit_identical(student, before)  # raised before any optimizer step

    class NoLength:
        def __iter__(self):
            return iter(loader(digits[0]))

    with pytest.raises(ValueError, match=r"needs a train with a length.*got NoLength"):
        distill(student, trained_teacher, NoLength(), 1, extra_losses=[(lambda epoch: 1.0, term)], **kw)
    distill(student, trained_teacher, NoLength(), 1, extra_losses=[(1.0, term)], **kw)  # a number needs no length


def test_an_extra_loss_that_fails_is_named_not_the_models_inputs():
    """A hand-written feature loss on features of different widths: torch's size error names the extra loss and
    the connector, instead of fit's 'the model cannot take the training inputs'."""
    torch.manual_seed(0)
    x, y = torch.rand(32, 20), torch.randint(0, 10, (32,))
    student, teacher = nn.Sequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 10)), nn.Sequential(
        nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 10))
    with FeatureTap(student, "1") as st, FeatureTap(teacher, "1") as tt:
        def feature_mse(s, t, batch):
            return (st.features["1"] - tt.features["1"]).pow(2).mean()

        with pytest.raises(ValueError, match=r"extra_losses\[0\] \(feature_mse\) raised The size of "
                                             r"tensor a \(8\) must match .*need a connector") as e:
            distill(student, teacher, (x, y), 1, temperature=4.0, alpha=0.5, progress=False,
                    extra_losses=[(1.0, feature_mse)])
    assert "cannot take the training inputs" not in str(e.value)
