# The two commands a newcomer needs: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3000
HOST ?= 127.0.0.1
WEB_CONCURRENCY ?= 2

.PHONY: run test lint format install install-dev demo serve migrate bench-engine bench-realtime bench-faults fuzz clean check-deploy

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt requirements.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

migrate: install
	$(BIN)/python manage.py migrate --no-input

demo: migrate
	$(BIN)/python manage.py load_demo

## run: install, migrate, load the demo project and an admin account, serve on :3000
run: demo
	$(BIN)/python manage.py collectstatic --no-input --verbosity 0
	PORT=$(PORT) HOST=$(HOST) WEB_CONCURRENCY=$(WEB_CONCURRENCY) $(BIN)/python manage.py serve

## test: the whole test suite (embedded default unless DB_URL / REDIS_URL are set)
test: install-dev oidc-provider
	$(BIN)/python -m pytest

# The single sign-on tests run a real OpenID Connect provider under node, from a lock file.
OIDC_PROVIDER := tests/integrations/oidc
.PHONY: oidc-provider
oidc-provider: $(OIDC_PROVIDER)/node_modules/.installed
$(OIDC_PROVIDER)/node_modules/.installed: $(OIDC_PROVIDER)/package-lock.json
	@if command -v npm >/dev/null; then \
		cd $(OIDC_PROVIDER) && npm ci --no-audit --no-fund --silent && touch node_modules/.installed; \
	else echo "npm is missing: single sign-on tests are skipped (apt-get install -y nodejs npm)"; fi

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench-engine: install-dev
	$(BIN)/pip install --quiet -r bench/requirements.txt
	$(BIN)/python bench/engine.py

## bench-http: requests/s and p50/p99 of the evaluation endpoints under gunicorn (needs wrk)
.PHONY: bench-http
bench-http: install-dev
	@command -v wrk >/dev/null || apt-get install -y wrk >/dev/null || sudo apt-get install -y wrk
	$(BIN)/python bench/http.py

## check-deploy: validate Compose file, Dockerfile, Helm chart and ECS task (no Docker needed)
DEPLOY_TOOLS := var/deploy-tools
DCLINT_VERSION := 3.1.0

$(DEPLOY_TOOLS)/.installed: deploy/check-requirements.txt $(VENV)/.installed-dev
	rm -rf $(DEPLOY_TOOLS) && mkdir -p $(DEPLOY_TOOLS)/npm
	$(BIN)/pip install --quiet --no-deps --target $(DEPLOY_TOOLS)/python -r deploy/check-requirements.txt
	cd $(DEPLOY_TOOLS)/npm && npm pack --silent dclint@$(DCLINT_VERSION) >/dev/null \
		&& tar xzf dclint-$(DCLINT_VERSION).tgz package/schemas/compose.schema.json
	touch $@

check-deploy: install-dev $(DEPLOY_TOOLS)/.installed
	PYTHONPATH=$(DEPLOY_TOOLS)/python $(BIN)/python deploy/check.py

## bench-realtime: propagation delay across three instances, and 10,000 open streams (BENCH_STREAMS)
bench-realtime: install-dev
	@command -v wrk >/dev/null || apt-get install -y wrk >/dev/null || sudo apt-get install -y wrk
	DB_URL=$${DB_URL:-postgres://postgres@127.0.0.1:5432/flags} \
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379/0} $(BIN)/python bench/realtime.py

## bench-faults: Redis killed, PostgreSQL stopped, a worker killed, a rolling restart, under
## load on servers of its own (needs initdb, pg_ctl and redis-server)
bench-faults: install-dev
	$(BIN)/python bench/faults.py

## bench-scale: admin pages, import, export, documents and the flag list API at 100, 1,000
## and 10,000 flags (SCALE_SIZES=S,M for the first two); creates and drops its own database
.PHONY: bench-scale
bench-scale: install-dev
	DB_URL=$${DB_URL:-postgres://postgres@127.0.0.1:5432/flags_bench_scale} \
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379/0} $(BIN)/python bench/scale.py

## bench-sdk: in-process evaluation through flagclient vs the bare engine vs OFREP over HTTP
.PHONY: bench-sdk
bench-sdk: install-dev
	$(BIN)/python bench/sdk.py

## bench-statistics: how often the experiment statistics are right, over thousands of simulated runs
.PHONY: bench-statistics
bench-statistics: install-dev
	$(BIN)/python bench/statistics.py

## bench-experiments: an experiment's analysis (first, repeated and after new data) and page at 10,000 to 1,000,000 units
.PHONY: bench-experiments
bench-experiments: install-dev
	DB_URL=$${DB_URL:-postgres://postgres@127.0.0.1:5432/flags_bench_experiments} \
	$(BIN)/python bench/experiments.py

## bench-events: events accepted per second (and per core) by the server, the drain into
## PostgreSQL, and the analysis of an experiment of 1,000,000 units
.PHONY: bench-events
bench-events: install-dev
	DB_URL=$${DB_URL:-postgres://postgres@127.0.0.1:5432/flags_bench_events} \
	$(BIN)/python bench/events.py

## bench-webhooks: what subscribed webhooks cost a write; deliveries per second
.PHONY: bench-webhooks
bench-webhooks: install-dev
	$(BIN)/python bench/webhooks.py

## fuzz: schemathesis against /api/schema/ on a real server, bounded by FUZZ_EXAMPLES
$(VENV)/.installed-fuzz: requirements-fuzz.txt $(VENV)/.installed-dev
	$(BIN)/pip install --quiet -r requirements-fuzz.txt
	touch $@

fuzz: $(VENV)/.installed-fuzz
	$(BIN)/python tests/fuzz_api.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache $(OIDC_PROVIDER)/node_modules
