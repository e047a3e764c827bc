# Two commands: `make run` (install, migrate, demo data, web server + worker) and `make test`.
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install run test test-faults lint format bench

# Waits (up to a minute) until the web server answers, so the worker's first calls to the sandbox APIs land.
define WAIT_FOR_WEB
import time, urllib.request
for _ in range(120):
    try:
        urllib.request.urlopen("http://127.0.0.1:8000/login/", timeout=2)
        break
    except OSError:
        time.sleep(0.5)
endef
export WAIT_FOR_WEB

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PYTHON) manage.py migrate --noinput
	$(PYTHON) manage.py demo
	@echo ""
	@echo "Resync is starting on http://127.0.0.1:8000/  (admin: http://127.0.0.1:8000/admin/)"
	@echo "Log in as demo / resync-demo. Ctrl-C stops the web server and the worker."
	@echo ""
	@# The web server first: the demo's sandbox systems are APIs it serves, which the worker calls over HTTP.
	@bash -c '$(PYTHON) manage.py runserver 127.0.0.1:8000 --noreload & web=$$!; \
		trap "kill -TERM $$web $$worker 2>/dev/null; wait" INT TERM EXIT; \
		$(PYTHON) -c "$$WAIT_FOR_WEB" && \
		$(PYTHON) manage.py sync --org demo && \
		{ $(PYTHON) manage.py qcluster & worker=$$!; wait -n; }'

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -n 2 $(PYTEST_ARGS)

# The long fault-injection scenarios (PostgreSQL, real workers): set DATABASE_URL to a PostgreSQL server.
test-faults: install
	$(VENV)/bin/pytest -m slow $(PYTEST_ARGS)

# The benchmarks of bench/ (PostgreSQL at BENCH_DATABASE_URL or 127.0.0.1:5432), each in its own process, then one
# table of their figures against their targets; exits non-zero only when a bench crashed.
bench: install
	$(PYTHON) bench/run.py

lint: install
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format .
