"""What does a FeatureTap cost? A training step with taps open, as a ratio to the same step without them
(goal <= 1.05x).

The step is the plain PyTorch one (forward, cross-entropy, backward, AdamW step) of the chapter's CPU-scale
model, ``CNN(1, 10)`` on 8x8 digits (batch 128) and, as a larger case, ``ResNet(20)`` on 32x32 images (batch
64, random data). Taps on two layers (a typical FitNets/AT set-up) and on every block. First, the absolute
overhead of one hook, which does not depend on the model. Blocks of steps are
timed interleaved (so a busy machine slows all variants alike) after a warm-up; the median of the repeats.

    PYTHONPATH=. python benchmarks/bench_features.py [--repeats 15] [--steps 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F

from kdlite.data import load_dataset
from kdlite.features import FeatureTap
from kdlite.models import CNN, ResNet


def time_steps(model, opt, x, y, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def bench(label: str, model, x, y, taps: dict[str, list[str]], repeats: int, steps: int) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    variants = {"no tap": []} | {name: names for name, names in taps.items()}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(repeats + 1):  # round 0 warms up
        for name, names in variants.items():
            with FeatureTap(model, names) if names else contextlib.nullcontext():
                t = time_steps(model, opt, x, y, steps)
            if r:
                times[name].append(t)
    base = statistics.median(times["no tap"])
    print(f"\n{label}")
    print(f"{'variant':38s} {'ms/step':>8s} {'ratio':>7s}")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"{name:38s} {1e3 * m:8.2f} {m / base:6.3f}x")


def hook_cost_us(calls: int = 20000) -> float:
    """The absolute cost of one tapped module in one forward, in microseconds: a stack of 8 ``nn.Identity``
    run with and without a tap on every layer (the difference is all hook overhead)."""
    stack = torch.nn.Sequential(*[torch.nn.Identity() for _ in range(8)])
    x = torch.zeros(1)

    def run() -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            stack(x)
        return time.perf_counter() - t0

    plain, tapped = [], []
    for _ in range(5):
        plain.append(run())
        with FeatureTap(stack, [str(i) for i in range(8)]):
            tapped.append(run())
    return 1e6 * (statistics.median(tapped) - statistics.median(plain)) / (8 * calls)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"CPU, {torch.get_num_threads()} threads; torch {torch.__version__}; "
          f"median of {args.repeats} blocks of {args.steps} training steps")

    print(f"hook overhead: {hook_cost_us():.2f} us per tapped module per forward")

    train, _ = load_dataset("digits")
    x, y = train.tensors[0][:128], train.tensors[1][:128]
    cnn = CNN(1, 10)
    blocks = [f"features.{i}" for i, m in enumerate(cnn.features) if isinstance(m, torch.nn.Sequential)]
    bench("CNN(1, 10) on digits 8x8, batch 128", cnn, x, y,
          {"tap 2 layers (features.1, features.4)": ["features.1", "features.4"],
           f"tap every block ({len(blocks)})": blocks}, args.repeats, args.steps)

    resnet = ResNet(20)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    every = [n for n, m in resnet.named_modules() if type(m).__name__ == "BasicBlock"]
    bench("ResNet(20) on random 32x32 images, batch 64", resnet, x, y,
          {"tap 2 layers (layer2, layer3)": ["layer2", "layer3"],
           f"tap every block ({len(every)})": every}, args.repeats, args.steps)


if __name__ == "__main__":
    main()
