"""The classroom edition (issue #14): the student edition has no solutions, and the autograder gives the teacher's
edition full marks and the untouched student edition zero."""

import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import classroom  # noqa: E402

CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def tagged(nb, tag):
    return [c for c in nb.cells if tag in c.metadata.get("tags", [])]


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    classroom.write_student_edition(out, CHAPTERS)
    return out


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_the_student_edition_has_no_solutions_and_keeps_stubs_and_checks(student, chapter):
    teacher, mine = nbformat.read(chapter, as_version=4), nbformat.read(student / chapter.name, as_version=4)
    text = "\n".join(c.source for c in mine.cells)
    assert not tagged(mine, "solution")
    assert "solution-start" not in text and "solution-end" not in text and "{admonition} Solution" not in text
    assert "{exercise}" not in text  # turned into plain markdown that Jupyter shows
    elsewhere = {line.strip() for line in teacher_stub_lines(teacher)}
    for cell in tagged(teacher, "solution"):  # no line of solution code survives (short lines aside)
        for line in cell.source.splitlines():
            if len(line.strip()) > 30 and line.strip() not in elsewhere:
                assert line not in text, f"solution code left in the student edition: {line!r}"
    markdown = "\n".join(c.source for c in teacher.cells if c.cell_type == "markdown")
    for gated in re.findall(r"\{solution-start\}.*?\n`{3,}\n(.*?)`{3,}\{solution-end\}", markdown, re.S):
        for line in gated.splitlines():  # nor any line of solution text
            if len(line.strip()) > 30:
                assert line not in text, f"solution text left in the student edition: {line!r}"
    assert len(tagged(mine, "stub")) == len(tagged(teacher, "stub"))
    assert len(tagged(mine, "check")) == len(tagged(teacher, "check"))
    assert mine.cells[0].source.startswith("# Student edition")
    assert all(not c.get("outputs") for c in mine.cells if c.cell_type == "code")


def exercise_ids(chapter):
    markdown = "\n".join(c.source for c in nbformat.read(chapter, as_version=4).cells if c.cell_type == "markdown")
    return [f"{a}.{b}" for a, b in re.findall(r":label: ex-(\d+)-(\d+)", markdown)]


def teacher_stub_lines(nb):
    return [line for c in nb.cells if c.cell_type == "code" and "solution" not in c.metadata.get("tags", [])
            for line in c.source.splitlines()]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_the_autograder_gives_the_teachers_edition_full_marks_and_the_student_edition_zero(student, chapter):
    full = classroom.grade(chapter)
    assert full["score"] == full["total"], classroom.summary(full) + str(full["exercises"])
    assert not full["errors"], full["errors"]
    zero = classroom.grade(student / chapter.name)
    assert zero["score"] == 0 and zero["total"] == full["total"], classroom.summary(zero)
    assert zero["errors"] == [], zero["errors"]  # no later cell needs a solution's variables
    assert full["answers"] == {} and set(zero["answers"]) <= set(exercise_ids(chapter))  # answer cells, by exercise


def test_the_command_line_writes_the_edition_and_a_json_score(tmp_path, capsys):
    assert classroom.main(["student", "--out", str(tmp_path / "s"), str(CHAPTERS[0])]) == 0
    assert (tmp_path / "s" / CHAPTERS[0].name).is_file()
    assert classroom.main(["grade", str(tmp_path / "nope.ipynb")]) == 2


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_every_exercise_without_a_check_gets_answer_cells_and_citations_are_plain_text(student, chapter):
    mine = nbformat.read(student / chapter.name, as_version=4)
    checked = set(classroom.official_checks(chapter))
    unchecked = [ex for ex in exercise_ids(chapter) if ex not in checked]
    answers = [c.metadata["exercise"] for c in tagged(mine, "answer")]
    assert answers == [ex for ex in unchecked for _ in range(2)], answers  # a code cell and a markdown cell each
    text = "\n".join(c.source for c in mine.cells)
    assert "{footcite" not in text and "{footbibliography}" not in text


def test_the_grader_runs_the_chapters_own_checks_and_counts_a_missing_one(student, tmp_path):
    chapter = ROOT / "notebooks" / "09_language_model.ipynb"
    nb = nbformat.read(student / chapter.name, as_version=4)
    stub = next(c for c in nb.cells if "stub" in c.metadata.get("tags", []))
    stub.source += "\nchecks.run = lambda ex, test, right: checks.report(ex, True, right)  # a tampered grader"
    check = [c for c in nb.cells if "check" in c.metadata.get("tags", [])]
    check[0].source = check[0].source.replace("assert ", "assert True or ")  # a weakened check
    nb.cells.remove(check[-1])  # a deleted check
    for c in tagged(nb, "answer"):
        c.source += " My answer."
    path = tmp_path / "09_language_model_alice.ipynb"  # a renamed submission still maps to its chapter
    nbformat.write(nb, path)
    result = classroom.grade(path)
    assert result["chapter"] == chapter.name
    assert result["score"] == 0 and result["total"] == len(classroom.official_checks(chapter)), result
    missing = [e["message"] for e in result["exercises"].values() if "missing" in e["message"]]
    assert missing == ["the check cell is missing from the submission"]
    assert result["answers"] and all(a.endswith("My answer.") for v in result["answers"].values() for a in v)
