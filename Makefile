# The two commands of the README's quick start: `make demo` and `make test`.
# Each creates .venv and installs what it needs, so a fresh Debian machine
# with Python 3.11 only needs `make`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_DIR := .cache/node
MPY_PKG := @micropython/micropython-webassembly-pyscript@1.27.0

.PHONY: demo test check lint typecheck bench venv sysdeps mpy clean

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || PY=python3; $${PY:-$(PY)} -m venv $(VENV) 2>/dev/null || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[all,dev]'
	touch $(STAMP)

# Test-only oracles (independent protocol implementations, some GPL): installed
# for the tests, never declared as dependencies of the package.
ORACLES := $(VENV)/.oracles
$(ORACLES): tests/oracles.txt $(STAMP)
	$(BIN)/pip install -q -r tests/oracles.txt
	touch $(ORACLES)

venv: $(STAMP)

# System packages the tests need (installed only when running as root and missing).
sysdeps:
	@bash scripts/sysdeps.sh

# The official MicroPython WebAssembly port, run under the machine's Node.js.
$(NODE_DIR)/node_modules/@micropython/micropython-webassembly-pyscript/micropython.mjs:
	mkdir -p $(NODE_DIR)
	cd $(NODE_DIR) && npm install --no-audit --no-fund --silent $(MPY_PKG)

mpy: $(NODE_DIR)/node_modules/@micropython/micropython-webassembly-pyscript/micropython.mjs

demo: $(STAMP)
	$(BIN)/wum demo

test: $(STAMP) $(ORACLES) sysdeps mpy
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy agent hes_lite drivers mesh hil firmware

check: lint typecheck test

bench: $(STAMP)
	@set -e; for f in bench/[a-z]*.py; do echo "# $$f" >&2; $(BIN)/python $$f; done

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
