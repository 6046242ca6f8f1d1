"""tools/merge_records.py: per-seed records of one chapter merged as if one process had run every seed."""

import importlib.util
import json
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("merge_records", Path(__file__).parent.parent / "tools/merge_records.py")
merge_records = importlib.util.module_from_spec(spec)
spec.loader.exec_module(merge_records)


def record(seed, acc, size, note):
    return {"name": "07_chain", "scale": f"scale: gpu · epochs: 20 · seeds: 1 ({seed}) · batch: 128", "note": note,
            "date": f"2026-11-3{seed}", "rows": [{"stage": "teacher", "accuracy (%)": f"{acc:.2f} ± 0.00 (n=1)",
                                                  "parameters": 100, "ratio": size}]}


def test_per_seed_cells_become_mean_and_std(tmp_path):
    paths = []
    for seed, acc, size in ((0, 90.0, "1.0×"), (1, 92.0, "1.0×"), (2, 94.0, "1.1×")):
        paths.append(tmp_path / f"s{seed}.json")
        paths[-1].write_text(json.dumps(record(seed, acc, size, f"pruned {acc}")))
    assert merge_records.main([str(tmp_path / "out.json"), *map(str, paths)]) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    row = out["rows"][0]
    assert row["accuracy (%)"] == "92.00 ± 2.00 (n=3)"  # the sample std of 90, 92, 94
    assert row["parameters"] == 100 and row["stage"] == "teacher"
    assert row["ratio"] == "1.0× / 1.0× / 1.1× (per seed)"
    assert "seeds: 3 (0, 1, 2; one process per seed, merged)" in out["scale"]
    assert out["note"] == "seed 0: pruned 90.0 | seed 1: pruned 92.0 | seed 2: pruned 94.0"
    assert out["date"] == "2026-11-32"


def test_different_records_are_refused():
    a, b = record(0, 90.0, "1×", ""), record(1, 91.0, "1×", "")
    b["rows"].append(b["rows"][0])
    with pytest.raises(ValueError, match="same rows"):
        merge_records.merge([a, b])


def test_seed_zero_has_no_list_in_its_scale_line():
    a, b = record(0, 90.0, "1×", ""), record(1, 91.0, "1×", "")
    a["scale"] = "scale: gpu · epochs: 20 · seeds: 1 · batch: 128"
    assert "seeds: 2 (0, 1; one process per seed, merged) · batch" in merge_records.merge([a, b])["scale"]
