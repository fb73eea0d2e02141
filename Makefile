# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Torch is installed first, pinned through TORCH_SPEC (default: the CPU wheel 2.13.0); for a
# CUDA machine, e.g.  make demo TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
NNUNET_NODEPS ?= dynamic-network-architectures==0.4.4 nnunetv2==2.8.1
BIN := $(VENV)/bin
# pytest-xdist workers for `make test`: most tests wait on Ray, servers or sub-processes, so two
# workers on two cores halve the suite's time (tests/conftest.py groups them by file; 1: no xdist)
TEST_WORKERS ?= 2
STAMP := $(VENV)/.geoseg-installed
# The vision extra (model.type smp, torchgeo) in a venv of its own: segmentation_models_pytorch,
# timm and TorchGeo need torchvision, which loads only beside its matching torch; the core venv
# keeps the lean CPU torch without it. This pair installs from the machine's wheels.
VISION_VENV ?= .venv-vision
VISION_TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
VISION_BIN := $(VISION_VENV)/bin
VISION_STAMP := $(VISION_VENV)/.geoseg-installed

.PHONY: install install-vision demo test test-fast test-vision lint bench clean system-deps

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	# keep that torch: without the constraint pip may swap it for the newest build (GBs of CUDA)
	$(BIN)/python -m pip freeze | grep -E '^torch==' > $(VENV)/torch-constraint.txt
	$(BIN)/python -m pip install --quiet -c $(VENV)/torch-constraint.txt -e ".[dev]"
	# nnU-Net: the network library and the reference predictor without their timm/torchvision
	# (torchvision 0.28.0 does not load beside torch 2.13.0+cpu; only Primus/EVA networks need it)
	$(BIN)/python -m pip install --quiet --no-deps $(NNUNET_NODEPS)
	touch $(STAMP)

install: $(STAMP)

$(VISION_STAMP): pyproject.toml Makefile
	test -x $(VISION_BIN)/python || $(PYTHON) -m venv $(VISION_VENV)
	$(VISION_BIN)/python -m pip install --quiet $(VISION_TORCH_SPEC)
	# keep that pair: torchvision only imports beside the torch it was built for (dicom: the api imports pydicom)
	$(VISION_BIN)/python -m pip freeze | grep -E '^(torch|torchvision)==' > $(VISION_VENV)/torch-constraint.txt
	$(VISION_BIN)/python -m pip install --quiet -c $(VISION_VENV)/torch-constraint.txt -e ".[vision,dicom]" "pytest>=8"
	touch $(VISION_STAMP)

## The vision extra's venv (.venv-vision): torch and torchvision of VISION_TORCH_SPEC, smp, timm, TorchGeo
install-vision: $(VISION_STAMP)

## Run the land-cover demo: a local Ray, the built-in model, generated scenes -> demo-output/
demo: $(STAMP)
	$(BIN)/geoseg demo landcover --out demo-output

## Debian packages the tests need (Orthanc with its DICOMweb plugin): installed when missing
system-deps:
	bash scripts/system-deps.sh

## Lint, type-check and run the whole test suite (Ray tests included), then the vision extra's tests
## in .venv-vision. That venv is built (from the machine's wheels: mostly unpacking) while the core
## suite runs, in the background at the lowest priority, so that CI pays little for it; its log:
## .venv-vision.log
test: $(STAMP) system-deps
	$(BIN)/ruff check geoseg_pipeline tests benchmarks scripts
	$(BIN)/mypy geoseg_pipeline
	$(BIN)/lint-imports
	@nice -n 19 $(MAKE) --no-print-directory install-vision > $(VISION_VENV).log 2>&1 & vision=$$!; \
	$(BIN)/python -m pytest -p no:cacheprovider $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile); status=$$?; \
	if ! wait $$vision; then echo "make install-vision failed:"; cat $(VISION_VENV).log; exit 1; fi; \
	if [ $$status -ne 0 ]; then exit $$status; fi; \
	$(VISION_BIN)/python -m pytest -p no:cacheprovider tests/vision

## The tests of the vision extra (tests/vision), in .venv-vision
test-vision: $(VISION_STAMP)
	$(VISION_BIN)/python -m pytest -p no:cacheprovider tests/vision

## Tests without the slow ones
test-fast: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -m "not slow"

## ruff, mypy, and the import layers of docs/architecture.md (import-linter, pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check geoseg_pipeline tests benchmarks scripts
	$(BIN)/mypy geoseg_pipeline
	$(BIN)/lint-imports

## The side-by-side performance benchmark (see benchmarks/README.md)
bench: $(STAMP)
	$(BIN)/python benchmarks/landcover_bench.py

clean:
	rm -rf demo-output bench-output .pytest_cache .mypy_cache .ruff_cache
