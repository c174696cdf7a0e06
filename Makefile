# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SHARED ?= ../shared/data

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/infotok demo --output demo_out --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest

# LPIPS/FVD columns only with local weights: make bench LPIPS_WEIGHTS=alexnet.pth FVD_WEIGHTS=i3d_torchscript.pt
bench: $(STAMP)
	$(BIN)/python -m infotok.bench --videos $(SHARED)/videos --out bench_out --markdown BENCHMARKS.md \
	  $(if $(LPIPS_WEIGHTS),--lpips-weights $(LPIPS_WEIGHTS)) $(if $(FVD_WEIGHTS),--fvd-weights $(FVD_WEIGHTS))

clean:
	rm -rf demo_out bench_out .pytest_cache
