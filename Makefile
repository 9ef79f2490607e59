# unet-keras: `make train` runs the main job, `make test` the test suite.
# Both create the virtual environment in .venv on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN ?= default
PRESET ?= auto
BUDGET ?= 20
# The moment make started: the budget counts the set-up too.
STARTED := $(shell date +%s)
# TensorFlow's wheel sees an NVIDIA GPU only with NVIDIA's CUDA libraries, which its
# "and-cuda" extra installs from pip. GPU=1 installs them; by default they come where
# nvidia-smi lists a GPU (GPU=0: never).
GPU ?= $(if $(shell nvidia-smi -L 2>/dev/null),1,0)
# The stamp names what was installed, so that GPU=1 after an install without the CUDA
# libraries installs them.
RUNTIME := $(VENV)/.runtime-installed$(if $(filter 1,$(GPU)),-cuda)
STAMP := $(VENV)/.dev-installed

.PHONY: install install-dev test lint test-tf test-torch test-jax test-oldest train notebooks lab bench clean

# What `make train` needs; the test tools (PyTorch among them) come on top for `make test`.
install: $(RUNTIME)

install-dev: $(STAMP)

$(RUNTIME): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt
ifeq ($(GPU),1)
	$(BIN)/python -m pip install "tensorflow[and-cuda]==$$($(BIN)/python -c \
		'from importlib.metadata import version; print(version("tensorflow"))')"
endif
	$(BIN)/python -m pip install --no-deps -e .
	touch $(RUNTIME)

$(STAMP): $(RUNTIME) requirements-dev.txt
	$(BIN)/python -m pip install -r requirements-dev.txt
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

# The whole suite on TensorFlow, then the backend-agnostic tests on PyTorch, in WORKERS
# processes (pytest-xdist): much of a short training run is single-threaded tracing, which
# two processes overlap on two cores (tests/test_train.py: 3 min 45 s instead of 6 min 20 s).
WORKERS ?= 2
test-tf: $(STAMP)
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -ra --durations=15 -n $(WORKERS)

test-torch: $(STAMP)
	KERAS_BACKEND=torch $(BIN)/python -m pytest -ra -m backends -n $(WORKERS)

test: lint test-tf test-torch

# The backend-agnostic tests on JAX, in a virtualenv of its own without TensorFlow.
# Not part of `make test`, which it would lengthen by 4 to 6 minutes on 2 cores (its install included).
JAX_VENV := .venv-jax
JAX_STAMP := $(JAX_VENV)/.installed

$(JAX_STAMP): requirements.txt pyproject.toml
	test -x $(JAX_VENV)/bin/python || $(PYTHON) -m venv $(JAX_VENV)
	$(JAX_VENV)/bin/python -m pip install --quiet "jax[cpu]" -e ".[dev]"
	touch $(JAX_STAMP)

test-jax: $(JAX_STAMP)
	KERAS_BACKEND=jax $(JAX_VENV)/bin/python -m pytest -ra -m backends

# The whole suite on TensorFlow with the oldest versions requirements.txt allows
# (requirements-oldest.txt) and the oldest Python pyproject.toml allows, in a virtualenv of
# its own. Not part of `make test`, which it would lengthen by about 8 minutes on 2 cores.
# OLDEST_PYTHON names another interpreter, e.g. OLDEST_PYTHON=~/.pyenv/versions/3.10.13/bin/python.
OLDEST_PYTHON ?= python3.10
OLDEST_VENV := .venv-oldest
OLDEST_STAMP := $(OLDEST_VENV)/.installed

$(OLDEST_STAMP): requirements-oldest.txt requirements.txt pyproject.toml
	test -x $(OLDEST_VENV)/bin/python || $(OLDEST_PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install --quiet -r requirements-oldest.txt -e ".[dev]"
	touch $(OLDEST_STAMP)

test-oldest: $(OLDEST_STAMP)
	KERAS_BACKEND=tensorflow $(OLDEST_VENV)/bin/python -m pytest -ra -n $(WORKERS)

# The main job: download ISBI 2012, train, predict and score into runs/$(RUN)/.
# PRESET=cpu, cpu-bf16, cpu-bf16-24 or gpu overrides the configuration picked for the machine.
# BUDGET: minutes from make's start to the scores, the set-up included; a slower machine
# trains a smaller configuration or fewer steps to end in time (BUDGET=0: all of them).
train: $(RUNTIME)
	$(BIN)/python -m unet_keras train --name $(RUN) --preset $(PRESET) \
		--time-budget-minutes $(BUDGET) --started-at $(STARTED)

notebooks: $(STAMP)
	$(BIN)/python -m unet_keras.notebook_runner notebooks notebooks/executed

# JupyterLab on the notebooks, with this checkout's kernel. JupyterLab is installed into
# $(VENV) on first use only: in requirements-dev.txt, CI would install it on every run. The
# kernel is registered as "unet-keras" (in ~/.local/share/jupyter/kernels), so that Jupyter
# or VS Code started elsewhere can pick "Python (unet-keras)" too.
lab: $(STAMP)
	test -x $(BIN)/jupyter-lab || $(BIN)/python -m pip install jupyterlab
	$(BIN)/python -m ipykernel install --user --name unet-keras --display-name "Python (unet-keras)"
	$(BIN)/jupyter lab notebooks/

bench: $(RUNTIME)
	$(BIN)/python benchmarks/bench_augment.py
	$(BIN)/python benchmarks/bench_inference.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_evaluate.py

clean:
	rm -rf $(VENV) $(JAX_VENV) $(OLDEST_VENV) .pytest_cache .ruff_cache notebooks/executed
