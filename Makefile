# keydesk: the two commands of the quick start are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint mutate bench clean

install: $(STAMP)

# Reinstall when the project's metadata changes; an editable install picks up code changes by itself.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,postgres,dev]'
	touch $(STAMP)

# The whole story on the embedded mail servers, in a fresh var/demo/.
demo: install
	$(BIN)/keydesk demo

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff (lint and format check) and mypy --strict on the core; configured in pyproject.toml.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Mutation testing with mutmut (pyproject.toml [tool.mutmut] names the modules and tests): the last
# line of the run counts killed (🎉) and surviving (🙁) mutants; `mutmut results` lists the survivors.
mutate: install
	$(BIN)/mutmut run
	$(BIN)/mutmut results

bench: install
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var/demo .pytest_cache
