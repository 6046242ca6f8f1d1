"""The classroom edition: a student edition of the chapters without solutions, and an autograder for their checks.

    python tools/classroom.py student [--out _build/student] [NOTEBOOK ...]
    python tools/classroom.py grade SUBMISSION.ipynb [--json score.json] [--scale smoke]

``student`` writes one ``.ipynb`` per chapter: the cells of each solution removed (the code cells tagged
``solution`` and everything between the ``solution-start`` and ``solution-end`` directives), the exercises turned
into plain markdown headings, the stubs and check cells kept, outputs cleared, and a header for the instructor.

``grade`` runs a notebook top to bottom (errors do not stop it) in the repository's ``notebooks/`` folder and reads
the lines that ``kdlite.checks`` prints: an exercise scores 1 when its check cell printed ``✓ Exercise N.k`` and
raised nothing, else 0. The check cells that run are the chapter's own, not the submission's (a check the student
edited or deleted is restored, and ``kdlite.checks`` is reloaded before each), and the total counts every check of
the chapter. The answers to exercises without a check (the cells tagged ``answer``) go into the JSON, to be marked
by hand. It prints a one-line summary and writes the per-exercise scores as JSON. It runs the submission's code:
grade in a sandbox (a container or a throwaway account), and treat it as a check of honest work, not a proof
against a student who sets out to fool it.

A small tool of our own rather than nbgrader or otter-grader: both want their own cell metadata or markup in the
sources (nbgrader's "grade" cells and ids, otter's ``# BEGIN QUESTION`` raw cells), which the book's MyST chapters
would have to carry, and both are more machinery than reading one line per check.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
CHECK = re.compile(r"""checks\.exercise\(\s*["']([^"']+)["']""")
LINE = re.compile(r"^([✓✗]) Exercise (\S+?): (.*)$", re.M)
START, END = re.compile(r"^`{3,}\s*\{solution-start\}"), re.compile(r"^`{3,}\s*\{solution-end\}")
OLD_SOLUTION = re.compile(r"^:{3,}\s*\{admonition\}\s*Solution")
EXERCISE = re.compile(r"^(`{3,})\s*\{exercise\}\s*(.*)\n:label:\s*ex-(\d+)-(\d+)\n(?:\s*\n)?(.*?)^\1\s*$", re.M | re.S)

HEADER = """# Student edition: {title}

This is the student edition of a chapter of *Model compression you can run* (kdlite), generated from commit
`{commit}`: the solutions are removed. Work through the chapter; at each exercise, replace the
`raise NotImplementedError` (or `...`) in the cell under it with your answer, run it, then run the **check** cell
below it, which prints `✓ Exercise N.k: ...` when your answer is right and `✗ Exercise N.k: <what is wrong>` when it
is not. Exercises without a check ask you to predict, test and explain: use the two cells under the exercise, one
for your code and one, marked *Your answer*, for your prediction and what you found.

Run the chapter at `cpu` scale unless your instructor says otherwise: put `%env KDLITE_SCALE=cpu` in a cell above the
imports. (On a machine with a GPU the default is `gpu` scale, which can take an hour or more.) The checks use the
chapter's own variables, so run the chapter from the top before the exercises.

*For the instructor:* grade a submission with `python tools/classroom.py grade SUBMISSION.ipynb --json score.json`
in a clone of the repository; it runs the notebook at `smoke` scale (`--scale cpu` for the real sizes) with the
chapter's own check cells, scores one point per passed check, and copies the *Your answer* cells into the JSON.
"""
ANSWER_CODE = "# Exercise {ex}: your code (an experiment, a computation)\n"
ANSWER_TEXT = "**Your answer to Exercise {ex}:** your prediction, what you found, and why."
BIB = (ROOT / "book" / "references.bib").read_text(encoding="utf-8") if (ROOT / "book").is_dir() else ""
FOOTCITE = re.compile(r"\{footcite(?:t|p)?\}`([^`]*)`")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _exercise_as_markdown(text: str) -> str:
    """```{exercise} Title / :label: ex-3-2 / text``` becomes **Exercise 3.2: Title.** text (Jupyter shows it)."""
    def plain(m: re.Match) -> str:
        title = m[2].strip().rstrip(".") + ("" if m[2].strip().endswith(("?", "!")) else ".")
        return f"**Exercise {m[3]}.{m[4]}: {title}** {m[5].strip()}\n"

    return EXERCISE.sub(plain, text)


def _check_cells(nb: nbformat.NotebookNode) -> dict[str, str]:
    """The sources of the notebook's check cells, by the exercise ids they check."""
    return {ex: c.source for c in nb.cells if c.cell_type == "code" for ex in CHECK.findall(c.source)}


def _answer_cells(text: str, checked: set[str]) -> list[nbformat.NotebookNode]:
    """A code cell and a *Your answer* cell, tagged ``answer``, for each exercise in ``text`` without a check."""
    cells = []
    for m in EXERCISE.finditer(text):
        ex = f"{m[3]}.{m[4]}"
        if ex not in checked:
            meta = {"tags": ["answer"], "exercise": ex}
            cells += [nbformat.v4.new_code_cell(ANSWER_CODE.format(ex=ex), metadata=dict(meta)),
                      nbformat.v4.new_markdown_cell(ANSWER_TEXT.format(ex=ex), metadata=dict(meta))]
    return cells


def _cited(key: str) -> str:
    """A bibliography key as "Hinton et al., 2015" (from book/references.bib), or the key itself."""
    entry = re.search(r"@\w+\{" + re.escape(key) + r",(.*?)\n\}", BIB, re.S)
    author = entry and re.search(r"author\s*=\s*\{(.*?)\},?\n", entry[1], re.S)
    year = entry and re.search(r"year\s*=\s*\{?(\d{4})", entry[1])
    if not (author and year):
        return key
    surnames = [a.split(",")[0].strip("{} ") for a in author[1].split(" and ")]
    who = " and ".join(surnames) if len(surnames) <= 2 else f"{surnames[0]} et al."
    return f"{who}, {year[1]}"


def _plain_citations(text: str) -> str:
    """{footcite}`a,b` becomes [Author, year; ...] (Jupyter does not render the role); the bibliography goes."""
    text = FOOTCITE.sub(lambda m: "[" + "; ".join(_cited(k.strip()) for k in m[1].split(",")) + "]", text)
    return re.sub(r"^`{3,}\{footbibliography\}\s*\n`{3,}\s*$", "", text, flags=re.M)


def student_notebook(path: Path) -> nbformat.NotebookNode:
    """The student edition of the chapter notebook at ``path``."""
    nb = nbformat.read(path, as_version=4)
    checked = set(_check_cells(nb))
    cells, inside, closing = [], False, False
    for cell in nb.cells:
        if cell.cell_type == "code":
            if not inside and "solution" not in cell.metadata.get("tags", []):
                cell.outputs, cell.execution_count = [], None
                cells.append(cell)
            continue
        kept = []
        for line in cell.source.splitlines():
            if closing:  # the line closing the solution-end directive
                closing = False
                continue
            if START.match(line) or OLD_SOLUTION.match(line):
                inside = "old" if OLD_SOLUTION.match(line) else True
            elif inside and END.match(line):
                inside, closing = False, True
            elif inside == "old" and re.fullmatch(r":{3,}\s*", line):
                inside = False
            elif not inside:
                kept.append(line)
        text = "\n".join(kept)
        answers = _answer_cells(text, checked)
        text = _plain_citations(_exercise_as_markdown(text)).strip()
        if text:
            cell.source = text
            cells.append(cell)
        cells += answers
    title = next((c.source.splitlines()[0].lstrip("# ") for c in cells if c.cell_type == "markdown"), path.stem)
    nb.cells = [nbformat.v4.new_markdown_cell(HEADER.format(title=title, commit=_commit())), *cells]
    nb.metadata.pop("jupytext", None)  # not paired with a MyST source any more
    return nb


def write_student_edition(out: Path, notebooks: list[Path]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        target = out / path.name
        nbformat.write(student_notebook(path), target)
        written.append(target)
    return written


RELOAD = "import importlib, kdlite.checks\nchecks = importlib.reload(kdlite.checks)  # the grader's line\n"
UNSET = ("KDLITE_RESULTS", "KDLITE_FIGURES", "KDLITE_SEEDS")  # while grading: no records, the scale's own seeds


def chapter_of(path: Path) -> Path | None:
    """The chapter a submission came from: ``notebooks/<its name>``, else the chapter of its ``NN_`` prefix."""
    if (ROOT / "notebooks" / path.name).is_file():
        return ROOT / "notebooks" / path.name
    m = re.match(r"(\d\d)_", path.name)
    return next(iter(sorted((ROOT / "notebooks").glob(f"{m[1]}_*.ipynb"))), None) if m else None


def official_checks(chapter: Path) -> dict[str, str]:
    """The chapter's own check cells, by exercise id."""
    return _check_cells(nbformat.read(chapter, as_version=4))


def grade(path: Path, scale: str = "smoke", timeout: int = 1200) -> dict:
    """Run the notebook at ``path`` and score its checks: ``{"notebook", "chapter", "scale", "exercises": {id:
    {"passed", "message"}}, "score", "total", "answers", "errors"}`` (``answers``: the cells tagged ``answer``, by
    exercise, to mark by hand; ``errors``: the cells that raised, by index, with the error). The check cells run
    are the chapter's own (see the module docstring); ``total`` counts every check of the chapter."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    chapter = chapter_of(path)
    official = official_checks(chapter) if chapter else {}
    for cell in nb.cells:  # the chapter's own checks, with kdlite.checks as shipped
        found = CHECK.findall(cell.source) if cell.cell_type == "code" else []
        if found and found[0] in official:
            cell.source = RELOAD + official[found[0]]
    env = {"KDLITE_SCALE": scale, "KDLITE_PROGRESS": "0", "MPLBACKEND": "Agg"}
    old = {k: os.environ.get(k) for k in [*env, *UNSET]}
    os.environ.update(env)
    for k in UNSET:
        os.environ.pop(k, None)
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    exercises, errors = {}, []
    for i, cell in enumerate(nb.cells):
        errors += [{"cell": i, "error": f"{o.ename}: {o.evalue}"} for o in cell.get("outputs", [])
                   if o.output_type == "error"]
        if cell.cell_type != "code" or not CHECK.search(cell.source):
            continue
        text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        error = next((f"{o.ename}: {o.evalue}" for o in cell.outputs if o.output_type == "error"), None)
        lines = {m[2]: (m[1], m[3]) for m in LINE.finditer(text)}
        for ex in CHECK.findall(cell.source):
            mark, message = lines.get(ex, ("✗", error or "the check printed nothing"))
            exercises[ex] = {"passed": mark == "✓" and error is None, "message": message}
    for ex in official.keys() - exercises.keys():
        exercises[ex] = {"passed": False, "message": "the check cell is missing from the submission"}
    answers = {}
    for cell in nb.cells:
        if "answer" in cell.metadata.get("tags", []):
            answers.setdefault(cell.metadata.get("exercise", "?"), []).append(cell.source)
    score = sum(e["passed"] for e in exercises.values())
    return {"notebook": path.name, "chapter": chapter.name if chapter else None, "scale": scale,
            "exercises": dict(sorted(exercises.items())), "score": score, "total": len(exercises),
            "answers": answers, "errors": errors}


def summary(result: dict) -> str:
    marks = ", ".join(f"{ex} {'✓' if e['passed'] else '✗'}" for ex, e in result["exercises"].items())
    return f"{result['notebook']}: {result['score']}/{result['total']} checks passed ({marks})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("student", help="write the student edition")
    s.add_argument("notebooks", nargs="*", type=Path, help="default: every chapter in notebooks/")
    s.add_argument("--out", type=Path, default=ROOT / "_build" / "student")
    g = sub.add_parser("grade", help="run a notebook and score its checks")
    g.add_argument("notebook", type=Path)
    g.add_argument("--json", type=Path, help="write the scores here")
    g.add_argument("--scale", default="smoke", choices=["smoke", "cpu", "gpu"])
    args = parser.parse_args(argv)
    if args.command == "student":
        notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
        for target in write_student_edition(args.out, notebooks):
            print(f"wrote {target}")
        return 0
    if not args.notebook.is_file():
        print(f"grade: no notebook at {args.notebook}", file=sys.stderr)
        return 2
    result = grade(args.notebook, args.scale)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
