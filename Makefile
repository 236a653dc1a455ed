# relay — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench soak clean tools

# node runs the ConsentProof guide's own verification code unchanged (tests/support/verify-webhook.mjs);
# node and go run README's signature verification snippets (tests/integration/test_readme_snippets.py);
# tests/support/postgres.py starts a private PostgreSQL server from /usr/lib/postgresql/*/bin (the server's
# binaries: a psql client alone does not count); tests/support/browser.py drives Debian's chromium through
# Playwright for the dashboard's browser tests (tests/integration/test_ui_browser.py): Playwright's own browser
# download is not used, and it needs no chromium-driver.
tools:
	@command -v node >/dev/null 2>&1 || { \
		echo "installing nodejs (for the seed's signature verifier)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs >/dev/null; }
	@command -v go >/dev/null 2>&1 || { \
		echo "installing golang-go (for README's Go verification snippet)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null; }
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { \
		echo "installing postgresql (the server tests/support/postgres.py starts for the PostgreSQL tests)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
	@test -x /usr/bin/chromium || { \
		echo "installing chromium (the headless browser the dashboard's tests drive)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The distribution was called "relay" before relay-webhooks: a .venv made then drops it first (same package, same command).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip uninstall --quiet --yes relay 2>/dev/null || true
	$(BIN)/pip install --quiet -e '.[dev,uvloop]'
	touch $(STAMP)

run: $(STAMP)
	mkdir -p var
	$(BIN)/relay serve --config config/dev.toml

test: $(STAMP) tools
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check relay tests
	$(BIN)/ruff format --check relay tests
	$(BIN)/mypy --strict relay

# wrk is the load generator where the distribution has it; without it the bench falls back to an aiohttp client.
# BENCH_ARGS=--profile adds runs with py-spy attached to relay (needs py-spy in .venv); --profile-only: just those.
bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { \
		echo "installing wrk (the bench's load generator)"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; } \
			|| echo "wrk not installed: using the aiohttp load generator"; }
	mkdir -p var/bench
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

soak: $(STAMP) tools
	$(BIN)/pytest -q -m soak -o addopts=''

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
