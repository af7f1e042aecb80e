# Two commands on a fresh machine:
#   make demo   set up .venv and run the main job: the whole RLHF pipeline offline (runs/demo/report.md)
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test test-slow bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first with its pin (the CPU wheel), then the project; override with
# `make setup TORCH_SPEC=torch` on a GPU machine.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/rlhfkit demo --output_dir runs/demo

# The browser (Chromium) and PostgreSQL tests need those services: the wrapper installs
# Chromium with apt when missing, starts a throwaway PostgreSQL server and stops it after.
test: setup
	HF_HUB_OFFLINE=1 scripts/with_test_services.sh $(BIN)/python -m pytest

test-slow: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m slow

bench: setup
	bash benchmarks/run_ppo_bench.sh

clean:
	rm -rf $(VENV) runs build *.egg-info
