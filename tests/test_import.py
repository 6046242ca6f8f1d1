"""Importing local copies of MNIST and CIFAR into the cache, and the cache checking itself on load.

Every test writes its own small, synthetic files in the layouts of the real ones (Keras' .npz, MNIST's IDX files,
CIFAR's pickled batches and .tar.gz), and checks what comes out against the uint8 values that went in.
"""

import gzip
import importlib
import os
import pickle
import subprocess
import sys
import tarfile
import threading
import time

import numpy as np
import pytest
import torch

import kdlite
from kdlite.data import DatasetCacheError, DatasetDownloadError, import_dataset, load_dataset
from kdlite.data import cache as kcache

rng = np.random.default_rng(0)


def fake(name, n_train=30, n_test=12):
    """Random uint8 images and labels in the npz layout: N×28×28 (MNIST-likes) or N×32×32×3 (CIFAR)."""
    shape, classes = ((28, 28), 10) if "mnist" in name else ((32, 32, 3), 100 if name == "cifar100" else 10)
    return {"x_train": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
            "y_train": rng.integers(0, classes, n_train).astype(np.int64),
            "x_test": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
            "y_test": rng.integers(0, classes, n_test).astype(np.uint8)}


def as_nchw(x):
    return torch.from_numpy(x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2).copy())


def assert_round_trip(arrays, train, test):
    """uint8 in, the same values divided by 255 as float32 out; labels as int64."""
    for split, ds in (("train", train), ("test", test)):
        x, y = ds.tensors
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.equal(x, as_nchw(arrays[f"x_{split}"]).float() / 255)
        assert torch.equal(y, torch.from_numpy(arrays[f"y_{split}"].reshape(-1).astype(np.int64)))


def write_idx(path, a, gz):
    header = bytes([0, 0, 8, a.ndim]) + np.array(a.shape, ">u4").tobytes()
    data = header + a.tobytes()
    (gzip.open(str(path) + ".gz", "wb") if gz else open(path, "wb")).write(data)


def write_mnist_folder(root, arrays, gz=True, cls="MNIST"):
    raw = root / cls / "raw"
    raw.mkdir(parents=True)
    for key, stem in kcache_sources_idx().items():
        write_idx(raw / stem, arrays[key].astype(np.uint8), gz)


def kcache_sources_idx():
    from kdlite.data.sources import IDX_FILES

    return IDX_FILES


def cifar_batches(name, arrays):
    """CIFAR's python batches: {b"data": (N, 3072) uint8 of R, G, B planes, b"labels" (or b"fine_labels"): list}."""
    key = b"fine_labels" if name == "cifar100" else b"labels"
    batch = lambda x, y: pickle.dumps({b"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1),  # noqa: E731
                                       key: [int(v) for v in y]}, protocol=2)
    if name == "cifar100":
        return {"train": batch(arrays["x_train"], arrays["y_train"]), "test": batch(arrays["x_test"], arrays["y_test"])}
    parts = np.array_split(np.arange(len(arrays["x_train"])), 5)
    out = {f"data_batch_{i + 1}": batch(arrays["x_train"][p], arrays["y_train"][p]) for i, p in enumerate(parts)}
    return {**out, "test_batch": batch(arrays["x_test"], arrays["y_test"])}


def folder_files(root):
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


# --------------------------------------------------------------------------------------------- good sources


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "cifar100"])
def test_npz_round_trip(tmp_path, name):
    arrays = fake(name)
    np.savez(tmp_path / "src.npz", **arrays)
    path = import_dataset(name, tmp_path / "src.npz", root=tmp_path / "cache")
    assert path == tmp_path / "cache" / f"{name}.pt" and path.is_file()
    assert_round_trip(arrays, *load_dataset(name, root=tmp_path / "cache", download=False))
    record = torch.load(path, weights_only=True)
    assert record["x_train"].dtype == torch.uint8  # the cache is uint8
    assert folder_files(tmp_path / "cache") == [f"{name}.pt"]  # and nothing else is left there


def test_npz_labels_of_shape_n_by_1_and_any_integer_type(tmp_path):
    arrays = fake("mnist")
    arrays["y_train"] = arrays["y_train"].astype(np.int32)[:, None]
    np.savez(tmp_path / "src.npz", **arrays)
    import_dataset("MNIST", str(tmp_path / "src.npz"), root=tmp_path / "c")
    assert_round_trip(arrays, *load_dataset("mnist", root=tmp_path / "c", download=False))


@pytest.mark.parametrize("gz", [True, False])
def test_torchvision_mnist_folder_matches_torchvision(tmp_path, gz):
    arrays = fake("mnist")
    write_mnist_folder(tmp_path / "tv", arrays, gz=gz)
    import_dataset("mnist", tmp_path / "tv", root=tmp_path / "c")
    train, test = load_dataset("mnist", root=tmp_path / "c", download=False)
    assert_round_trip(arrays, train, test)
    if not gz:  # an independent reader of the same files: torchvision's own
        import torchvision.datasets as tvd

        for split, ds in ((True, train), (False, test)):
            tv = tvd.MNIST(str(tmp_path / "tv"), train=split, download=False)
            assert torch.equal(tv.data[:, None].float() / 255, ds.tensors[0])
            assert torch.equal(tv.targets, ds.tensors[1])


def test_mnist_folder_prefers_mnist_over_fashion(tmp_path):
    mnist, fashion = fake("mnist"), fake("fashion-mnist")
    write_mnist_folder(tmp_path / "tv", fashion, cls="FashionMNIST")
    write_mnist_folder(tmp_path / "tv", mnist, cls="MNIST")
    import_dataset("mnist", tmp_path / "tv", root=tmp_path / "c")
    import_dataset("fashion-mnist", tmp_path / "tv", root=tmp_path / "c")
    assert_round_trip(mnist, *load_dataset("mnist", root=tmp_path / "c", download=False))
    assert_round_trip(fashion, *load_dataset("fashion-mnist", root=tmp_path / "c", download=False))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("layout", ["folder", "tar.gz"])
def test_torchvision_cifar_layouts(tmp_path, name, layout):
    arrays = fake(name)
    base = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[name]
    batches = cifar_batches(name, arrays)
    if layout == "folder":
        (tmp_path / "tv" / base).mkdir(parents=True)
        for member, raw in batches.items():
            (tmp_path / "tv" / base / member).write_bytes(raw)
        source = tmp_path / "tv"
    else:
        (tmp_path / base).mkdir()
        for member, raw in batches.items():
            (tmp_path / base / member).write_bytes(raw)
        source = tmp_path / f"{base}.tar.gz"
        with tarfile.open(source, "w:gz") as tar:
            tar.add(tmp_path / base, arcname=base)
    import_dataset(name, source, root=tmp_path / "c")
    assert_round_trip(arrays, *load_dataset(name, root=tmp_path / "c", download=False))


def test_an_import_replaces_the_cache_whole(tmp_path):
    first, second = fake("mnist"), fake("mnist", n_train=40)
    for arrays in (first, second):
        np.savez(tmp_path / "src.npz", **arrays)
        import_dataset("mnist", tmp_path / "src.npz", root=tmp_path / "c")
    assert_round_trip(second, *load_dataset("mnist", root=tmp_path / "c", download=False))


def test_cache_files_follow_the_umask(tmp_path):
    np.savez(tmp_path / "src.npz", **fake("mnist"))
    old = os.umask(0o022)
    try:
        path = import_dataset("mnist", tmp_path / "src.npz", root=tmp_path / "c")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # readable by the other users of a shared cache


def test_command_line(tmp_path):
    np.savez(tmp_path / "src.npz", **fake("cifar10"))
    run = lambda *a: subprocess.run([sys.executable, "-m", "kdlite.data", *a], capture_output=True, text=True)  # noqa: E731
    out = run("import", "cifar10", str(tmp_path / "src.npz"), "--root", str(tmp_path / "c"))
    assert out.returncode == 0, out.stderr
    assert "30 training" in out.stdout and "12 test" in out.stdout and "classes" in out.stdout
    assert str(tmp_path / "c" / "cifar10.pt") in out.stdout
    assert "RuntimeWarning" not in out.stderr
    bad = run("import", "mnist", str(tmp_path / "src.npz"), "--root", str(tmp_path / "c"))
    assert bad.returncode != 0 and "x_train" in bad.stderr and "Traceback" not in bad.stderr
    helped = run("--help")
    assert helped.returncode == 0 and "import" in helped.stdout
    listed = run("list", "--root", str(tmp_path / "c"))
    assert "cifar10" in listed.stdout and "in the cache" in listed.stdout


# ---------------------------------------------------------------------------------------------- bad sources


def bad_npz(tmp_path, **change):
    arrays = {**fake("mnist"), **change}
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(tmp_path / "bad.npz", **arrays)
    return tmp_path / "bad.npz"


@pytest.mark.parametrize("change, words", [
    ({"y_test": None}, ["missing key 'y_test'", "x_train, y_train, x_test, y_test"]),
    ({"x_train": np.zeros((30, 32, 32), np.uint8)}, ["x_train", "(30, 32, 32)", "(N, 28, 28)"]),
    ({"x_train": np.zeros((30, 28, 28, 3), np.uint8)}, ["x_train", "(N, 28, 28)"]),
    ({"x_test": np.zeros((12, 28, 28), np.float32)}, ["x_test", "float32", "uint8"]),
    ({"y_train": np.full(30, 10)}, ["y_train", "10", "0 .. 9"]),
    ({"y_train": np.full(30, -1)}, ["y_train", "-1", "0 .. 9"]),
    ({"y_train": np.zeros(29, np.int64)}, ["y_train", "29 labels", "30 images"]),
    ({"y_test": np.zeros(12, np.float32)}, ["y_test", "integer labels"]),
])
def test_bad_npz_is_a_clear_error_and_writes_nothing(tmp_path, change, words):
    source = bad_npz(tmp_path, **change)
    with pytest.raises(ValueError) as e:
        import_dataset("mnist", source, root=tmp_path / "c")
    for w in [str(source), *words]:
        assert w in str(e.value), (w, str(e.value))
    assert not (tmp_path / "c").exists()


def test_cifar_shape_for_mnist_and_back(tmp_path):
    np.savez(tmp_path / "c10.npz", **fake("cifar10"))
    with pytest.raises(ValueError, match=r"x_train.*\(30, 32, 32, 3\).*\(N, 28, 28\)"):
        import_dataset("mnist", tmp_path / "c10.npz", root=tmp_path / "c")
    np.savez(tmp_path / "m.npz", **fake("mnist"))
    with pytest.raises(ValueError, match=r"x_train.*\(N, 32, 32, 3\)"):
        import_dataset("cifar10", tmp_path / "m.npz", root=tmp_path / "c")


def test_truncated_and_foreign_files(tmp_path):
    good = bad_npz(tmp_path)
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:5000])
    (tmp_path / "text.npz").write_text("hello")
    for f in ("cut.npz", "text.npz"):
        with pytest.raises(ValueError, match=f"{f}.*(truncated|damaged)"):
            import_dataset("mnist", tmp_path / f, root=tmp_path / "c")
    with pytest.raises(ValueError, match="does not exist"):
        import_dataset("mnist", tmp_path / "nothing.npz", root=tmp_path / "c")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"notes\.txt.*expected an \.npz file"):
        import_dataset("mnist", tmp_path / "notes.txt", root=tmp_path / "c")
    arrays = fake("mnist")
    write_mnist_folder(tmp_path / "tv", arrays)
    idx = tmp_path / "tv" / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    idx.write_bytes(gzip.compress(gzip.decompress(idx.read_bytes())[:-100]))
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz.*truncated"):
        import_dataset("mnist", tmp_path / "tv", root=tmp_path / "c")
    idx.write_bytes(idx.read_bytes()[:50])  # a cut .gz stream
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz.*(truncated|damaged)"):
        import_dataset("mnist", tmp_path / "tv", root=tmp_path / "c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no file train-images-idx3-ubyte"):
        import_dataset("mnist", tmp_path / "empty", root=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_unsafe_or_damaged_cifar_pickles_are_refused(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    batches = cifar_batches("cifar10", fake("cifar10"))
    for member, raw in batches.items():
        (base / member).write_bytes(raw)

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (base / "test_batch").write_bytes(pickle.dumps({b"data": Boom()}))
    with pytest.raises(ValueError, match=r"test_batch.*refusing to load"):
        import_dataset("cifar10", base, root=tmp_path / "c")
    (base / "test_batch").write_bytes(batches["test_batch"][:1000])
    with pytest.raises(ValueError, match=r"test_batch.*truncated"):
        import_dataset("cifar10", tmp_path, root=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_a_failed_import_keeps_the_old_cache(tmp_path):
    good = fake("mnist")
    np.savez(tmp_path / "good.npz", **good)
    import_dataset("mnist", tmp_path / "good.npz", root=tmp_path / "c")
    with pytest.raises(ValueError):
        import_dataset("mnist", bad_npz(tmp_path, y_train=np.full(30, 12)), root=tmp_path / "c")
    assert_round_trip(good, *load_dataset("mnist", root=tmp_path / "c", download=False))
    assert folder_files(tmp_path / "c") == ["mnist.pt"]


def test_unknown_or_offline_names(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset name 'cifar-10'.*cifar10"):
        import_dataset("cifar-10", tmp_path / "x.npz", root=tmp_path)
    with pytest.raises(ValueError, match="'digits'.*need no import"):
        import_dataset("digits", tmp_path / "x.npz", root=tmp_path)


# ------------------------------------------------------------------------------------- the cache checks itself


@pytest.fixture
def cached_mnist(tmp_path):
    arrays = fake("mnist")
    np.savez(tmp_path / "src.npz", **arrays)
    return arrays, import_dataset("mnist", tmp_path / "src.npz", root=tmp_path / "c")


def test_one_flipped_bit_is_caught(cached_mnist):
    _, path = cached_mnist
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10  # inside the image bytes
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetCacheError, match=r"mnist\.pt is damaged.*checksum.*python -m kdlite\.data import"):
        load_dataset("mnist", root=path.parent, download=False)


def test_a_cache_copied_under_another_name_is_caught(cached_mnist):
    _, path = cached_mnist
    (path.parent / "cifar10.pt").write_bytes(path.read_bytes())
    with pytest.raises(DatasetCacheError, match=r"cifar10\.pt holds 'mnist', not 'cifar10'"):
        load_dataset("cifar10", root=path.parent, download=False)


@pytest.mark.parametrize("tamper", ["swap", "flatten", "labels"])
def test_tampered_tensors_are_caught(cached_mnist, tamper):
    _, path = cached_mnist
    record = torch.load(path, weights_only=True)
    if tamper == "swap":
        record["x_train"], record["x_test"] = record["x_test"], record["x_train"]
    elif tamper == "flatten":
        record["x_train"] = record["x_train"].reshape(len(record["x_train"]), -1)
    else:
        record["y_train"] = record["y_train"] + 200
    torch.save(record, path)
    with pytest.raises(DatasetCacheError, match=r"mnist\.pt (is damaged|does not hold valid)"):
        load_dataset("mnist", root=path.parent, download=False)


def test_unreadable_cache_is_clear(tmp_path):
    (tmp_path / "mnist.pt").write_bytes(b"not a torch file")
    with pytest.raises(RuntimeError, match=r"mnist\.pt could not be read.*Delete the file"):
        load_dataset("mnist", root=tmp_path, download=False)
    torch.save({"a": torch.zeros(2)}, tmp_path / "mnist.pt")
    with pytest.raises(DatasetCacheError, match="not a kdlite cache file"):
        load_dataset("mnist", root=tmp_path, download=False)


def test_a_cache_of_the_previous_version_is_upgraded(tmp_path, capsys):
    arrays = fake("mnist")
    old = (as_nchw(arrays["x_train"]).float() / 255, as_nchw(arrays["x_test"]).float() / 255,
           torch.from_numpy(arrays["y_train"]).long(), torch.from_numpy(arrays["y_test"]).long())
    torch.save(old, tmp_path / "mnist.pt")
    assert_round_trip(arrays, *load_dataset("mnist", root=tmp_path, download=False))
    assert "older kdlite" in capsys.readouterr().out
    assert torch.load(tmp_path / "mnist.pt", weights_only=True)["kdlite_cache"] == kcache.FORMAT
    assert_round_trip(arrays, *load_dataset("mnist", root=tmp_path, download=False))


# --------------------------------------------------------------------------- downloads, folders, concurrency


def test_concurrent_first_loads_download_once(tmp_path, monkeypatch):
    arrays = {k: v for k, v in kcache.checked("mnist", {k: (v, k) for k, v in fake("mnist").items()}).items()}
    calls = []

    def slow_download(name, root):
        calls.append(name)
        time.sleep(0.3)
        return arrays

    monkeypatch.setattr(kcache, "_download", slow_download)
    results, errors = [], []

    def load():
        try:
            results.append(load_dataset("mnist", root=tmp_path / "c")[0])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 8 and calls == ["mnist"]
    assert folder_files(tmp_path / "c") == ["mnist.pt"]


def test_concurrent_processes_share_one_download(tmp_path):
    """Real processes, each with its own fake (slow) download: all succeed, one downloads, nothing is left over."""
    script = f"""
import sys, time, numpy as np
from kdlite.data import cache, load_dataset
def slow(name, root):
    open(r"{tmp_path}/calls", "a").write("x")
    time.sleep(0.5)
    r = np.random.default_rng(0)
    return {{"x_train": r.integers(0, 256, (20, 1, 28, 28), dtype=np.uint8), "y_train": np.zeros(20, np.uint8),
            "x_test": r.integers(0, 256, (5, 1, 28, 28), dtype=np.uint8), "y_test": np.zeros(5, np.uint8)}}
cache._download = slow
print(len(load_dataset("mnist", root=r"{tmp_path}/c")[0]))
"""
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outs = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert all(o.strip() == "20" for o, _ in outs)
    assert (tmp_path / "calls").read_text() == "x"
    assert folder_files(tmp_path / "c") == ["mnist.pt"]


def test_leftovers_of_killed_processes_are_cleaned(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    (root / ".mnist-abc123.partial").write_bytes(b"half")
    (root / ".mnist-raw-xyz").mkdir()
    (root / "mnist-raw").mkdir()
    (root / "notes.txt").write_text("mine")
    np.savez(tmp_path / "src.npz", **fake("mnist"))
    import_dataset("mnist", tmp_path / "src.npz", root=root)
    assert folder_files(root) == ["mnist.pt", "notes.txt"]


def test_root_that_is_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    np.savez(tmp_path / "src.npz", **fake("mnist"))
    with pytest.raises(DatasetCacheError, match=r"cache folder .*file is a file.*KDLITE_DATA"):
        import_dataset("mnist", tmp_path / "src.npz", root=tmp_path / "file")
    with pytest.raises(DatasetCacheError, match=r"cache folder .*file is a file.*KDLITE_DATA"):
        load_dataset("mnist", root=tmp_path / "file")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_root_is_a_clear_error(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    np.savez(tmp_path / "src.npz", **fake("mnist"))
    with pytest.raises(DatasetCacheError, match=r"cannot write into the cache folder .*ro.*KDLITE_DATA"):
        import_dataset("mnist", tmp_path / "src.npz", root=tmp_path / "ro")


def test_a_disk_error_during_a_download_does_not_blame_the_network(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def full_disk(self, root, train=True, download=False, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tvd.MNIST, "__init__", full_disk)
    with pytest.raises(DatasetCacheError) as e:
        load_dataset("mnist", root=tmp_path)
    assert "No space left" in str(e.value) and "network" not in str(e.value) and "KDLITE_DATA" in str(e.value)
    assert folder_files(tmp_path) == []


def test_no_download_names_the_import_command(tmp_path):
    with pytest.raises(DatasetDownloadError, match=r"python -m kdlite\.data import cifar10"):
        load_dataset("cifar10", root=tmp_path, download=False)


# --------------------------------------------------------------------------------- offline means "no downloads"


def test_offline_uses_what_is_in_the_cache(tmp_path, monkeypatch):
    np.savez(tmp_path / "src.npz", **fake("mnist"))
    monkeypatch.setenv("KDLITE_DATA", str(tmp_path / "c"))
    monkeypatch.setenv("KDLITE_OFFLINE", "1")
    monkeypatch.setenv("KDLITE_SCALE", "gpu")
    assert kdlite.scale().mnist == "mnist-5k"
    import_dataset("mnist", tmp_path / "src.npz")
    s = kdlite.scale()
    assert s.mnist == "mnist" and s.images == "digits" and s.offline
    assert "mnist-like: mnist ·" in str(s) and "digits (stand-in for cifar10: not in the cache)" in str(s)
    assert kdlite.scale("cpu").mnist == "mnist"


def test_cpu_scale_falls_back_without_network(tmp_path, monkeypatch):
    kscale = importlib.import_module("kdlite.scale")  # the module (kdlite.scale is the function)

    monkeypatch.setenv("KDLITE_DATA", str(tmp_path))
    monkeypatch.setattr(kscale, "_reachable", lambda name: False)
    s = kdlite.scale("cpu")
    assert s.mnist == "mnist-5k" and "no network" in str(s)
    assert kdlite.scale("gpu").mnist == "mnist"  # gpu scale asks for the real data and downloads it
    monkeypatch.setattr(kscale, "_reachable", lambda name: True)
    assert kdlite.scale("cpu").mnist == "mnist"


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_written_by_python_3(tmp_path, protocol):
    """Batches pickled by Python 3 (str keys, any protocol), as torchvision also reads them."""
    arrays = fake("cifar10")
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    parts = np.array_split(np.arange(len(arrays["x_train"])), 5)
    batch = lambda x, y: pickle.dumps({"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1),  # noqa: E731
                                       "labels": [int(v) for v in y]}, protocol=protocol)
    for i, p in enumerate(parts):
        (base / f"data_batch_{i + 1}").write_bytes(batch(arrays["x_train"][p], arrays["y_train"][p]))
    (base / "test_batch").write_bytes(batch(arrays["x_test"], arrays["y_test"]))
    import_dataset("cifar10", base, root=tmp_path / "c")
    assert_round_trip(arrays, *load_dataset("cifar10", root=tmp_path / "c", download=False))


# ------------------------------------------------------------------------------------- found in a review


def test_importing_from_a_folder_named_like_kdlite_leftovers_keeps_it(tmp_path):
    arrays = fake("mnist")
    write_mnist_folder(tmp_path / "c" / "mnist-raw", arrays)  # kdlite 0.1 used this name for its downloads
    import_dataset("mnist", tmp_path / "c" / "mnist-raw", root=tmp_path / "c")
    assert (tmp_path / "c" / "mnist-raw" / "MNIST" / "raw").is_dir()


def test_a_cifar_batch_with_too_few_labels_is_named(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    arrays = fake("cifar10")
    for member, raw in cifar_batches("cifar10", arrays).items():
        (base / member).write_bytes(raw)
    batch = pickle.loads((base / "data_batch_4").read_bytes())
    batch[b"labels"] = batch[b"labels"][:-1]
    (base / "data_batch_4").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(ValueError, match=r"data_batch_4.*labels for .* images"):
        import_dataset("cifar10", base, root=tmp_path / "c")


def test_an_old_cache_with_labels_beyond_uint8_is_not_laundered(tmp_path):
    arrays = fake("mnist")
    y = torch.from_numpy(arrays["y_train"]).long()
    y[0] = 258  # would wrap to 2 as uint8
    old = (as_nchw(arrays["x_train"]).float() / 255, as_nchw(arrays["x_test"]).float() / 255, y,
           torch.from_numpy(arrays["y_test"]).long())
    torch.save(old, tmp_path / "mnist.pt")
    with pytest.raises(DatasetCacheError, match="labels are not integers in 0 .. 9"):
        load_dataset("mnist", root=tmp_path, download=False)


def test_a_full_disk_is_a_clear_error(tmp_path, monkeypatch):
    def no_space(obj, path):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1088 vs 982")

    monkeypatch.setattr(kcache.torch, "save", no_space)
    np.savez(tmp_path / "src.npz", **fake("mnist"))
    with pytest.raises(DatasetCacheError, match=r"could not write .*mnist\.pt.*disk full.*KDLITE_DATA"):
        import_dataset("mnist", tmp_path / "src.npz", root=tmp_path / "c")
    assert folder_files(tmp_path / "c") == []


def test_mnist_files_are_not_taken_for_fashion_mnist(tmp_path):
    write_mnist_folder(tmp_path / "tv", fake("mnist"), cls="MNIST")
    with pytest.raises(ValueError, match="outside other datasets' folders"):
        import_dataset("fashion-mnist", tmp_path / "tv", root=tmp_path / "c")


def test_npz_with_object_arrays_names_the_key(tmp_path):
    arrays = fake("mnist")
    arrays["y_train"] = np.array([object()] * 30, dtype=object)
    np.savez(tmp_path / "obj.npz", **arrays)
    with pytest.raises(ValueError, match=r"obj\.npz: y_train is not a plain numeric array") as e:
        import_dataset("mnist", tmp_path / "obj.npz", root=tmp_path / "c")
    assert "allow_pickle" not in str(e.value).split("(")[0]
