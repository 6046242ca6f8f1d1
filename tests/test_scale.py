import pytest
import torch

import kdlite
from kdlite.scale import Scale, scale


@pytest.mark.parametrize("name", ["smoke", "cpu", "gpu"])
def test_scale_from_env(monkeypatch, name):
    monkeypatch.setenv("KDLITE_SCALE", name)
    s = kdlite.scale()
    assert isinstance(s, Scale) and s.name == name
    assert s.epochs >= 1 and len(s.seeds) >= 1 and s.batch_size > 0
    line = str(s)
    assert "\n" not in line and f"scale: {name}" in line


def test_default_scale_depends_on_cuda():
    assert kdlite.scale().name == ("gpu" if torch.cuda.is_available() else "cpu")


def test_unknown_scale_lists_the_three(monkeypatch):
    monkeypatch.setenv("KDLITE_SCALE", "huge")
    with pytest.raises(ValueError) as e:
        kdlite.scale()
    for name in ("smoke", "cpu", "gpu", "huge"):
        assert name in str(e.value)


def test_scales_grow():
    smoke, cpu, gpu = (kdlite.scale(n) for n in ("smoke", "cpu", "gpu"))
    assert smoke.epochs <= cpu.epochs <= gpu.epochs
    assert len(smoke.seeds) <= len(cpu.seeds) <= len(gpu.seeds)
    assert gpu.mnist == "mnist" and gpu.images == "cifar10"
    assert smoke.mnist in kdlite.data.OFFLINE_DATASETS
    assert cpu.mnist in ("mnist", "mnist-5k")  # real MNIST where it can be had, else its stand-in


def test_offline_stand_ins(monkeypatch):
    monkeypatch.setenv("KDLITE_OFFLINE", "1")
    s = kdlite.scale("gpu")
    assert s.offline and s.mnist in kdlite.data.OFFLINE_DATASETS and s.images in kdlite.data.OFFLINE_DATASETS
    assert "offline" in str(s)
    assert s.epochs == kdlite.scale("gpu").epochs  # still gpu-sized training


def test_scale_names_are_case_insensitive_and_errors_name_their_source(monkeypatch):
    assert scale("SMOKE").name == "smoke"
    with pytest.raises(ValueError, match="^name must be one of"):
        scale("big")
    monkeypatch.setenv("KDLITE_SCALE", "huge")
    with pytest.raises(ValueError, match="^KDLITE_SCALE must be one of"):
        scale()


def _fresh_probe():
    """scale._reachable as defined (conftest replaces it for every test), from a fresh copy of the module."""
    import importlib.util

    spec = importlib.util.find_spec("kdlite.scale")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_network_probe_is_bounded_and_trusts_a_proxy(monkeypatch):
    import socket
    import time

    import torchvision.datasets  # noqa: F401  (imported by the probe; not what is timed here)

    module = _fresh_probe()
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: time.sleep(5))  # a resolver that hangs
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    t0 = time.perf_counter()
    assert module._reachable("mnist", timeout=0.3) is False
    assert time.perf_counter() - t0 < 2
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert module._reachable("cifar10", timeout=0.3) is True


def test_seeds_from_env(monkeypatch):
    monkeypatch.setenv("KDLITE_SEEDS", "2")
    s = scale("smoke")
    assert s.seeds == (2,) and "seeds: 1 (2)" in str(s)
    monkeypatch.setenv("KDLITE_SEEDS", " 0,1,2,3,4 ")
    assert scale("cpu").seeds == (0, 1, 2, 3, 4) and "seeds: 5 ·" in str(scale("cpu"))
    for bad in ("one", "1,1", "-1", "1,,2"):
        monkeypatch.setenv("KDLITE_SEEDS", bad)
        with pytest.raises(ValueError, match=rf"KDLITE_SEEDS must be .* got '{bad}'"):
            scale("smoke")
