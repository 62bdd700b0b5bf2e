# The two commands of the README: `make demo` and `make test`. Both set everything up themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint bench clean pg tools browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

## A real batch on the embedded SQLite store: 1,000 items, 8 at a time, with a progress bar.
## Interrupt it (Ctrl-C, or kill -9) and run `make demo` again: it resumes where it stopped.
demo: $(STAMP)
	$(BIN)/batchyard run examples/demo/items.txt --processor sleep --param ms=40 --parallel 8 \
		--store .batchyard/demo.db --output .batchyard/demo-results.json

test: $(DEV_STAMP) pg tools browser
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/lint-imports
	$(BIN)/pytest -n auto

## PostgreSQL for the PostgreSQL store's tests, started if it is installed but not running. Without it
## those tests skip (and fail under CI, which must run them).
pg:
	@pg_isready -h 127.0.0.1 -q 2>/dev/null || { command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ] \
		&& pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start; } || \
		echo "PostgreSQL is not available: its store's tests will skip (and fail under CI)"

## ffmpeg, jq and curl, which the examples' tests use (audio-sync reads .mov/.mp4 through ffmpeg; seed 004's own
## curl + jq workflow runs against its adapter). Installed with apt-get when missing; without them those
## tests skip (and fail under CI).
tools:
	@command -v ffmpeg >/dev/null && command -v jq >/dev/null && command -v curl >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg jq curl >/dev/null; } || \
		echo "ffmpeg, jq or curl could not be installed: the tests that need them will skip (and fail under CI)"

## Debian's Chromium for the dashboard's browser tests (Playwright drives it; its own browser downloads are
## never used). Installed with apt-get when missing; without it those tests skip (and fail under CI).
browser:
	@test -x /usr/bin/chromium || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "Chromium could not be installed: the browser tests will skip (and fail under CI)"

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) .batchyard .pytest_cache
