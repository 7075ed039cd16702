# Run `make` or `make help` to list the targets.
PYTHON ?= python3
PYTEST_NOTEBOOKS = --nbval-lax --nbval-current-env --nbval-cell-timeout=600
.DEFAULT_GOAL := help

.PHONY: help install run train evaluate test unit notebooks execute-notebooks benchmark ablation clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-11s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: ## Install the pinned dependencies and this package (editable)
	$(PYTHON) -m pip install -q -r requirements.txt

run: install train evaluate ## Set up, train the default preset, and write reports/ (figures and metrics)

train: ## Train the default preset into models/default/ (PRESET=fast|best|seed to change)
	$(PYTHON) -m mnist_cnn.train --preset $(or $(PRESET),default)

evaluate: ## Evaluate models/<preset>/model.pt and write reports/
	$(PYTHON) -m mnist_cnn.evaluate --checkpoint models/$(or $(PRESET),default)/model.pt --out reports

test: install ## Set up, then run the unit tests and execute every notebook (nbval)
	$(PYTHON) -m pytest $(PYTEST_NOTEBOOKS) tests notebooks

unit: ## Unit tests only (no install)
	$(PYTHON) -m pytest tests

notebooks: ## Execute the notebooks only (no install)
	$(PYTHON) -m pytest $(PYTEST_NOTEBOOKS) notebooks

execute-notebooks: ## Re-run every notebook top to bottom and save its outputs (the form they are committed in)
	$(PYTHON) -m jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=600 notebooks/*.ipynb

benchmark: ## Time the seed and public recipes against each preset (about 25 min; writes benchmarks/results.json)
	$(PYTHON) benchmarks/benchmark.py

ablation: ## What each speed-up buys per training step, and a profile (a few minutes; writes benchmarks/ablation.json)
	$(PYTHON) benchmarks/ablation.py

clean: ## Remove generated models, reports and test artefacts
	rm -rf models reports build .pytest_cache
