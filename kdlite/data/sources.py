"""Reading a local copy of a downloadable dataset: a Keras-style ``.npz`` file, or the files torchvision writes.

Every reader returns the same four arrays, in the layout of Keras' ``mnist.npz``: ``x_train``, ``x_test`` uint8
images ``(N, H, W)`` (MNIST-likes) or ``(N, H, W, C)`` (CIFAR), and ``y_train``, ``y_test`` integer labels ``(N,)``.
:func:`checked` then validates them against the dataset's shape and classes and returns them as the cache stores
them: images ``(N, C, H, W)`` uint8, labels ``(N,)`` uint8.

Nothing here needs torch or torchvision: the formats are simple enough to read with numpy (MNIST's IDX files are a
short header and raw bytes; CIFAR's batches are pickled dicts of numpy arrays, read with an unpickler that builds
numpy arrays and nothing else).
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from ._checks import check_images, check_keys, check_labels

# name -> (image shape (C, H, W), number of classes)
SPECS = {
    "mnist": ((1, 28, 28), 10),
    "fashion-mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
}
KEYS = ("x_train", "y_train", "x_test", "y_test")
IDX_FILES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
TORCHVISION_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST",
                       "cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def read_source(name: str, source: Path) -> dict[str, tuple[np.ndarray, str]]:
    """The four arrays of ``source``, each with the file (and key) it came from, for error messages."""
    if source.is_dir():
        return _read_cifar_folder(name, source) if name.startswith("cifar") else _read_idx_folder(name, source)
    if source.is_file() and source.name.endswith((".tar.gz", ".tgz", ".tar")) and name.startswith("cifar"):
        return _read_cifar_archive(name, source)
    if source.is_file() and source.suffix == ".npz":
        return _read_npz(source)
    what = "is not a dataset file kdlite can read" if source.exists() else "does not exist"
    raise ValueError(f"source {str(source)!r} {what}; expected an .npz file (x_train, y_train, x_test, y_test), a "
                     f"folder written by torchvision, or CIFAR's .tar.gz archive")


def checked(name: str, arrays: dict[str, tuple[np.ndarray, str]]) -> dict[str, np.ndarray]:
    """Validate the four arrays for dataset ``name``; return images (N, C, H, W) uint8 and labels (N,) uint8."""
    (c, h, w), classes = SPECS[name]
    want = (h, w) if c == 1 else (h, w, c)
    out = {}
    for split in ("train", "test"):
        (x, x_from), (y, y_from) = arrays[f"x_{split}"], arrays[f"y_{split}"]
        x = check_images(x, x_from, f"x_{split}", want, f"images for {name!r} (pixel values 0..255)")
        y = check_labels(y, y_from, f"y_{split}", len(x), classes)
        out[f"x_{split}"] = x.reshape(len(x), h, w, c).transpose(0, 3, 1, 2).copy()  # (N, C, H, W), writable
        out[f"y_{split}"] = y.astype(np.uint8)
    return out


# ------------------------------------------------------------------------------------------------- the readers


def _read_npz(path: Path) -> dict[str, tuple[np.ndarray, str]]:
    if not zipfile.is_zipfile(path):  # numpy would suggest allow_pickle=True: never for a dataset file
        raise ValueError(f"{path}: cannot be read as an .npz file: it is truncated, damaged or of another format "
                         f"(expected a zip archive of the .npy arrays {', '.join(KEYS)})")
    arrays = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            files = list(z.files)
            for key in (k for k in KEYS if k in files):
                try:
                    arrays[key] = (z[key], f"{path} [{key}]")
                except ValueError as e:  # an object array: it would need pickle
                    raise ValueError(f"{path}: {key} is not a plain numeric array ({e}); expected uint8 images and "
                                     f"integer labels") from None
    except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as e:
        raise _unreadable(path, e) from None
    check_keys(arrays, path, KEYS, f"the arrays {', '.join(KEYS)} (found: {', '.join(files) or 'none'})")
    return arrays


def _read_idx_folder(name: str, folder: Path) -> dict[str, tuple[np.ndarray, str]]:
    out = {}
    for key, stem in IDX_FILES.items():
        path = _find(folder, (stem, stem + ".gz"), prefer=TORCHVISION_FOLDERS[name])
        out[key] = (_read_idx(path), str(path))
    return out


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format): a magic number (0, 0, type 0x08 = ubyte, ndim), ndim big-endian sizes, bytes."""
    try:
        raw = path.read_bytes()
        raw = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except Exception as e:  # OSError, EOFError, gzip.BadGzipFile, zlib.error
        raise _unreadable(path, e) from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08 or raw[3] not in (1, 3):
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex() or 'missing'}; expected "
                         f"00000801 for labels or 00000803 for images)")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4)) if len(raw) >= 4 + 4 * ndim else ()
    size = int(np.prod(dims)) if dims else -1
    if not dims or len(raw) != 4 + 4 * ndim + size:
        raise ValueError(f"{path}: the file is truncated or damaged ({len(raw)} bytes; its header promises "
                         f"{4 + 4 * ndim + max(size, 0)})")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _read_cifar_folder(name: str, folder: Path) -> dict[str, tuple[np.ndarray, str]]:
    base = TORCHVISION_FOLDERS[name]
    found = folder if folder.name == base else next(iter(sorted(folder.rglob(base))), None)
    if found is None or not found.is_dir():
        raise ValueError(f"{folder}: no {base}/ folder in it; expected the folder torchvision writes for {name!r} "
                         f"(or pass CIFAR's .tar.gz archive, or an .npz file)")

    def read(member: str) -> tuple[bytes, str]:
        path = found / member
        try:
            return path.read_bytes(), str(path)
        except OSError as e:
            raise ValueError(f"{path}: cannot be read ({e.strerror or e}); expected CIFAR's batch file {member!r}") \
                from None

    return _cifar_arrays(name, read)


def _read_cifar_archive(name: str, path: Path) -> dict[str, tuple[np.ndarray, str]]:
    base = TORCHVISION_FOLDERS[name]
    try:
        with tarfile.open(path) as tar:
            def read(member: str) -> tuple[bytes, str]:
                try:
                    f = tar.extractfile(f"{base}/{member}")
                except KeyError:
                    f = None
                if f is None:
                    raise ValueError(f"{path}: no member {base}/{member}; expected CIFAR's archive for {name!r}")
                return f.read(), f"{path} [{base}/{member}]"

            return _cifar_arrays(name, read)
    except (OSError, EOFError, tarfile.TarError) as e:
        raise _unreadable(path, e) from None


def _cifar_arrays(name: str, read) -> dict[str, tuple[np.ndarray, str]]:
    """CIFAR's python batches: pickled dicts with "data" (N, 3072) uint8, rows of R, G, B planes, and labels."""
    members = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    if name == "cifar100":
        members = {"train": ["train"], "test": ["test"]}
    label_key = "fine_labels" if name == "cifar100" else "labels"
    out = {}
    for split, names in members.items():
        xs, ys, where = [], [], []
        for member in names:
            raw, origin = read(member)
            batch = _unpickle(raw, origin)  # keys: bytes from the original (Python 2) files, str from newer ones
            batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()} \
                if isinstance(batch, dict) else {}
            check_keys(batch, origin, ("data", label_key), f"a CIFAR batch with 'data' and {label_key!r}")
            x = check_images(np.asarray(batch["data"]), origin, "'data'", (3072,), "(32×32 images, R, G, B planes)")
            y = check_labels(np.asarray(batch[label_key]), origin, repr(label_key), len(x), SPECS[name][1])
            xs.append(x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(y)
            where.append(origin)
        out[f"x_{split}"] = (np.concatenate(xs), where[0] if len(where) == 1 else f"{where[0]} (and the others)")
        out[f"y_{split}"] = (np.concatenate(ys), out[f"x_{split}"][1])
    return out


class _NumpyOnly(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays only: a CIFAR batch needs nothing else, and nothing else can run."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),  # bytes in protocol 2
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}  # protocol 5

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(raw: bytes, origin: str):
    try:
        return _NumpyOnly(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # truncated, foreign or unsafe pickles
        raise _unreadable(origin, e) from None


def _find(folder: Path, names: tuple[str, ...], prefer: str) -> Path:
    """The file called one of ``names`` in ``folder`` or below, preferring a path through a folder named ``prefer``
    and never one through another torchvision dataset's folder (MNIST's files are not Fashion-MNIST's)."""
    others = {"MNIST", "FashionMNIST", "KMNIST", "EMNIST", "QMNIST"} - {prefer}
    hits = [p for n in names for p in sorted(folder.rglob(n))
            if p.is_file() and not others & set(p.relative_to(folder).parts)]
    best = [p for p in hits if prefer in p.relative_to(folder).parts] or hits
    if not best:
        raise ValueError(f"{folder}: no file {names[0]} (or {names[1]}) in it outside other datasets' folders; "
                         f"expected the folder torchvision writes for this dataset ({prefer}/raw, its IDX files, "
                         f".gz or not)")
    return best[0]


def _unreadable(path, e: BaseException) -> ValueError:
    return ValueError(f"{path}: cannot be read, the file is truncated, damaged or not of the expected format "
                      f"({type(e).__name__}: {e})")
