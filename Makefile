# Two entry points (README Quickstart): `make demo` and `make test`. Each sets up what it needs first (the demo:
# the package and ffmpeg; the tests: also the dev packages and Chromium) and is safe to run again: the venv is
# updated only when pyproject.toml changes.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: setup dev browser demo test lint

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || { \
		echo "installing Debian's ffmpeg"; \
		$$(command -v sudo) apt-get update -qq && $$(command -v sudo) apt-get install -y -qq ffmpeg; }
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q torch==2.14.1 torchvision==0.29.1
	$(VENV)/bin/pip install -q -e .
	@touch $(STAMP)

# What `make test` and `make lint` add: pytest, ruff and the test-only packages (the demo needs none of them).
dev: $(DEV_STAMP)

$(DEV_STAMP): $(STAMP)
	$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $(DEV_STAMP)

demo: setup
	$(VENV)/bin/glscl demo

# The search page's browser test needs Chromium; the demo does not.
browser:
	@command -v chromium >/dev/null || { \
		echo "installing Debian's chromium (the search page's browser test)"; \
		$$(command -v sudo) apt-get update -qq && $$(command -v sudo) apt-get install -y -qq chromium; }

test: dev browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest -q -n 2 --dist loadfile

lint: dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
