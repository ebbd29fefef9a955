# sslzoo — the README names two commands: `make serve` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: install test test-slow lint serve bench clean mutation

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found; install Python 3.11 or run 'make PY=/path/to/python3.11'"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install sslzoo editable with test extras, pinned by constraints.txt

lint: $(STAMP)  ## ruff check (incl. RUF100) + ruff format --check + mypy on sslzoo/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# one pytest worker per core (tests pin torch to 1-2 threads); --dist loadfile keeps each file (and its
# module-scoped fixtures: a tiny zoo, a running server) in one worker. TEST_WORKERS=0 runs in one process.
# `make test` leaves out the tests marked slow (learning tests, 2-process DDP, real TorchServe end to end, the tiny
# study): they took 1,300 of the suite's ~3,000 worker-seconds. `make test-slow` runs them; .ci/run runs both.
TEST_WORKERS ?= auto
test: $(STAMP) lint  ## install if needed, then lint + the tests not marked slow (parallel over the cores)
	$(BIN)/python -m pytest -q --durations=10 -n $(TEST_WORKERS) --dist loadfile -m "not slow"

test-slow: $(STAMP)  ## the tests marked slow (learning, DDP, TorchServe end to end, study end to end); CI runs them
	$(BIN)/python -m pytest -q --durations=10 -n $(TEST_WORKERS) --dist loadfile -m slow

serve: $(STAMP)  ## install if needed, then serve the embedded default models
	exec $(BIN)/sslzoo serve

bench: $(STAMP)  ## quick runs of the benchmarks that need no peer checkout
	$(BIN)/python bench/data.py --quick
	$(BIN)/python bench/metrics.py
	$(BIN)/python bench/serve.py --quick

mutation: $(STAMP)  ## mutation testing (mutmut 3, [tool.mutmut] in pyproject; slow, not in CI) + issue-17 patches
	$(BIN)/python -m pip install --quiet 'mutmut>=3.8,<4'
	rm -rf mutants
	$(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results
	PYTHONPATH=$(CURDIR) $(BIN)/python tests/mutations/issue17.py

clean:
	rm -rf $(VENV) build *.egg-info mutants
