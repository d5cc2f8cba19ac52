# The two commands of README.md. Each sets up the virtual environment .venv first if missing.
#   make demo   the default study at its demo budget, offline, end to end (results/cifar10-demo/report.html)
#   make test   the linters (ruff, snakefmt --check), then the test suite
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
BIN := $(abspath $(VENV))/bin
# torch/torchvision as tested; pip takes them from a local wheel cache where one is configured.
TORCH ?= torch==2.14.1 torchvision==0.29.1
export PATH := $(BIN):$(PATH)

.PHONY: demo test lint env

demo: env
	snakemake --cores $(CORES) --config budget=demo --rerun-incomplete
	@echo "nnstudy demo: report at $(abspath results/cifar10-demo/report.html)"

test: env lint
	pytest -q

lint: env
	ruff check .
	snakefmt --check Snakefile workflow

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test,slurm,tensorboard]'
	touch $@
