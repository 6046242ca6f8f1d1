import time

import pytest
import torch
from torch import nn

from kdlite import measure
from kdlite.models import CNN, MLP


def test_count_params_counts_shared_once():
    lin = nn.Linear(3, 4)
    assert measure.count_params(nn.Sequential(lin, nn.ReLU(), lin)) == 16
    m = nn.Linear(3, 4)
    m.bias.requires_grad_(False)
    assert measure.count_params(m, trainable_only=True) == 12


def test_model_size_is_dtype_aware():
    m = MLP(10, 20, 5)
    n = measure.count_params(m)
    assert measure.model_size_bytes(m) == 4 * n
    assert measure.model_size_bytes(m.to(torch.bfloat16)) == 2 * n
    cnn = CNN(1, 10, widths=(4, 8))
    bn_buffers = sum(b.numel() * b.element_size() for b in cnn.buffers())
    assert measure.model_size_bytes(cnn) == 4 * measure.count_params(cnn) + bn_buffers


def test_model_size_of_quantized_tensor():
    q = torch.quantize_per_tensor(torch.randn(100), 0.1, 0, torch.qint8)
    assert measure._tensor_bytes(q) == 100 + 8


def test_flops_linear_and_conv():
    x = torch.zeros(2, 1, 8, 8)
    m = MLP(64, 32, 10)
    assert measure.count_flops(m, x) == 2 * 2 * (64 * 32 + 32 * 10)  # 2 FLOPs per multiply-add, batch 2
    conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
    assert measure.count_flops(conv, x) == 2 * 2 * (4 * 8 * 8) * (1 * 3 * 3)


def test_flops_restores_mode():
    m = MLP(4, 4, 2, dropout=0.1).train()
    measure.count_flops(m, torch.zeros(1, 4))
    assert m.training


def test_latency_positive_and_restores():
    m = MLP(16, 16, 2).train()
    threads = torch.get_num_threads()
    t = measure.latency(m, torch.zeros(4, 16), warmup=1, repeats=3, threads=1)
    assert 0 < t < 1 and m.training and torch.get_num_threads() == threads
    with pytest.raises(ValueError, match="repeats"):
        measure.latency(m, torch.zeros(4, 16), repeats=0)


def test_profile_keys():
    p = measure.profile(MLP(16, 16, 2), torch.zeros(1, 16), warmup=0, repeats=2)
    assert set(p) == {"params", "bytes", "flops", "latency"} and p["params"] == 16 * 16 + 16 + 34


class Sleeper(nn.Module):
    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return x


def test_compare_latency_times_every_model_in_turn():
    calls = []

    class Counting(nn.Linear):
        def forward(self, x):
            calls.append(self.out_features)
            return super().forward(x)

    models = {"a": Counting(4, 2), "b": Counting(4, 3), "slow": Sleeper(0.002)}
    t = measure.compare_latency(models, torch.zeros(1, 4), rounds=3, warmup=1, repeats=2, threads=1)
    assert list(t) == ["a", "b", "slow"]
    assert all(v > 0 for v in t.values())
    assert t["slow"] >= 0.002  # sleep() waits at least this long: a lower bound, not a timing race
    assert calls == [2, 2, 2, 3, 3, 3] * 3  # each round: a's passes, then b's (warm-up + repeats)
    with pytest.raises(ValueError, match="rounds"):
        measure.compare_latency(models, torch.zeros(1, 4), rounds=0)
    with pytest.raises(ValueError, match="at least one model"):
        measure.compare_latency({}, torch.zeros(1, 4))


def float_layer_params(model):
    """Weights and biases of the Conv/Linear layers, counted by hand; a conv followed by a BatchNorm gains a bias
    of out_channels entries when the BatchNorm is folded into it (as quant.to_int8 does)."""
    total = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            bias = m.bias.numel() if m.bias is not None else m.weight.shape[0]
            total += m.weight.numel() + bias
    return total


@pytest.mark.parametrize("model", [MLP(64, 32, 10), CNN(1, 10, widths=(4, 8))])
def test_count_params_counts_the_packed_weights_of_an_int8_model(model):
    from kdlite.quant import to_int8

    x = torch.rand(8, 1, 8, 8)
    int8 = to_int8(model, x, num_batches=1)
    assert list(int8.parameters()) == []  # every weight is packed inside a quantized module
    assert measure.count_params(int8) == float_layer_params(model) > 0
    assert measure.count_params(int8, trainable_only=True) == 0
    with pytest.raises(ValueError, match=r"cannot count GraphModule: it has quantized modules.*count the float model"):
        measure.count_flops(int8, x)
    p = measure.profile(int8, x[:1], warmup=0, repeats=1)
    assert p["flops"] is None and p["params"] == float_layer_params(model) and p["latency"] > 0


@pytest.mark.parametrize("bad", [(torch.zeros(1, 4),), [torch.zeros(1, 4)], None])
def test_example_input_must_be_a_tensor(bad):
    m = nn.Linear(4, 2)
    for call in (
        lambda: measure.latency(m, bad),
        lambda: measure.count_flops(m, bad),
        lambda: measure.profile(m, bad),
        lambda: measure.compare_latency({"m": m}, bad),
    ):
        with pytest.raises(TypeError, match=rf"example_input must be a torch.Tensor .*; got {type(bad).__name__}"):
            call()


@pytest.mark.parametrize("name,value", [
    ("repeats", 2.5), ("repeats", "5"), ("repeats", 0), ("repeats", True),
    ("warmup", 1.0), ("warmup", -1), ("warmup", None),
    ("threads", 0), ("threads", 1.5), ("threads", "2"),
])
def test_latency_counts_must_be_ints(name, value):
    m, x = nn.Linear(4, 2), torch.zeros(1, 4)
    minimum = {"repeats": 1, "warmup": 0, "threads": 1}[name]
    threads = torch.get_num_threads()
    for call in (
        lambda: measure.latency(m, x, **{name: value}),
        lambda: measure.compare_latency({"m": m}, x, **{name: value}),
    ):
        with pytest.raises(ValueError, match=rf"{name} must be an int >= {minimum}; got {value!r}"):
            call()
    assert torch.get_num_threads() == threads


def test_models_must_be_a_dict_of_modules():
    m, x = nn.Linear(4, 2), torch.zeros(1, 4)
    with pytest.raises(TypeError, match=r"models must be a dict of name -> model, e\.g\. .*; got list"):
        measure.compare_latency([m, m], x)
    with pytest.raises(TypeError, match=r"models\['b'\] must be a torch.nn.Module; got function"):
        measure.compare_latency({"a": m, "b": lambda t: t}, x)
    for call in (
        lambda: measure.latency(lambda t: t, x),
        lambda: measure.count_flops("model", x),
        lambda: measure.count_params(None),
    ):
        with pytest.raises(TypeError, match=r"model must be a torch.nn.Module; got"):
            call()


def test_latency_waits_for_the_device_after_every_pass(monkeypatch):
    import kdlite.measure as kmeasure

    seen = []
    monkeypatch.setattr(kmeasure, "synchronize", lambda device: seen.append(torch.device(device).type))
    kmeasure.latency(torch.nn.Linear(4, 2), torch.zeros(1, 4), warmup=2, repeats=3)
    assert seen == []  # a CPU has nothing to wait for, and the timed loop pays nothing for it
    # a device that is not the CPU ("meta" stands in for a GPU here): once after the warm-up, once per timed pass
    kmeasure.latency(torch.nn.Linear(4, 2).to("meta"), torch.zeros(1, 4, device="meta"), warmup=2, repeats=3)
    assert seen == ["meta"] * 4


@pytest.mark.parametrize("kind", ["cuda", "mps", "xpu"])
def test_synchronize_reaches_every_device_type(monkeypatch, kind):
    from kdlite.device import synchronize

    backend = getattr(torch, kind, None)
    if backend is None:
        pytest.skip(f"this torch has no torch.{kind}")
    calls = []
    monkeypatch.setattr(backend, "synchronize", lambda *a: calls.append(a), raising=False)
    synchronize(torch.device(kind))
    synchronize("cpu")  # nothing to wait for
    assert len(calls) == 1


# --- calibration: the expected calibration error and its reliability diagram


def logits_of(probs):
    """Logits whose softmax is ``probs`` (log p: softmax(log p) = p / sum p = p)."""
    return torch.tensor(probs, dtype=torch.float64).log()


def test_calibration_error_by_hand():
    """Ten predictions in 5 bins (0, .2], (.2, .4], (.4, .6], (.6, .8], (.8, 1]:
    bin (.4, .6]: confidences .55, .55, 1 of 2 right: |0.5 − 0.55| = 0.05, weight 2/10;
    bin (.6, .8]: confidences .7, .75, .65, 3 of 3 right: |1 − 0.7| = 0.3, weight 3/10;
    bin (.8, 1]: confidences .9, .95, .85, .9, .9, 3 of 5 right: |0.6 − 0.9| = 0.3, weight 5/10;
    ECE = 0.2 · 0.05 + 0.3 · 0.3 + 0.5 · 0.3 = 0.25."""
    probs = [[0.55, 0.30, 0.15], [0.25, 0.55, 0.20],
             [0.70, 0.20, 0.10], [0.15, 0.10, 0.75], [0.65, 0.20, 0.15],
             [0.90, 0.05, 0.05], [0.03, 0.95, 0.02], [0.10, 0.05, 0.85], [0.05, 0.05, 0.90], [0.90, 0.06, 0.04]]
    labels = torch.tensor([0, 0, 0, 2, 0, 0, 1, 2, 1, 2])  # right: yes, no; yes, yes, yes; yes, yes, yes, no, no
    r = measure.reliability(logits_of(probs), labels, n_bins=5)
    assert r["count"].tolist() == [0, 0, 2, 3, 5]
    torch.testing.assert_close(r["edges"], torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], dtype=torch.float64))
    torch.testing.assert_close(r["confidence"][2:], torch.tensor([0.55, 0.7, 0.9], dtype=torch.float64))
    torch.testing.assert_close(r["accuracy"][2:], torch.tensor([0.5, 1.0, 0.6], dtype=torch.float64))
    assert r["confidence"][:2].isnan().all() and r["accuracy"][:2].isnan().all()  # empty bins
    ece = measure.calibration_error(logits_of(probs), labels, n_bins=5)
    assert isinstance(ece, float) and ece == pytest.approx(0.25, abs=1e-12)
    assert measure.calibration_error(logits_of(probs).float(), labels, 5) == pytest.approx(0.25, abs=1e-6)


def test_calibration_error_is_zero_when_confidence_is_accuracy():
    """Every confidence 0.8 and 8 of 10 right; logits (0, 0) give exactly 0.5, half of them right."""
    labels = torch.tensor([0] * 8 + [1] * 2)
    assert measure.calibration_error(logits_of([[0.8, 0.2]] * 10), labels) == pytest.approx(0, abs=1e-12)
    assert measure.calibration_error(torch.zeros(4, 2), torch.tensor([0, 1, 1, 0])) == 0.0
    assert measure.calibration_error(torch.zeros(4, 2), torch.tensor([0, 0, 0, 0])) == 0.5  # 0.5 sure, all right


def test_bins_are_closed_on_the_right():
    """A confidence of exactly 0.5 is in (0.25, 0.5] with 4 bins and in (0, 0.5] with 2; 1.0 is in the last bin."""
    r = measure.reliability(torch.zeros(3, 2), torch.tensor([0, 1, 0]), n_bins=4)
    assert r["count"].tolist() == [0, 3, 0, 0]
    assert measure.reliability(torch.zeros(3, 2), torch.tensor([0, 1, 0]), n_bins=2)["count"].tolist() == [3, 0]
    sure = torch.tensor([[100.0, 0.0, 0.0]], dtype=torch.float64)  # softmax: 1 − 2e^−100, 1.0 in float64
    assert measure.reliability(sure, torch.tensor([0]), n_bins=10)["count"].tolist() == [0] * 9 + [1]


@pytest.mark.parametrize("n_bins", [1, 7, 15])
def test_calibration_error_matches_a_loop_over_examples(n_bins):
    """An independent computation: each example's bin is ⌈conf · n_bins⌉ − 1, sums in plain Python."""
    import math

    g = torch.Generator().manual_seed(n_bins)
    logits, labels = 3 * torch.randn(500, 10, generator=g), torch.randint(0, 10, (500,), generator=g)
    p = torch.softmax(logits.double(), -1)
    sums = {}
    for conf, pred, y in zip(p.max(-1).values.tolist(), p.argmax(-1).tolist(), labels.tolist(), strict=True):
        s = sums.setdefault(max(math.ceil(conf * n_bins) - 1, 0), [0, 0.0, 0])
        s[0], s[1], s[2] = s[0] + 1, s[1] + conf, s[2] + (pred == y)
    expected = sum(n / 500 * abs(right / n - conf / n) for n, conf, right in sums.values())
    assert measure.calibration_error(logits, labels, n_bins) == pytest.approx(expected, abs=1e-12)
    assert sum(measure.reliability(logits, labels, n_bins)["count"].tolist()) == 500


@pytest.mark.parametrize("call, words", [
    (lambda: measure.calibration_error(torch.randn(10), torch.zeros(10, dtype=torch.long)), ["logits", "(10,)"]),
    (lambda: measure.calibration_error(torch.randn(2, 3, 4), torch.zeros(2, dtype=torch.long)),
     ["logits must be 2-D", "(2, 3, 4)"]),
    (lambda: measure.calibration_error(torch.randn(4, 3), torch.zeros(5, dtype=torch.long)),
     ["labels must have shape (4,)", "(5,)"]),
    (lambda: measure.calibration_error(torch.randn(4, 3), torch.zeros(4, 1, dtype=torch.long)), ["labels", "(4, 1)"]),
    (lambda: measure.calibration_error(torch.randn(4, 3), torch.tensor([0, 1, 3, 2])), ["labels must be in [0, 2]"]),
    (lambda: measure.calibration_error(torch.randn(4, 3), torch.zeros(4)), ["labels must be integer", "float32"]),
    (lambda: measure.calibration_error(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), n_bins=0), ["n_bins"]),
    (lambda: measure.reliability(torch.tensor([[0.0, float("nan")]]), torch.tensor([0])), ["logits", "NaN"]),
])
def test_calibration_errors_are_clear(call, words):
    with pytest.raises(ValueError) as e:
        call()
    for w in words:
        assert w in str(e.value), (w, str(e.value))
