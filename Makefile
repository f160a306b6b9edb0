# callbridge — one command surface for people and CI.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint unit bench bench-smoke serve soak clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## demo: the whole product on this machine, with the sandbox (no accounts needed)
demo: $(STAMP)
	$(BIN)/callbridge demo

## serve: production server (needs Twilio and ElevenLabs settings)
serve: $(STAMP)
	$(BIN)/callbridge serve

## lint: ruff (check and format, src tests benchmarks), mypy --strict on src/ and the import contracts
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

## test: install, lint, run the whole suite (SQLite, PostgreSQL, Redis, Chromium)
test: lint
	$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

## bench: the benchmark, three alternating rounds (medians); prints a table and writes bench-results.json
## (BENCH_ARGS="--roles --profile-memory" for the split roles and the memory profile)
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/callbridge bench --repeat 3 --json bench-results.json $(BENCH_ARGS)

## soak: a compressed day on two servers behind nginx with faults; invariants (needs
## nginx, PostgreSQL and redis-server); prints a summary and writes soak-results.json
soak: $(STAMP)
	$(BIN)/callbridge soak --json soak-results.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache bench-results.json soak-results.json
