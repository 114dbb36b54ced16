# Two entry points for a fresh machine:  `make demo` (the main job)  and  `make test` (the test suite).
PYTHON ?= python3
VENV   ?= .venv
# torch/torchvision pinned to the wheels this project is tested with (setup.cfg's torch floor).
TORCH  ?= torch==2.14.1 torchvision==0.29.1

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q $(TORCH)
	$(VENV)/bin/pip install -q -e ".[dev]"
	touch $@

.PHONY: install test test-oldest lint demo benchmark docs docs-check
install: $(VENV)/.installed

test: $(VENV)/.installed lint
	$(VENV)/bin/python -m pytest -q

# The oldest transformers setup.cfg accepts, installed on its own into .oldest/ (ahead of the venv's on
# PYTHONPATH), running the model, pipeline, backbone, remote-code and image-decoding tests.
OLDEST_TRANSFORMERS = $(shell sed -n 's/^ *transformers>=\([0-9.]*\),.*/\1/p' setup.cfg)
OLDEST_TESTS = tests/test_modeling.py tests/test_auto_remote_pipeline.py tests/test_backbone_segmentation.py \
	tests/test_image_processing.py tests/test_reliability_inputs.py
test-oldest: $(VENV)/.installed
	test -n "$(OLDEST_TRANSFORMERS)"
	test -d .oldest/transformers-$(OLDEST_TRANSFORMERS) || $(VENV)/bin/pip install -q --no-deps \
		--target .oldest/transformers-$(OLDEST_TRANSFORMERS) transformers==$(OLDEST_TRANSFORMERS)
	PYTHONPATH="$(CURDIR):$(CURDIR)/.oldest/transformers-$(OLDEST_TRANSFORMERS)" $(VENV)/bin/python -c \
		"import transformers as t; assert t.__version__ == '$(OLDEST_TRANSFORMERS)', t.__version__; print('transformers', t.__version__, t.__file__)"
	PYTHONPATH="$(CURDIR):$(CURDIR)/.oldest/transformers-$(OLDEST_TRANSFORMERS)" $(VENV)/bin/python -m pytest -q \
		-p no:cacheprovider $(OLDEST_TESTS)

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
