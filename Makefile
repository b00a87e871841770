# The two commands of the README:
#   make demo   set up, generate a small ShapesWorld, train briefly, evaluate
#   make test   set up, lint, type-check and run the whole test suite
# `make shapes` is the full run behind the README's accepted numbers (about 45 minutes).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= data/shapes
DEMO ?= data/demo

.PHONY: setup demo shapes test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[train,dev]'
	touch $@

demo: setup
	$(PY) -m lrcn.world --out $(DEMO)/train --videos 120 --seed 11 --workers 2
	$(PY) -m lrcn.world --out $(DEMO)/val --videos 20 --seed 12
	$(PY) -m lrcn.world --out $(DEMO)/test --videos 30 --seed 13
	$(PY) -m lrcn.train --config configs/shapes.json --train $(DEMO)/train --val $(DEMO)/val \
		--out runs/demo --minutes 4
	$(PY) -m lrcn.evaluate --checkpoint runs/demo/best.pt --data $(DEMO)/test \
		--out runs/demo/eval.json

shapes: setup
	$(PY) -m lrcn.world --out $(DATA)/train --videos 600 --seed 1 --holdout default --workers 2
	$(PY) -m lrcn.world --out $(DATA)/val --videos 60 --seed 2 --holdout default
	$(PY) -m lrcn.world --out $(DATA)/test --videos 150 --seed 3 --holdout default
	$(PY) -m lrcn.world --out $(DATA)/novel --videos 60 --seed 4 --holdout default --only-holdout
	$(PY) -m lrcn.train --config configs/shapes.json --train $(DATA)/train --val $(DATA)/val \
		--out runs/shapes
	$(PY) -m lrcn.evaluate --checkpoint runs/shapes/best.pt --data $(DATA)/test \
		--novel $(DATA)/novel --out runs/shapes/eval.json

lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy

test: lint
	$(PY) -m pytest

clean:
	rm -rf runs/demo $(DEMO) cache/features
