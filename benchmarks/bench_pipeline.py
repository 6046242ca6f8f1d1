"""Which stage of the distil -> prune -> int8 chain makes a model faster on this CPU? Latency ratios to the teacher.

The `gpu`-scale models of chapter 7 on CIFAR-10-sized inputs (3×32×32): teacher ResNet-20 (width 16), student
ResNet-8 (width 16), the student with half its channels pruned (``kdlite.structured.channel_prune``, a smaller dense
network) and that pruned student in int8 (``kdlite.quant.to_int8``, x86 kernels). Random weights: speed does not
depend on what a network has learned. Timed with ``kdlite.measure.compare_latency`` (the models take turns, each
keeps its fastest round), one thread, at batch 1 and batch 64. Printed: milliseconds, and each model's latency as a
fraction of the teacher's.

    PYTHONPATH=. python benchmarks/bench_pipeline.py [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse

import torch

from kdlite import measure, quant
from kdlite.models import ResNet
from kdlite.structured import channel_prune


def models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    x = torch.randn(64, 3, 32, 32)
    teacher, student = ResNet(20, width=16).eval(), ResNet(8, width=16).eval()
    pruned = channel_prune(student, 0.5, x[:1]).eval()
    return {"teacher": teacher, "student": student, "pruned student": pruned,
            "int8 pruned student": quant.to_int8(pruned, x, num_batches=1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    nets = models()
    print(f"torch {torch.__version__} · CPU · {args.threads} thread(s) · engine {torch.backends.quantized.engine}")
    for batch in (1, 64):
        t = measure.compare_latency(nets, torch.randn(batch, 3, 32, 32), rounds=args.rounds, threads=args.threads)
        print(f"batch {batch}:")
        for name, seconds in t.items():
            print(f"  {name:22s} {1e3 * seconds:8.2f} ms   {seconds / t['teacher']:5.2f}× the teacher's latency")


if __name__ == "__main__":
    main()
