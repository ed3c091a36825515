# ganport: the two commands in the README are `make demo` and `make test`.
# Only Python (3.10+) and make are needed; everything else goes into virtual environments.

PYTHON ?= python3
VENV := .venv
RUNTIME_VENV := .venv-runtime
PIP_FLAGS := --disable-pip-version-check -q
OUT ?= out/demo
EDGE_PACKAGE := build/edge-package

.PHONY: demo test test-full test-edge venv runtime-venv protos bench bench-peer peer-venv gpu-check gpu-check-dry gpu-wheels examples chromium fashion-mnist clean

## Full environment: training, export, runtime, server, tests.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(VENV)/bin/pip install $(PIP_FLAGS) -c constraints.txt -e '.[cpu,train,export,dev]'
	touch $@

## Edge environment: the runtime extras only, no torch (installed from a built wheel).
$(RUNTIME_VENV)/.installed: pyproject.toml $(VENV)/.installed $(shell git ls-files ganport runtime 2>/dev/null)
	rm -rf $(RUNTIME_VENV)
	$(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(RUNTIME_VENV)/bin/pip install $(PIP_FLAGS) '.[cpu]' pytest pytest-timeout
	touch $@

venv: $(VENV)/.installed
runtime-venv: $(RUNTIME_VENV)/.installed

## The main job on built-in data: train a cGAN on glyphs, export, serve, request over gRPC, write PNGs.
# One intra-op thread: small-batch torch training on 2 cores is faster and steadier with one.
demo: venv
	OMP_NUM_THREADS=1 $(VENV)/bin/python scripts/demo.py --out $(OUT)

## The test suite: the full environment, then the torch-free edge environment.
test: test-full test-edge

test-full: venv
	$(VENV)/bin/python -m pytest -m "not slow and not gpu" -q

test-edge: venv runtime-venv
	$(VENV)/bin/python scripts/build_edge_package.py $(EDGE_PACKAGE)
	cd tests/edge && GANPORT_EDGE_PACKAGE=$(CURDIR)/$(EDGE_PACKAGE) ../../$(RUNTIME_VENV)/bin/pytest -q -p no:cacheprovider .

## Debian's chromium for the browser tests (tests/test_rest.py and tests/test_other_languages.py run
## this themselves when chromium is missing; idempotent; needs root or passwordless sudo).
chromium:
	sh scripts/ensure_chromium.sh

## Debian's Fashion-MNIST (package dataset-fashion-mnist, the original IDX files) for
## `--dataset fashion-mnist --data-root "$$(sh scripts/ensure_fashion_mnist.sh)"`; prints the folder
## (/usr/share/datasets/fashion-mnist); idempotent; needs root or passwordless sudo to install.
fashion-mnist:
	sh scripts/ensure_fashion_mnist.sh

## Regenerate the gRPC stubs in ganport/v1 from protos/.
protos: venv
	$(VENV)/bin/python scripts/gen_protos.py

## Benchmarks (see benchmarks/README.md). `bench` includes the Triton peer (`peer`), building
## its venv on first use; when the peer cannot be built or started it says why and goes on.
bench: venv runtime-venv
	$(VENV)/bin/python -m benchmarks.run

## ganport against a real Triton peer (PyTriton 0.7.0), side by side in one run.
bench-peer: venv runtime-venv
	$(VENV)/bin/python -m benchmarks.run --only peer

## The Triton peer's environment: build/peer-venv from Debian's /usr/bin/python3.11 (PyTriton 0.7.0
## fails under pyenv's 3.11.7) with benchmarks/peer-requirements.txt; cached (rebuilt when the
## requirements change). PEER_PYTHON=... picks another base interpreter.
PEER_PYTHON ?= /usr/bin/python3.11
peer-venv: venv
	$(VENV)/bin/python -m benchmarks.peer_env --python $(PEER_PYTHON)

## The GPU check (issue 17, scripts/gpu_check.py): every CUDA path in one unattended command, at
## most 8 minutes, one JSON report in $(GPU_OUT)/report.json. GPU_PYTHON: an interpreter with a CUDA
## torch and onnxruntime-gpu (.venv has the CPU torch of constraints.txt). On the lent GPU machine:
## `python3 scripts/gpu_check.py --install --out $$OUT/gpu` (benchmarks/README.md, "GPU check").
GPU_OUT ?= out/gpu-check
GPU_PYTHON ?= $(VENV)/bin/python
gpu-check: venv
	$(GPU_PYTHON) scripts/gpu_check.py --out $(GPU_OUT)

## The same steps at tiny sizes on CPU (also a test: tests/test_gpu_check.py).
gpu-check-dry: venv
	$(VENV)/bin/python scripts/gpu_check.py --device cpu --tiny --out $(GPU_OUT)

## Wheels for the GPU machine, which reaches no package index (.gpu/wheels; ORT=1 adds onnxruntime-gpu in parts).
gpu-wheels: venv
	$(VENV)/bin/python scripts/gpu_wheels.py $(if $(ORT),--ort-gpu)

## The other-language examples (docs/OTHER_LANGUAGES.md): node_modules for examples/node
## (onnxruntime-node) and examples/browser (onnxruntime-web), from their package-lock.json files.
## --ignore-scripts: onnxruntime-node's post-install step downloads CUDA binaries from outside the
## npm registry (and fails offline); the CPU binding is in the npm package itself. Cached: rebuilt
## when a lock file changes. tests/test_other_languages.py runs this when node_modules is missing.
NPM ?= npm
NPM_FLAGS := --ignore-scripts --no-audit --no-fund --loglevel=error
examples/%/node_modules/.installed: examples/%/package.json examples/%/package-lock.json
	cd examples/$* && $(NPM) ci $(NPM_FLAGS)
	touch $@

examples: examples/node/node_modules/.installed examples/browser/node_modules/.installed

clean:
	rm -rf $(VENV) $(RUNTIME_VENV) build out *.egg-info
