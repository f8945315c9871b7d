# Everything a fresh machine needs, in one place. `make demo` and `make test` set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned for the install here: 2.13.0 resolves to a CPU build; an unpinned torch would
# pull a multi-GB CUDA build. Users elsewhere may install any torch >= 2.2.
TORCH ?= torch==2.13.0

.PHONY: install demo test lint bench clean

$(BIN)/.installed: pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[all,ray,dev]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/videovlm frames samples/bikes.mp4 -n 24 --sheet out/bikes_sheet.jpg

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest -q

bench: install
	$(BIN)/python benchmarks/sampling.py

clean:
	rm -rf $(VENV) out
