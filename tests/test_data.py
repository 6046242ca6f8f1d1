import urllib.error

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import kdlite
from kdlite import data as kdata
from kdlite.data import DeviceLoader, load_dataset
from kdlite.data import cache as kcache


@pytest.mark.parametrize(
    "name, shape, n_train, n_test",
    [("digits", (1, 8, 8), 1347, 450), ("mnist-5k", (1, 28, 28), 4000, 1000), ("mnist1d", (1, 40), 4000, 1000)],
)
def test_offline_datasets(name, shape, n_train, n_test):
    train, test = load_dataset(name)
    (x, y), (xt, yt) = train.tensors, test.tensors
    assert x.shape == (n_train, *shape) and xt.shape == (n_test, *shape)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert set(y.unique().tolist()) == set(range(10)) and set(yt.unique().tolist()) == set(range(10))
    assert torch.isfinite(x).all()
    if len(shape) == 3:  # images in [0, 1]
        assert x.min() >= 0 and x.max() <= 1 and x.max() > 0.9


def test_split_is_deterministic_and_disjoint():
    (a, _), (b, _) = load_dataset("digits")[0].tensors, load_dataset("digits")[0].tensors
    assert torch.equal(a, b)
    train, test = load_dataset("digits")
    rows = {tuple(r.flatten().tolist()) for r in train.tensors[0]}
    overlap = sum(tuple(r.flatten().tolist()) in rows for r in test.tensors[0])
    assert overlap < 10  # a few identical 8x8 images exist in the raw data, nothing more


def test_subset_is_balanced_and_test_whole():
    train, test = load_dataset("digits", subset=200)
    assert len(train) == 200 and len(test) == 450
    counts = torch.bincount(train.tensors[1], minlength=10)
    assert counts.min() >= 19 and counts.max() <= 21


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_bad_subset(bad):
    with pytest.raises(ValueError, match="subset"):
        load_dataset("digits", subset=bad)


def test_unknown_name_lists_names():
    with pytest.raises(ValueError) as e:
        load_dataset("imagenet")
    for name in ("imagenet", "digits", "mnist-5k", "mnist1d", "mnist", "cifar10"):
        assert name in str(e.value)


def test_no_download_and_no_cache_is_a_clear_error(tmp_path):
    with pytest.raises(kdata.DatasetDownloadError) as e:
        load_dataset("cifar10", root=tmp_path, download=False)
    msg = str(e.value)
    assert "cifar10" in msg and str(tmp_path) in msg and "digits" in msg


def test_failed_download_is_clear_and_leaves_no_cache(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def broken_init(self, root, train=True, download=False, **kw):
        # an interrupted download: a partial file on disk, then the network fails
        import pathlib

        pathlib.Path(root).mkdir(parents=True, exist_ok=True)
        (pathlib.Path(root) / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b partial")
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tvd.MNIST, "__init__", broken_init)
    with pytest.raises(kdata.DatasetDownloadError) as e:
        load_dataset("mnist", root=tmp_path)
    msg = str(e.value)
    assert "mnist" in msg and str(tmp_path) in msg and "digits" in msg and "KDLITE_OFFLINE" in msg
    assert e.value.__cause__ is None  # no urllib traceback chained to the reader's error
    assert not (tmp_path / "mnist.pt").exists()  # nothing that could later load as complete
    assert list(tmp_path.iterdir()) == []  # and no partial download left behind


def test_offline_flag_stops_downloads(tmp_path, monkeypatch):
    def no_network(name, root):
        raise AssertionError("KDLITE_OFFLINE=1 must not download")

    monkeypatch.setattr(kcache, "_download", no_network)
    monkeypatch.setenv("KDLITE_OFFLINE", "1")
    with pytest.raises(kdata.DatasetDownloadError, match=r"'mnist' is not in the cache folder .* KDLITE_OFFLINE='1' is"
                                                         r" set \(unset it to download\).*import a local copy"):
        load_dataset("mnist", root=tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert load_dataset("digits")[0].tensors[0].shape[1:] == (1, 8, 8)  # the offline datasets still load


def test_cache_is_written_atomically_and_reused(tmp_path, monkeypatch):
    calls = []

    def fake_download(name, root):
        calls.append(name)
        x = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8).numpy()
        y = (torch.arange(20) % 10).to(torch.uint8).numpy()
        return {"x_train": x, "y_train": y, "x_test": x[:10], "y_test": y[:10]}

    monkeypatch.setattr(kcache, "_download", fake_download)
    train, test = load_dataset("fashion-mnist", root=tmp_path)
    assert len(train) == 20 and len(test) == 10 and (tmp_path / "fashion-mnist.pt").exists()
    assert not list(tmp_path.glob(".*"))
    load_dataset("fashion-mnist", root=tmp_path)
    assert calls == ["fashion-mnist"]  # second load came from the cache


def test_interrupted_cache_write_leaves_nothing(tmp_path, monkeypatch):
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8).numpy()
    y = (torch.arange(4) % 2).to(torch.uint8).numpy()
    monkeypatch.setattr(kcache, "_download", lambda *a: {"x_train": x, "y_train": y, "x_test": x, "y_test": y})

    def dying_save(obj, path):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(kcache.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        load_dataset("cifar10", root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_kdlite_data_env(monkeypatch, tmp_path):
    monkeypatch.setenv("KDLITE_DATA", str(tmp_path))
    assert kdata.data_root() == tmp_path


# --------------------------------------------------------------------------------------------- DeviceLoader


def _toy(n=103):
    return TensorDataset(torch.arange(n, dtype=torch.float32).view(n, 1), torch.arange(n))


def test_every_sample_once_per_epoch_and_new_order():
    loader = DeviceLoader(_toy(), 10, seed=0, device="cpu")
    assert len(loader) == 11
    orders = []
    for _ in range(3):
        batches = list(loader)
        assert len(batches) == 11 and all(len(b[0]) == 10 for b in batches[:-1]) and len(batches[-1][0]) == 3
        ys = torch.cat([b[1] for b in batches])
        assert sorted(ys.tolist()) == list(range(103))
        xs = torch.cat([b[0] for b in batches]).view(-1)
        assert torch.equal(xs.long(), ys)  # inputs stay paired with their labels
        orders.append(ys)
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])


def test_seed_reproducible_and_no_shuffle():
    a = [b[1] for b in DeviceLoader(_toy(), 16, seed=3, device="cpu")]
    b = [b[1] for b in DeviceLoader(_toy(), 16, seed=3, device="cpu")]
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    c = torch.cat([b[1] for b in DeviceLoader(_toy(), 16, shuffle=False, device="cpu")])
    assert torch.equal(c, torch.arange(103))


def test_drop_last():
    loader = DeviceLoader(_toy(), 10, drop_last=True, device="cpu")
    assert len(loader) == 10 and all(len(b[0]) == 10 for b in loader)


@pytest.mark.parametrize("bad", [0, -1, 2.0])
def test_bad_batch_size(bad):
    with pytest.raises(ValueError, match="batch_size"):
        DeviceLoader(_toy(), bad)


def test_mismatched_tensors():
    with pytest.raises(ValueError, match=r"tensors of the same length; got lengths \[5, 4\]"):
        DeviceLoader((torch.zeros(5, 2), torch.zeros(4)), 2)


def test_extra_tensors_and_augment():
    ds = TensorDataset(torch.zeros(8, 1, 4, 4), torch.arange(8), torch.arange(8) * 2)
    seen = []
    loader = DeviceLoader(ds, 4, device="cpu", augment=lambda x: (seen.append(x.shape), x + 1)[1])
    for x, y, z in loader:
        assert (x == 1).all() and torch.equal(z, 2 * y)
    assert seen == [(4, 1, 4, 4)] * 2


def test_default_device_is_kdlite_device():
    assert DeviceLoader(_toy(), 4).device.type == kdlite.get_device().type


def test_random_crop_shifts_within_padding():
    torch.manual_seed(0)
    x = torch.zeros(64, 2, 9, 9)
    x[:, :, 4, 4] = 1.0  # one bright pixel in the centre
    out = kdata.random_crop(x, padding=2)
    assert out.shape == x.shape
    pos = out[:, 0].flatten(1).argmax(1)
    rows, cols = pos // 9, pos % 9
    assert rows.min() >= 2 and rows.max() <= 6 and cols.min() >= 2 and cols.max() <= 6
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 10  # many different shifts
    assert torch.equal(out[:, 0], out[:, 1])  # channels move together
    assert (out.sum((1, 2, 3)) == 2).all()  # the pixel never leaves the image (shift <= padding)


def test_random_crop_matches_a_python_loop():
    torch.manual_seed(1)
    x = torch.randn(5, 3, 6, 7)
    torch.manual_seed(2)
    out = kdata.random_crop(x, padding=3)
    torch.manual_seed(2)
    dy = torch.randint(0, 7, (5, 1, 1))
    dx = torch.randint(0, 7, (5, 1, 1))
    xp = torch.nn.functional.pad(x, (3, 3, 3, 3))
    for i in range(5):
        a, b = int(dy[i]), int(dx[i])
        assert torch.equal(out[i], xp[i, :, a : a + 6, b : b + 7])


def test_random_flip():
    torch.manual_seed(0)
    x = torch.randn(200, 1, 3, 5)
    out = kdata.random_flip(x)
    same = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert (same | flipped).all() and 60 < flipped.sum() < 140
    assert kdata.crop_and_flip(torch.randn(4, 3, 32, 32)).shape == (4, 3, 32, 32)


def test_random_crop_needs_images():
    with pytest.raises(ValueError, match="N, C, H, W"):
        kdata.random_crop(torch.zeros(4, 40), 2)


@pytest.mark.parametrize("padding", [-2, 1.5, "2"])
def test_random_crop_needs_a_non_negative_int_padding(padding):
    with pytest.raises(ValueError, match=r"padding must be an int >= 0 \(pixels of shift\); got"):
        kdata.random_crop(torch.zeros(2, 1, 4, 4), padding)
    assert torch.equal(kdata.random_crop(torch.ones(2, 1, 4, 4), 0), torch.ones(2, 1, 4, 4))  # 0: no shift


def test_deviceloader_gives_the_same_training_as_dataloader():
    """Same batches in the same order -> the same weights, to float precision."""
    train, _ = load_dataset("digits", subset=256)
    mk = lambda: (torch.manual_seed(0), kdlite.models.MLP(64, 32, 10))[1]  # noqa: E731
    dev = DeviceLoader(train, 64, shuffle=False, device="cpu")
    dl = DataLoader(train, batch_size=64, shuffle=False)
    m1, m2 = mk(), mk()
    kdlite.fit(m1, dev, 2, progress=False, scheduler=None)
    kdlite.fit(m2, dl, 2, progress=False, scheduler=None, device="cpu")  # a DataLoader alone would pick cuda
    for p1, p2 in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.allclose(p1, p2, atol=1e-6)


def test_report_helpers():
    from kdlite import report

    assert report.mean_std([1.0]) == (1.0, 0.0)
    m, s = report.mean_std([0.9, 0.95, 1.0])
    assert abs(m - 0.95) < 1e-12 and abs(s - 0.05) < 1e-12  # sample std (ddof=1)
    assert report.fmt_mean_std([0.9, 1.0], scale=100) == "95.00 ± 7.07 (n=2)"
    with pytest.raises(ValueError, match="empty"):
        report.mean_std([])
    t = report.table([{"a": 1, "b": 0.123456}, {"a": 2, "b": "x"}])
    assert t.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.1235 |", "| 2 | x |"]
    assert report.table([]) == "(no rows)"


def test_show_table_prints_outside_jupyter(capsys):
    from kdlite import report

    report.show_table([{"a": 1}], title="T")
    assert capsys.readouterr().out.splitlines() == ["**T**", "", "| a |", "|---|", "| 1 |"]


def test_save_figure(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kdlite import report

    fig = plt.figure()
    assert report.save_figure(fig, "x") is None
    monkeypatch.setenv("KDLITE_FIGURES", str(tmp_path))
    assert report.save_figure(fig, "x") == tmp_path / "x.png" and (tmp_path / "x.png").stat().st_size > 0


def test_save_results_records_where_they_came_from(tmp_path, monkeypatch, capsys):
    import json

    from kdlite import report

    rows = [{"model": "teacher", "errors": 67}, {"model": "student", "errors": 74.5}]
    monkeypatch.delenv("KDLITE_RESULTS", raising=False)
    assert report.save_results("03_hinton", rows) is None  # nothing is written unless asked
    monkeypatch.setenv("KDLITE_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("KDLITE_SCALE", "smoke")
    path = report.save_results("03_hinton", rows, note="gap recovered: 50%")
    assert path == tmp_path / "results" / "03_hinton.json"
    record = json.loads(path.read_text())
    assert record["rows"] == rows and record["note"] == "gap recovered: 50%"
    assert record["scale"].startswith("scale: smoke") and record["torch"] == torch.__version__
    assert record["device"] and record["date"]
    capsys.readouterr()
    assert report.show_recorded(path)["rows"] == rows
    out = capsys.readouterr().out
    assert "Recorded:" in out and "| teacher | 67 |" in out and "gap recovered" in out
    assert report.show_recorded(tmp_path / "missing.json") is None
    assert "No recorded results" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a results file"):
        report.show_recorded(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="plain file name"):
        report.save_results("../x", rows)


def test_dataset_names_are_forgiving_and_suggest_the_closest():
    x1 = load_dataset("digits")[0].tensors[0]
    assert torch.equal(load_dataset(" Digits ")[0].tensors[0], x1)
    with pytest.raises(ValueError, match=r"unknown dataset name 'mnist5k' \(did you mean 'mnist-5k'"):
        load_dataset("mnist5k")
    with pytest.raises(ValueError, match=r"unknown dataset name 'cifar-10' \(did you mean 'cifar10'"):
        load_dataset("cifar-10")
    with pytest.raises(TypeError, match="dataset must be a TensorDataset or a tuple of tensors.*got str"):
        DeviceLoader("digits", 2)


def test_unreadable_cache_file_is_a_clear_error(tmp_path):
    (tmp_path / "mnist.pt").write_bytes(b"not a torch file")
    with pytest.raises(RuntimeError, match=r"mnist\.pt could not be read.*Delete the file"):
        load_dataset("mnist", root=tmp_path, download=False)
