"""kdlite: a small, readable PyTorch library for model compression, the library of an open textbook.

One concept per module:

- ``scale``: experiment sizes (smoke, cpu, gpu);  ``data``: datasets and the device loader (``data.text``: Tiny
  Shakespeare and ``TextLoader``);  ``models``;  ``gpt``: a small GPT language model (``models.GPT``);
- ``device``: get_device, seed_everything, synchronize;  ``train``: fit, evaluate;  ``measure``: size, speed and
  calibration;
  ``report``: mean ± std, tables, figures;  ``checks``: the exercises' checks (✓ / ✗ lines);
- ``losses``: soft targets, KD, DKD, sequence (token-level) KD and feature losses;  ``distill``: the distillation
  loop;  ``features``: feature taps and connectors;
- ``masks``: W = W_orig ⊙ M, N:M masks;  ``prune``: magnitude, iterative and 2:4 pruning, the lottery ticket;
  ``structured``: channel pruning;
- ``quant`` (a package): affine quantization, calibration, QAT and PTQ, k-means weight sharing, real int8 kernels
  (``kdlite.int8.to_int8`` is ``kdlite.quant.to_int8``), per-group weight quantization and GPTQ;  ``huffman``:
  optimal prefix-code lengths, for ``measure.deep_compression_size``;
- ``robust``: input noise, blur, contrast and shift corruptions, and the FGSM and PGD attacks.

The API rule, followed by every module:

- **Models.** What trains or prunes a model changes the one you pass, in place (``fit`` and ``distill`` return a
  ``History``, ``magnitude_prune`` the masks; ``apply_masks``, ``remove_masks``, ``rewind`` and ``calibrate`` return
  the same model). What changes a model's structure returns a new model and leaves yours as it was
  (``channel_prune``, ``fold_all_batchnorm``, ``prepare_qat``, ``quantize_ptq``, ``share_weights``, ``to_int8``,
  ``group_quantize_model``: their docstrings begin "A copy of ``model``"). What only reads a model
  (``evaluate``, ``measure.*``, the feature taps, the attacks ``robust.fgsm`` and ``robust.pgd``) runs it inside
  ``kdlite.device.eval_mode`` and leaves every submodule's train/eval mode as it found it.
- **Data.** An argument holding data is called ``data`` (``train`` and ``val`` in ``fit`` and ``distill``, where
  there are two); it may be a loader, a ``TensorDataset``, a tuple ``(x, y)`` of tensors or any iterable of
  ``(x, y, ...)`` batches, turned into batches by ``kdlite.data.as_batches`` (calibration also takes one tensor
  of inputs as one batch).
- **Metrics.** Accuracy is called ``accuracy`` (``evaluate(...)["accuracy"]``, ``history["val_accuracy"]``), a
  fraction in [0, 1]; times are returned in seconds (``latency``, ``profile(...)["latency"]``), and only printed
  tables show milliseconds (``_ms``).
- **Layers.** The layers pruning and weight sharing act on are one tuple, ``kdlite.masks.PRUNABLE``.
- **Errors.** Bad arguments raise ``ValueError`` or ``TypeError`` naming the argument, what was given and what was
  expected; the checks sit in one private module, a line at the top of each public function, so that the function's
  body is its formula. Functions that run at every training step take ``check=False`` from a caller that checked
  once (``kd_loss``, ``distillation_loss``, ``qparams``, ``fake_quantize``).
"""

from . import (
    checks,
    data,
    distill,
    features,
    gpt,
    huffman,
    int8,
    losses,
    measure,
    models,
    prune,
    quant,
    report,
    robust,
    structured,
    train,
)
from .data import DeviceLoader, load_dataset
from .device import eval_mode, get_device, seed_everything
from .scale import Scale, scale
from .train import History, evaluate, fit

__version__ = "0.1.0"

__all__ = [
    "DeviceLoader",
    "History",
    "Scale",
    "checks",
    "huffman",
    "data",
    "distill",
    "eval_mode",
    "evaluate",
    "features",
    "fit",
    "get_device",
    "gpt",
    "int8",
    "load_dataset",
    "losses",
    "measure",
    "models",
    "prune",
    "quant",
    "report",
    "robust",
    "scale",
    "structured",
    "seed_everything",
    "train",
]
