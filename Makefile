# The two quick-start commands. Each does its own set-up on a fresh clone.
.PHONY: train test lint setup

setup:
	@bash scripts/setup.sh

train: setup
	.venv/bin/verydeep train --config experiments/quickstart.toml

test: setup
	.venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff format --check src tests && .venv/bin/ruff check src tests
