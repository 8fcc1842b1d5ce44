# Two commands for a newcomer: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# `make run` uses the embedded defaults (a secret generated into var/secret_key,
# SQLite and the SQL broker under var/) unless DATABASE_URL, CELERY_BROKER_URL
# or DJANGO_SECRET_KEY say otherwise.

CHROMIUM ?= /usr/bin/chromium

.PHONY: install run test test-fast lint chaos migrate browser clean-var messages

install: $(STAMP)

$(STAMP): requirements.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
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

# Tests talk to real peers from Debian: Chromium (browser tests), nginx (proxy
# test with webapp/deploy/nginx.conf), DCMTK (storescu, echoscu, dsrdump) and
# Orthanc (a PACS) for the DICOM tests. Installed when missing and we are root
# (as in CI); otherwise those tests are skipped with a loud reason.
NGINX ?= /usr/sbin/nginx
STORESCU ?= /usr/bin/storescu
ORTHANC ?= /usr/sbin/Orthanc

browser:
	@missing=""; [ -x "$(CHROMIUM)" ] || missing="chromium"; [ -x "$(NGINX)" ] || missing="$$missing nginx-light"; \
	[ -x "$(STORESCU)" ] || missing="$$missing dcmtk"; [ -x "$(ORTHANC)" ] || missing="$$missing orthanc"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Debian's$$missing for the browser, proxy and DICOM tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "WARNING: missing$$missing and not root: browser/proxy/DICOM tests will be skipped"; fi; \
	fi

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

test: lint browser
	$(PY) -m pytest

# Everything that starts no process, browser, PACS or proxy: a few minutes, for the edit-test loop.
test-fast: install
	$(PY) -m pytest -m "not e2e"

# Faults on the production shape (own PostgreSQL and Redis on private ports): a few minutes.
chaos: install
	$(PY) -m bench.chaos

# Refresh the interface's translation catalogues (needs GNU gettext); the compiled .mo files are committed.
MESSAGES_IGNORE := --ignore "tests/*" --ignore "bench/*" --ignore "ml/*" --ignore "var/*" --ignore "docs/*"
messages: install var/secret_key
	$(PY) manage.py makemessages -l zh_Hans -l es $(MESSAGES_IGNORE) --add-location file
	for lang in zh_Hans es; do msgfmt --check --statistics -o locale/$$lang/LC_MESSAGES/django.mo locale/$$lang/LC_MESSAGES/django.po; done

clean-var:
	rm -rf var
