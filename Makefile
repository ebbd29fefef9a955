# sslzoo — the README names two commands: `make serve` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: install test lint serve bench clean

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found; install Python 3.11 or run 'make PY=/path/to/python3.11'"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install sslzoo editable with test extras

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) lint  ## install if needed, then ruff + pytest
	$(BIN)/python -m pytest -q

serve: $(STAMP)  ## install if needed, then serve the embedded default models
	@if $(BIN)/sslzoo serve --help >/dev/null 2>&1; then exec $(BIN)/sslzoo serve; else \
	  echo "make serve: 'sslzoo serve' is not built yet (see the serving issue); the package is installed in .venv,"; \
	  echo "try '.venv/bin/sslzoo --help' for what exists today."; exit 3; fi

bench: $(STAMP)  ## quick runs of the benchmarks that need no peer checkout
	$(BIN)/python bench/data.py --quick
	$(BIN)/python bench/metrics.py
	$(BIN)/python bench/serve.py --quick

clean:
	rm -rf $(VENV) build *.egg-info
