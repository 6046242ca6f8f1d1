"""Loading CIFAR-10 from kdlite's warm cache (uint8, checksum checked) against the plain PyTorch way.

The plain way reads torchvision's own files (``torchvision.datasets.CIFAR10``, its pickled batches) and turns the
whole array into one float32 tensor in [0, 1]; the previous kdlite cache stored that float32 tensor itself (four
times the bytes). Prints the median seconds of each, their ratios (other / kdlite; above 1 means kdlite is faster)
and the files' sizes. Uses CIFAR-10 from the cache when it is there (``python -m kdlite.data import cifar10 ...``),
else a random uint8 dataset of the same size (50 000 + 10 000 images of 3x32x32). Run:
`python benchmarks/bench_cache.py`.
"""

from __future__ import annotations

import argparse
import pickle
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import kdlite
from kdlite.data import data_root, import_dataset, is_cached, load_dataset
from kdlite.data.cache import cached


def arrays_of_cifar10() -> tuple[dict[str, np.ndarray], str]:
    """CIFAR-10 in the npz layout (N, 32, 32, 3): the cached one if there is one, else random bytes."""
    if is_cached("cifar10"):
        a = cached("cifar10", data_root(), download=False)  # the cache's own uint8 arrays, no float round trip
        return {k: (v.permute(0, 2, 3, 1) if k.startswith("x") else v).numpy() for k, v in a.items()}, \
            "CIFAR-10 from the cache"
    r = np.random.default_rng(0)
    return {"x_train": r.integers(0, 256, (50000, 32, 32, 3), dtype=np.uint8), "y_train": r.integers(0, 10, 50000),
            "x_test": r.integers(0, 256, (10000, 32, 32, 3), dtype=np.uint8), "y_test": r.integers(0, 10, 10000)}, \
        "random bytes of CIFAR-10's size"


def write_torchvision_batches(a: dict[str, np.ndarray], folder: Path) -> None:
    """CIFAR-10's python batches as torchvision reads them: 5 training batches and a test batch."""
    folder.mkdir(parents=True)
    batch = lambda x, y: {"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1), "labels": y.tolist()}  # noqa: E731
    for i, part in enumerate(np.array_split(np.arange(50000), 5)):
        (folder / f"data_batch_{i + 1}").write_bytes(pickle.dumps(batch(a["x_train"][part], a["y_train"][part])))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(a["x_test"], a["y_test"])))


def plain_torchvision(root: Path) -> torch.Tensor:
    """The plain PyTorch way: torchvision's dataset, then the whole array as one float32 tensor in [0, 1]."""
    import torchvision.datasets as tvd

    tvd.CIFAR10._check_integrity = lambda self: True  # our batches are not the published files (md5)
    tvd.CIFAR10._load_meta = lambda self: None  # nor is there a published batches.meta
    out = []
    for train in (True, False):
        ds = tvd.CIFAR10(str(root), train=train, download=False)
        out += [torch.from_numpy(ds.data).permute(0, 3, 1, 2).float().div(255), torch.tensor(ds.targets)]
    return out[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        arrays, what = arrays_of_cifar10()
        np.savez(tmp / "c.npz", **arrays)
        path = import_dataset("cifar10", tmp / "c.npz", root=tmp / "cache")
        write_torchvision_batches(arrays, tmp / "tv" / "cifar-10-batches-py")
        old = tmp / "float32.pt"  # what kdlite 0.1 cached: float32 tensors
        xs = [torch.from_numpy(arrays[k]).permute(0, 3, 1, 2).float().div(255).contiguous()
              for k in ("x_train", "x_test")]
        torch.save((xs[0], xs[1], torch.from_numpy(arrays["y_train"]), torch.from_numpy(arrays["y_test"])), old)
        del xs
        ways = {
            "kdlite cache (uint8, checked)": lambda: load_dataset("cifar10", root=tmp / "cache", download=False),
            "torchvision CIFAR10 + one float tensor": lambda: plain_torchvision(tmp / "tv"),
            "float32 cache of kdlite 0.1 (torch.load)": lambda: torch.load(old, weights_only=True),
        }
        times: dict[str, list[float]] = {name: [] for name in ways}
        for r in range(args.repeats + 1):  # the ways take turns; round 0 warms the page cache
            for name, load in ways.items():
                t0 = time.perf_counter()
                load()
                if r > 0:
                    times[name].append(time.perf_counter() - t0)
        tv_bytes = sum(f.stat().st_size for f in (tmp / "tv").rglob("*_batch*"))
        sizes = {"kdlite cache (uint8, checked)": path.stat().st_size,
                 "torchvision CIFAR10 + one float tensor": tv_bytes,
                 "float32 cache of kdlite 0.1 (torch.load)": old.stat().st_size}
    print(f"{platform.processor() or platform.machine()} · torch {torch.__version__} · {args.threads} threads · "
          f"{what} · median of {args.repeats} warm loads")
    base = statistics.median(times["kdlite cache (uint8, checked)"])
    print(f"{'way':44s} {'seconds':>8s} {'ratio':>6s} {'file MB':>8s}")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"{name:44s} {m:8.2f} {m / base:5.2f}x {sizes[name] / 1e6:8.0f}")
    print(f"kdlite version {kdlite.__version__}; goal: CIFAR-10 from a warm cache in <= 2 s on 2 cores")


if __name__ == "__main__":
    main()
