"""Run a chapter, as a script, with each ``kdlite.fit`` and ``distill`` call saved by its ``desc``, so that a long
record can be split over processes (one ``KDLITE_SEEDS`` each) and resumed, then assembled by one last run of all
the seeds that trains nothing. This is how chapter 7's CIFAR-10 chain was recorded on a 2-core CPU.

    jupytext --to py:percent -o /tmp/ch7.py notebooks/07_pipeline.md
    cd notebooks && KDLITE_SCALE=gpu KDLITE_SEEDS=0 python ../tools/cached_run.py /tmp/ch7.py /tmp/cache  # one per seed
    cd notebooks && KDLITE_SCALE=gpu KDLITE_RESULTS=../results python ../tools/cached_run.py /tmp/ch7.py /tmp/cache

A call found in ``CACHE`` loads its model's trained ``state_dict`` and the random-number states that followed it,
so the rest of the run is the one an uncut run would make. ``desc`` must name each call uniquely (the chapters'
do: "teacher seed 0"). ``KDLITE_AMP=1`` trains with ``amp=True`` (bf16 autocast: what ``fit`` does by default on a
bf16 GPU; on a CPU with AMX units about twice as fast as float32). ``KDLITE_RECORD_NOTE`` is appended to every
record's note.
"""

from __future__ import annotations

import builtins
import os
import random
import runpy
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import kdlite  # noqa: E402
import kdlite.distill  # noqa: E402
import kdlite.report  # noqa: E402


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate()}


def set_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["random"])


def cached(train, kind: str, cache: Path, amp: bool):
    """``train`` (fit or distill), saved by its desc in ``cache`` and loaded from there when already run."""

    def run(model, *args, **kwargs):
        desc = kwargs.get("desc")
        if not desc:
            raise ValueError(f"cached_run needs desc= on every {kind} call to name its cache entry; got {desc!r}")
        path = cache / f"{kind}_{desc.replace(' ', '_').replace('/', '_')}.pt"
        if path.exists():
            saved = torch.load(path, weights_only=False)
            model.load_state_dict(saved["state"])
            set_rng(saved["rng"])
            print(f"[cache] {kind} {desc}: loaded ({saved['seconds']:.0f} s when trained)", flush=True)
            return saved["ret"]
        if amp:
            kwargs.setdefault("amp", True)
        start = time.time()
        ret = train(model, *args, **kwargs)
        seconds = time.time() - start
        tmp = path.with_suffix(".tmp")
        torch.save({"state": model.state_dict(), "rng": rng_state(), "ret": ret, "seconds": seconds}, tmp)
        tmp.rename(path)
        print(f"[cache] {kind} {desc}: trained in {seconds:.0f} s", flush=True)
        return ret

    return run


def main(script: str, cache: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    amp = os.environ.get("KDLITE_AMP") == "1"
    extra = os.environ.get("KDLITE_RECORD_NOTE", "")
    save = kdlite.report.save_results

    def save_results(name, rows, note="", data=""):
        return save(name, rows, note=" ".join(n for n in (note, extra) if n), data=data)

    kdlite.report.save_results = save_results
    kdlite.fit = cached(kdlite.fit, "fit", cache, amp)
    kdlite.distill.distill = cached(kdlite.distill.distill, "distill", cache, amp)
    builtins.display = print  # the chapters' display() outside Jupyter
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], Path(sys.argv[2]))
