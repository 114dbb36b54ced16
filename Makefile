# Two entry points for a fresh machine:  `make demo` (the main job)  and  `make test` (the test suite).
PYTHON ?= python3
VENV   ?= .venv
# torch/torchvision pinned to the wheels this project is tested with; any torch >= 2.4 works.
TORCH  ?= torch==2.14.1 torchvision==0.29.1

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q $(TORCH)
	$(VENV)/bin/pip install -q -e ".[dev]"
	touch $@

.PHONY: install test lint demo benchmark docs docs-check
install: $(VENV)/.installed

test: $(VENV)/.installed lint
	$(VENV)/bin/python -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff format --check --quiet .
	$(VENV)/bin/ruff check --quiet .

demo: $(VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/run_demo.sh

# results go to outputs/benchmarks/; `python benchmarks/run_benchmark.py --update-results` replaces benchmarks/results/
benchmark: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/run_benchmark.py

# the documentation site, built strictly (broken links and unresolved API objects fail) into site/ (git-ignored)
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# renders the built home and API pages in headless Chromium (Debian: apt-get install chromium) to docs/images/
docs-check: docs
	bash scripts/docs_screenshots.sh site docs/images
