"""Settings for the screening service, read from the environment.

With nothing set, the service runs on embedded defaults (SQLite and Celery's
SQLAlchemy broker under ``var/``) so that ``make run`` needs no server.
Production sets ``DATABASE_URL``, ``CELERY_BROKER_URL``, ``DJANGO_SECRET_KEY``
and ``DJANGO_ALLOWED_HOSTS`` (see docs/configuration.md and docker-compose.yml).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from ml.serving.devices import usable_cores
from screening.dicom.nodes import InvalidNode, ae_title, parse_callers, parse_destinations
from webapp.database import POSTGRESQL, postgres_options
from webapp.env import env_bool, env_float, env_int, env_list, env_secret, env_str, refuse_retired

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("SCREENING_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_secret("DJANGO_SECRET_KEY")
if not SECRET_KEY and (VAR_DIR / "secret_key").is_file():
    # The embedded default: `make run` keeps a generated key here, so that
    # `manage.py` commands next to it work without exporting anything.
    SECRET_KEY = (VAR_DIR / "secret_key").read_text().strip()
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) must be set; `make run` creates var/secret_key for you"
    )
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "webapp.apps.AxesConfig",  # django-axes, with a translated name
    "screening",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "webapp.security.ContentSecurityPolicyMiddleware",
    "webapp.security.RequestSizeLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: turns a locked-out login into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "webapp" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "screening.web.context_processors.intended_use",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the worker write to the same file: WAL lets readers
    # run beside a writer, IMMEDIATE transactions avoid lock-upgrade deadlocks,
    # and the timeout waits for a lock instead of failing at once.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
# How long PostgreSQL may keep a process waiting (webapp.database): a hung or locked database then fails a
# request in seconds (503 with Retry-After, webapp.errors) rather than holding a web worker until gunicorn kills it.
# The worker's statements get DATABASE_WORKER_STATEMENT_TIMEOUT instead (below); 0 turns the limit off, as a long
# maintenance command may need (`DATABASE_STATEMENT_TIMEOUT=0 manage.py migrate`).
DATABASE_CONNECT_TIMEOUT = env_int("DATABASE_CONNECT_TIMEOUT", 5, minimum=2, maximum=300)
DATABASE_STATEMENT_TIMEOUT = env_int("DATABASE_STATEMENT_TIMEOUT", 10, minimum=0, maximum=86400)
if DATABASES["default"]["ENGINE"] == POSTGRESQL:
    DATABASES["default"]["OPTIONS"] = {
        **postgres_options(connect_timeout=DATABASE_CONNECT_TIMEOUT, statement_timeout=DATABASE_STATEMENT_TIMEOUT),
        **DATABASES["default"].get("OPTIONS", {}),  # what DATABASE_URL's query string sets wins
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Login throttling (django-axes): after LOGIN_FAILURE_LIMIT wrong passwords for one
# username from one address, that pair is locked out for LOGIN_LOCKOUT_MINUTES (429),
# whatever the password; a successful login resets the count. Administrators unlock
# early by deleting the attempt in the admin ("Access attempts").
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_DISABLE_ACCESS_LOG = True  # successful logins are in our own audit trail already

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "screening:batch_list"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_AGE = env_int("SESSION_IDLE_TIMEOUT_SECONDS", 30 * 60, minimum=60)
SESSION_SAVE_EVERY_REQUEST = True  # the age above is then an inactivity timeout
# Set to 1 behind TLS; off by default so `make run` works over plain http://127.0.0.1.
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto (only then: the header
# is trusted as is). HSTS and the HTTPS redirect are opt-in for the same reason.
if env_bool("DJANGO_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # The client's address as the proxy saw it (webapp/deploy/nginx.conf overwrites X-Real-IP),
    # so the login lockout counts per client, not per proxy.
    AXES_IPWARE_META_PRECEDENCE_ORDER = ("HTTP_X_REAL_IP", "REMOTE_ADDR")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
# Probes and the scraper talk plain HTTP inside the deployment's network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
SECURE_REFERRER_POLICY = "same-origin"
# Content-Security-Policy (webapp.security): only our own scripts, styles and images;
# no inline script, no framing, forms post only here.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'"
)

LANGUAGE_CODE = "en"
# The interface's languages; each user picks one (the header's chooser, kept in a cookie), else the
# browser's Accept-Language decides. Catalogues: locale/<lang>/LC_MESSAGES/django.po (and the .mo
# compiled from it, committed so that no gettext is needed to run the service).
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文"), ("es", "Español")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))
STATICFILES_DIRS = [BASE_DIR / "webapp" / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Uploaded X-rays are patient data: they live under MEDIA_ROOT and are only
# ever served through views that check permissions (no public MEDIA_URL).
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))

# --- Screening ----------------------------------------------------------------
SCREENING_MAX_FILE_BYTES = env_int("SCREENING_MAX_FILE_MB", 64, minimum=1) * 1024 * 1024
SCREENING_MAX_BATCH_FILES = env_int("SCREENING_MAX_BATCH_FILES", 1000, minimum=1)
SCREENING_MAX_ZIP_UNCOMPRESSED_BYTES = env_int("SCREENING_MAX_ZIP_UNCOMPRESSED_MB", 4096, minimum=1) * 1024 * 1024
SCREENING_MAX_ZIP_RATIO = env_int("SCREENING_MAX_ZIP_RATIO", 100, minimum=2)
SCREENING_MAX_IMAGE_PIXELS = env_int("SCREENING_MAX_IMAGE_MEGAPIXELS", 50, minimum=1) * 1_000_000
SCREENING_CHUNK_SIZE = env_int("SCREENING_CHUNK_SIZE", 32, minimum=1, maximum=256)
# Threads each worker process gives to decoding a chunk's files and to the model's CPU kernels. 0: the
# machine's cores shared out among the worker's pool processes (CELERY_WORKER_CONCURRENCY), one each when
# there are as many processes as cores, which clears chunks fastest on CPU (bench/README.md).
SCREENING_THREADS_PER_PROCESS = env_int("SCREENING_THREADS_PER_PROCESS", 0, minimum=0, maximum=64)
SCREENING_MODEL_DIR = env_str("SCREENING_MODEL_DIR")  # default: the version named in ml/models/CURRENT
SCREENING_MAX_ATTEMPTS = env_int("SCREENING_MAX_ATTEMPTS", 3, minimum=1)
# Originals one submitter may keep stored (until purged); 0 = no quota. Files past it are refused one by one.
SCREENING_USER_QUOTA_BYTES = env_int("SCREENING_USER_QUOTA_MB", 20480, minimum=0) * 1024 * 1024
# Requests one API token may make per minute; past it the API answers 429 with Retry-After.
API_RATE_LIMIT_PER_MINUTE = env_int("API_RATE_LIMIT_PER_MINUTE", 600, minimum=1)
# Largest request body the web app reads at all (refused with 413 before parsing).
SCREENING_MAX_REQUEST_BYTES = env_int("SCREENING_MAX_REQUEST_MB", 2048, minimum=1) * 1024 * 1024
# A site may adopt its own operating point only when its validation's AUC 95 % CI lower bound reaches this.
SITE_VALIDATION_MIN_AUC = env_float("SITE_VALIDATION_MIN_AUC", 0.90, minimum=0.5, maximum=1.0)
# ... and only with at least this many scored cases of each class that the model never trained on.
# Below 30 a class cannot bound a sensitivity or specificity usefully (30 of 30 gives 0.88 at best).
SITE_VALIDATION_MIN_PER_CLASS = env_int("SITE_VALIDATION_MIN_PER_CLASS", 100, minimum=30)

# Watching the model in use (``screening.governance.monitoring``): each figure over the last MONITORING_WINDOW
# reviewed or finished clinical studies, judged only with MONITORING_MIN_CASES cases behind it.
MONITORING_WINDOW = env_int("MONITORING_WINDOW", 200, minimum=20)
MONITORING_MIN_CASES = env_int("MONITORING_MIN_CASES", 30, minimum=1)
MONITORING_CHECK_SECONDS = env_int("MONITORING_CHECK_SECONDS", 300, minimum=10)
# Bands: below a minimum or above a maximum, the System page and the worklist show a banner.
MONITORING_MIN_SENSITIVITY = env_float("MONITORING_MIN_SENSITIVITY", 0.85, minimum=0.0, maximum=1.0)
MONITORING_MIN_SPECIFICITY = env_float("MONITORING_MIN_SPECIFICITY", 0.60, minimum=0.0, maximum=1.0)
MONITORING_MIN_PPV = env_float("MONITORING_MIN_PPV", 0.50, minimum=0.0, maximum=1.0)
# A population stability index above 0.25 is the usual mark of a population that has changed.
MONITORING_MAX_PSI = env_float("MONITORING_MAX_PSI", 0.25, minimum=0.0, maximum=10.0)
MONITORING_MAX_OUTSIDE_SHARE = env_float("MONITORING_MAX_OUTSIDE_SHARE", 0.10, minimum=0.0, maximum=1.0)
MONITORING_MAX_REJECTED_SHARE = env_float("MONITORING_MAX_REJECTED_SHARE", 0.10, minimum=0.0, maximum=1.0)
MONITORING_MAX_FAILED_SHARE = env_float("MONITORING_MAX_FAILED_SHARE", 0.02, minimum=0.0, maximum=1.0)

# Django refuses multipart bodies with more files than this before our code
# runs; keep it at the batch limit so the refusal and our message agree.
DATA_UPLOAD_MAX_NUMBER_FILES = SCREENING_MAX_BATCH_FILES


# --- DICOM --------------------------------------------------------------------
# The C-STORE listener (`manage.py dicom_listener`) and where results go back.
# Nobody may send until DICOM_ALLOWED_CALLERS names them ("AE", "AE@host" or
# "*@host"); `make run` allows local callers.
def _dicom(parse, name: str, value):
    try:
        return parse(value)
    except InvalidNode as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None


DICOM_AE_TITLE = _dicom(ae_title, "DICOM_AE_TITLE", env_str("DICOM_AE_TITLE", "PNEUMO"))
DICOM_PORT = env_int("DICOM_PORT", 11112, minimum=1, maximum=65535)
DICOM_BIND = env_str("DICOM_BIND", "127.0.0.1")
DICOM_ALLOWED_CALLERS = _dicom(parse_callers, "DICOM_ALLOWED_CALLERS", env_list("DICOM_ALLOWED_CALLERS", []))
# Callers whose studies are urgent (the emergency department's modality, say), written as for
# DICOM_ALLOWED_CALLERS; their studies are scored before routine work already queued.
DICOM_URGENT_CALLERS = _dicom(parse_callers, "DICOM_URGENT_CALLERS", env_list("DICOM_URGENT_CALLERS", []))
# The account that received batches belong to (created by the listener when missing, with no password).
DICOM_RECEIVER_USER = env_str("DICOM_RECEIVER_USER", "dicom-receiver")
# Results of DICOM studies (an SR and a heatmap secondary capture) are sent to each of these: AE@host:port.
DICOM_DESTINATIONS = _dicom(parse_destinations, "DICOM_DESTINATIONS", env_list("DICOM_DESTINATIONS", []))
# A destination that stays down is retried (backing off to every DICOM_SEND_MAX_BACKOFF_SECONDS) for this long.
DICOM_SEND_GIVE_UP_HOURS = env_int("DICOM_SEND_GIVE_UP_HOURS", 72, minimum=1)
DICOM_SEND_MAX_BACKOFF_SECONDS = env_int("DICOM_SEND_MAX_BACKOFF_SECONDS", 300, minimum=5)
DICOM_TIMEOUT_SECONDS = env_int("DICOM_TIMEOUT_SECONDS", 30, minimum=1)
# Anyone who can reach the listener can connect: a connection has this long to send its
# association request, and only accepted associations count against the two limits below.
DICOM_ASSOCIATION_REQUEST_TIMEOUT_SECONDS = env_int(
    "DICOM_ASSOCIATION_REQUEST_TIMEOUT_SECONDS", 5, minimum=1, maximum=60
)
# The largest PDU the listener accepts (and announces); a longer one aborts the association.
DICOM_MAX_PDU_BYTES = env_int("DICOM_MAX_PDU_BYTES", 256 * 1024, minimum=4096, maximum=4 * 1024 * 1024)
# Each association holds a thread and a database connection while it lasts; more are refused transiently.
DICOM_MAX_ASSOCIATIONS = env_int("DICOM_MAX_ASSOCIATIONS", 20, minimum=1, maximum=200)
DICOM_MAX_ASSOCIATIONS_PER_PEER = env_int("DICOM_MAX_ASSOCIATIONS_PER_PEER", 4, minimum=1, maximum=200)

# --- Celery -------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", f"sqla+sqlite:///{VAR_DIR / 'broker.sqlite3'}")
# A chunk of 16 normally takes a second or two (JPEG 2000 DICOM, the slowest
# decode, about 0.7 s a file); the limits only catch a stuck chunk, and a
# short hard limit means a crashed worker's studies are re-sent sooner.
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 100, minimum=10)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 120, minimum=11)
if CELERY_TASK_SOFT_TIME_LIMIT >= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured("CELERY_TASK_SOFT_TIME_LIMIT must be below CELERY_TASK_TIME_LIMIT")
# The worker's statements (claims wait for row locks other workers hold; sweeps update every waiting study) may run
# this long; below the soft time limit, so that a stuck statement fails the task rather than the limit killing it.
DATABASE_WORKER_STATEMENT_TIMEOUT = env_int(
    "DATABASE_WORKER_STATEMENT_TIMEOUT",
    min(60, CELERY_TASK_SOFT_TIME_LIMIT - 1),
    minimum=0,
    maximum=CELERY_TASK_SOFT_TIME_LIMIT - 1,
)
# Redis redelivers an unacknowledged message after this long; it must exceed
# the longest task, or a slow chunk would be handed to a second worker.
CELERY_BROKER_VISIBILITY_TIMEOUT = env_int(
    "CELERY_BROKER_VISIBILITY_TIMEOUT", 2 * CELERY_TASK_TIME_LIMIT, minimum=CELERY_TASK_TIME_LIMIT + 1
)
# Longest wait for Redis to answer one command. Without it, a broker that keeps the connection open but
# never answers (a hung server, a failover, a firewall dropping the flow) holds an upload's publish, the
# readiness check and the sweep for ever; a publish that times out leaves its studies to the sweep.
CELERY_BROKER_SOCKET_TIMEOUT = env_float("CELERY_BROKER_SOCKET_TIMEOUT", 2.0, minimum=0.5, maximum=300.0)
# On a cold shutdown (SIGQUIT, or SIGTERM under REMAP_SIGTERM=SIGQUIT, as
# `make run` sets it) a running chunk gets this long to finish before its
# message goes back to the queue unacknowledged.
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = env_int("CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", 3, minimum=0)
# Pool processes of a worker (`celery worker --concurrency` overrides it). Each holds its own model, gate and
# TensorFlow runtime (about 1 GB resident), hence the cap; a process per core, each on one core, beats one
# process on every core, whose model pass does not keep the cores busy at a chunk's batch size.
CELERY_WORKER_CONCURRENCY = env_int("CELERY_WORKER_CONCURRENCY", min(4, usable_cores()), minimum=1)
# How long a new pool process may take to report itself up before Celery kills it and starts another.
# Each one warms its model, gate and population check first (``worker.signals``: it logs how long);
# that took 11-16 s on a busy 2-core host (issue 26), and Celery's default of 4 s killed every
# replacement of a killed pool process, so scoring stopped for good.
CELERY_WORKER_PROC_ALIVE_TIMEOUT = env_float("CELERY_WORKER_PROC_ALIVE_TIMEOUT", 120.0, minimum=10.0, maximum=3600.0)
# Bearer token a Prometheus scraper sends to /metrics (staff sessions need none); unset: staff only.
METRICS_TOKEN = env_secret("METRICS_TOKEN")
# Bearer token that shows /readyz's checks to a caller that is not a logged-in staff member; unset: staff only.
HEALTH_DETAILS_TOKEN = env_secret("HEALTH_DETAILS_TOKEN")
# How often beat asks a worker to record a heartbeat; readiness fails after 3 missed ones.
SCREENING_HEARTBEAT_SECONDS = env_int("SCREENING_HEARTBEAT_SECONDS", 30, minimum=5)
SCREENING_SWEEP_INTERVAL_SECONDS = env_int("SCREENING_SWEEP_INTERVAL_SECONDS", 10, minimum=2)
# Recovery, in one sentence: an unfinished study is either held by a named worker process, whose
# heartbeat is its lease on the study, or waiting in the broker; every SCREENING_SWEEP_INTERVAL_SECONDS
# beat's sweep re-sends what a silent holder held (the lease lapses after four missed heartbeats), what
# the broker lost (not redelivered within its visibility timeout, or Redis came back empty) and what
# ran longer than a task may, and a study interrupted SCREENING_MAX_ATTEMPTS times ends FAILED.
SCREENING_PROCESS_HEARTBEAT_SECONDS = env_int("SCREENING_PROCESS_HEARTBEAT_SECONDS", 5, minimum=1)
# Derived, not settings: each follows from the setting it names.
SCREENING_DEAD_WORKER_SECONDS = 4 * SCREENING_PROCESS_HEARTBEAT_SECONDS
SCREENING_STUCK_RUNNING_SECONDS = CELERY_TASK_TIME_LIMIT + 30
SCREENING_STUCK_QUEUED_SECONDS = CELERY_BROKER_VISIBILITY_TIMEOUT + 60
refuse_retired(
    {
        "SCREENING_DEAD_WORKER_SECONDS": "a lease lapses after four SCREENING_PROCESS_HEARTBEAT_SECONDS",
        "SCREENING_STUCK_RUNNING_SECONDS": "a claim times out 30 s after CELERY_TASK_TIME_LIMIT",
        "SCREENING_STUCK_QUEUED_SECONDS": "a lost message is re-sent 60 s after CELERY_BROKER_VISIBILITY_TIMEOUT",
    }
)
# Housekeeping (beat, ``screening.intake.housekeeping``) this often: stored files that no study refers to
# and older than the grace period are removed (a crash mid-upload leaves them); and, when
# SCREENING_RETENTION_DAYS is above 0, originals of finished studies older than that are purged
# (as `manage.py purge --older-than DAYS`). 0 keeps originals until someone purges by hand.
SCREENING_HOUSEKEEPING_SECONDS = env_int("SCREENING_HOUSEKEEPING_SECONDS", 3600, minimum=60, maximum=7 * 86400)
SCREENING_ORPHAN_GRACE_SECONDS = env_int("SCREENING_ORPHAN_GRACE_SECONDS", 3600, minimum=600, maximum=30 * 86400)
SCREENING_RETENTION_DAYS = env_int("SCREENING_RETENTION_DAYS", 0, minimum=0, maximum=100 * 365)

# --- Logging ------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOG_FORMAT = env_str("LOG_FORMAT", "plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r} is not one of: plain, json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "webapp.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
