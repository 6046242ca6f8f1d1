# kdlite: two commands for readers (make book, make test); each sets itself up in .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
JB     := $(VENV)/bin/jupyter-book
STAMP  := $(VENV)/.kdlite-installed

.PHONY: setup book test unit notebooks book-smoke lint sync bench clean student

$(STAMP): pyproject.toml
	@test -x $(PY) || { echo "creating $(VENV) with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv and install kdlite (editable) with its book, test and dev extras

## make book: execute every chapter at the default scale and build the HTML book into _build/html.
## A change of scale (KDLITE_SCALE, KDLITE_OFFLINE) or of the recorded results in results/ clears the execution
## cache (the cache knows only the code cells, not the files they read); otherwise a re-run takes seconds.
book: $(STAMP)
	@line="$$($(PY) -c 'import kdlite; print(kdlite.scale())')" || exit 1; echo "$$line"; \
	key="$$line · results $$(cat results/*.json 2>/dev/null | cksum)"; \
	if [ "$$(cat _build/.kdlite-scale 2>/dev/null)" != "$$key" ]; then \
	  rm -rf _build/.doctrees _build/.jupyter_cache _build/jupyter_execute _build/html; fi; \
	KDLITE_PROGRESS=0 $(JB) build . && echo "$$key" > _build/.kdlite-scale
	@echo "The book is at $(CURDIR)/_build/html/index.html"

## make test: ruff, unit tests, every chapter at smoke scale with nbval, notebook-pair checks, the classroom edition,
## a smoke book build with warnings as errors, and that build opened in Chromium (tests/test_html.py).
test: $(STAMP) lint unit notebooks book-smoke

lint: $(STAMP)
	$(PY) -m ruff check kdlite tests benchmarks tools

unit: $(STAMP)
	$(PY) -m pytest tests -q --ignore=tests/test_html.py

notebooks: $(STAMP)
	KDLITE_SCALE=smoke KDLITE_PROGRESS=0 $(PY) -m pytest --nbval-lax -p no:cacheprovider -q notebooks/

book-smoke: $(STAMP)
	rm -rf _build/smoke
	KDLITE_SCALE=smoke KDLITE_PROGRESS=0 $(JB) build . --path-output _build/smoke -W --keep-going
	$(PY) tests/check_book.py _build/smoke/_build/html
	$(PY) -m pytest tests/test_html.py -q -p no:cacheprovider -rs

## make sync: after editing a chapter's .md, regenerate its paired, output-free .ipynb
sync: $(STAMP)
	$(PY) tools/repository.py
	$(VENV)/bin/jupytext --sync notebooks/[0-9]*.md
	$(PY) -m jupyter nbconvert --clear-output --inplace notebooks/[0-9]*.ipynb 2>/dev/null || true

## make student: the student edition (solutions removed) in _build/student/; grade a submission with
## $(PY) tools/classroom.py grade SUBMISSION.ipynb --json score.json
student: $(STAMP)
	$(PY) tools/classroom.py student --out _build/student

bench: $(STAMP)
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf _build
