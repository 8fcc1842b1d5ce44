# Two commands for a newcomer: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Embedded defaults for `make run`: a secret kept under var/, SQLite and the
# SQL broker unless DATABASE_URL / CELERY_BROKER_URL say otherwise.
export DJANGO_SECRET_KEY_FILE ?= var/secret_key

.PHONY: install run test migrate worker web clean-var

install: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

var/secret_key:
	mkdir -p var
	umask 077 && $(PYTHON) -c "import secrets; print(secrets.token_urlsafe(50))" > $@

migrate: install var/secret_key
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0

run: migrate
	$(PY) manage.py create_demo_accounts --i-know-this-is-not-production
	@echo "Open http://127.0.0.1:8000 — Ctrl-C stops the web server and the worker."
	$(VENV)/bin/honcho --no-colour -f Procfile.local start

test: install
	$(PY) -m pytest

clean-var:
	rm -rf var
