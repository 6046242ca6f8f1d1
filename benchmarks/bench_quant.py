"""int8 against float32 on the CPU: latency at batch 1 and 64, and size, for the book's CIFAR-10 CNN.

    python benchmarks/bench_quant.py [--threads 2] [--rounds 3]

The model is ``kdlite.models.CNN(3, 10, widths=(64, 128, 256))`` on 3×32×32 inputs, with random weights
(latency and size do not depend on the values). float32 is the plain eager PyTorch model; int8 is
``kdlite.quant.to_int8`` (torch.ao.quantization FX, x86 engine), calibrated on 4 random batches. Latency
comes from ``kdlite.measure.compare_latency`` (median of 50 passes at batch 1, 10 at batch 64): float and int8
take turns in ``rounds`` rounds and each keeps its fastest, since shared CPUs are noisy.
Goal: ≥ 2× at batch 64.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from kdlite.measure import compare_latency, model_size_bytes
from kdlite.models import CNN
from kdlite.quant import to_int8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    model = CNN(3, 10, widths=(64, 128, 256)).eval()
    calibration = [torch.randn(32, 3, 32, 32) for _ in range(4)]
    t0 = time.perf_counter()
    int8 = to_int8(model, calibration, num_batches=4)
    convert_s = time.perf_counter() - t0

    x = torch.randn(64, 3, 32, 32)
    with torch.no_grad():
        ref, out = model(x), int8(x)
    rel_err = ((out - ref).norm() / ref.norm()).item()

    print(
        f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"threads={args.threads}, engine={torch.backends.quantized.engine}"
    )
    print(
        f"model: CNN(3, 10, widths=(64, 128, 256)) on 3x32x32; to_int8 took {convert_s:.1f} s; "
        f"relative output error {rel_err:.4f}"
    )
    fp32_mb, int8_mb = model_size_bytes(model) / 1e6, model_size_bytes(int8) / 1e6
    print(f"size: fp32 {fp32_mb:.2f} MB, int8 {int8_mb:.2f} MB, ratio {fp32_mb / int8_mb:.2f}x")
    print(f"{'batch':>5} {'fp32 ms':>9} {'int8 ms':>9} {'fp32/int8':>10}")
    for batch in (1, 64):
        xb = x[:batch]
        repeats = 10 if batch == 64 else 50
        t = compare_latency({"fp32": model, "int8": int8}, xb, args.rounds, warmup=3, repeats=repeats,
                            threads=args.threads)
        f, q = t["fp32"], t["int8"]
        print(f"{batch:>5} {f * 1e3:>9.2f} {q * 1e3:>9.2f} {f / q:>9.2f}x")


if __name__ == "__main__":
    main()
