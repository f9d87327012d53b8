# `make demo` and `make test` do all the set-up: a .venv with torch and facesynth, then the job.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.facesynth-installed
# torch 2.14.1 + torchvision 0.29.1 is the pair the whole suite runs on here (README.md, "Install": the floor pair and the CPU-only route)
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test test-fast figures bench gpu-check clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev,notebooks]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/facesynth demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# every notebook under papermill (QUICK; FULL=1: the full settings, for a GPU with the released weights), each
# rendered to HTML, and build/index.html with every figure and table
figures: $(STAMP)
	$(BIN)/python -m facesynth.figures.build --out build $(if $(FULL),--full,)

bench: $(STAMP)
	$(BIN)/python bench/extract.py --quick --out bench/results/extract.json
	$(BIN)/python bench/swap_train.py --quick --out bench/results/swap_train.json
	$(BIN)/python bench/reenact.py --quick --out bench/results/reenact.json
	$(BIN)/python bench/lipsync.py --quick --out bench/results/lipsync.json
	$(BIN)/python bench/generate.py --quick --out bench/results/generate.json
	$(BIN)/python bench/evaluate.py --quick --out bench/results/evaluate.json

# on a CUDA machine (a Colab GPU, a lent H100): the `gpu` tests and every benchmark's quick mode on the GPU, about
# 8 minutes, one JSON summary with the targets met or not; without a GPU it says so and exits 0
gpu-check: $(STAMP)
	$(BIN)/python scripts/gpu_check.py --out build/gpu-check.json

clean:
	rm -rf work build .pytest_cache
