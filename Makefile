# Quick start: `make run` (set-up + the default pipeline) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false

.PHONY: run test test-fast lint optimizers bench bench-quick device-wheels clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

run: $(VENV)/.installed  ## the default pipeline, end to end: data -> split -> train -> evaluate
	dvc repro
	dvc metrics show

test: $(VENV)/.installed  ## every test, end-to-end runs of dvc and mlflow included
	python -m pytest

test-fast: $(VENV)/.installed
	python -m pytest -m "not slow"

optimizers: $(VENV)/.installed  ## workload 2: Adam, RMSprop, SGD as sibling runs, one loss plot
	dvc exp run --queue -S 'experiment=blobs64_adam,blobs64_rmsprop,blobs64_sgd'
	dvc exp run --run-all
	pipeline compare blobs64-optimizers --metric train_loss

bench: $(VENV)/.installed  ## the benchmark suite: tutorial baselines vs ours, overhead, scaling (benchmarks/README.md)
	python -m benchmarks

bench-quick: $(VENV)/.installed  ## the same, smaller, in under two minutes on an idle machine
	python -m benchmarks --quick

device-wheels: $(VENV)/.installed  ## what the GPU check carries to the device machine (benchmarks/README.md, "GPU")
	python -m benchmarks.device_kit wheels

lint: $(VENV)/.installed
	ruff check src tests benchmarks

clean:  ## pipeline outputs and the local MLflow store (keeps .venv)
	rm -rf data/raw data/split models metrics/eval.json plots mlflow.db mlartifacts
