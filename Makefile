# Two commands set everything up on a fresh clone: `make demo` and `make test` (see README.md).
PY       ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
HOME_DIR ?= .scorehouse
CUSTOMERS ?= 20000
PORT     ?= 3000
STAMP    := $(VENV)/.installed

.PHONY: demo test ui lint bench clean

# (Re)install when pyproject.toml changes. uv installs in ~15 s where pip takes ~60 s.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/pip install -q uv
	@echo "installing scorehouse and its dependencies into $(VENV) ..."
	@$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	@test -f $(HOME_DIR)/landing/customers.csv || \
		$(BIN)/scorehouse generate --customers $(CUSTOMERS) --out $(HOME_DIR)/landing
	$(BIN)/scorehouse run --source synthetic --landing $(HOME_DIR)/landing --home $(HOME_DIR)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

ui: $(STAMP)
	$(BIN)/scorehouse ui --home $(HOME_DIR) --landing $(HOME_DIR)/landing --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest_features.py

clean:
	rm -rf $(HOME_DIR)
