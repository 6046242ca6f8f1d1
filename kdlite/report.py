"""Reporting results the way the book does: mean ± std over seeds, tables, and figures saved for later.

Every number a chapter prints names the scale and dataset it came from; these helpers keep that short.
"""

from __future__ import annotations

import datetime
import json
import math
import numbers
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import _checks as checks
from ._checks import integer

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _floats(values: Iterable[float]) -> list[float]:
    """``values`` as a list of finite floats, or a ValueError/TypeError that says which entries are not."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"values must be an iterable of numbers; got {type(values).__name__}")
    out = []
    for i, v in enumerate(values):
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            raise TypeError(f"values must be numbers; got {v!r} at position {i}") from None
    bad = [(i, v) for i, v in enumerate(out) if not math.isfinite(v)]
    if bad:
        raise ValueError(f"values must be finite; got {', '.join(f'{v} at position {i}' for i, v in bad[:5])}")
    return out


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for a single value) of finite numbers."""
    values = _floats(values)
    if not values:
        raise ValueError("mean_std needs at least one value; got an empty sequence")
    m = sum(values) / len(values)
    if len(values) == 1:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _runs(values: Iterable[float], name: str) -> list[float]:
    """``values`` as a non-empty list of finite floats, or an error that names the argument."""
    values = _floats(values)
    if not values:
        raise ValueError(f"{name} must hold at least one run's value; got an empty sequence")
    return values


def difference(a: Iterable[float], b: Iterable[float]) -> tuple[float, float]:
    """The difference of the means of two sets of runs and its standard error (chapter 8)::

        d = mean(a) − mean(b),    se(d) = √(s_a² / n_a + s_b² / n_b)

    with ``s`` the sample standard deviations (0 for a single run, so one run each gives ``se = 0``)."""
    a, b = _runs(a, "a"), _runs(b, "b")
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    return ma - mb, math.sqrt(sa**2 / len(a) + sb**2 / len(b))


def clear(a: Iterable[float], b: Iterable[float]) -> bool:
    """Is the difference of the means larger than two standard errors, ``|d| > 2·se(d)``? (About a 95% interval
    for normal errors: with three seeds a rough rule, not a test.) Never with no spread, e.g. one run each."""
    d, se = difference(a, b)
    return se > 0 and abs(d) > 2 * se


def fmt_mean_std(values: Iterable[float], scale: float = 1.0, digits: int = 2) -> str:
    """``"mean ± std (n=k)"`` of ``values`` times ``scale`` (e.g. ``scale=100`` for percentages), ``digits``
    decimals."""
    scale = checks.number(scale, "scale")
    digits = integer(digits, "digits", 0, what="an int >= 0")
    values = _floats(values)  # a generator is consumed once, here
    m, s = mean_std(values)
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f} (n={len(values)})"


def _rows(rows) -> list[Mapping]:
    """``rows`` as a list of dicts, or a TypeError that says what a row must be."""
    if isinstance(rows, (Mapping, str, bytes)) or not isinstance(rows, Iterable):
        raise TypeError(
            f"rows must be a sequence of dicts, one per row, e.g. [{{'model': 'MLP', 'acc': 0.9}}]; got "
            f"{type(rows).__name__}"
        )
    rows = list(rows)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"rows must be a sequence of dicts; rows[{i}] is a {type(row).__name__}: {row!r:.60}")
    return rows


def table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of ``rows`` (dicts), floats to 4 significant digits. Print it, or ``display(Markdown(...))``.

    The columns are ``columns`` if given, else every key of the rows in order of first appearance (a row without a
    key gets an empty cell)."""
    rows = _rows(rows)
    if not rows:
        return "(no rows)"
    if isinstance(columns, (str, bytes)) or (columns is not None and not isinstance(columns, Iterable)):
        raise TypeError(f"columns must be a sequence of column names; got {type(columns).__name__} {columns!r}")
    columns = list(dict.fromkeys(k for r in rows for k in r) if columns is None else columns)
    if not columns:
        raise ValueError("table has no columns: the rows are empty dicts and no columns were given")
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


def save_figure(fig: Figure, name: str) -> Path | None:
    """Save ``fig`` as ``$KDLITE_FIGURES/name.png`` when that variable is set (GPU runs collect figures this way).

    ``name`` must be a plain file name (no folders); it and ``fig`` are checked even when nothing is saved."""
    if not callable(getattr(fig, "savefig", None)):
        raise TypeError(f"fig must be a matplotlib Figure (anything with .savefig); got {type(fig).__name__}")
    checks.file_name(name, "06_ptq_bits")
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


def save_results(name: str, rows: Sequence[dict], note: str = "", data: str | Sequence[str] = "") -> Path | None:
    """Save a chapter's table ``rows`` (and a one-line ``note``) with where they came from, as
    ``$KDLITE_RESULTS/name.json``, when that variable is set; otherwise do nothing and return None.

    The record holds the scale line (``kdlite.scale()``: datasets, epochs, seeds), the device, the torch version
    and the date; ``data`` names the datasets exactly as they were (``kdlite.data.describe_dataset``: "MNIST (60 000
    / 10 000)"). GPU runs collect a chapter's headline tables this way; the chapter shows the recorded ones with
    :func:`show_recorded`, so that the numbers in the book are the measured ones, not copies. ``name`` (a plain
    file name) and ``rows`` (dicts) are checked even when nothing is saved.
    """
    checks.file_name(name, "03_hinton")
    rows = _rows(rows)
    data = [data] if isinstance(data, str) else list(data)
    if not all(isinstance(d, str) for d in data):
        raise TypeError(f"data must be a str or a sequence of str (from kdlite.data.describe_dataset); got {data!r}")
    folder = os.environ.get("KDLITE_RESULTS")
    if not folder:
        return None
    import torch

    from .scale import scale

    record = {
        "name": name,
        "scale": str(scale()),
        "data": " · ".join(d for d in data if d),
        "device": _where(),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "note": note,
        "rows": [{str(k): _plain(v) for k, v in r.items()} for r in rows],
    }
    path = Path(folder) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    return path


def _plain(value):
    """A table cell as JSON can hold it: numbers as numbers (a 1-element tensor or a NumPy scalar too), NaN and
    inf as null (JSON has neither), anything else as its text."""
    one_number = hasattr(value, "numel") and value.numel() == 1  # a tensor
    if one_number or (type(value).__module__ == "numpy" and hasattr(value, "item")):
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(value) else None
    return str(value)


def show_recorded(path: str | Path) -> dict | None:
    """Show the table that :func:`save_results` recorded at ``path``, under a line saying where and when it ran
    (device, scale and datasets, torch, date). Return the record, or None (after saying so) if there is none."""
    path = checks.path(path, "path", "the JSON file that save_results wrote (e.g. '../results/03_hinton.json')")
    if not path.is_file():
        print(f"No recorded results at {path} yet. To record them, run the chapter with KDLITE_RESULTS set to a "
              f"folder (e.g. KDLITE_SCALE=gpu KDLITE_RESULTS=results) and commit the JSON file it writes.")
        return None
    try:
        record = json.loads(path.read_text())
        rows, where = record["rows"], f"{record['device']} · torch {record['torch']} · {record['date']}"
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a results file written by kdlite.report.save_results ({e!r})") from None
    data = f"\ndata: {record['data']}" if record.get("data") else ""
    print(f"Recorded: {where}\n{record.get('scale', '')}{data}")
    show_table(rows)
    if record.get("note"):
        print(record["note"])
    return record
