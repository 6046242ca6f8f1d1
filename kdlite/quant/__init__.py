"""Quantization: affine integers, fake quantization, QAT, PTQ, k-means weight sharing, real int8 kernels.

A real number x is stored as a b-bit integer q with a scale s > 0 and an integer zero point z:

    q = clamp(round(x / s) + z, q_min, q_max),        x̂ = s · (q − z).

Unsigned (asymmetric) codes use [q_min, q_max] = [0, 2^b − 1]; signed (symmetric, z = 0) codes use
[−2^(b−1), 2^(b−1) − 1]. Inside the representable range [s(q_min − z), s(q_max − z)] the round trip is off
by at most s/2 (plus float rounding: in float32 at 16 bits, the float's own precision is a visible
fraction of s). Integers are returned as ``torch.int32``, which holds every code from 2 to 16 bits, signed
or unsigned. Per-channel parameters (``axis`` given) are 1-D tensors, one entry per index of
``x.shape[axis]``.

One concept a file, read in this order: ``affine`` (the map and its gradient), ``calibration`` (ranges from data),
``qat`` (BatchNorm folding, QAT layers, PTQ), ``sharing`` (k-means weight sharing), ``int8`` (real int8 kernels on
CPU), ``weight_only`` (per-group weight quantization and GPTQ, for language models). Every public name is
re-exported here: ``kdlite.quant.fake_quantize``, ``kdlite.quant.to_int8``, ...
"""

from . import affine, calibration, int8, qat, sharing, weight_only
from .affine import StraightThrough, dequantize, fake_quantize, qparams, qrange, quantize, scale_zero_point
from .calibration import ActQuant, CalibrationData, calibrate
from .int8 import dynamic_int8, to_int8
from .qat import QuantConv2d, QuantLinear, fold_all_batchnorm, fold_batchnorm, prepare_qat, quantize_ptq, strip_qat
from .sharing import SharedWeight, kmeans_quantize, share_weights
from .weight_only import gptq_quantize, group_quantize, group_quantize_model, per_row_layers

__all__ = [
    "affine",
    "calibration",
    "int8",
    "qat",
    "sharing",
    "weight_only",
    "ActQuant",
    "CalibrationData",
    "QuantConv2d",
    "QuantLinear",
    "SharedWeight",
    "StraightThrough",
    "calibrate",
    "dequantize",
    "dynamic_int8",
    "fake_quantize",
    "fold_all_batchnorm",
    "fold_batchnorm",
    "gptq_quantize",
    "group_quantize",
    "group_quantize_model",
    "per_row_layers",
    "kmeans_quantize",
    "prepare_qat",
    "qparams",
    "qrange",
    "scale_zero_point",
    "quantize",
    "quantize_ptq",
    "share_weights",
    "strip_qat",
    "to_int8",
]
