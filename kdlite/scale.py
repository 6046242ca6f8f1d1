"""One source, three scales.

Every chapter sizes its experiments from the active :class:`Scale`, chosen by the environment variable
``KDLITE_SCALE``:

* ``smoke``: proves the wiring in seconds (CI); the numbers mean nothing.
* ``cpu``:   meaningful results on a 2-core laptop in minutes, on the offline datasets.
* ``gpu``:   the full experiments (MNIST, CIFAR-10) on a GPU.

The default is ``gpu`` where CUDA is available, else ``cpu``. With ``KDLITE_OFFLINE=1`` the offline datasets
stand in for the ones that must be downloaded, and the printed line says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

SCALES = ("smoke", "cpu", "gpu")

# What stands in for a downloadable dataset when KDLITE_OFFLINE=1.
OFFLINE_STAND_INS = {"mnist": "mnist-5k", "fashion-mnist": "mnist-5k", "cifar10": "digits", "cifar100": "digits"}


@dataclass(frozen=True)
class Scale:
    """What a chapter needs to size its experiments.

    Attributes:
        name: ``"smoke"``, ``"cpu"`` or ``"gpu"``.
        mnist: the MNIST-like dataset for fully connected models (chapters 1, 3, 5).
        images: the image dataset for convolutional models (chapters 4, 6).
        subset: at most this many training samples (``None``: all of them).
        epochs: the base number of training epochs; chapters scale it for longer runs.
        seeds: the seeds every reported mean ± std is taken over.
        batch_size: the training batch size.
        offline: ``True`` when offline datasets stand in for downloadable ones.
    """

    name: str
    mnist: str
    images: str
    subset: int | None
    epochs: int
    seeds: tuple[int, ...]
    batch_size: int = 128
    offline: bool = False

    def __str__(self) -> str:
        subset = "all" if self.subset is None else str(self.subset)
        line = (
            f"scale: {self.name} · mnist-like: {self.mnist} · images: {self.images} · train subset: {subset}"
            f" · epochs: {self.epochs} · seeds: {len(self.seeds)} · batch: {self.batch_size}"
        )
        return line + (" · offline stand-ins (KDLITE_OFFLINE=1)" if self.offline else "")


PRESETS = {
    "smoke": Scale("smoke", mnist="digits", images="digits", subset=400, epochs=1, seeds=(0,), batch_size=64),
    "cpu": Scale("cpu", mnist="mnist-5k", images="digits", subset=None, epochs=10, seeds=(0, 1, 2)),
    "gpu": Scale("gpu", mnist="mnist", images="cifar10", subset=None, epochs=20, seeds=(0, 1, 2), batch_size=128),
}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def scale(name: str | None = None) -> Scale:
    """Return the active :class:`Scale`: ``name`` if given, else ``$KDLITE_SCALE``, else ``gpu`` with CUDA or ``cpu``.

    ``KDLITE_OFFLINE=1`` swaps every downloadable dataset for its offline stand-in (see ``OFFLINE_STAND_INS``).
    """
    source = "name"
    if name is None:
        source, name = "KDLITE_SCALE", os.environ.get("KDLITE_SCALE", "")
        name = name.strip() or ("gpu" if torch.cuda.is_available() else "cpu")
    if isinstance(name, str) and name.strip().lower() in PRESETS:
        name = name.strip().lower()
    if name not in PRESETS:
        raise ValueError(f"{source} must be one of {', '.join(SCALES)}; got {name!r}")
    s = PRESETS[name]
    if _flag("KDLITE_OFFLINE"):
        s = replace(
            s,
            mnist=OFFLINE_STAND_INS.get(s.mnist, s.mnist),
            images=OFFLINE_STAND_INS.get(s.images, s.images),
            offline=True,
        )
    return s
