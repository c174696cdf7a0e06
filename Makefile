# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SHARED ?= ../shared/data

.PHONY: install demo test test-any-cpu lint format bench wheel clean

# exact versions from constraints.txt (pyproject.toml has ranges); torch first, on its own (CPU build)
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/infotok demo --output demo_out --overwrite

# includes tests/test_package.py: the wheel built, installed into a throwaway venv with the core
# dependencies only, and `infotok demo` run there
test: $(STAMP) lint
	$(BIN)/python -m pytest

# the whole suite as machines unlike this one run it: other CPUs' float kernels (torch's portable `default` ones and
# AVX2's) and one thread; each run takes about as long as `make test` (x1.5 on one thread). A test that passes here
# only by this CPU's rounding fails in one of them (session 32 found one).
test-any-cpu: $(STAMP)
	ATEN_CPU_CAPABILITY=default $(BIN)/python -m pytest -q
	ATEN_CPU_CAPABILITY=avx2 $(BIN)/python -m pytest -q
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

# ruff, configured in pyproject.toml (line length 120); `make format` rewrites, `make lint` only checks
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

format: $(STAMP)
	$(BIN)/ruff check --fix src tests benchmarks scripts
	$(BIN)/ruff format src tests benchmarks scripts

# LPIPS/FVD columns only with local weights: make bench LPIPS_WEIGHTS=alexnet.pth FVD_WEIGHTS=i3d_torchscript.pt
bench: $(STAMP)
	$(BIN)/python -m benchmarks --videos $(SHARED)/videos --out bench_out --markdown BENCHMARKS.md \
	  $(if $(LPIPS_WEIGHTS),--lpips-weights $(LPIPS_WEIGHTS)) $(if $(FVD_WEIGHTS),--fvd-weights $(FVD_WEIGHTS))
	$(BIN)/python -m benchmarks.layout1d --videos $(SHARED)/videos --vmaf
	$(BIN)/python -m benchmarks.long_videos --videos $(SHARED)/videos
	$(BIN)/python -m benchmarks.prior --videos $(SHARED)/videos

# the package as users get it
wheel: $(STAMP)
	$(BIN)/pip wheel --quiet --no-deps --no-cache-dir -w dist .

clean:
	rm -rf demo_out bench_out .pytest_cache build dist
