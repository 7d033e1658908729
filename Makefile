# The two quick-start commands. Each does its own set-up on a fresh clone.
.PHONY: train test lint setup bench

setup:
	@bash scripts/setup.sh

train: setup
	.venv/bin/verydeep train --config experiments/quickstart.toml

test: setup
	.venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff format --check src tests && .venv/bin/ruff check src tests

# speed against torchvision on this machine (about 15 min on 2 busy cores); JSON kept
BENCH_DATA ?= ../shared/data/hymenoptera/val
bench: setup
	.venv/bin/verydeep bench --data $(BENCH_DATA) --save docs/bench-latest.json
