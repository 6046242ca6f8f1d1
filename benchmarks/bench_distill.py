"""What does distillation cost per epoch? Ratios to one student-only epoch of ``kdlite.fit``.

Hinton et al.'s MNIST pair on CPU (2 threads): teacher MLP(784, [1200, 1200], 10, dropout=0.5), student
MLP(784, [800, 800], 10), on the 4 000 training images of mnist-5k (real MNIST digits, offline), batch 128.
Printed: a distillation epoch with a live teacher (goal <= 1.3x), with cached teacher logits (goal <= 1.05x;
the one-off caching pass is printed separately), and the same distillation written as a plain PyTorch loop.

Each variant is timed as the ``time`` of a one-epoch History (the training loop only, no evaluation), the
variants interleaved (so a busy machine slows them alike), after a warm-up round; each variant's fastest
repeat counts (other processes can only slow an epoch down), as in ``kdlite.measure.compare_latency``.

    PYTHONPATH=. python benchmarks/bench_distill.py [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import kdlite
from kdlite.data import DeviceLoader, load_dataset
from kdlite.distill import distill
from kdlite.models import MLP

T, ALPHA = 20.0, 0.9


def plain_pytorch_epoch(student, teacher, loader) -> float:
    """The hand-written way: teacher under no_grad, KL with batchmean times T^2, plus cross-entropy, AdamW."""
    opt = torch.optim.AdamW(student.parameters(), lr=2e-3, weight_decay=5e-4)
    student.train()
    teacher.eval()
    t0 = time.perf_counter()
    for x, y in loader:
        s = student(x)
        with torch.no_grad():
            t = teacher(x)
        log_p, log_q = F.log_softmax(s / T, -1), F.log_softmax(t / T, -1)
        soft = F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)
        loss = ALPHA * T * T * soft + (1 - ALPHA) * F.cross_entropy(s, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    train, _ = load_dataset("mnist-5k")
    loader = DeviceLoader(train, 128, device=cpu, seed=0)
    kdlite.seed_everything(0)
    teacher, student = MLP(784, [1200, 1200], 10, dropout=0.5), MLP(784, [800, 800], 10)
    kw = dict(progress=False, device=cpu)

    caching: list[float] = []

    def cached_epoch() -> float:
        t0 = time.perf_counter()
        h = distill(student, teacher, loader, 1, temperature=T, alpha=ALPHA, cache_teacher=True, **kw)
        caching.append(time.perf_counter() - t0 - h["time"][0])  # the one-off caching pass (and set-up)
        return h["time"][0]

    def live_epoch() -> float:
        return distill(student, teacher, loader, 1, temperature=T, alpha=ALPHA, **kw)["time"][0]

    variants = {
        "student alone (kdlite.fit)": lambda: kdlite.fit(student, loader, 1, **kw)["time"][0],
        "distill, live teacher": live_epoch,
        "distill, cached logits": cached_epoch,
        "plain PyTorch KD loop, live teacher": lambda: plain_pytorch_epoch(student, teacher, loader),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats + 1):  # the first round is a warm-up, dropped below
        for name, run in variants.items():
            times[name].append(run())
    times = {k: v[1:] for k, v in times.items()}
    caching = caching[1:]
    base = min(times["student alone (kdlite.fit)"])
    print(f"mnist-5k, {loader.n} training images, batch 128, {len(loader)} steps an epoch; "
          f"CPU, {torch.get_num_threads()} threads; torch {torch.__version__}; fastest of {args.repeats}")
    print(f"{'variant':40s} {'s/epoch':>8s} {'ratio':>7s}")
    for name, ts in times.items():
        m = min(ts)
        print(f"{name:40s} {m:8.3f} {m / base:6.2f}x")
    once = min(caching)
    print(f"{'(one-off: caching the teacher logits)':40s} {once:8.3f} {once / base:6.2f}x")


if __name__ == "__main__":
    main()
