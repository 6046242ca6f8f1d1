"""tools/cached_run.py: a run resumed from its cache of fit / distill calls is the run made without it."""

import os
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).parent.parent / "tools/cached_run.py"

SCRIPT = '''
import torch
import kdlite
from kdlite.distill import distill
from kdlite.models import MLP

train, _ = kdlite.load_dataset("digits", subset=200)
kdlite.seed_everything(0)
teacher = MLP(64, 32, 10)
kdlite.fit(teacher, kdlite.DeviceLoader(train, 32, seed=0), 1, desc="teacher")
student = MLP(64, 8, 10)  # initialised from the random state that the teacher's training left
distill(student, teacher.eval(), kdlite.DeviceLoader(train, 32, seed=1), 1, temperature=4, alpha=0.9,
        cache_teacher=True, desc="student")
print("RESULT", [round(float(p.double().sum()), 10) for p in student.parameters()], torch.rand(1).item())
'''


def run(script: Path, cache: Path) -> tuple[str, str]:
    env = {**os.environ, "KDLITE_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(TOOL), str(script), str(cache)], capture_output=True, text=True,
                         env=env, cwd=script.parent, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = [line for line in out.stdout.splitlines() if line.startswith("RESULT")]
    return result[0], out.stdout


def test_a_resumed_run_is_the_uncut_run(tmp_path):
    script = tmp_path / "chapter.py"
    script.write_text(SCRIPT)
    cache = tmp_path / "cache"
    first, log = run(script, cache)
    assert "fit teacher: trained" in log and "distill student: trained" in log
    (cache / "distill_student.pt").unlink()  # as if the run had stopped after the teacher
    resumed, log = run(script, cache)
    assert "fit teacher: loaded" in log and "distill student: trained" in log
    assert resumed == first
    again, log = run(script, cache)
    assert "distill student: loaded" in log and again == first
