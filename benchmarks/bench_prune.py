"""Does pruning make the book's CNN faster on a CPU? Latency ratios against the dense model.

    PYTHONPATH=. python benchmarks/bench_prune.py [--batch 64] [--repeats 5] [--rounds 5] [--threads 2]

Model: ``kdlite.models.CNN(3, 10, widths=(64, 128, 256))`` (the book's CIFAR-10 CNN, untrained: latency does
not depend on the weights' values), input ``batch × 3 × 32 × 32``, eval mode,
``torch.set_num_threads(threads)``.
The models are timed with ``kdlite.measure.compare_latency``: ``rounds`` rounds in which they take turns, each
the median of ``repeats`` passes, so that load from other processes hits every model alike; each model's fastest
round counts, and a speed-up is dense / pruned. Compared with the dense model:

* structured: ``channel_prune(model, 0.5)``: half the channels of every conv, a physically smaller model;
* unstructured: ``magnitude_prune(model, 0.9)`` then ``remove_masks``: 90% of the weights are zero, but the
  tensors keep their shapes and run through the same dense kernels; also timed with the masks still attached
  (the cost of computing ``W_orig ⊙ M`` at every forward);
* one sparse kernel: a 90%-sparse 4096 × 4096 linear layer as ``torch.sparse`` CSR against dense, batch 64.
"""

from __future__ import annotations

import argparse
import copy
import warnings

import torch

from kdlite.measure import compare_latency, count_flops, count_params
from kdlite.models import CNN
from kdlite.prune import channel_prune, magnitude_prune, remove_masks, sparsity


class MatMul(torch.nn.Module):
    """``x -> W x`` for a dense or a sparse ``W`` (so ``kdlite.measure`` can time it)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight @ x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    dense = CNN(3, 10, widths=(64, 128, 256)).eval()
    x = torch.randn(args.batch, 3, 32, 32)
    one = x[:1]
    structured = channel_prune(dense, 0.5, x)
    masked = copy.deepcopy(dense)
    magnitude_prune(masked, 0.9)
    unstructured = remove_masks(copy.deepcopy(masked))

    def timings(models: dict, inp: torch.Tensor) -> dict:
        return compare_latency(models, inp, rounds=args.rounds, repeats=args.repeats, threads=args.threads)

    print(f"CNN(3, 10, widths=(64, 128, 256)), input {tuple(x.shape)}, {args.threads} threads, "
          f"torch {torch.__version__}, {args.rounds} rounds (fastest) x median of {args.repeats}")
    print(f"{'model':32s} {'params':>10s} {'MMACs/img':>10s} {'zeros':>6s} "
          f"{'ms b=1':>8s} {'speedup':>8s} {f'ms b={args.batch}':>9s} {'speedup':>8s}")
    models = {"dense": dense, "channel_prune 50%": structured, "magnitude 90%, masks removed": unstructured,
              "magnitude 90%, masks attached": masked}
    t1, tb = timings(models, one), timings(models, x)
    for name, model in models.items():
        macs = count_flops(model, one) / 2 / 1e6
        print(f"{name:32s} {count_params(model):10,d} {macs:10.1f} {sparsity(model)['overall']:6.2f} "
              f"{t1[name] * 1e3:8.2f} {t1['dense'] / t1[name]:7.2f}x "
              f"{tb[name] * 1e3:9.1f} {tb['dense'] / tb[name]:7.2f}x")

    w = torch.randn(4096, 4096)
    w[torch.rand_like(w) < 0.9] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Sparse CSR tensor support is in beta state"
        w_csr = w.to_sparse_csr()
    t = timings({"dense": MatMul(w), "CSR": MatMul(w_csr)}, torch.randn(4096, args.batch))
    print(f"\n4096x4096 weight, 90% zeros, batch {args.batch}: dense matmul {t['dense'] * 1e3:.2f} ms, "
          f"CSR sparse matmul {t['CSR'] * 1e3:.2f} ms, speedup {t['dense'] / t['CSR']:.2f}x")


if __name__ == "__main__":
    main()
