# One-line entry points. `make test` and `make demo` work from a fresh clone: they make .venv
# and install the project with pip first (torch/torchvision come from the local wheel store here).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-unit test-slow test-perturbed demo bench clean

$(STAMP): pyproject.toml
	@# The venv (torch with its CUDA wheels) takes about 6 GiB: say so before pip fails half-way.
	@$(PY) -c 'import shutil, sys; free = shutil.disk_usage(".").free / 2**30; free < 8 and print(f"make: warning: {free:.1f} GiB free on this disk; .venv needs about 6 GiB (torch and its CUDA wheels)", file=sys.stderr)'
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
	@failed=""; for seed in $(PERTURBED_SEEDS); do for threads in 1 2; do \
	  echo "== make test-perturbed: global seed $$seed, $$threads torch thread(s)"; \
	  LIGHTNING_UNLEARN_TEST_SEED=$$seed LIGHTNING_UNLEARN_TEST_THREADS=$$threads OMP_WAIT_POLICY=PASSIVE \
	    $(BIN)/python -m pytest -q || failed="$$failed seed=$$seed/threads=$$threads"; \
	done; done; \
	if [ -n "$$failed" ]; then echo "make test-perturbed: failed for$$failed"; exit 1; fi

# On x86-64 CPUs with AVX2, pin torch's, oneDNN's and MKL's kernels to AVX2 for the demo (the
# demo CLIP's pretraining included): an AVX-512 machine then runs the kernels an AVX2 machine runs,
# which removes one source of different weights across CPUs at no cost on AVX2 machines
# (docs/demo_world.md, "Across machines"). Elsewhere nothing is set.
DEMO_ENV := $(shell grep -qw avx2 /proc/cpuinfo 2>/dev/null && echo ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2)

demo: $(STAMP)
	$(DEMO_ENV) $(BIN)/lightning-unlearn compare --config configs/demo_side_by_side.yaml

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_synthesis.py
	$(BIN)/python benchmarks/bench_lipschitz.py

clean:
	rm -rf $(VENV) runs lightning_logs
