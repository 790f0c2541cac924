# Two entry points (README Quickstart): `make demo` and `make test`. Both set everything up first and are
# safe to run again: the venv is rebuilt only when pyproject.toml changes.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench-ingest

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || { \
		echo "installing Debian's ffmpeg"; \
		$$(command -v sudo) apt-get update -qq && $$(command -v sudo) apt-get install -y -qq ffmpeg; }
	@command -v chromium >/dev/null || { \
		echo "installing Debian's chromium (the search page's browser test)"; \
		$$(command -v sudo) apt-get update -qq && $$(command -v sudo) apt-get install -y -qq chromium; }
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q torch==2.14.1 torchvision==0.29.1
	$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/glscl demo

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest -q

lint: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
