"""Reporting results the way the book does: mean ± std over seeds, tables, and figures saved for later.

Every number a chapter prints names the scale and dataset it came from; these helpers keep that short.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
from collections.abc import Sequence
from pathlib import Path


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for a single value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std needs at least one value; got an empty sequence")
    m = sum(values) / len(values)
    if len(values) == 1:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def fmt_mean_std(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    """``"mean ± std (n=k)"`` of ``values`` times ``scale`` (e.g. ``scale=100`` for percentages)."""
    m, s = mean_std(values)
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f} (n={len(values)})"


def table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of ``rows`` (dicts), floats to 4 significant digits. Print it, or ``display(Markdown(...))``."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def show_table(rows: Sequence[dict], columns: Sequence[str] | None = None, title: str | None = None) -> None:
    """Show :func:`table` of ``rows``: rendered as a real table in Jupyter (and in the book), printed elsewhere."""
    text = table(rows, columns)
    if title:
        text = f"**{title}**\n\n{text}"
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        display(Markdown(text))
    else:
        print(text)


def save_figure(fig, name: str) -> Path | None:
    """Save ``fig`` as ``$KDLITE_FIGURES/name.png`` when that variable is set (GPU runs collect figures this way)."""
    folder = os.environ.get("KDLITE_FIGURES")
    if not folder:
        return None
    path = Path(folder) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _where() -> str:
    """The device results come from: the GPU's name, else the CPU's, with the core count."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    name = platform.processor() or platform.machine()
    try:  # Linux names the model here; platform.processor() is often empty there
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        name = next(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {name}, {os.cpu_count()} cores"


def save_results(name: str, rows: Sequence[dict], note: str = "") -> Path | None:
    """Save a chapter's table ``rows`` (and a one-line ``note``) with where they came from, as
    ``$KDLITE_RESULTS/name.json``, when that variable is set; otherwise do nothing and return None.

    The record holds the scale line (``kdlite.scale()``: datasets, epochs, seeds), the device, the torch version
    and the date. GPU runs collect a chapter's headline tables this way; the chapter shows the recorded ones with
    :func:`show_recorded`, so that the numbers in the book are the measured ones, not copies.
    """
    folder = os.environ.get("KDLITE_RESULTS")
    if not folder:
        return None
    if not name or "/" in name or "\\" in name:
        raise ValueError(f"name must be a plain file name such as '03_hinton'; got {name!r}")
    import torch

    from .scale import scale

    record = {
        "name": name,
        "scale": str(scale()),
        "device": _where(),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "note": note,
        "rows": [dict(r) for r in rows],
    }
    path = Path(folder) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False, default=str) + "\n")
    return path


def show_recorded(path: str | Path) -> dict | None:
    """Show the table that :func:`save_results` recorded at ``path``, under a line saying where and when it ran
    (device, scale and datasets, torch, date). Return the record, or None (after saying so) if there is none."""
    path = Path(path)
    if not path.is_file():
        print(f"No recorded results at {path} yet. To record them, run the chapter with KDLITE_RESULTS set to a "
              f"folder (e.g. KDLITE_SCALE=gpu KDLITE_RESULTS=results) and commit the JSON file it writes.")
        return None
    try:
        record = json.loads(path.read_text())
        rows, where = record["rows"], f"{record['device']} · torch {record['torch']} · {record['date']}"
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a results file written by kdlite.report.save_results ({e!r})") from None
    print(f"Recorded: {where}\n{record.get('scale', '')}")
    show_table(rows)
    if record.get("note"):
        print(record["note"])
    return record
