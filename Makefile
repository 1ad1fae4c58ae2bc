# Two commands set everything up on a fresh clone: `make demo` and `make test` (see README.md).
PY       ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
HOME_DIR ?= .scorehouse
CUSTOMERS ?= 20000
PORT     ?= 3000
STAMP    := $(VENV)/.installed

.PHONY: demo test ui lint bench clean lock bytecode postgres

# (Re)install when the dependencies change: the exact versions of requirements.lock (what CI tested), then
# scorehouse itself. uv installs in ~15 s where pip takes ~60 s. Bytecode is compiled at install: where
# PYTHONDONTWRITEBYTECODE is set (this machine's environment), every process would otherwise compile every module
# it imports from source again, seconds of CPU per `scorehouse` command.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/pip install -q uv
	@echo "installing scorehouse and its dependencies (requirements.lock) into $(VENV) ..."
	@$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -r requirements.lock
	@$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

# The project's own modules, compiled like the dependencies (only the changed ones are rewritten).
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q orchestration assets ml quality warehouse

# After changing the dependencies in pyproject.toml: pin them (and everything they pull in) again.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -q -o requirements.lock

demo: bytecode
	@test -f $(HOME_DIR)/landing/customers.csv || \
		$(BIN)/scorehouse generate --customers $(CUSTOMERS) --fraud-rate 0.02 --manager-effect 1 --out $(HOME_DIR)/landing
	$(BIN)/scorehouse run --source synthetic --landing $(HOME_DIR)/landing --home $(HOME_DIR)

# Three workers on this 2-core machine, a test module each at a time (module fixtures stay in one process): most of
# a test's time is one-threaded Python, and a worker waits while its CLI run, webserver or PostgreSQL works; with two
# workers the cores stood idle ~6% of the suite, with three ~1.5% (benchmarks/RESULTS.md). Modules in the order
# tests/conftest.py gives them (the longest first), not xdist's (the most tests first).
test: bytecode postgres
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 3 --dist loadfile --no-loadscope-reorder

# The iceberg backend's tests start a PostgreSQL server of their own (tests/postgres.py): Debian's package is
# installed where it is missing (as root, else through sudo).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { \
		echo "installing PostgreSQL (Debian's postgresql package) for the iceberg backend's tests ..."; \
		sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$sudo apt-get install -y -q postgresql >/dev/null || \
		{ $$sudo apt-get update -q >/dev/null && $$sudo apt-get install -y -q postgresql >/dev/null; }; }

ui: bytecode
	$(BIN)/scorehouse ui --home $(HOME_DIR) --landing $(HOME_DIR)/landing --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest_features.py

clean:
	rm -rf $(HOME_DIR)
