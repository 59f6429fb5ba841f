# The two commands of the README: `make run` (install, find the data, run the default experiment) and
# `make test` (install, lint, run the fast test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install data run test test-slow lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

data:
	bash scripts/ensure_data.sh $(ARGS)  # the dataset named in ARGS (default Fashion-MNIST)

run: install data
	$(BIN)/lth run $(ARGS)

lint: install
	$(BIN)/ruff check lth tests scripts

# A worker per core, one torch thread each: the suite is many small runs, which a second thread barely speeds.
test: install lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n auto $(ARGS)

test-slow: install
	$(BIN)/python -m pytest -m slow $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache
