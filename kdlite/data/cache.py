"""The dataset cache: one file per downloadable dataset, uint8 images with a checksum, written whole or not at all.

``root/NAME.pt`` holds a dict: the dataset's name, ``x_train``/``x_test`` uint8 ``(N, C, H, W)``,
``y_train``/``y_test`` uint8 ``(N,)`` and the SHA-256 of all of them. Loading checks every one of these, so a damaged
file or one copied under another name raises instead of loading as data. A file is first written under a temporary
name and renamed into place only when complete; a lock keeps two processes (a class on a shared disk) from building
the same file at once, and each works in a temporary folder of its own.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import torch

from .._checks import path as path_argument
from .sources import KEYS, SPECS, checked, read_source

FORMAT = 2  # 1: a tuple of four float32/int64 tensors (kdlite 0.1); 2: this
OFFLINE_DATASETS = ("digits", "mnist-5k", "mnist1d")
DOWNLOADABLE_DATASETS = tuple(SPECS)
DATASETS = OFFLINE_DATASETS + DOWNLOADABLE_DATASETS
REBUILD = "python -m kdlite.data import {name} SOURCE"


class DatasetDownloadError(RuntimeError):
    """A torchvision dataset could not be downloaded (no network, or the server failed)."""


class DatasetCacheError(ValueError, RuntimeError):
    """The cache folder cannot be used, or a cache file is damaged or not what its name says."""


def dataset_name(name: str) -> str:
    """``name`` as kdlite spells it ("MNIST" means mnist); an unknown name raises, suggesting the closest."""
    if isinstance(name, str) and name.strip().lower() in DATASETS:
        return name.strip().lower()
    close = difflib.get_close_matches(str(name).lower(), DATASETS, n=2, cutoff=0.6)
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    raise ValueError(f"unknown dataset name {name!r}{hint}; expected one of: {', '.join(DATASETS)}")


def torchvision_dataset(name: str) -> type:
    """The torchvision class that downloads the dataset kdlite calls ``name``."""
    import torchvision.datasets as tvd

    classes = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}
    return classes[name]


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``root`` if given, else ``$KDLITE_DATA``, else ``~/.cache/kdlite``."""
    if root is not None and not isinstance(root, str):  # a str is a path ("" too: the default, below)
        root = path_argument(root, "root", "the cache folder for datasets")
    return Path(root or os.environ.get("KDLITE_DATA") or Path.home() / ".cache" / "kdlite").expanduser()


def offline() -> bool:
    """Whether ``KDLITE_OFFLINE`` is set (1, true, yes or on): then nothing is downloaded."""
    return os.environ.get("KDLITE_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def is_cached(name: str, root: str | os.PathLike | None = None) -> bool:
    """Whether the downloadable dataset ``name`` has a cache file in the cache folder (not checked: see load)."""
    try:
        name = dataset_name(name)
    except ValueError:
        return False
    return (data_root(root) / f"{name}.pt").is_file()


def import_dataset(
    name: str, source: str | os.PathLike, root: str | os.PathLike | None = None, *, note: str = ""
) -> Path:
    """Put a local copy of a downloadable dataset into the cache folder, so that it loads with no network.

    Args:
        name: ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"`` or ``"cifar100"``.
        source: an ``.npz`` file with ``x_train, y_train, x_test, y_test`` (uint8 images ``N×H×W`` or ``N×H×W×C``,
            integer labels ``(N,)`` or ``(N, 1)``: the layout of Keras' ``mnist.npz``); or what torchvision
            downloads: its folder (MNIST's IDX files, ``.gz`` or not; ``cifar-10-batches-py/``,
            ``cifar-100-python/``) or CIFAR's ``.tar.gz`` archive.
        root: the cache folder (default ``$KDLITE_DATA`` or ``~/.cache/kdlite``).
        note: what the copy is, kept with it and named in every record of results made from it (e.g. ``"JPEG
            copy"`` for a lossy copy of CIFAR-10).

    Returns the cache file's path. A bad source raises a ``ValueError`` naming the file, the key and what was
    expected; nothing is written unless the whole import succeeds.
    """
    name = dataset_name(name)
    if not isinstance(note, str):
        raise TypeError(f"note must be a str; got {type(note).__name__}")
    if name not in DOWNLOADABLE_DATASETS:
        raise ValueError(f"name must be a dataset to download: {', '.join(DOWNLOADABLE_DATASETS)}; got {name!r} "
                         f"(the offline datasets {', '.join(OFFLINE_DATASETS)} need no import)")
    source = path_argument(source, "source", "the local copy to import (.npz, folder or .tar.gz)").expanduser()
    arrays = checked(name, read_source(name, source))
    root = _writable(data_root(root))
    with _locked(root, name, keep=source):
        return _save(name, arrays, root, note.strip())


def cache_note(name: str, root: str | os.PathLike | None = None) -> str:
    """The note an import kept with ``name``'s cache file ("" if none, or if there is no such file)."""
    path = data_root(root) / f"{name}.pt"
    try:
        record = torch.load(path, weights_only=True, mmap=True)  # mmap: the note without reading the images
    except Exception:  # noqa: BLE001  (missing or unreadable: loading the data will say why)
        return ""
    return record.get("note", "") if isinstance(record, dict) else ""


def cached(name: str, root: Path, download: bool) -> dict[str, torch.Tensor]:
    """The arrays of ``name`` from ``root/NAME.pt``; downloads and caches them first if missing, ``download`` is
    true and ``KDLITE_OFFLINE`` is not set."""
    _not_a_file(root)
    path = root / f"{name}.pt"
    if not path.exists() and (not download or offline()):
        why = f"KDLITE_OFFLINE={os.environ['KDLITE_OFFLINE']!r} is set (unset it to download)" if download else \
            "download=False"
        raise DatasetDownloadError(
            f"dataset {name!r} is not in the cache folder {root} and {why}; with a network, download it; without "
            f"one, import a local copy ({REBUILD.format(name=name)}), or use an offline dataset: "
            f"{', '.join(OFFLINE_DATASETS)}")
    if not path.exists():
        root = _writable(root)
        with _locked(root, name):
            if not path.exists():  # another process may have built it while we waited for the lock
                _save(name, _download(name, root), root)
    return _load(name, path)


# ------------------------------------------------------------------------------------------------ file format


def _checksum(name: str, arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(name.encode())
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}{a.shape}{a.dtype}".encode())
        h.update(a.data)
    return h.hexdigest()


def _save(name: str, arrays: dict[str, np.ndarray], root: Path, note: str = "") -> Path:
    """Write ``root/NAME.pt`` atomically: a temporary file, renamed into place when complete."""
    path = root / f"{name}.pt"
    record = {"kdlite_cache": FORMAT, "name": name, "note": note, "sha256": _checksum(name, arrays),
              **{k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in arrays.items()}}
    tmp = root / f".{name}-{uuid.uuid4().hex}.partial"
    try:
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # mode 0666 less the umask
        torch.save(record, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # a full disk reaches us as torch's "unexpected pos" RuntimeError
        raise DatasetCacheError(f"could not write {path} ({type(e).__name__}: {str(e).splitlines()[0][:120]}); is "
                                f"the disk full? Set KDLITE_DATA to a folder with room ({_size(arrays)} MB) that "
                                f"you can write") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _size(arrays: dict[str, np.ndarray]) -> int:
    return round(sum(a.nbytes for a in arrays.values()) / 1e6)


def _load(name: str, path: Path) -> dict[str, torch.Tensor]:
    rebuild = (f"Delete the file and load {name!r} again to rebuild it, or import a local copy: "
               f"{REBUILD.format(name=name)}")
    try:
        record = torch.load(path, weights_only=True)
    except Exception as e:  # a file written by something else, or damaged on disk
        raise DatasetCacheError(f"the cached dataset file {path} could not be read ({type(e).__name__}); expected "
                                f"the dataset kdlite writes there. {rebuild}") from None
    if isinstance(record, tuple) and len(record) == 4:
        return {k: torch.from_numpy(a) for k, a in _upgrade(name, path, record, rebuild).items()}
    arrays = {k: record[k].numpy() for k in KEYS if isinstance(record.get(k), torch.Tensor)} \
        if isinstance(record, dict) else {}
    problem = _record_problem(name, record, arrays)
    if problem:
        raise DatasetCacheError(f"the cached dataset file {path} {problem}. {rebuild}")
    return {k: torch.from_numpy(a) for k, a in arrays.items()}


def _record_problem(name: str, record, arrays: dict[str, np.ndarray]) -> str | None:
    """What is wrong with a cache file's ``record`` holding ``arrays`` for ``name``, or None."""
    if not isinstance(record, dict) or record.get("kdlite_cache") != FORMAT:
        return f"is not a kdlite cache file (format {FORMAT})"
    if record.get("name") != name:
        return f"holds {record.get('name')!r}, not {name!r}"
    problem = _invalid(name, arrays)
    if problem:
        return f"does not hold valid {name!r} data: {problem}"
    if _checksum(name, arrays) != record.get("sha256"):
        return "is damaged: its content does not match the checksum stored with it"
    return None


def _invalid(name: str, arrays: dict[str, np.ndarray]) -> str | None:
    """What is wrong with cached arrays for ``name`` (shapes, dtypes, label range), or None."""
    (c, h, w), classes = SPECS[name]
    if sorted(arrays) != sorted(KEYS):
        return f"it has the tensors {sorted(arrays)}; expected {', '.join(KEYS)}"
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.shape[1:] != (c, h, w):
            return f"x_{split} is {x.dtype} of shape {x.shape}; expected uint8 of shape (N, {c}, {h}, {w})"
        if y.dtype != np.uint8 or y.shape != (len(x),):
            return f"y_{split} is {y.dtype} of shape {y.shape}; expected uint8 of shape ({len(x)},)"
        if len(y) and y.max() >= classes:
            return f"y_{split} has a label {y.max()}; expected 0 .. {classes - 1}"
    return None


def _upgrade(name: str, path: Path, record: tuple, rebuild: str) -> dict[str, np.ndarray]:
    """A cache of kdlite 0.1 (float32 images in [0, 1]): converted to uint8, which is exact (they were k / 255)."""
    try:
        x_train, x_test, y_train, y_test = (t.numpy() for t in record)  # kdlite 0.1's order
        codes = [np.rint(x * 255.0) for x in (x_train, x_test)]  # float32 k / 255 times 255 rounds back to k
        exact = all(np.abs(x * 255.0 - q).max() < 1e-3 and q.min() >= 0 and q.max() <= 255
                    for x, q in zip((x_train, x_test), codes, strict=True))
        classes = SPECS[name][1]
        labels = all(np.issubdtype(y.dtype, np.integer) and 0 <= y.min() <= y.max() < classes
                     for y in (y_train, y_test))
        arrays = {"x_train": codes[0].astype(np.uint8), "y_train": y_train.astype(np.uint8),
                  "x_test": codes[1].astype(np.uint8), "y_test": y_test.astype(np.uint8)}
        problem = ("its images are not multiples of 1/255 in [0, 1]" if not exact
                   else f"its labels are not integers in 0 .. {classes - 1}" if not labels else _invalid(name, arrays))
    except (ValueError, TypeError, AttributeError, IndexError) as e:
        problem = str(e)
    if problem:
        raise DatasetCacheError(f"the cached dataset file {path} (an older kdlite format) does not hold valid "
                                f"{name!r} data: {problem}. {rebuild}")
    try:
        with _locked(path.parent, name):
            _save(name, arrays, path.parent)
        print(f"kdlite: {path} was written by an older kdlite (float32); rewrote it as uint8 with a checksum")
    except (OSError, DatasetCacheError) as e:
        print(f"kdlite: {path} was written by an older kdlite (float32); converted it in memory, since it could not "
              f"be rewritten ({e}); delete the file and load {name!r} again to rebuild it")
    return arrays


# ---------------------------------------------------------------------------------- downloads and the folder


def _download(name: str, root: Path) -> dict[str, np.ndarray]:
    """Download ``name`` with torchvision into a temporary folder of this process, and read it as an import does."""
    import http.client
    import socket
    import urllib.error

    raw = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}-raw-"))
    try:
        try:
            torchvision_dataset(name)(str(raw), train=True, download=True)
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, socket.gaierror) as e:
            raise DatasetDownloadError(
                f"could not download dataset {name!r} into the cache folder {root} ({type(e).__name__}: {e}). "
                f"Without a network, import a local copy ({REBUILD.format(name=name)}) or use an offline dataset: "
                f"{', '.join(OFFLINE_DATASETS)} (or set KDLITE_OFFLINE=1 to let the chapters use them).") from None
        except OSError as e:  # a full disk, a folder we may not write: not the network's fault
            raise DatasetCacheError(f"could not write dataset {name!r} into the cache folder {root} "
                                    f"({type(e).__name__}: {e}); set KDLITE_DATA to a folder with space you can "
                                    f"write") from None
        except RuntimeError as e:  # torchvision: "Error downloading ..." (every mirror failed) or a bad checksum
            raise DatasetDownloadError(
                f"could not download dataset {name!r} into the cache folder {root}: {e}. Try again later, or import "
                f"a local copy ({REBUILD.format(name=name)}), or use an offline dataset: "
                f"{', '.join(OFFLINE_DATASETS)} (or set KDLITE_OFFLINE=1 to let the chapters use them).") from None
        return checked(name, read_source(name, raw))
    finally:
        shutil.rmtree(raw, ignore_errors=True)


def _not_a_file(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise DatasetCacheError(f"the cache folder {root} is a file, not a folder; pass root= or set KDLITE_DATA "
                                f"to a folder you can write")


def _writable(root: Path) -> Path:
    """``root``, created if missing; a clear error naming it and KDLITE_DATA if it is a file or cannot be written."""
    hint = "pass root= or set KDLITE_DATA to a folder you can write"
    _not_a_file(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetCacheError(f"cannot create the cache folder {root} ({e.strerror or e}); {hint}") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise DatasetCacheError(f"cannot write into the cache folder {root} (permission denied); {hint}")
    return root


@contextlib.contextmanager
def _locked(root: Path, name: str, keep: Path | None = None):
    """Hold a lock on the folder ``root``, then clear what killed processes left behind (never ``keep``).

    Without a lock (Windows has no ``fcntl``; NFS may refuse ``flock`` on a folder), concurrent first loads are
    still safe, each in its own temporary folder and file, only not economical; then only leftovers older than a
    day are surely abandoned.
    """
    try:
        import fcntl
    except ImportError:
        fcntl = None
    fd = os.open(root, os.O_RDONLY) if fcntl else None  # a lock on the folder itself leaves no lock file behind
    locked = False
    try:
        if fd is not None:
            with contextlib.suppress(OSError):  # EBADF / ENOLCK / EOPNOTSUPP on some network file systems
                fcntl.flock(fd, fcntl.LOCK_EX)
                locked = True
        age = 0 if locked else 86400
        keep = keep.resolve() if keep is not None else None
        for p in [*root.glob(f".{name}-*.partial"), *root.glob(f".{name}-raw-*"), root / f"{name}-raw"]:
            with contextlib.suppress(OSError):  # ``NAME-raw``: what kdlite 0.1 left when it was killed
                if p.exists() and p.resolve() != keep and time.time() - p.stat().st_mtime >= age:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        yield
    finally:
        if fd is not None:
            os.close(fd)
