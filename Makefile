# make demo: install into .venv and run the main job on the built-in demo corpus
# make test: install into .venv (with test extras) and run the test suite
# installs pin the versions in constraints.txt (README: Upgrading dependencies)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test check install clean

$(BIN)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/auttention-search run spaces/demo.yaml --name demo-$$(date +%Y%m%d-%H%M%S)

test: install check
	$(BIN)/python -m pytest -q --durations=15 tests

# the mechanical checks (ruff.toml, mypy.ini): lint, format, types
check: install
	$(BIN)/ruff check auttention search
	$(BIN)/ruff format --check auttention search
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs *.egg-info
