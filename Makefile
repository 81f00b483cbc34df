# Build, test and benchmark the newknowledge companion book.
#
#   make book                 set up .venv, execute every notebook, build the HTML
#   make test                 set up .venv, check the import layers, run the test suite
#   make lint                 ruff check and ruff format --check
#   make book PROFILE=full    another parameter profile (src/newknowledge/profiles/<name>.yaml)
#   make book PROFILE=paper MODEL=/path/or/hf-id EQ_DIR=/path/to/entityquestions/dataset
#   make book PARAMS="-p ft_lr 1e-4"          extra papermill parameters
#   make notebooks NOTEBOOKS=notebooks/02_unknown_harm.ipynb   one notebook only
#
# Run `make help` for the list of targets.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
# Targets run one after the other even under `make -j`: `book` executes the
# notebooks before it builds the HTML from their executed copies.
.NOTPARALLEL:

# ---------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------
# Interpreter used only to create .venv; everything else runs inside .venv.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Set-up runs once, and again only when pyproject.toml changes.
STAMP := $(VENV)/.installed
# Pinned on its own and installed FIRST: a CPU wheel of exactly this version is
# on the build machines, whereas letting pip resolve `torch>=...` from the
# package's dependencies would download the newest CUDA build (several GB).
TORCH := torch==2.13.0

# ---------------------------------------------------------------------------
# Notebook execution
# ---------------------------------------------------------------------------
PROFILE ?= quick
# The profiles are package data, so an installed package has them too.
PROFILES_DIR := src/newknowledge/profiles
PROFILE_FILE := $(PROFILES_DIR)/$(PROFILE).yaml
MODEL ?=
EQ_DIR ?=
PARAMS ?=
NOTEBOOKS ?= $(sort $(wildcard notebooks/*.ipynb))
CHAPTERS_DIR := book/chapters
# The package anchors its paths (artifacts/, data) to its own location, so the
# notebooks run from the repository root; no --cwd is needed. Each notebook
# runs through tools/run_notebook.py (papermill's Python API, papermill's -f/-p
# options): the terminal shows the package's progress bars (pretraining steps,
# SliCK chunks, fine-tuning runs and epochs) instead of papermill's cell
# counter, cell output goes to the executed notebook, and a failing notebook
# ends with its error in one line.
NOTEBOOK_ARGS = -k python3 -f $(PROFILE_FILE) \
	$(if $(MODEL),-p model '$(MODEL)') \
	$(if $(EQ_DIR),-p eq_dir '$(EQ_DIR)') \
	$(PARAMS)

# ---------------------------------------------------------------------------
# Book build
# ---------------------------------------------------------------------------
# The configuration stays at the repository root and is passed with --config;
# the pages are resolved against the source folder (book/), so no copy of
# _config.yml is needed in book/. Two quirks of jupyter-book 1.0.4 with this
# layout: --toc must be an absolute path (a relative one is resolved against
# book/, giving book/book/_toc.yml), and --path-output must be given, or the
# output goes next to the config file (./_build) instead of book/_build.
# book/_toc.yml is written by hand and lists every chapter: tools/check_toc.py
# stops the build when a listed chapter has not been executed (or a notebook or
# executed chapter is not listed), so no chapter can silently drop out; then
# tools/fold_parameters.py folds each executed notebook's parameter cells.
# -n reports every broken reference, -W turns warnings into errors, and
# --keep-going lists them all before failing. --all starts from a fresh Sphinx
# environment, so warnings of unchanged pages are reported again.
JB_ARGS := book --config '$(CURDIR)/_config.yml' --toc '$(CURDIR)/book/_toc.yml' \
	--path-output '$(CURDIR)/book' -n -W --keep-going --all
HTML_DIR := book/_build/html

.PHONY: help setup check-profile notebooks html book test lint bench browser-test \
	readme clean clean-artifacts

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | \
		awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

setup: $(STAMP)  ## create .venv and install torch, then the package with [dev]

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo "Creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install '$(TORCH)'
	$(BIN)/python -m pip install -e '.[dev]'
	@touch $@

check-profile:
	@test -f '$(PROFILE_FILE)' || { \
		echo "error: no profile '$(PROFILE)': $(PROFILE_FILE) does not exist." >&2; \
		avail=$$(ls $(PROFILES_DIR)/*.yaml 2>/dev/null | sed -e 's|^.*/||' -e 's|\.yaml$$||' | xargs || true); \
		echo "Available profiles: $${avail:-none}. Use make book PROFILE=<name>." >&2; \
		exit 2; }

notebooks: setup check-profile  ## execute notebooks/*.ipynb into book/chapters/ (the findings page into book/)
	@mkdir -p $(CHAPTERS_DIR)
	@test -n '$(NOTEBOOKS)' || echo "No notebooks in notebooks/: nothing to execute."
	@n=0; total=$(words $(NOTEBOOKS)); for nb in $(NOTEBOOKS); do \
		n=$$((n + 1)); \
		out=$(CHAPTERS_DIR)/$$(basename "$$nb"); \
		case "$$nb" in *_findings.ipynb) out=book/findings.ipynb;; esac; \
		echo "== [$$n/$$total] $$nb -> $$out (profile $(PROFILE))"; \
		$(BIN)/python tools/run_notebook.py "$$nb" "$$out" $(NOTEBOOK_ARGS); \
	done

html: setup  ## build the HTML from the executed copies only (no execution)
	$(BIN)/python tools/check_toc.py
	$(BIN)/python tools/fold_parameters.py
	$(BIN)/jupyter-book build $(JB_ARGS)
	@echo "Book: $(HTML_DIR)/index.html"

book: notebooks html  ## execute every notebook, then build the book

test: setup  ## check the stages' layers (import-linter), then run the test suite
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

lint: setup  ## ruff: lint and formatting (ruff format fixes the formatting)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup  ## run the benchmarks (benchmarks/run_all.py)
	@test -f benchmarks/run_all.py || { echo "error: benchmarks/run_all.py does not exist yet." >&2; exit 2; }
	$(BIN)/python benchmarks/run_all.py

browser-test: setup  ## open every page of the built book in headless Chromium (Playwright)
	@test -f $(HTML_DIR)/index.html || { echo "error: $(HTML_DIR)/index.html missing; run make book (or make html) first." >&2; exit 2; }
	$(BIN)/python -m pytest tests/test_browser.py -m book --book-html '$(HTML_DIR)' -rA

readme: setup  ## write the last build's verdicts as README.md's PROFILE column (and its figure), `make bench`'s tables into book/performance.md
	$(BIN)/python tools/update_readme.py --profile $(PROFILE)

clean:  ## remove the built HTML and the executed notebooks (keeps artifacts/)
	rm -rf book/_build $(CHAPTERS_DIR) book/findings.ipynb

clean-artifacts:  ## remove cached models and runs in artifacts/
	rm -rf artifacts
