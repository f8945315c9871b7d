# Everything a fresh machine needs, in one place. `make demo` and `make test` set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned for the install here: 2.13.0 resolves to a CPU build; an unpinned torch would
# pull a multi-GB CUDA build. Users elsewhere may install any torch >= 2.2.
TORCH ?= torch==2.13.0
# torchcodec 0.13 is the last CPU-only build (0.14+ need CUDA's libraries to import at all).
TORCHCODEC ?= torchcodec==0.13.0

.PHONY: install sysdeps demo demo-offline test lint bench clean

$(BIN)/.installed: pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)" "$(TORCHCODEC)"
	$(BIN)/pip install -q -e ".[all,ray,dev]"
	touch $@

install: $(BIN)/.installed

sysdeps:
	@bash scripts/system-deps.sh

# The main job on a sample: scene descriptions in every format (md brings its contact sheet).
demo: install
	$(BIN)/videovlm describe samples/bikes.mp4 -o out -f all

# The same with a tiny random-weight checkpoint of the real architecture (no download; gibberish
# text, real structure): what the tests run.
demo-offline: install
	$(BIN)/python -m videovlm.testing tiny-model out/tiny-smolvlm
	$(BIN)/videovlm describe samples/bikes.mp4 --model out/tiny-smolvlm -o out -f all

test: install sysdeps
	$(BIN)/ruff check .
	$(BIN)/pytest -q

bench: install
	$(BIN)/python benchmarks/sampling.py

clean:
	rm -rf $(VENV) out
