# The two commands a newcomer runs: `make demo` and `make test`.
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3
NODE_TOOLS := tests/integration/gateway/node
JSON_SERVER := $(NODE_TOOLS)/node_modules/.bin/json-server

.PHONY: setup demo test lint test-tools chromium bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/proctor demo

lint: setup
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

# What the tests need beyond Python packages: json-server from npm, as a real REST
# upstream, and Debian's Chromium for the browser tests.
$(JSON_SERVER): $(NODE_TOOLS)/package-lock.json
	npm ci --prefix $(NODE_TOOLS) --no-audit --no-fund --loglevel=error
	touch $@

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

test-tools: $(JSON_SERVER) chromium

test: lint test-tools
	$(BIN)/pytest --cov --cov-report=term

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(NODE_TOOLS)/node_modules .pytest_cache .mypy_cache .ruff_cache .coverage
