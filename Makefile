# Calcrooms: `make run` serves the app, `make test` checks it. Both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
UVICORN_FLAGS := --ws-max-size 65536 --ws-per-message-deflate false --lifespan off --proxy-headers

.PHONY: install run serve test lint format imports bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.lock | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	touch $@

install: $(VENV)/.installed

run: install
	@export DJANGO_DEBUG=$${DJANGO_DEBUG:-1} PORT=$(PORT); \
	$(BIN)/python manage.py ensure_database && \
	$(BIN)/python manage.py migrate --noinput && \
	$(BIN)/python manage.py load_demo && \
	echo "Calcrooms is at http://$(HOST):$(PORT)/" && \
	exec $(BIN)/uvicorn project.asgi:application --host $(HOST) --port $(PORT) $(UVICORN_FLAGS)

test: install
	@services="$$($(BIN)/python tests/services.py)" && eval "$$services" && \
	echo "testing against $$DATABASE_URL and $$REDIS_URL (keys under $$REDIS_KEY_PREFIX)" && \
	$(BIN)/ruff check . && \
	$(BIN)/ruff format --check . && \
	$(BIN)/python -m pytest -m "not browser" && \
	$(BIN)/python -m pytest -m browser -p no:asyncio -W ignore::pytest.PytestConfigWarning

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

imports: install
	$(BIN)/python tests/import_graph.py

bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var
