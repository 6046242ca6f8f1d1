"""Every chapter is a MyST notebook paired with an output-free .ipynb that is in sync, and is in the book's TOC."""

import json
import re
import sys
from pathlib import Path

import jupytext
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from repository import repository_url  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.md"))


def test_there_are_chapters():
    assert CHAPTERS, "no notebooks/NN_slug.md chapters found"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_pair_exists_and_is_in_sync(md):
    ipynb = md.with_suffix(".ipynb")
    assert ipynb.exists(), f"{md.name} has no paired {ipynb.name}; run `make sync`"
    text = jupytext.read(md)
    nb = jupytext.read(ipynb)
    cells = lambda n: [(c.cell_type, c.source.strip()) for c in n.cells]  # noqa: E731
    assert cells(text) == cells(nb), f"{ipynb.name} is out of sync with {md.name}; run `make sync`"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_ipynb_has_no_outputs(md):
    raw = json.loads(md.with_suffix(".ipynb").read_text())
    for cell in raw["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{md.stem}.ipynb carries outputs; clear them (`make sync`)"
            assert cell.get("execution_count") is None, f"{md.stem}.ipynb carries execution counts"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_is_in_toc(md):
    toc = (ROOT / "_toc.yml").read_text()
    assert re.search(rf"file:\s*notebooks/{md.stem}\s*$", toc, re.M), f"{md.stem} is missing from _toc.yml"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_shape(md):
    """The shape of a chapter: a Colab install cell first, a summary, exercises with solutions, references."""
    nb = jupytext.read(md)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert "google.colab" in code[0], "the first code cell must install kdlite on Colab (and do nothing elsewhere)"
    text = md.read_text()
    for heading in ("## Summary", "## Exercises", "## References"):
        assert heading in text, f"{md.name} lacks a '{heading}' section"
    assert text.count(":class: dropdown") >= 3, f"{md.name}: exercises need hidden (folded) solutions"


def test_no_stray_notebooks():
    for ipynb in (ROOT / "notebooks").glob("*.ipynb"):
        assert ipynb.with_suffix(".md").exists(), f"{ipynb.name} has no .md source"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_the_colab_install_cell_uses_the_repository_of_config(md):
    url = repository_url(ROOT / "_config.yml")
    installs = re.findall(r'url = "kdlite\[data\] @ git\+([^"]+)"', md.read_text())
    assert installs == [url], f"{md.name} installs from {installs}, _config.yml says {url}: run `make sync`"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_exercises_are_sphinx_exercises_with_a_solution_and_their_checks(md):
    """CONTRIBUTING.md: every exercise an {exercise} with a gated solution; every stub has a check after its
    solution, and every check names an exercise of the chapter."""
    text, number = md.read_text(), int(md.stem[:2])
    labels = re.findall(r"^`{3,}\{exercise\}.*\n:label: (ex-\d+-\d+)", text, re.M)
    assert labels, f"{md.name}: no {{exercise}} directives"
    assert all(label.startswith(f"ex-{number}-") for label in labels), labels
    assert "{admonition} Solution" not in text, f"{md.name}: a solution is still an admonition"
    solved = re.findall(r"^`{3,}\{solution-start\} (ex-\d+-\d+)", text, re.M)
    assert sorted(solved) == sorted(labels), f"{md.name}: exercises {labels}, solutions {solved}"
    assert text.count("{solution-start}") == text.count("{solution-end}")
    nb = jupytext.read(md)
    tags = [c.metadata.get("tags", []) for c in nb.cells if c.cell_type == "code"]
    stubs = sum("stub" in t for t in tags)
    checks = [c.source for c in nb.cells if "check" in c.metadata.get("tags", [])]
    assert stubs == len(checks), f"{md.name}: {stubs} stub cells but {len(checks)} check cells"
    for source in checks:
        ex = re.search(r"""checks\.exercise\(\s*["'](\d+)\.(\d+)["']""", source)
        assert ex and f"ex-{ex[1]}-{ex[2]}" in labels, f"{md.name}: a check names no exercise of the chapter:\n{source}"
