"""Reporting results the way the book does: mean ± std over seeds, tables, and figures saved for later.

Every number a chapter prints names the scale and dataset it came from; these helpers keep that short.
"""

from __future__ import annotations

import math
import os
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
