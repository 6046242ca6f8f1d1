import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import kdlite
from kdlite.data import DeviceLoader, load_dataset
from kdlite.models import MLP
from kdlite.train import History, evaluate, fit, get_device, seed_everything


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_fit_defaults_train_well(digits):
    train, test = digits
    seed_everything(0)
    h = fit(MLP(64, 64, 10), DeviceLoader(train, 64, seed=0), 8, val=test, progress=False)
    assert isinstance(h, History) and len(h) == 8
    assert h.last["val_accuracy"] > 0.93 and h["train_loss"][-1] < h["train_loss"][0]
    assert {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "time"} <= set(h.last)


def test_fit_accepts_dataloader_and_tensordataset(digits):
    train, test = digits
    h = fit(MLP(64, 32, 10), DataLoader(train, batch_size=64, shuffle=True), 2, progress=False)
    assert len(h) == 2
    h = fit(MLP(64, 32, 10), train, 1, progress=False)
    assert len(h) == 1


def test_evaluate_matches_a_manual_computation(digits):
    _, test = digits
    m = MLP(64, 16, 10).train()
    x, y = test.tensors
    with torch.no_grad():
        logits = m.eval()(x).double()
    m.train()
    ev = evaluate(m, DeviceLoader(test, 37, shuffle=False, device="cpu"))
    assert math.isclose(ev["loss"], torch.nn.functional.cross_entropy(logits, y).item(), rel_tol=1e-5)
    assert ev["accuracy"] == (logits.argmax(1) == y).double().mean().item()
    assert ev["n"] == len(y) and m.training  # mode restored
    assert evaluate(m, test)["accuracy"] == ev["accuracy"]  # a TensorDataset works too


def test_same_seed_same_result(digits):
    train, _ = digits
    runs = []
    for _ in range(2):
        seed_everything(1)
        m = MLP(64, 16, 10)
        fit(m, DeviceLoader(train, 64, seed=1), 1, progress=False)
        runs.append(torch.cat([p.flatten() for p in m.parameters()]))
    assert torch.equal(*runs)


def test_custom_step_and_after_step(digits):
    train, _ = digits
    calls = []

    def step(model, batch):
        logits = model(batch[0])
        return torch.nn.functional.cross_entropy(logits, batch[1]) * 0.5, logits

    fit(MLP(64, 8, 10), DeviceLoader(train, 256), 1, step=step, after_step=lambda: calls.append(1), progress=False)
    assert len(calls) == len(DeviceLoader(train, 256))


def test_own_optimizer_and_extra_params(digits):
    train, _ = digits
    m = MLP(64, 8, 10)
    extra = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    fit(m, DeviceLoader(train, 256), 1, optimizer=opt, progress=False)

    def step(model, batch):
        logits = model(batch[0])
        return torch.nn.functional.cross_entropy(logits, batch[1]) + extra.sum(), logits

    fit(m, DeviceLoader(train, 256), 1, step=step, extra_params=[extra], progress=False)
    assert (extra != 0).all()  # the extra parameter was in the default optimizer


def test_fit_bad_input(digits):
    train, _ = digits
    m = MLP(64, 8, 10)
    with pytest.raises(ValueError, match="optimizer or lr"):
        fit(m, train, 1, optimizer=torch.optim.SGD(m.parameters(), lr=0.1), lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        fit(m, train, 1, lr=-1.0)
    with pytest.raises(ValueError, match="epochs"):
        fit(m, train, -1)
    with pytest.raises(ValueError, match="scheduler"):
        fit(m, train, 1, scheduler="step")
    with pytest.raises(ValueError, match="empty"):
        evaluate(m, [])


def test_nan_loss_is_an_error():
    x = torch.randn(64, 4)
    x[3, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="epoch 1"):
        fit(MLP(4, 4, 2), TensorDataset(x, torch.zeros(64, dtype=torch.long)), 1, progress=False)


def test_progress_bar_runs(digits, capsys):
    train, _ = digits
    fit(MLP(64, 8, 10), DeviceLoader(train, 256), 1, progress=True)
    assert "train" in capsys.readouterr().err


def test_history_plot_and_keys(digits):
    import matplotlib

    matplotlib.use("Agg")
    train, test = digits
    h = fit(MLP(64, 8, 10), DeviceLoader(train, 256), 2, val=test, progress=False)
    axes = h.plot()
    assert len(axes) == 2 and len(axes[0].lines) == 2 and len(axes[1].lines) == 2
    with pytest.raises(KeyError, match="val_accuracy"):
        h["nope"]
    assert h["val_acc"] == h["val_accuracy"] and h["train_acc"] == h["train_accuracy"]  # kdlite 0.1's names
    assert "2 epochs" in repr(h)


def test_get_device_and_seed(monkeypatch):
    assert get_device("cpu").type == "cpu"
    monkeypatch.setenv("KDLITE_DEVICE", "cpu")
    assert get_device().type == "cpu"
    seed_everything(5)
    a = torch.rand(3)
    seed_everything(5)
    assert torch.equal(a, torch.rand(3))
    assert kdlite.get_device is get_device


def test_very_short_runs_train():
    """A run of a handful of steps (smoke scale) must not trip the one-cycle schedule's warm-up."""
    ds = TensorDataset(torch.rand(320, 1, 8, 8), torch.randint(0, 10, (320,)))
    for n in (64, 320):
        h = fit(MLP(64, [8], 10), DeviceLoader(ds, n), 1, progress=False)
        assert len(h) == 1 and math.isfinite(h.last["train_loss"])


def test_fit_and_evaluate_explain_labels_the_model_cannot_output(digits):
    train, test = digits
    five = MLP(64, 8, 5)  # digits has 10 classes
    with pytest.raises(ValueError, match=r"labels of the training data: .*\[0, 4\].*outputs 5 classes"):
        fit(five, train, 1, progress=False)
    with pytest.raises(ValueError, match="labels of the evaluation data.*outputs 5 classes"):
        evaluate(five, test)
    x, y = train.tensors
    with pytest.raises(ValueError, match="labels of the training data: labels must be integer"):
        fit(MLP(64, 8, 10), TensorDataset(x, y.float()), 1, progress=False)


def test_fit_names_wrong_kinds_of_arguments(digits):
    train, _ = digits
    m = MLP(64, 8, 10)
    with pytest.raises(TypeError, match=r"train must be .*got Tensor \(for tensors x, y pass TensorDataset"):
        fit(m, train.tensors[0], 1)
    with pytest.raises(TypeError, match="train must be .*got str"):
        fit(m, "digits", 1)
    with pytest.raises(TypeError, match="val must be .*got str"):
        fit(m, train, 1, val="digits")  # refused before any training
    with pytest.raises(TypeError, match="model must be a torch.nn.Module; got function"):
        fit(lambda x: x, train, 1)
    with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0; got -1"):
        fit(m, train, 1, weight_decay=-1)
    with pytest.raises(ValueError, match="lr must be a positive finite number; got '0.1'"):
        fit(m, train, 1, lr="0.1")
    with pytest.raises(ValueError, match="seed must be a non-negative int; got 'a'"):
        seed_everything("a")


def test_fit_names_batches_that_are_not_x_y_tensors():
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    m = MLP(4, 4, 2)
    with pytest.raises(TypeError, match=r"each training batch must be a tuple or list \(x, y, ...\).*is a dict$"):
        fit(m, [{"x": x, "y": y}], 1, device="cpu", progress=False)
    with pytest.raises(TypeError, match=r"each training batch .* is a tuple of \['Tensor'\]"):
        fit(m, [(x,)], 1, device="cpu", progress=False)
    with pytest.raises(TypeError, match=r"is a list of \['Tensor', 'list'\]"):
        fit(m, [[x, y.tolist()]], 1, device="cpu", progress=False)
    with pytest.raises(TypeError, match=r"each evaluation batch must be a tuple or list .* is a dict$"):
        evaluate(m, [{"x": x, "y": y}], device="cpu")
    with pytest.raises(TypeError, match=r"each evaluation batch .* is a tuple of \['Tensor'\]"):
        evaluate(m, [(x,)], device="cpu")


def test_nan_loss_error_names_the_peak_learning_rate():
    x = torch.randn(64, 4)
    x[3, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"peak 0\.02\b"):
        fit(MLP(4, 4, 2), TensorDataset(x, torch.zeros(64, dtype=torch.long)), 1, lr=0.02, progress=False)


@pytest.mark.parametrize("amp, expected", [(None, torch.float32), (False, torch.float32), (True, torch.bfloat16)])
def test_amp_on_the_cpu_is_float32_unless_asked(digits, amp, expected):
    """bf16 autocast is a default only on bf16-native GPUs; amp=True turns it on anywhere, a CPU included."""
    train, _ = digits
    seen = []
    model = MLP(64, 16, 10)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    first.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    fit(model, train, 1, amp=amp, progress=False, device="cpu")
    assert seen and set(seen) == {expected}
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: the weights stay float32


def test_fit_says_why_it_got_no_batches():
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    m = MLP(4, 4, 2)
    one_shot = ((x[i : i + 4], y[i : i + 4]) for i in (0, 4))
    with pytest.raises(ValueError, match=r"no batches in epoch 2: .*a generator is used up after one epoch"):
        fit(m, one_shot, 2, device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"no batches in epoch 1: .*drop_last=True with a batch_size larger"):
        fit(m, DeviceLoader((x, y), 16, drop_last=True, device="cpu"), 1, progress=False)


@pytest.mark.parametrize("kind", ["DataLoader", "DeviceLoader"])
def test_evaluate_names_a_bad_label_in_a_later_batch(kind):
    x, y = torch.randn(20, 4), torch.zeros(20, dtype=torch.long)
    y[15] = 7  # in the second batch of 8
    data = DataLoader(TensorDataset(x, y), 8) if kind == "DataLoader" else \
        DeviceLoader((x, y), 8, shuffle=False, device="cpu")
    with pytest.raises(ValueError, match=r"labels of the evaluation data.*7.*\[0, (C - 1|2)\]"):
        evaluate(MLP(4, 4, 3), data, device="cpu")
