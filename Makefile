# Two commands do all the set-up on a fresh machine:
#   make fit    virtual environment, package, data, then fit configs/dropout.yaml (CONFIG=... for another)
#   make test   the same environment (with the test and export extras), then the whole test suite
# and, once those have run:
#   make test-quick   the suite without the tests marked slow (the edit loop)
#   make evaluate     test the newest run of CONFIG on its last.ckpt (the end of training, as the README reports)
#   make tensorboard  TensorBoard over lightning_logs/
#   make lint         ruff: lint rules and formatting (pyproject.toml), also run by CI
#   make distill      fit the teacher (configs/teacher.yaml), then the MLP distilled from it (configs/best.yaml)
#   make serve        serve the newest run's best checkpoint on http://127.0.0.1:8000/ (a page and an API)
# Every target runs the tools inside .venv, so nothing needs activating; for commands of your own,
# `source .venv/bin/activate` first (README, "Using it").
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/dropout.yaml
# Two workers: much of the suite waits on subprocesses and DDP start-up, so the 2 cores overlap it;
# worksteal hands an idle worker the other's queued tests, so the long ones do not end up on one.
PYTEST_ARGS ?= -n 2 --dist worksteal

.PHONY: install data fit evaluate tensorboard distill serve test test-quick lint

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,export,sweep,serve]'
	touch $@

data: install
	$(BIN)/python -m fmnist_pl.data data

fit: data
	$(BIN)/python -m fmnist_pl fit --config $(CONFIG)

evaluate: install
	$(BIN)/python -m fmnist_pl test --config $(CONFIG) --ckpt_path last

tensorboard: install
	$(BIN)/tensorboard --logdir lightning_logs

distill: data
	$(BIN)/python -m fmnist_pl fit --config configs/teacher.yaml
	$(BIN)/python -m fmnist_pl fit --config configs/best.yaml

serve: install
	$(BIN)/python -m fmnist_pl serve

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-quick: install
	$(BIN)/python -m pytest $(PYTEST_ARGS) -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
