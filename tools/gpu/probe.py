"""Training steps per second of the chapters' models at batch 128 on random data, one process:
``python tools/gpu/probe.py`` (``PROBE_ONLY=ResNet`` for the cases whose name holds that text). Several at once
measure how the models share a GPU."""

import os
import time

import torch
from torch.utils.data import TensorDataset

import kdlite
from kdlite import quant
from kdlite.data import crop_and_flip
from kdlite.distill import distill
from kdlite.models import CNN, MLP, ResNet

device = kdlite.get_device()
g = torch.Generator().manual_seed(0)
N = 12_800  # 100 steps an epoch


def data(shape: tuple[int, ...]) -> TensorDataset:
    return TensorDataset(torch.rand((N, *shape), generator=g), torch.randint(0, 10, (N,), generator=g))


def loader(d: TensorDataset, augment=None) -> kdlite.DeviceLoader:
    return kdlite.DeviceLoader(d, 128, device=device, augment=augment, seed=0)


def rate(name: str, run, epochs: int = 2) -> None:
    run(1)  # warm-up
    kdlite.device.synchronize(device)
    t = time.perf_counter()
    run(epochs)
    kdlite.device.synchronize(device)
    print(f"{name}: {epochs * N / 128 / (time.perf_counter() - t):.0f} steps/s", flush=True)


mnist, cifar = data((784,)), data((3, 32, 32))
mlp, lenet = MLP(784, [1200, 1200], 10, dropout=0.2), MLP(784, [300, 100], 10)
shared = quant.share_weights(lenet, 6)
r20, teacher, r8 = ResNet(20, width=16), ResNet(20, width=16).eval(), ResNet(8, width=8)
cnn, qat = CNN(3, 10, widths=(32, 64, 128)), quant.prepare_qat(CNN(3, 10, widths=(32, 64, 128)), 4)
CASES = {
    "ch3 teacher MLP 1200-1200": lambda e: kdlite.fit(mlp, loader(mnist), e),
    "LeNet-300-100 fit": lambda e: kdlite.fit(lenet, loader(mnist), e),
    "LeNet-300-100 shared 6b fit": lambda e: kdlite.fit(shared, loader(mnist), e),
    "ResNet-20 fit +aug": lambda e: kdlite.fit(r20, loader(cifar, crop_and_flip), e),
    "ch4 KD ResNet-8w8 <- ResNet-20": lambda e: distill(r8, teacher, loader(cifar, crop_and_flip), e, temperature=4,
                                                        alpha=0.9),
    "ch6 CNN 32-64-128 fit +aug": lambda e: kdlite.fit(cnn, loader(cifar, crop_and_flip), e),
    "ch6 QAT 4b": lambda e: kdlite.fit(qat, loader(cifar, crop_and_flip), e, lr=1e-3),
}
print(f"device: {device} · torch {torch.__version__}")
for name, case in CASES.items():
    if os.environ.get("PROBE_ONLY", "") in name:
        rate(name, case)
