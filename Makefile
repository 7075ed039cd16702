# Run `make` or `make help` to list the targets.
#
# Environment: with a virtual or conda environment active (VIRTUAL_ENV or CONDA_PREFIX set), every target
# uses it and installs into it. Otherwise the first target that needs packages creates .venv/ here (with uv
# when it is on the PATH, else with `$(PYTHON) -m venv` and pip), installs requirements.txt into it, and every
# later target runs .venv/bin/python. USE_VENV=0 uses $(PYTHON) as it is instead (for a machine whose Python
# already holds the pinned set).
PYTHON ?= python3
VENV ?= .venv
# The cell timeout guards against a hung kernel only: on a busy machine notebook 3's training cell alone can take 10 min.
PYTEST_NOTEBOOKS = --nbval-lax --nbval-current-env --nbval-cell-timeout=1800
# Two workers (pytest-xdist): each test file, and the notebooks in order, stay on one worker (conftest.py); on
# 2 cores the whole of `make test` took 0.66 of its serial time (docs/contributing.md). PYTEST_WORKERS=0 runs serially.
PYTEST_WORKERS ?= 2
PYTEST_PARALLEL = $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadgroup)
.DEFAULT_GOAL := help
# PRESET and SEED from make's command line reach the programs through the environment, never as shell text or as
# make code, so a value holding `;`, a space or `$(...)` is passed whole to the program that checks it.
unexport PRESET SEED
export MAKE_PRESET := $(value PRESET)
export MAKE_SEED := $(value SEED)

USE_VENV ?= 1
ACTIVE_ENV := $(or $(VIRTUAL_ENV),$(CONDA_PREFIX))
ifneq ($(ACTIVE_ENV),)
  # An environment the user activated: its python, and a stamp inside it.
  PY := python
  ENV_DIR := $(ACTIVE_ENV)
else ifeq ($(USE_VENV),0)
  PY := $(PYTHON)
  ENV_DIR := build
  ACTIVE_ENV := $(shell $(PYTHON) -c 'import sys; print(sys.prefix)')
else
  PY := $(VENV)/bin/python
  ENV_DIR := $(VENV)
endif
# Re-install only when the pinned set or the package's metadata changed since the last install into ENV_DIR.
STAMP := $(ENV_DIR)/.mnist-cnn-requirements.stamp
# USE_UV=0 forces pip; uv does not read pip's configuration (find-links, local indexes).
USE_UV ?= $(if $(shell command -v uv 2>/dev/null),1,0)

.PHONY: help venv install setup-git data run train evaluate test unit notebooks execute-notebooks executed-notebooks \
        check-notebooks study docs lint format benchmark ladder design-space ablation sweep notebook-timing clean distclean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-19s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  environment: $(if $(ACTIVE_ENV),the active one ($(ACTIVE_ENV)),$(VENV)/ (created on first use))"

$(VENV)/bin/python:
	@echo "creating $(VENV)/ (no virtual or conda environment is active)"
ifeq ($(USE_UV),1)
	uv venv --python $(PYTHON) $(VENV)
else
	@$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	    echo "error: '$(PYTHON) -m venv' failed; on Debian or Ubuntu install it with: sudo apt-get install python3-venv" >&2; \
	    exit 1; }
endif

$(STAMP): requirements.txt pyproject.toml $(if $(ACTIVE_ENV),,$(VENV)/bin/python)
	@mkdir -p $(ENV_DIR)
ifeq ($(USE_UV),1)
	uv pip install --python $(PY) -r requirements.txt
else
	$(PY) -m pip install -q -r requirements.txt
endif
	@touch $@

venv: $(STAMP) ## Create .venv/ (unless an environment is active) and install the pinned requirements
install: $(STAMP) ## Same as venv: install requirements.txt (and this package, editable) once per change

setup-git: install ## This clone: notebook diffs and merges cell by cell in git (nbdime), pre-commit hooks
	$(PY) -m nbdime config-git --enable
	@# nbdime names its drivers as bare commands; give git their full path so they work without activating .venv
	@scripts="$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("scripts"))')" && \
	    git config diff.jupyternotebook.command "$$scripts/git-nbdiffdriver diff" && \
	    git config merge.jupyternotebook.driver "$$scripts/git-nbmergedriver merge %O %A %B %L %P" && \
	    git config difftool.nbdime.cmd "$$scripts/git-nbdifftool diff \"\$$LOCAL\" \"\$$REMOTE\" \"\$$BASE\"" && \
	    git config mergetool.nbdime.cmd "$$scripts/git-nbmergetool merge \"\$$BASE\" \"\$$LOCAL\" \"\$$REMOTE\" \"\$$MERGED\""
	$(PY) -m pre_commit install
	@echo "git diff and git show now show notebooks cell by cell (git difftool --tool=nbdime: in a browser)"

data: install ## Download the MNIST files if missing (to MNIST_DATA_DIR, else data/) and check their MD5s
	$(PY) -m mnist_cnn.download

run: install train evaluate ## Set up, train the default preset, and write reports/ (figures and metrics)

train: install ## Train the default preset into models/default/ (PRESET=fast|best|seed; TRAIN_ARGS=--overwrite to train again)
	$(PY) -m mnist_cnn.train --preset "$${MAKE_PRESET:-default}" $(TRAIN_ARGS)

evaluate: install ## Evaluate models/<preset>/model.pt and write reports/
	$(PY) -m mnist_cnn.evaluate --checkpoint "models/$${MAKE_PRESET:-default}/model.pt" --out reports

test: install ## Set up, then run the unit tests and execute every notebook (nbval)
	$(PY) -m pytest $(PYTEST_PARALLEL) $(PYTEST_NOTEBOOKS) tests notebooks

unit: install ## Unit tests only, without the slow end-to-end and browser tests (make test runs those)
	$(PY) -m pytest $(PYTEST_PARALLEL) -m "not slow" tests

notebooks: install ## Execute the notebooks only
	$(PY) -m pytest $(PYTEST_NOTEBOOKS) notebooks

execute-notebooks: install ## Re-run every notebook top to bottom and save its outputs (the form they are committed in)
	$(PY) -m jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=600 notebooks/*.ipynb

executed-notebooks: install ## Execute copies of the notebooks into build/test-artifacts/notebooks/ (CI keeps them)
	$(PY) -m jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=600 \
	    --output-dir build/test-artifacts/notebooks notebooks/*.ipynb

check-notebooks: install ## The notebooks' committed form: one clean run, counts 1, 2, 3, no errors (a pre-commit hook)
	$(PY) -m pytest -q -p no:cacheprovider tests/test_notebooks.py

# make study PRESET=fast SEED=3: every notebook again with other parameters (papermill fills each notebook's
# `parameters` cell), into build/study/<PRESET>/ with the models and reports it trains; the committed notebooks and
# models/ are left as they are. The values reach the program through the environment, never as shell text, and are
# checked there before anything runs; the folder is replaced only when every notebook ran (tooling/cli/build.py).
study: install ## Run the whole study with other parameters into build/study/<PRESET>/ (PRESET=fast, SEED=3; several minutes)
	$(PY) -m mnist_cnn.tooling.cli.build study --preset "$${MAKE_PRESET:-default}" $${MAKE_SEED:+--seed "$$MAKE_SEED"}

docs: install ## Build the documentation site into build/site/ (README, docs/, the notebooks as committed, API reference)
	$(PY) -m mnist_cnn.tooling.cli.build docs

lint: install ## ruff: lint and format check of the code and the notebooks (what pre-commit runs)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install ## ruff: fix what can be fixed and reformat the code and the notebooks
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

benchmark: install ## The presets against the seed and public recipes, the contended case, and the frontier figure (22 min on 2 cores without best)
	$(PY) benchmarks/benchmark.py
	$(PY) benchmarks/frontier.py

ladder: install ## The fast-training ladder: each technique's step on validation, 5 seeds for fast, 3 for default (about 50 min on 2 cores)
	$(PY) benchmarks/ladder.py --family fast --seeds 5 --out benchmarks/ladder_fast.json
	$(PY) benchmarks/ladder.py --family default --seeds 3 --out benchmarks/ladder_default.json
	$(PY) benchmarks/frontier.py

design-space: install ## VGG layouts by cost (stem, widths, convolutions per block, epochs) on validation, 3 seeds (about 30 min on 2 cores)
	$(PY) benchmarks/design_space.py
	$(PY) benchmarks/frontier.py

sweep: install ## Recipe candidates ranked on the validation split (hours on 2 cores; minutes with --device cuda --jobs 14)
	$(PY) benchmarks/recipe_sweep.py

notebook-timing: install ## Notebook 3 run in JupyterLab in Chromium and from the terminal (about 5 min; needs Chromium)
	$(PY) benchmarks/notebook_timing.py

ablation: install ## What each speed-up buys per training step, and a profile (a few minutes; writes benchmarks/ablation.json)
	$(PY) benchmarks/ablation.py

clean: ## Remove generated models, reports and test artefacts (keeps .venv/ and data/)
	rm -rf models reports build .pytest_cache .ruff_cache

distclean: clean ## Also remove .venv/ (the next target re-creates it)
	rm -rf $(VENV)
