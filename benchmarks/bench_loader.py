"""One training epoch with kdlite's DeviceLoader against torch's DataLoader over the same TensorDataset.

Prints the time per epoch of each and their ratio (DataLoader time / DeviceLoader time; above 1 means DeviceLoader
is faster), for a small MLP on digits-sized data and a larger one on MNIST-sized data. Run:
`python benchmarks/bench_loader.py` (add `--device cuda` on a GPU machine).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

import kdlite
from kdlite.models import MLP


def one_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, loader, device: torch.device) -> float:
    """Seconds of one plain training epoch (cross-entropy, the given optimizer) over ``loader``."""
    t0 = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def compare(model: torch.nn.Module, loaders: dict, device: torch.device, repeats: int) -> dict[str, float]:
    """Median epoch time per loader. The loaders take turns, epoch by epoch, so that a change in the machine's
    load during the run affects both alike; the first round is a warm-up."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    times: dict[str, list[float]] = {name: [] for name in loaders}
    for r in range(repeats + 1):
        for name, loader in loaders.items():
            t = one_epoch(model, opt, loader, device)
            if r > 0:
                times[name].append(t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cpu, cuda or mps (default: kdlite.get_device())")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = kdlite.get_device(args.device)
    cases = [  # name, samples, input features, hidden widths, batch size
        ("small: MLP 64-64-10, digits-sized (1 347 x 64)", 1347, 64, [64], 64),
        ("small: MLP 40-64-10, MNIST-1D-sized (4 000 x 40)", 4000, 40, [64], 64),
        ("larger: MLP 784-800-800-10, MNIST-5k-sized (4 000 x 784)", 4000, 784, [800, 800], 128),
    ]
    print(f"device: {device} · threads: {args.threads} · torch {torch.__version__} · {platform.processor() or ''}")
    print(f"{'case':58s} {'DataLoader':>11s} {'DeviceLoader':>13s} {'ratio':>7s}")
    for name, n, d, hidden, bs in cases:
        g = torch.Generator().manual_seed(0)
        ds = TensorDataset(torch.randn(n, d, generator=g), torch.randint(0, 10, (n,), generator=g))
        torch.manual_seed(0)
        model = MLP(d, hidden, 10).to(device)
        pin = device.type == "cuda"
        loaders = {
            "DataLoader": DataLoader(ds, batch_size=bs, shuffle=True, pin_memory=pin),
            "DeviceLoader": kdlite.DeviceLoader(ds, bs, device=device),
        }
        t = compare(model, loaders, device, args.repeats)
        t_dl, t_dev = t["DataLoader"], t["DeviceLoader"]
        print(f"{name:58s} {1e3 * t_dl:9.1f}ms {1e3 * t_dev:11.1f}ms {t_dl / t_dev:6.2f}x")

if __name__ == "__main__":
    main()
