"""Real int8 inference on CPU: a float model becomes one that runs PyTorch's quantized int8 kernels.

Which path, and why. PyTorch 2.14 offers two ways to get int8 kernels on a CPU:

* ``torch.ao.quantization`` FX graph mode (``prepare_fx`` / ``convert_fx``) with the ``x86`` engine
  (fbgemm and oneDNN kernels: ``quantized::conv2d_relu``, ``quantized::linear``, ...). Deprecated in
  favour of torchao, but still shipped and working in torch 2.14.1. Conversion takes about 2 s; the result
  is an ordinary ``GraphModule`` that takes and returns float tensors, accepts any batch size, and works
  with ``kdlite.evaluate``, ``kdlite.measure.latency`` and ``kdlite.measure.model_size_bytes`` unchanged
  (its weights are quantized tensors of 1 byte an element).
* torchao's PT2E flow (``torch.export`` → ``prepare_pt2e``/``convert_pt2e`` with ``X86InductorQuantizer``
  → ``torch.compile``). It needs the extra ``torchao`` package and a C++ compiler, compiles for several
  seconds per input shape, the exported module refuses ``.eval()`` (so ``evaluate`` and ``latency`` fail
  on it without ``allow_exported_model_train_eval``), and its ``state_dict`` keeps the dead float32
  weights beside the int8 ones.

When this module was written (torch 2.14.1 on a 2-core Xeon with AMX int8 instructions), both paths ran
``CNN(3, 10, widths=(64, 128, 256))`` several times faster than float32 at batch 64, and the FX model was faster
at batch 1, so ``to_int8`` takes the FX path. ``benchmarks/bench_quant.py`` measures the ratio on your CPU; it
depends strongly on the CPU's int8 instructions: on that AMX machine the FX path ran that CNN 21-22x faster than
float32 at batch 64, on a 2-core Xeon with VNNI but no AMX (2026-11-30) chapter 6's ``CNN(3, 10, (32, 64, 128))``
ran 5.6x faster at batch 64 and 2.8x at batch 1. When ``torch.ao.quantization`` is removed from PyTorch, this module
is the one place to port to PT2E.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..device import named_input_errors
from ..masks import remove_masks
from ._checks import float32_model, linears_to_swap, renamed, untraceable
from .calibration import CalibrationData, calibration_inputs
from .qat import strip_qat


@torch.no_grad()
def to_int8(
    model: nn.Module,
    data: CalibrationData | None = None,
    num_batches: int = 8,
    *,
    calibration_data: CalibrationData | None = None,
) -> nn.Module:
    """A copy of ``model`` that runs real int8 kernels on the CPU (static quantization, FX graph mode).

    Weights: int8, symmetric, per output channel. Activations: uint8, per tensor, 0..127 only (the x86 default's
    ``reduce_range``, against overflow in 16-bit sums on CPUs without VNNI), their ranges set by a histogram
    observer on the first ``num_batches`` batches of ``data`` (``calibration_data=``, its old name).
    BatchNorm is folded into the preceding convolution and ReLU fused with it. The returned module lives on the CPU
    and maps float inputs to float logits. Uses the engine in ``torch.backends.quantized.engine`` (``x86`` on
    Intel/AMD CPUs). A pruned model's masks are made permanent in the copy (pruned weights quantize to exact zeros).
    A trained QAT model (:func:`prepare_qat`) converts from its float weights (:func:`strip_qat`): int8's own
    per-channel weight scales and calibrated activation ranges replace its fake quantizers' (close to them at 8
    bits; after QAT at fewer bits, int8 is the finer grid, not the grid it trained for).

    Size: ``kdlite.measure.model_size_bytes(int8_model)`` (about 4× smaller than float32). Accuracy:
    ``kdlite.evaluate(int8_model, test, device="cpu")`` (pass ``device``: the int8 model has no float
    parameters to take a device from). The deprecation warnings of ``torch.ao.quantization`` are silenced
    here; see the module docstring for why this path is used.

    The model must be traceable by ``torch.fx``: a fixed graph of modules and tensor operations, as the book's
    MLP, CNN and ResNet are (Conv/Linear/BatchNorm/ReLU). A model whose forward branches or loops on its input
    (``nn.LSTM``'s does) raises a ValueError.

    Saving: ``torch.save(int8_model.state_dict(), path)``, loaded into ``to_int8`` of the same architecture (any
    calibration data: the loaded scales replace its own). A whole int8 CNN saved with ``torch.save(int8_model)``
    does not load again in this PyTorch (its fused ``ConvReLU2d`` fails to unpickle).
    """
    model = float32_model(model, "to_int8", token_ids=False)
    data = renamed(data, calibration_data, "data", "calibration_data")
    cpu = torch.device("cpu")
    inputs = list(calibration_inputs(data, num_batches, cpu))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*reduce_range will be deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        float_model = remove_masks(strip_qat(model).to(cpu).eval())  # pruned weights: permanent zeros
        mapping = get_default_qconfig_mapping(torch.backends.quantized.engine)
        try:
            observed = prepare_fx(float_model, mapping, example_inputs=(inputs[0],))
        except (torch.fx.proxy.TraceError, TypeError, RuntimeError) as e:
            raise untraceable(model, e) from None
        for x in inputs:
            with named_input_errors(float_model, x, "calibration"):
                observed(x)
        return convert_fx(observed)


def dynamic_int8(model: nn.Module) -> nn.Module:
    """A CPU copy of ``model`` whose ``nn.Linear`` layers run int8 kernels with dynamic quantization: weights stored
    as int8 (symmetric, per tensor) ahead of time; each batch of activations quantized on the fly from its own
    range, so no calibration data is needed. Everything else (embeddings, norms, attention) stays float32. The
    usual int8 path for transformers on a CPU, where the linear layers hold the weights and most of the work; the
    returned module maps float inputs (or token ids) to float outputs, like ``model``. Evaluate it with
    ``device="cpu"``. The deprecation warnings of ``torch.ao.quantization`` are silenced here, as in :func:`to_int8`.
    A pruned model's masks are made permanent in the copy, as in :func:`to_int8`.
    """
    model = float32_model(model, "dynamic_int8")
    float_model = remove_masks(strip_qat(model).cpu().eval())  # pruned weights: permanent zeros
    linears_to_swap(float_model)  # after remove_masks: a pruned Linear is a parametrized subclass until then
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao, but works
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(nn.Sequential(float_model), {nn.Linear}, dtype=torch.qint8)[0]  # a bare Linear too
