"""Merge the records of one chapter run once per seed (``KDLITE_SEEDS=0``, ``=1``, ... in parallel processes, as
``tools/gpu/run.sh`` does) into one record, as if one process had run every seed.

    python tools/merge_records.py OUT.json SEED0.json SEED1.json ...

A cell that each record gives as ``"m ± s (n=1)"`` becomes the mean ± std over the records (``report.fmt_mean_std``,
with the same decimals); a cell equal in every record stays; any other cell lists the records' values, in order,
as ``"a / b / c (per seed)"``. The notes are kept, each under its seed; the scale line names the merged seeds.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kdlite.report import fmt_mean_std  # noqa: E402

ONE = re.compile(r"^(-?\d+(?:\.(\d+))?) ± \d+(?:\.\d+)? \(n=1\)$")
SEEDS = re.compile(r"seeds: 1(?: \((\d+)\))?(?= ·|$)")  # KDLITE_SEEDS=0 shows no list: seed 0


def merge_cell(values: list) -> object:
    """One cell of the merged record from the same cell of each seed's record."""
    found = [ONE.match(v) if isinstance(v, str) else None for v in values]
    if all(found):
        digits = len(found[0].group(2) or "")
        return fmt_mean_std([float(m.group(1)) for m in found], digits=digits)
    if all(v == values[0] for v in values):
        return values[0]
    return " / ".join(str(v) for v in values) + " (per seed)"


def merge(records: list[dict]) -> dict:
    """The merged record of one chapter's per-seed records (the same rows and columns in each)."""
    if len({len(r["rows"]) for r in records}) != 1 or len({r["name"] for r in records}) != 1:
        raise ValueError("the records must be the same record (name) with the same rows, one per seed")
    seeds = [(m.group(1) or "0") if (m := SEEDS.search(r["scale"])) else "?" for r in records]
    rows = [{key: merge_cell([r["rows"][i].get(key, "") for r in records]) for key in records[0]["rows"][i]}
            for i in range(len(records[0]["rows"]))]
    scale = SEEDS.sub(f"seeds: {len(records)} ({', '.join(seeds)}; one process per seed, merged)", records[0]["scale"])
    notes = [f"seed {s}: {r['note']}" for s, r in zip(seeds, records, strict=True) if r.get("note")]
    return {**records[0], "scale": scale, "note": " | ".join(notes), "rows": rows,
            "date": max(r.get("date", "") for r in records)}


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__)
        return 2
    out, sources = Path(argv[0]), [Path(a) for a in argv[1:]]
    merged = merge([json.loads(p.read_text()) for p in sources])
    out.write_text(json.dumps(merged, indent=1, ensure_ascii=False) + "\n")
    print(f"{out}: {merged['name']} merged from {len(sources)} records · {merged['scale']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
