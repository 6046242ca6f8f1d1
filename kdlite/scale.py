"""One source, three scales.

Every chapter sizes its experiments from the active :class:`Scale`, chosen by the environment variable
``KDLITE_SCALE``:

* ``smoke``: proves the wiring in seconds (CI); the numbers mean nothing.
* ``cpu``:   meaningful results on a 2-core laptop in minutes: a subset of real MNIST where it can be had (in the
  cache, or downloadable), else its offline stand-in; 8×8 digits for the convolutional chapters.
* ``gpu``:   the full experiments (MNIST, CIFAR-10) on a GPU.

The default is ``gpu`` where CUDA is available, else ``cpu``. With ``KDLITE_OFFLINE=1`` nothing is downloaded: a
dataset already in kdlite's cache is used as itself, and only the missing ones are replaced by offline stand-ins.
The printed line names what is really used, and why a stand-in stands in. ``KDLITE_SEEDS=1`` (or ``0,1,2,3,4``)
replaces the scale's seeds, e.g. to run one seed per process on a shared GPU or to add seeds.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from dataclasses import dataclass, replace

import torch

from .data import is_cached
from .data.cache import offline, torchvision_dataset

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
        offline: ``True`` when ``KDLITE_OFFLINE=1`` (nothing is downloaded).
        mnist_note, images_note: why a stand-in replaces the scale's dataset ("" when none does).
    """

    name: str
    mnist: str
    images: str
    subset: int | None
    epochs: int
    seeds: tuple[int, ...]
    batch_size: int = 128
    offline: bool = False
    mnist_note: str = ""
    images_note: str = ""

    def __str__(self) -> str:
        subset = "all" if self.subset is None else str(self.subset)
        mnist = f"{self.mnist} ({self.mnist_note})" if self.mnist_note else self.mnist
        images = f"{self.images} ({self.images_note})" if self.images_note else self.images
        line = (
            f"scale: {self.name} · mnist-like: {mnist} · images: {images} · train subset: {subset}"
            f" · epochs: {self.epochs} · seeds: {len(self.seeds)}{_which(self.seeds)} · batch: {self.batch_size}"
        )
        return line + (" · offline (KDLITE_OFFLINE=1)" if self.offline else "")


CPU_SUBSET = 10_000  # real MNIST training digits at cpu scale: each chapter within 10 minutes on 2 cores

PRESETS = {
    "smoke": Scale("smoke", mnist="digits", images="digits", subset=400, epochs=1, seeds=(0,), batch_size=64),
    "cpu": Scale("cpu", mnist="mnist", images="digits", subset=CPU_SUBSET, epochs=10, seeds=(0, 1, 2)),
    "gpu": Scale("gpu", mnist="mnist", images="cifar10", subset=None, epochs=20, seeds=(0, 1, 2), batch_size=128),
}


def _which(seeds: tuple[int, ...]) -> str:
    """Names the seeds when they are not the usual 0, 1, 2, ... (set by ``KDLITE_SEEDS``)."""
    return "" if seeds == tuple(range(len(seeds))) else f" ({', '.join(map(str, seeds))})"


def _seeds(text: str) -> tuple[int, ...]:
    """``KDLITE_SEEDS`` ("1" or "0,1,2") as a tuple of distinct integers >= 0."""
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        seeds = ()
    if not seeds or min(seeds) < 0 or len(set(seeds)) < len(seeds):
        raise ValueError(f"KDLITE_SEEDS must be distinct integers >= 0 separated by commas, e.g. '0,1,2'; got {text!r}")
    return seeds


@functools.cache
def _reachable(name: str, timeout: float = 3.0) -> bool:
    """Whether the first server torchvision downloads ``name`` from accepts a connection within ``timeout`` seconds,
    name lookup included (asked once a process). Behind a proxy the answer is yes: let the download try."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return True
    import urllib.parse

    cls = torchvision_dataset(name)
    url = urllib.parse.urlsplit(cls.mirrors[0] if hasattr(cls, "mirrors") else cls.url)
    address = (url.hostname, url.port or (443 if url.scheme == "https" else 80))
    answer: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection(address, timeout).close()
            answer.append(True)
        except OSError:
            answer.append(False)

    probe = threading.Thread(target=connect, daemon=True)  # a resolver that never answers must not hang a chapter
    probe.start()
    probe.join(timeout)
    return bool(answer and answer[0])


def _resolve(wanted: str, name: str, offline: bool) -> tuple[str, str]:
    """The dataset a scale really uses for ``wanted``, and why a stand-in replaces it ("" when none does)."""
    if wanted not in OFFLINE_STAND_INS or is_cached(wanted):
        return wanted, ""
    if offline:
        return OFFLINE_STAND_INS[wanted], f"stand-in for {wanted}: not in the cache"
    if name == "cpu" and not _reachable(wanted):  # real data is a bonus at cpu scale, not a requirement
        return OFFLINE_STAND_INS[wanted], f"stand-in for {wanted}: not in the cache, no network"
    return wanted, ""


def scale(name: str | None = None) -> Scale:
    """Return the active :class:`Scale`: ``name`` if given, else ``$KDLITE_SCALE``, else ``gpu`` with CUDA or ``cpu``.

    A downloadable dataset in kdlite's cache (``$KDLITE_DATA``) is used as itself. One that is not is downloaded
    when first loaded, except with ``KDLITE_OFFLINE=1``, and at ``cpu`` scale when its server cannot be reached:
    then its offline stand-in (see ``OFFLINE_STAND_INS``) replaces it, and the scale's line says so.
    ``$KDLITE_SEEDS`` (e.g. ``"1"`` or ``"0,1,2,3,4"``) replaces the preset's seeds.
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
    if os.environ.get("KDLITE_SEEDS", "").strip():
        s = replace(s, seeds=_seeds(os.environ["KDLITE_SEEDS"]))
    (mnist, mnist_note), (images, images_note) = (_resolve(d, name, offline()) for d in (s.mnist, s.images))
    return replace(s, mnist=mnist, images=images, offline=offline(), mnist_note=mnist_note, images_note=images_note)
