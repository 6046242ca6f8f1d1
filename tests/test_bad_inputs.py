"""What a bad-input probe of the public API found, each now a clear error or the right answer."""

import json
import math
import re

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import kdlite
from kdlite.data import DeviceLoader, load_dataset
from kdlite.distill import distill
from kdlite.features import connector
from kdlite.losses import distillation_loss, dkd_loss, kd_loss
from kdlite.measure import model_size_bytes
from kdlite.models import MLP
from kdlite.prune import magnitude_prune, remove_masks, sparsity
from kdlite.report import save_results


def toy(dtype=torch.int64, n=64):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 12, generator=g), torch.randint(0, 3, (n,), generator=g).to(dtype))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_any_integer_labels_train_and_evaluate(dtype):
    data, ref = toy(dtype), toy()
    torch.manual_seed(0)
    a = MLP(12, [8], 3)
    b = MLP(12, [8], 3)
    b.load_state_dict(a.state_dict())
    kdlite.fit(a, DeviceLoader(data, 16, shuffle=False), 1, progress=False)
    kdlite.fit(b, DeviceLoader(ref, 16, shuffle=False), 1, progress=False)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)  # the same training as with int64 labels
    assert kdlite.evaluate(a, data) == kdlite.evaluate(a, ref)
    distill(MLP(12, [4], 3), a, data, 1, temperature=4.0, alpha=0.5, progress=False)
    s, t, y = torch.randn(8, 3), torch.randn(8, 3), torch.randint(0, 3, (8,))
    torch.testing.assert_close(distillation_loss(s, t, y.to(dtype), 4.0, 0.5), distillation_loss(s, t, y, 4.0, 0.5))
    torch.testing.assert_close(dkd_loss(s, t, y.to(dtype), 4.0, 1.0, 8.0), dkd_loss(s, t, y, 4.0, 1.0, 8.0))


@pytest.mark.parametrize("T", [1e-39, 1e-20, 1e-5])
def test_a_vanishing_temperature_is_refused_not_nan(T):
    s = torch.randn(4, 10)
    with pytest.raises(ValueError, match="temperature must be at least"):
        kd_loss(s, s, T)
    with pytest.raises(ValueError, match="temperature must be at least"):
        distill(MLP(12, [4], 3), MLP(12, [4], 3), toy(), 1, temperature=T, alpha=0.5, progress=False)


def test_evaluate_on_nan_inputs_raises():
    x, y = toy().tensors
    x = x.clone()
    x[3] = float("nan")
    with pytest.raises(FloatingPointError, match="evaluate"):
        kdlite.evaluate(MLP(12, [4], 3), TensorDataset(x, y))


def test_numpy_scalars_are_numbers():
    train, _ = load_dataset("digits", subset=np.int64(100))
    assert len(train) == 100
    assert len(DeviceLoader(train, np.int64(32))) == 4
    m = MLP(64, [16], 10)
    magnitude_prune(m, np.float32(0.5))
    assert abs(sparsity(m)["overall"] - 0.5) < 0.01
    assert kdlite.seed_everything(np.int64(3)) == 3
    with pytest.raises(ValueError, match="subset must be a positive int"):
        load_dataset("digits", subset=np.float64(2.5))


@pytest.mark.parametrize("call", [lambda: magnitude_prune(None, 0.5), lambda: remove_masks(None),
                                  lambda: sparsity(None), lambda: model_size_bytes(None)])
def test_model_none_is_a_type_error_naming_model(call):
    with pytest.raises(TypeError, match="model must be a torch.nn.Module; got NoneType"):
        call()


def test_connector_rejects_fractional_sizes():
    with pytest.raises(ValueError, match="student_shape"):
        connector((4, 2.5), (4, 3))
    assert isinstance(connector((4, np.int64(2)), (4, 3)), nn.Linear)


def test_magnitude_prune_refuses_nan_weights():
    m = MLP(6, [5], 2)
    name, first = next((n, mod) for n, mod in m.named_modules() if isinstance(mod, nn.Linear))
    with torch.no_grad():
        first.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=rf"layer '{name}' has 1 NaN or inf weight"):
        magnitude_prune(m, 0.5)


def test_save_results_writes_valid_json(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLITE_RESULTS", str(tmp_path))
    path = save_results("x", [{"acc": torch.tensor(0.5), "gap": math.nan, "n": np.int64(3), "f": np.float32(1.5)}])
    text = path.read_text()
    assert "NaN" not in text and "tensor(" not in text
    assert json.loads(text)["rows"] == [{"acc": 0.5, "gap": None, "n": 3, "f": 1.5}]


def test_a_student_sharing_modules_with_its_teacher_is_refused():
    norm = nn.BatchNorm1d(8)
    teacher = nn.Sequential(nn.Linear(12, 8), norm, nn.Linear(8, 3))
    student = nn.Sequential(nn.Linear(12, 8), norm, nn.Linear(8, 3))
    before = norm.running_mean.clone()
    with pytest.raises(ValueError, match="share .* parameter.*copy.deepcopy"):
        distill(student, teacher, toy(), 1, temperature=4.0, alpha=0.5, progress=False)
    assert torch.equal(norm.running_mean, before)


@pytest.mark.parametrize("wrap", ["tensors", "dataloader"])
@pytest.mark.parametrize("how", ["fit", "distill"])
def test_a_bad_label_in_a_later_batch_is_named(wrap, how):
    from torch.utils.data import DataLoader

    x, y = torch.randn(300, 12), torch.randint(0, 3, (300,))
    y[250] = 7
    data = DeviceLoader(TensorDataset(x, y), 64, shuffle=False) if wrap == "tensors" else \
        DataLoader(TensorDataset(x, y), batch_size=64)
    with pytest.raises(ValueError, match="labels of the training data.*7"):
        if how == "fit":
            kdlite.fit(MLP(12, [4], 3), data, 1, progress=False)
        else:
            distill(MLP(12, [4], 3), MLP(12, [4], 3), data, 1, temperature=2.0, alpha=0.5, progress=False)


def test_a_nan_loss_restores_the_weights_of_the_epochs_start():
    data = toy()
    m = MLP(12, [16], 3)
    kdlite.fit(m, data, 1, progress=False)
    good = {k: v.clone() for k, v in m.state_dict().items()}
    x, y = data.tensors
    x = x.clone()
    x[5] = float("nan")  # NaN gradients: every weight becomes NaN at the first step
    with pytest.raises(FloatingPointError, match="restored to those it had at the start of epoch 1"):
        kdlite.fit(m, TensorDataset(x, y), 1, progress=False)
    assert all(torch.equal(v, good[k]) for k, v in m.state_dict().items())


def test_a_used_up_generator_is_named_as_the_cause():
    batches = ((x, y) for x, y in [toy().tensors])
    with pytest.raises(ValueError, match="generator is used up"):
        kdlite.fit(MLP(12, [4], 3), batches, 2, progress=False)


def test_default_optimizer_is_fits_recipe():
    from kdlite.train import default_optimizer

    m = MLP(12, [4], 3)
    opt, sched = default_optimizer(m, total_steps=100)
    assert isinstance(opt, torch.optim.AdamW) and isinstance(sched, torch.optim.lr_scheduler.OneCycleLR)
    assert opt.param_groups[0]["weight_decay"] == 5e-4
    _, short = default_optimizer(m, total_steps=5)
    assert isinstance(short, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert default_optimizer(m, scheduler=None, total_steps=100)[1] is None


@pytest.mark.parametrize("scale", [1e-20, 1e20])
def test_relational_losses_stay_finite_and_scale_free(scale):
    from kdlite.losses import rkd_loss, similarity_preserving_loss

    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    for loss in (rkd_loss, similarity_preserving_loss):
        torch.testing.assert_close(loss(s * scale, t * scale), loss(s, t), rtol=1e-5, atol=1e-7)


def test_hint_loss_overflow_is_named():
    from kdlite.losses import hint_loss

    s = torch.randn(4, 8) * 1e20
    with pytest.raises(ValueError, match="hint_loss overflows float32.*features reach"):
        hint_loss(s, -s)


@pytest.mark.parametrize("model_dtype, x_dtype", [(torch.float64, torch.float32), (torch.float32, torch.int64)])
def test_a_dtype_mismatch_is_named(model_dtype, x_dtype):
    x = (torch.randn(64, 12) * 3).to(x_dtype)
    data = TensorDataset(x, torch.randint(0, 3, (64,)))
    model = MLP(12, [4], 3).to(model_dtype)
    pattern = rf"weights are {model_dtype} but the (training|evaluation) inputs are {x_dtype}"
    with pytest.raises(ValueError, match=pattern):
        kdlite.fit(model, data, 1, progress=False, device="cpu")
    with pytest.raises(ValueError, match=pattern):
        kdlite.evaluate(model, data, device="cpu")


def test_fit_takes_a_tuple_of_tensors_and_names_a_tuple_returning_model():
    x, y = toy().tensors
    history = kdlite.fit(MLP(12, [4], 3), (x, y), 1, progress=False)
    assert len(history) == 1

    class TwoOutputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = MLP(12, [4], 3)

        def forward(self, x):
            return self.body(x), x

    with pytest.raises(TypeError, match="must return a tensor of logits; it returned a tuple"):
        kdlite.fit(TwoOutputs(), (x, y), 1, progress=False)
    with pytest.raises(TypeError, match="must return a tensor of logits; it returned a tuple"):
        kdlite.evaluate(TwoOutputs(), (x, y))


# --- issue #15: torch's errors about inputs a model cannot take, said in kdlite's words


def test_a_teacher_that_cannot_take_the_inputs_is_named_as_the_teacher():
    x, y = torch.rand(32, 20), torch.randint(0, 10, (32,))
    with pytest.raises(ValueError, match=r"the teacher's weights are torch.float64 but the training inputs are "
                                         r"torch.float32.*teacher.to\(torch.float32\)"):
        distill(MLP(20, [8], 10), MLP(20, [16], 10).double(), (x, y), 1, temperature=4, alpha=0.5, progress=False)
    for cache in (False, True):
        with pytest.raises(ValueError, match=r"the teacher cannot take the training inputs of shape \(32, 20\): "
                                             r"mat1 and mat2 shapes cannot be multiplied"):
            distill(MLP(20, [8], 10), MLP(30, [16], 10), TensorDataset(x, y), 1, temperature=4, alpha=0.5,
                    progress=False, cache_teacher=cache)


def test_int8_models_given_wrong_shapes_name_the_inputs_and_the_first_layer():
    """The int8 kernels' own errors (oneDNN's "could not create a primitive descriptor", fbgemm's "packB", the
    quantized conv's "Input shape must be") are said in kdlite's words, like the float kernels'."""
    from kdlite import measure, quant
    from kdlite.models import CNN

    cnn = quant.to_int8(CNN(1, 10, widths=(4, 8)), torch.rand(8, 1, 8, 8))
    mlp = MLP(64, [16], 10)
    cases = ((cnn, torch.rand(4, 3, 8, 8), r"takes 1 input channels"), (cnn, torch.rand(4, 64), r"takes 1 input"),
             (quant.to_int8(mlp, torch.rand(8, 64)), torch.rand(4, 20), r"takes 64 input features"),
             (quant.dynamic_int8(mlp), torch.rand(4, 20), r"takes 64 input features"))
    for model, x, first in cases:
        shape = re.escape(str(tuple(x.shape)))
        with pytest.raises(ValueError, match=rf"cannot take the evaluation inputs of shape {shape}; {'.*' + first}"):
            kdlite.evaluate(model, (x, torch.zeros(4, dtype=torch.long)), device="cpu")
        with pytest.raises(ValueError, match=rf"cannot take the example inputs of shape {shape}"):
            measure.latency(model, x, warmup=1, repeats=1)
    for model, x in ((cnn, torch.rand(4, 1, 8, 8)), (quant.dynamic_int8(mlp), torch.rand(4, 64))):
        with pytest.raises(ValueError, match=r"the model runs int8 kernels on torch.float32 inputs but the evaluation "
                                             r"inputs are torch.float64.*\(x.to\(torch.float32\)\)"):
            kdlite.evaluate(model, (x.double(), torch.zeros(4, dtype=torch.long)), device="cpu")


def test_a_models_own_errors_pass_through_and_float_errors_get_no_first_layer_guess():
    class Own(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(64, 10)

        def forward(self, x):
            raise ValueError("Input shape must be (N, 3, 32, 32)\nsecond line")

    class HeadFirst(nn.Module):  # registered out of order: "the first layer" would be fc, which is wrong
        def __init__(self):
            super().__init__()
            self.fc, self.conv = nn.Linear(128, 10), nn.Conv2d(3, 2, 3)

        def forward(self, x):
            return self.fc(self.conv(x).flatten(1))

    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="^Input shape must be \\(N, 3, 32, 32\\)\nsecond line$"):
        kdlite.evaluate(Own(), (torch.rand(4, 64), y))
    with pytest.raises(ValueError, match=r"inputs of shape \(4, 1, 8, 8\): Given groups=1") as e:
        kdlite.evaluate(HeadFirst(), (torch.rand(4, 1, 8, 8), y))
    assert "first layer" not in str(e.value)


def test_wrong_input_shapes_and_dtypes_name_the_inputs():
    from kdlite import measure, quant
    from kdlite.models import CNN

    model, wrong = CNN(1, 10, widths=(4, 8)), torch.rand(2, 3, 8, 8)
    for call in (lambda: quant.calibrate(quant.prepare_qat(model), wrong), lambda: quant.quantize_ptq(model, wrong),
                 lambda: quant.to_int8(model, wrong)):
        with pytest.raises(ValueError, match=r"cannot take the calibration inputs of shape \(2, 3, 8, 8\)"):
            call()
    with pytest.raises(ValueError, match=r"cannot take the example inputs of shape \(1, 3, 8, 8\)"):
        measure.latency(model, wrong[:1], warmup=1, repeats=1)
    with pytest.raises(ValueError, match=r"weights are torch.float64 but the calibration inputs are torch.float32"):
        quant.calibrate(quant.prepare_qat(CNN(1, 10, widths=(4, 8)).double()), torch.rand(2, 1, 8, 8))
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    with pytest.raises(ValueError, match=r"weights are torch.float64 but the evaluation inputs are torch.float32"):
        kdlite.evaluate(CNN(1, 10, widths=(4, 8)).double(), (x, y))
    with pytest.raises(ValueError, match=r"weights are torch.bfloat16 but the training inputs are torch.float32"):
        kdlite.fit(CNN(1, 10, widths=(4, 8)).bfloat16(), (x, y), 1, progress=False, device="cpu")


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_to_int8_names_a_model_that_is_not_float32(dtype):
    from kdlite import quant
    from kdlite.models import CNN

    with pytest.raises(ValueError, match=rf"to_int8 quantizes a float32 model; model's weights are \['{dtype}'\]"):
        quant.to_int8(CNN(1, 10, widths=(4, 8)).to(dtype), torch.rand(2, 1, 8, 8).to(dtype))


def test_eval_mode_restores_each_submodules_mode():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5)).train()
    model[1].eval()  # a frozen part stays frozen
    with pytest.raises(RuntimeError), kdlite.eval_mode(model) as m:
        assert not any(x.training for x in m.modules())
        raise RuntimeError("fails inside")
    assert model.training and model[0].training and not model[1].training


def test_a_size_error_in_a_custom_steps_loss_is_not_blamed_on_the_inputs():
    """fit names the inputs only for errors raised inside the model's forward pass; a bug in the loss of a user's
    step= reaches the user as torch raised it, and the hooks fit adds for this are gone afterwards."""
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))

    def bad_loss(model, batch):
        s = model(batch[0])
        return ((s - torch.zeros(16, 5)) ** 2).mean(), s

    def reshaped(model, batch):  # the model is called with (16, 2, 2), not batch[0]: the error names that input
        s = model(batch[0].reshape(16, 2, 2))
        return nn.functional.cross_entropy(s, batch[1]), s

    model = MLP(4, [8], 3)
    with pytest.raises(RuntimeError, match=r"^The size of tensor a \(3\) must match the size of tensor b \(5\)"):
        kdlite.fit(model, TensorDataset(x, y), 1, step=bad_loss, progress=False)
    assert not model._forward_hooks and not model._forward_pre_hooks
    with pytest.raises(ValueError, match=r"the model cannot take the training inputs of shape \(16, 2, 2\): mat1"):
        kdlite.fit(MLP(5, [8], 3), TensorDataset(x, y), 1, step=reshaped, progress=False)
    with pytest.raises(ValueError, match=r"the model cannot take the attack inputs of shape \(4, 4\)"):
        kdlite.robust.input_gradient(MLP(5, [8], 3), x[:4].sigmoid(), y[:4])


def test_more_bad_inputs_get_clear_errors():
    """Found by probing the public API: each used to pass silently or reach the user as a raw Python error."""
    from kdlite import prune, quant
    from kdlite.losses import sequence_kd_loss
    from kdlite.models import GPT

    for call in (lambda: kd_loss(torch.randn(4, 1), torch.randn(4, 1), 4.0),  # a loss (and gradient) of exactly 0
                 lambda: sequence_kd_loss(torch.randn(2, 3, 1), torch.randn(2, 3, 1))):
        with pytest.raises(ValueError, match=r"the logits have one class \(shape .*\).*expected at least 2 classes"):
            call()
    with pytest.raises(TypeError, match="idx must be a torch.Tensor; got list"):
        GPT(10, 8, 1, 1, 8)([[1, 2]])
    x, y = torch.randn(6, 4), torch.zeros(5, dtype=torch.long)
    for call, name in ((lambda: kdlite.fit(MLP(4, [8], 3), (x, y), 1, progress=False), "train"),
                       (lambda: kdlite.evaluate(MLP(4, [8], 3), (x, y)), "data"),
                       (lambda: quant.quantize_ptq(MLP(4, [8], 3), (x, y)), "data")):
        with pytest.raises(ValueError, match=rf"^{name} .*holds tensors of lengths \[6, 5\]; expected one length"):
            call()
    data = (x, torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"amounts must be a non-empty sequence of target sparsities.*got float 0.5"):
        prune.iterative_prune(MLP(4, [8], 3), data, 0.5, 1, progress=False)
    with pytest.raises(ValueError, match=r"amounts must be a non-empty sequence.*got list \[\]"):
        prune.sensitivity_scan(MLP(4, [8], 3), data, [])
    with pytest.raises(ValueError, match=r"prepare_qat acts on nn.Conv2d and nn.Linear layers; Sequential has none"):
        quant.prepare_qat(nn.Sequential(nn.Conv1d(2, 2, 3)))
    assert isinstance(quant.prepare_qat(nn.Linear(8, 4)), quant.QuantLinear)  # a layer alone is swapped too


def test_loaders_devices_augmentations_and_rewinds_name_bad_arguments():
    from kdlite import quant
    from kdlite.data import random_crop, random_flip
    from kdlite.prune import rewind

    x, y = torch.rand(8, 1, 4, 4), torch.zeros(8, dtype=torch.long)
    with pytest.raises(ValueError, match=r"device must be a torch.device or a name such as 'cpu'.*got 'gpu0'"):
        DeviceLoader((x, y), 4, device="gpu0")
    with pytest.raises(ValueError, match=r"device must be .*got 'gpu0'"):
        kdlite.get_device("gpu0")
    with pytest.raises(TypeError, match=r"augment must be a function of a batch x .* or None; got int"):
        DeviceLoader((x, y), 4, augment=3)
    with pytest.raises(ValueError, match=r"seed must be an int; got 1.5"):
        DeviceLoader((x, y), 4, seed=1.5)
    with pytest.raises(ValueError, match=r"same length; got lengths \['0-d', '0-d'\]"):
        DeviceLoader((torch.tensor(1.0), torch.tensor(2)), 4)
    for flip_or_crop, bad in ((random_flip, torch.rand(8)), (random_flip, [[1.0]]), (random_crop, [[1.0]])):
        with pytest.raises(ValueError, match=r"expects x, a batch of images \(N, "):
            flip_or_crop(bad)
    assert random_flip(torch.rand(8, 4, 4)).shape == (8, 4, 4) and random_flip(torch.rand(8, 5)).shape == (8, 5)
    assert len(list(DeviceLoader((x, y), 4, seed=-1))) == 2  # any seed torch takes
    model = MLP(4, [8], 3)
    for bad, error, words in ((None, TypeError, r"initial_state must be a state_dict.*got NoneType$"),
                              (model, TypeError, r"got MLP \(pass its initial_state.state_dict\(\)\)"),
                              (MLP(4, [9], 3).state_dict(), ValueError,
                               r"initial_state\['net.1.weight'\] has shape \(9, 4\); the model's has shape \(8, 4\)")):
        with pytest.raises(error, match=words):
            rewind(model, bad)
    with pytest.raises(ValueError, match=r"group_size must be a positive int; got -3"):
        quant.group_quantize_model(MLP(4, [8], 3), 4, -3)
    with pytest.raises(ValueError, match=r"group_quantize_model acts on nn.Linear layers; Sequential has none"):
        quant.group_quantize_model(nn.Sequential(nn.Conv2d(3, 4, 3)), 4, 32)


def test_apply_masks_names_its_argument_and_the_layers_it_could_take():
    from kdlite.prune import apply_masks

    model = MLP(4, [8], 3)
    with pytest.raises(ValueError, match=r"^masks: 'fc' is not a submodule of the model; its prunable layers are "
                                         r"'net.1', 'net.3'"):
        apply_masks(model, {"fc": torch.ones(8, 4)})
    with pytest.raises(ValueError, match=r"^masks is empty"):
        apply_masks(model, {})
    with pytest.raises(TypeError, match=r"masks\['net.1'\] must be a boolean tensor .*got NoneType"):
        apply_masks(model, {"net.1": None})
    with pytest.raises(TypeError, match=r"masks must be a dict of layer names to boolean masks; got list"):
        apply_masks(model, [torch.ones(8, 4)])


def test_compression_helpers_refuse_models_they_cannot_act_on_and_bad_importance_scores():
    import warnings

    from kdlite import measure, quant
    from kdlite.features import tapped_modules
    from kdlite.models import CNN
    from kdlite.structured import channel_prune

    for call, who in ((lambda: quant.share_weights(nn.Sequential(nn.ReLU()), 2), "share_weights"),
                      (lambda: measure.deep_compression_size(nn.Sequential(nn.ReLU())), "deep_compression_size")):
        with pytest.raises(ValueError, match=rf"^{who} acts on Linear and Conv layers; Sequential has none"):
            call()
    with pytest.raises(ValueError, match=r"huffman=True codes the centroid indices \(weight_bits\) and the gaps"):
        measure.deep_compression_size(nn.Linear(3, 3), huffman=True)  # used to be ignored: ratio 1.0
    for call in (lambda: quant.fold_all_batchnorm(None), lambda: tapped_modules(None),
                 lambda: channel_prune(None, 0.5, torch.rand(2, 8))):
        with pytest.raises(TypeError, match="model must be a torch.nn.Module; got NoneType"):
            call()
    cnn, x = CNN(1, 10, widths=(4, 8)), torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"importance must return a tensor of one score per output channel \(4,\); "
                                         r"got a list"):
        channel_prune(cnn, 0.5, x, importance=lambda w: [1.0] * w.shape[0])
    with pytest.raises(ValueError, match=r"the scores importance returned must be finite; got 4 NaN"):
        channel_prune(cnn, 0.5, x, importance=lambda w: torch.full((w.shape[0],), float("nan")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        channel_prune(nn.Sequential(nn.Linear(8, 4)), 0.5, torch.rand(2, 8))
    assert any("found no layer of Sequential whose output channels it can remove" in str(w.message) for w in caught)


def test_generate_and_the_attacks_name_what_went_wrong():
    from kdlite import robust
    from kdlite.models import GPT

    gpt, prompt = GPT(10, 8, 1, 1, 8), torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None; got int"):
        gpt.generate(prompt, 3, generator=3)
    with torch.no_grad():
        gpt.head.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="generate: the model's logits are NaN or inf"):
        gpt.generate(prompt, 3)
    x, y = torch.rand(2, 4), torch.zeros(2, dtype=torch.long)
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None; got int"):
        robust.pgd(MLP(4, [8], 3), x, y, 0.1, random_start=True, generator=3)
    per_token = nn.Sequential(nn.Linear(4, 12), nn.Unflatten(1, (3, 4)))  # (N, 3, 4): not a classifier's logits
    with pytest.raises(ValueError, match=r"the attacks need a model returning logits \(N, C\) for N = 2 inputs; it "
                                         r"returned shape \(2, 3, 4\)"):
        robust.fgsm(per_token, x, y, 0.1)


def test_text_helpers_blur_and_calibration_name_bad_arguments():
    import warnings

    from kdlite import measure, robust
    from kdlite.data import decode, encode, load_text

    vocab = list("abc")
    for bad in (torch.tensor([1.5]), "abc"):
        with pytest.raises(TypeError, match="ids must be integer token ids"):
            decode(bad, vocab)
    assert decode([0, 2], vocab) == "ac" and encode("", vocab).shape == (0,)
    with pytest.raises(TypeError, match="text must be a str; got int 123"):
        encode(123, vocab)
    with pytest.raises(TypeError, match=r"name must be a str; got list \['x'\]"):
        load_text(["x"])
    with pytest.raises(ValueError, match=r"sigma \(for 8×8 images, at most their larger side\) must be in "
                                         r"\[0.0, 8\]; got 10000.0"):  # used to allocate gigabytes
        robust.blur(torch.rand(2, 1, 8, 8), 1e4)
    labels = torch.zeros(50, dtype=torch.long)
    with pytest.warns(UserWarning, match="logits look like probabilities"):
        measure.calibration_error(torch.rand(50, 10).softmax(-1), labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        measure.calibration_error(torch.rand(50, 10).softmax(-1).log(), labels)  # log-probabilities are logits


def test_channel_importance_checks_its_weight_and_p():
    from kdlite.structured import channel_importance

    with pytest.raises(ValueError, match=r"weight must have at least 2 dimension\(s\); got shape \(4,\)"):
        channel_importance(torch.randn(4))
    with pytest.raises(ValueError, match=r"p must be in \(0, inf\]"):
        channel_importance(torch.randn(4, 3), p=-1)


def test_fit_tells_the_models_errors_from_the_losses_in_harder_cases():
    """A forward error the step catches itself does not make a later loss error the model's; a model called with
    keyword arguments is named with the tensor it got; a TorchScript model (no hooks) still trains."""
    import warnings

    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))

    class Keyword(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(9, 3)

        def forward(self, inp):
            return self.lin(inp)

    def caught_then_loss_bug(model, batch):
        try:
            model(torch.randn(16, 7))
        except RuntimeError:
            pass
        s = model(torch.randn(16, 9))
        return (s + torch.zeros(16, 5)).mean(), s

    def by_keyword(model, batch):
        s = model(inp=torch.randn(16, 7))
        return nn.functional.cross_entropy(s, batch[1]), s

    for _ in range(3):  # a freed exception's id can be reused by the next one: errors are compared as objects
        with pytest.raises(RuntimeError, match=r"^The size of tensor a \(3\) must match the size of tensor b \(5\)"):
            kdlite.fit(Keyword(), (x, y), 1, step=caught_then_loss_bug, progress=False)
    with pytest.raises(ValueError, match=r"the model cannot take the training inputs of shape \(16, 7\)"):
        kdlite.fit(Keyword(), (x, y), 1, step=by_keyword, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated
        scripted = torch.jit.script(nn.Sequential(nn.Linear(4, 3)))
    assert len(kdlite.fit(scripted, (x, y), 1, progress=False, device="cpu")) == 1


def test_flags_refuse_truthy_strings():
    """A flag given as a string ("no" is truthy) or a list is refused with its name; True, False, 0, 1 and NumPy
    bools are taken."""
    import numpy as np

    from kdlite.measure import count_params, deep_compression_size
    from kdlite.quant import fake_quantize, group_quantize_model, prepare_qat, qparams, qrange, quantize

    x, lin = torch.randn(8, 4), nn.Linear(4, 3)
    calls = {
        "per_channel": lambda v: prepare_qat(lin, per_channel=v),
        "symmetric": lambda v: qparams(x, symmetric=v),
        "trainable_only": lambda v: count_params(lin, v),
        "huffman": lambda v: deep_compression_size(lin, weight_bits=4, huffman=v),
        "per_row_fallback": lambda v: group_quantize_model(lin, 4, 2, per_row_fallback=v),
        "shuffle": lambda v: kdlite.DeviceLoader((x,), 4, shuffle=v, device="cpu"),
        "drop_last": lambda v: kdlite.DeviceLoader((x,), 4, drop_last=v, device="cpu"),
        "download": lambda v: load_dataset("digits", download=v),
        "amp": lambda v: kdlite.evaluate(lin, (x, torch.zeros(8, dtype=torch.long)), amp=v),
        "progress": lambda v: kdlite.fit(lin, (x, torch.zeros(8, dtype=torch.long)), 0, progress=v),
        "cache_teacher": lambda v: distill(nn.Linear(4, 3), lin, (x, torch.zeros(8, dtype=torch.long)), 1,
                                           temperature=2, alpha=0.5, cache_teacher=v, progress=False),
        "random_start": lambda v: kdlite.robust.pgd(lin, x.clamp(0, 1), torch.zeros(8, dtype=torch.long), 0.1,
                                                    random_start=v),
    }
    for name, call in calls.items():
        for bad in ("no", [False], 2) + (() if name in ("amp", "progress") else (None,)):  # None: the default
            with pytest.raises(TypeError, match=rf"^{name} must be True or False; got "):
                call(bad)
        for good in (True, False, 0, 1, np.True_):
            call(good)
    for fn in (lambda v: quantize(x, 0.1, 0, symmetric=v), lambda v: fake_quantize(x, 0.1, 0, symmetric=v),
               lambda v: qrange(4, v)):
        with pytest.raises(TypeError, match=r"^symmetric must be True or False; got str 'no'"):
            fn("no")


def test_gptq_and_show_recorded_name_what_to_change():
    from kdlite.quant import gptq_quantize
    from kdlite.report import show_recorded

    w, x = torch.randn(8, 64), torch.ones(10, 64)  # inputs of rank 1: λ = 1e-12 · 20 is lost in 20 + λ in float32
    with pytest.raises(ValueError, match=r"not positive definite .* got damp=1e-12, expected a larger one"):
        gptq_quantize(w, x, 4, damp=1e-12)
    assert torch.isfinite(gptq_quantize(w, x, 4)).all()  # the default damp works on the same inputs
    with pytest.raises(TypeError, match=r"^path must be a str or a pathlib.Path, .* got NoneType"):
        show_recorded(None)
    with pytest.raises(TypeError, match=r"^root must be a str or a pathlib.Path, the cache folder .* got int"):
        load_dataset("mnist", root=5)
    assert kdlite.data.cache.data_root("") == kdlite.data.cache.data_root(None)  # "" is the default, as before
    with pytest.raises(TypeError, match=r"^source must be a str or a pathlib.Path, .* got NoneType"):
        kdlite.data.import_dataset("mnist", None)


def test_what_a_practitioners_try_found():
    """dynamic_int8 of a pruned model warns of nothing (its Linears are quantized); a 1-D input and an unbatched
    image name the input's shape; evaluate's message for a model returning a tuple does not offer it a step=."""
    import warnings

    from kdlite.models import CNN
    from kdlite.prune import channel_prune
    from kdlite.quant import dynamic_int8

    mlp = MLP(64, [32], 10)
    magnitude_prune(mlp, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = dynamic_int8(mlp)
    assert q(torch.randn(2, 64)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"cannot take the example inputs of shape \(64,\): Dimension out of range"):
        kdlite.measure.count_flops(MLP(64, [32], 10), torch.randn(64))
    with pytest.raises(ValueError, match=r"example_input of shape \(1, 8, 8\) does not fit the model: expected 4D"):
        channel_prune(CNN(1, 10, widths=(8, 16, 32)), 0.5, torch.randn(1, 8, 8))

    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    with pytest.raises(TypeError, match=r"it returned a tuple .* evaluate takes logits only"):
        kdlite.evaluate(Pair(), (torch.randn(4, 3), torch.zeros(4, dtype=torch.long)))


def test_model_sizes_devices_and_swapped_arguments_are_named():
    from kdlite.models import CNN

    for call, pattern in ((lambda: MLP(64, "32", 10), r"^hidden must be a positive int or a list of them .* got '32'"),
                          (lambda: MLP("64", [32], 10), r"^in_features must be a positive int; got '64'"),
                          (lambda: CNN(1, 10, (8, 0)), r"^widths must be a sequence of positive ints, .* got 0")):
        with pytest.raises(ValueError, match=pattern):
            call()
    with pytest.raises(TypeError, match=r"^widths must be a sequence of positive ints, one per stage .* got 32"):
        CNN(1, 10, 32)
    assert len(MLP(64, 32, 10).net) == 4 and CNN(3, 10, [8]).classifier.in_features == 8
    if torch.cuda.device_count() < 8:
        with pytest.raises(ValueError, match=r"^device 'cuda:7' \(the device argument, or \$KDLITE_DEVICE\) is not on"):
            kdlite.get_device("cuda:7")
    x, y = torch.randn(8, 4), torch.zeros(8, dtype=torch.long)
    with pytest.raises(TypeError, match=r"^student and teacher must be nn.Modules; got MLP, tuple"):
        distill(MLP(4, 8, 3), (x, y), MLP(4, 8, 3), 1, temperature=2, alpha=0.5)


def test_fit_says_when_it_has_nothing_to_train():
    from kdlite.quant import to_int8

    x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
    net = MLP(64, [32], 10)
    with pytest.raises(ValueError, match=r"^fit has nothing to train: GraphModule .* int8 kernels"):
        kdlite.fit(to_int8(net, (x, y)), (x, y), 1, progress=False)
    with pytest.raises(ValueError, match=r"^fit has nothing to train: MLP .* requires_grad=False"):
        kdlite.fit(MLP(64, [32], 10).requires_grad_(False), (x, y), 1, progress=False)
    frozen = MLP(64, [32], 10).requires_grad_(False)  # a frozen model with an extra trainable term still trains
    bias = nn.Parameter(torch.zeros(10))
    history = kdlite.fit(frozen, (x, y), 1, extra_params=[bias], progress=False,
                         step=lambda m, b: (nn.functional.cross_entropy(m(b[0]) + bias, b[1]), m(b[0]) + bias))
    assert len(history) == 1 and bias.abs().sum() > 0


def test_fit_refuses_an_optimizer_over_another_models_parameters():
    import copy

    x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
    student, teacher = MLP(64, [32], 10), MLP(64, [32], 10)
    for wrong in (torch.optim.SGD(teacher.parameters(), lr=0.1),  # the teacher's
                  torch.optim.SGD(copy.deepcopy(student).parameters(), lr=0.1)):  # a copy's
        with pytest.raises(ValueError, match=r"^optimizer holds none of the MLP's trainable parameters \(it holds 4 "):
            kdlite.fit(student, (x, y), 1, optimizer=wrong, progress=False)
    with pytest.raises(TypeError, match=r"^optimizer must be a torch.optim.Optimizer or None; got str"):
        kdlite.fit(student, (x, y), 1, optimizer="adam", progress=False)
    first = next(m for m in student.modules() if isinstance(m, nn.Linear))
    before = first.weight.detach().clone()  # the student's own optimizer, partial or whole, trains it
    kdlite.fit(student, (x, y), 1, optimizer=torch.optim.SGD(first.parameters(), lr=0.1), progress=False)
    assert not torch.equal(before, first.weight)


def test_the_losses_warn_when_given_probabilities_for_logits():
    s, t, y = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    for call in (lambda: kd_loss(s, t.softmax(-1), 4.0), lambda: distillation_loss(s, t.softmax(-1), y, 4.0, 0.5),
                 lambda: dkd_loss(s, t.softmax(-1), y, 4.0, 1.0, 8.0),
                 lambda: kdlite.losses.sequence_kd_loss(s[None], t.softmax(-1)[None])):
        with pytest.warns(UserWarning, match=r"^teacher_logits look like probabilities") as caught:
            call()
        assert caught[0].filename == __file__  # the warning points at the caller's line, not into kdlite
    with pytest.warns(UserWarning, match=r"^student_logits look like probabilities"):
        kd_loss(s.softmax(-1), t, 4.0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # log-probabilities are logits (softmax(log p) = p): no warning
        kd_loss(s, t.log_softmax(-1), 4.0)


def test_rewind_refuses_a_state_dict_that_is_a_view_of_the_model():
    import copy

    from kdlite.prune import iterative_prune, magnitude_prune, rewind

    x, y = torch.randn(64, 8), torch.randint(0, 4, (64,))
    model = MLP(8, [16], 4)
    view, copied = model.state_dict(), copy.deepcopy(model.state_dict())  # the first changes as the model trains
    kdlite.fit(model, (x, y), 1, progress=False)
    magnitude_prune(model, 0.5)
    with pytest.raises(ValueError, match=r"^initial_state shares .* own tensors \('net.1.weight', ...\), .*deepcopy"):
        rewind(model, view)
    rewind(model, copied)
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    assert torch.equal(first.weight, copied[next(k for k in copied if k.endswith("weight"))] * (first.weight != 0))
    fresh = MLP(8, [16], 4)
    with pytest.raises(ValueError, match=r"^rewind_to shares memory"):  # before any training is wasted
        iterative_prune(fresh, (x, y), [0.5], 1, rewind_to=fresh.state_dict(), progress=False)


def test_a_failed_calibration_keeps_the_ranges_the_model_had():
    from kdlite.quant import calibrate, quantize_ptq

    x = torch.randn(32, 8)
    model = quantize_ptq(MLP(8, [16], 4), x)
    before = model(x)
    for bad in (x.double(), torch.full_like(x, math.nan)):
        with pytest.raises(ValueError):
            calibrate(model, bad)
        assert torch.equal(model(x), before)


def test_quantizing_a_fake_quantized_model_again_is_refused():
    from kdlite.quant import prepare_qat, quantize_ptq, strip_qat

    x = torch.randn(32, 8)
    q8 = quantize_ptq(MLP(8, [16], 4), x)
    for again in (lambda: quantize_ptq(q8, x, bits=4), lambda: prepare_qat(q8, bits=4)):
        with pytest.raises(ValueError, match=r"^model is already fake-quantized \(its layers 'net.1', 'net.3' come "
                                             r"from prepare_qat or quantize_ptq\) .* strip_qat\(model\)"):
            again()
    q4 = quantize_ptq(strip_qat(q8), x, bits=4)  # the fix the message names
    assert {m.bits for m in q4.modules() if hasattr(m, "per_channel")} == {4}


def test_pruning_says_which_attention_and_recurrent_weights_stay_dense():
    from kdlite.prune import magnitude_prune, sparsity

    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    with pytest.warns(UserWarning, match=r"^kdlite.prune leaves 'self_attn' dense: the in_proj_weight") as caught:
        magnitude_prune(layer, 0.5)
    assert caught[0].filename == __file__
    assert sparsity(layer)["overall"] == pytest.approx(0.5)  # of the Linear layers it pruned
    assert not (layer.self_attn.in_proj_weight == 0).any()


def test_batchnorm_that_cannot_be_paired_is_named_not_left_silently():
    import warnings

    from kdlite.models import CNN, ResNet
    from kdlite.quant import fold_all_batchnorm, prepare_qat

    class Net(nn.Module):  # a conv and its BatchNorm under names fold_all_batchnorm cannot pair
        def __init__(self):
            super().__init__()
            self.conv1, self.norm1, self.fc = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.norm1(self.conv1(x))).mean((2, 3)))

    for call in (lambda: fold_all_batchnorm(Net()), lambda: prepare_qat(Net())):
        with pytest.warns(UserWarning, match=r"^BatchNorm2d 'norm1' not folded: .* fold_batchnorm\(conv, bn\)"):
            call()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the book's models fold completely
        prepare_qat(ResNet(8, width=8)), prepare_qat(CNN(3, 10, [8, 16]))


def test_scale_zero_point_takes_numbers_as_well_as_tensors():
    from kdlite.quant import scale_zero_point

    for symmetric in (False, True):
        by_number = scale_zero_point(-1.0, 0.5, 8, symmetric)
        by_tensor = scale_zero_point(torch.tensor(-1.0), torch.tensor(0.5), 8, symmetric)
        assert all(torch.equal(a, b) for a, b in zip(by_number, by_tensor, strict=True))
    assert scale_zero_point(-1.0, 0.5, 8, True)[0].item() == pytest.approx(1 / 127)
