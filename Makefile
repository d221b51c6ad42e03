# One-line entry points. `make test` and `make demo` work from a fresh clone: they make .venv
# and install the project with pip first (torch/torchvision come from the local wheel store here).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-unit test-slow test-perturbed demo bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(BIN)/pip install -q torch torchvision
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q

test-unit: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q tests/unit

test-slow: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q -m slow

# The suite again with another global seed (initial weights, Lightning's seed) and 1, then 2, torch
# threads: a test that passes `make test` but fails here asserts one machine's training trajectory.
PERTURBED_SEEDS ?= 1
test-perturbed: $(STAMP)
	@set -e; for seed in $(PERTURBED_SEEDS); do for threads in 1 2; do \
	  echo "== make test-perturbed: global seed $$seed, $$threads torch thread(s)"; \
	  LIGHTNING_UNLEARN_TEST_SEED=$$seed LIGHTNING_UNLEARN_TEST_THREADS=$$threads OMP_WAIT_POLICY=PASSIVE \
	    $(BIN)/python -m pytest -q; \
	done; done

demo: $(STAMP)
	$(BIN)/lightning-unlearn compare --config configs/demo_side_by_side.yaml

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_synthesis.py
	$(BIN)/python benchmarks/bench_lipschitz.py

clean:
	rm -rf $(VENV) runs lightning_logs
