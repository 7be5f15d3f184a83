# The README's two commands: `make demo` (the main job) and `make test` (the test suite).
# Each sets up what it needs first, on a fresh clone of a fresh machine.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# Root installs system packages directly; anyone else through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup test lint demo bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v pdftoppm >/dev/null || { \
		echo "installing poppler-utils (pdf2image renderer)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq poppler-utils; }
	@# The page's browser test drives Debian's chromium (Playwright cannot download its own offline).
	@command -v chromium >/dev/null || { \
		echo "installing chromium (browser test of the serve page)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# The CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

demo: setup
	HF_HUB_OFFLINE=1 $(PY) examples/offline_demo.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
