"""The `gpu`-scale code path of every chapter, run on small synthetic MNIST- and CIFAR-shaped data.

At `gpu` scale the chapters use other networks (Hinton's MLPs, ResNets), other data (MNIST, CIFAR-10) and other
branches than at `smoke` and `cpu` scale; only a reader with a GPU runs them. So that they cannot rot unseen, each
chapter runs here as a script at `gpu` scale, on learnable synthetic datasets imported into a temporary cache
(400 training and 200 test images), with the `gpu` preset cut to one epoch and one seed. The numbers mean nothing;
the test checks that the chapter runs to the end and that it really used the imported datasets.
"""

import os
import subprocess
import sys
from pathlib import Path

import jupytext
import numpy as np
import pytest
import torch

from kdlite import quant
from kdlite.data import import_dataset, load_text
from kdlite.losses import sequence_kd_loss
from kdlite.models import GPT
from kdlite.prune import prune_2_4

ROOT = Path(__file__).resolve().parents[1]
# Chapter 9's `gpu` scale differs from its `cpu` scale only in its numbers (nanoGPT's 10M-parameter teacher, thousands
# of steps, set in one CONFIG cell), not in its code, and those take hours on a CPU: smoke covers its code, and
# test_chapter9_gpu_config below builds and steps its `gpu`-scale models.
CHAPTERS = [md for md in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.md")) if md.stem != "09_language_model"]

# Cut the gpu preset down, then run the chapter's script as a notebook kernel would (display = print).
RUNNER = """
import builtins, dataclasses, importlib, runpy, sys
scale = importlib.import_module("kdlite.scale")
scale.PRESETS["gpu"] = dataclasses.replace(scale.PRESETS["gpu"], epochs=1, seeds=(0,), batch_size=64)
builtins.display = print
runpy.run_path(sys.argv[1], run_name="__main__")
"""


def learnable(shape, n, classes, rng):
    """uint8 images: a fixed random template per class plus noise, so the models have something to learn."""
    templates = rng.integers(0, 256, (classes, *shape))
    y = np.arange(n) % classes
    noise = rng.integers(-40, 41, (n, *shape))
    return np.clip(templates[y] + noise, 0, 255).astype(np.uint8), y


@pytest.fixture(scope="module")
def synthetic_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu-path-data")
    rng = np.random.default_rng(0)
    for name, shape in (("mnist", (28, 28)), ("cifar10", (32, 32, 3))):
        (xtr, ytr), (xte, yte) = learnable(shape, 400, 10, rng), learnable(shape, 200, 10, rng)
        np.savez(root / f"{name}.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
        import_dataset(name, root / f"{name}.npz", root=root / "cache")
    return root


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_gpu_scale_code_path_runs(md, synthetic_cache, tmp_path):
    script = tmp_path / f"{md.stem}.py"
    jupytext.write(jupytext.read(md), script, fmt="py:percent")
    env = {k: v for k, v in os.environ.items() if k not in ("KDLITE_FIGURES", "KDLITE_RESULTS")}
    env.update(KDLITE_SCALE="gpu", KDLITE_OFFLINE="1", KDLITE_DATA=str(synthetic_cache / "cache"), KDLITE_PROGRESS="0",
               KDLITE_DEVICE="cpu", MPLBACKEND="Agg", CUDA_VISIBLE_DEVICES="")
    run = subprocess.run([sys.executable, "-c", RUNNER, str(script)], cwd=ROOT / "notebooks", env=env,
                         capture_output=True, text=True, timeout=900)
    out = run.stdout + run.stderr
    assert run.returncode == 0, f"{md.stem} failed at gpu scale:\n{out[-4000:]}"
    line = next((ln for ln in out.splitlines() if ln.startswith("scale: gpu")), "")
    assert "mnist-like: mnist ·" in line and "images: cifar10 ·" in line, out[:2000]  # the imported data, no stand-in


def chapter9_config() -> dict:
    """Chapter 9's CONFIG dict, read from the chapter's own cell (the literal before `C = CONFIG[S.name]`)."""
    cell = next(c.source for c in jupytext.read(ROOT / "notebooks" / "09_language_model.md").cells
                if c.source.startswith("CONFIG = {"))
    scope = {}
    exec(cell[: cell.index("C = CONFIG")], scope)
    return scope["CONFIG"]


@pytest.mark.parametrize("name", ["smoke", "cpu", "gpu"])
def test_chapter9_config_builds_and_steps(name):
    """Every scale's models build, the `gpu` teacher is nanoGPT's shakespeare_char size and the student about a tenth
    of it; one distillation step, generation past the context, group quantization and 2:4 pruning all run."""
    C = chapter9_config()[name]
    vocab = load_text("tinyshakespeare")[2]
    torch.manual_seed(0)
    teacher = GPT(len(vocab), C["block"], *C["teacher"], dropout=C["dropout"]).eval()
    student = GPT(len(vocab), C["block"], *C["student"])
    n_teacher, n_student = (sum(p.numel() for p in m.parameters()) for m in (teacher, student))
    if name == "gpu":
        assert 10.5e6 < n_teacher < 11e6, n_teacher  # nanoGPT's shakespeare_char: 10.65M
        assert 0.05 < n_student / n_teacher < 0.15, n_student / n_teacher
    x = torch.randint(len(vocab), (2, C["block"]))
    with torch.no_grad():
        t = teacher(x)
    for kind in ("forward", "reverse", "jsd"):
        loss = sequence_kd_loss(student(x), t, kind=kind)
        loss.backward()
        assert torch.isfinite(loss)
    out = student.generate(x[:1], 3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, C["block"] + 3)
    for g in (None, 128, 32):
        quant.group_quantize_model(student, 4, g, per_row_fallback=True)
    prune_2_4(student)
