"""The progress bar of a training run (tqdm): on unless ``progress=False`` or ``KDLITE_PROGRESS=0``; every 20 steps
it shows the running loss and accuracy."""

from __future__ import annotations

import os

from . import _checks as checks


def progress_default() -> bool:
    """Whether progress bars show: yes, unless ``KDLITE_PROGRESS`` is 0, false, no or off."""
    return os.environ.get("KDLITE_PROGRESS", "1").strip().lower() not in ("0", "false", "no", "off")


def progress_bar(progress: bool | None, epochs: int, steps: int | None, desc: str):
    """A tqdm bar over every step of the run (its length unknown when the data has none), or None."""
    show = progress_default() if progress is None else checks.flag(progress, "progress")
    if not show or epochs == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=epochs * steps if steps else None, desc=desc, leave=False)


def show_progress(bar, i: int, epoch: int, loss_sum, correct, n: int) -> None:
    """Advance the progress bar; every 20 steps show the running loss and accuracy (a device sync)."""
    if bar is not None:
        bar.update()
        if i % 20 == 0:
            bar.set_postfix(epoch=epoch, loss=f"{loss_sum.item() / n:.4f}", acc=f"{correct.item() / n:.3f}")
