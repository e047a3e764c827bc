"""Resync settings: one file, driven by the environment.

With nothing set, Resync runs on the embedded default a newcomer needs: SQLite in WAL mode, django-q2's ORM
broker on the same database, and a local encryption key file under var/ (ignored by git).
"""

import os
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"
VAR_DIR.mkdir(exist_ok=True)

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=True)
DEVELOPMENT_SECRET_KEY = "resync-insecure-development-key-change-me-in-production"
SECRET_KEY = env.str("SECRET_KEY", default=DEVELOPMENT_SECRET_KEY)
# Outside development a missing or weak key would sign sessions, password resets and CSRF tokens with a key anyone
# can read in this file: refuse to start rather than run on it (Django's check --deploy only warns).
if not DEBUG and (SECRET_KEY == DEVELOPMENT_SECRET_KEY or len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        "SECRET_KEY must be set to a long random value when DEBUG is off (50 characters or more); generate one "
        "with: python -c 'import secrets; print(secrets.token_urlsafe(64))'")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Production behind TLS (docs/production.md): each under Django's own name, read from the environment, so that
# `manage.py check --deploy --fail-level WARNING` passes with the documented production environment. The
# defaults suit development over plain HTTP.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)
# Behind a proxy that ends TLS: SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO,https (only if the proxy always
# sets that header: otherwise a client could claim HTTPS itself).
SECURE_PROXY_SSL_HEADER = tuple(env.list("SECURE_PROXY_SSL_HEADER", default=[])) or None
SECURE_REFERRER_POLICY = "same-origin"
# How many proxies of ours stand in front of gunicorn and append to X-Forwarded-For (docs/production.md: one). The
# login lockout and the API's rate limit count per client address: without this they would see the proxy's address
# for every client; a larger number than the real one would let a client choose its address.
RESYNC_NUM_PROXIES = env.int("RESYNC_NUM_PROXIES", default=0)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_q",
    "rest_framework",
    "django_filters",
    "django_htmx",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "accounts",
    "integrations",
    "mappings",
    "syncs",
    "notifications",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # SECURE_CSP below on every HTML answer, whatever produced it (admin, login, error pages).
    "config.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # request.htmx: views answer an htmx request with the partial it asked for.
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while a worker writes; IMMEDIATE transactions avoid the
    # "database is locked" upgrade deadlock between two writers (django-q2 issue #144).
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not :memory:, so that a qcluster process started by a test sees the test database; one per test
    # process, so that two test runs on one machine do not share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
else:
    # Persistent connections: without them the ORM broker manages ~26 tasks/s instead of ~300.
    DATABASES["default"].setdefault("CONN_MAX_AGE", 60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Content-Security-Policy of every HTML page (config.middleware; the same shape as Django 6.0's setting of this
# name). Pages load only this server's files: scripts are files, never inline, and htmx is told not to eval
# (templates/base.html's htmx-config), so neither 'unsafe-inline' nor 'unsafe-eval' is needed anywhere. A
# deployment can tighten it further (e.g. add "upgrade-insecure-requests": [] behind TLS, or "report-uri"), or
# try a change first with SECURE_CSP_REPORT_ONLY, a second policy of the same shape that browsers only report.
SECURE_CSP = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    # data: for the SVG icons Pico CSS and the admin's stylesheets embed.
    "img-src": ["'self'", "data:"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
SECURE_CSP_REPORT_ONLY = {}
# Path prefixes whose pages need a looser directive, and only that directive.
RESYNC_CSP_PATHS = {
    # drf-spectacular's Swagger UI page has one inline <style> block in its template: that block, by its hash, and
    # nothing else (its scripts are files: SpectacularSwaggerSplitView). A drf-spectacular upgrade that changes
    # the block fails tests/ui/test_csp.py, which says the new hash.
    "/api/v1/docs/": {"style-src": ["'self'", "'sha256-MMpT0iDxyjALd9PdfepImGX3DBfJPXZ4IlDWdPAgtn0='"]},
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
# Failed logins (the browser's and the admin's, accounts.forms): this many attempts at one username from one client
# address within the window lock that pair for the lockout; this many failures from one address, whatever the
# usernames, lock the address. Counted in the cache: set CACHE_URL to Redis when several processes serve logins.
RESYNC_LOGIN_FAILURES = env.int("RESYNC_LOGIN_FAILURES", default=5)
RESYNC_LOGIN_ADDRESS_FAILURES = env.int("RESYNC_LOGIN_ADDRESS_FAILURES", default=50)
RESYNC_LOGIN_WINDOW = env.int("RESYNC_LOGIN_WINDOW", default=15 * 60)
RESYNC_LOGIN_LOCKOUT = env.int("RESYNC_LOGIN_LOCKOUT", default=15 * 60)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]

CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://resync")}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiTokenAuthentication",
        # The browser UI's own calls: the login session, with CSRF enforced.
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.authentication.IsOrganizationMember"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_FILTER_BACKENDS": [
        "config.api.StrictFilterBackend",
        "config.api.StableOrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "config.api.StandardPagination",
    "DEFAULT_SCHEMA_CLASS": "config.openapi.ResyncAutoSchema",
    "EXCEPTION_HANDLER": "config.api.problem_exception_handler",
    # Throttling counts in the cache, atomically (accounts.throttling): set CACHE_URL to Redis when several
    # processes serve the API, so they share one count.
    "DEFAULT_THROTTLE_CLASSES": ["accounts.throttling.TokenRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api": env.str("RESYNC_API_RATE", default="600/min")},
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Resync API",
    "DESCRIPTION": "Connections, mappings, syncs, errors and recovery, for one organization per token. "
    "Errors are problem JSON (RFC 9457).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    # Several models have a "status" (and "level", "category"...): one named enum per choice set.
    "ENUM_NAME_OVERRIDES": {
        "ConnectionStatusEnum": "integrations.models.ConnectionStatus",
        "RunStatusEnum": "syncs.models.RunStatus",
        "BatchStatusEnum": "syncs.models.BatchStatus",
        "ErrorStatusEnum": "syncs.models.ErrorStatus",
        "LinkStatusEnum": "syncs.models.LinkStatus",
        "WebhookEventStatusEnum": "integrations.models.WebhookEventStatus",
        "ErrorCategoryEnum": "integrations.errors.ErrorCategory",
        "ErrorLevelEnum": "syncs.models.ErrorLevel",
        "TriggerEnum": "syncs.models.Trigger",
        "ResolutionEnum": "syncs.models.Resolution",
        "BulkActionKindEnum": "syncs.models.BulkActionKind",
        "FixKindEnum": "syncs.fixes.KINDS",
        "AlertLevelEnum": "notifications.models.Level",
        "ChannelKindEnum": "notifications.models.ChannelKind",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.api.allow_empty_query_values",
        "config.api.add_problem_responses",
    ],
}

# Alert emails (notifications): EMAIL_URL names the mail server, e.g. smtp+tls://user:password@smtp.example.com:587
# in production; without it messages are printed by the console backend (development). Keys EMAIL_URL leaves
# empty keep Django's defaults.
globals().update({key: value for key, value in env.email_url("EMAIL_URL", default="consolemail://").items()
                  if value not in (None, "")})
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default=EMAIL_BACKEND)  # noqa: F821 (set just above from EMAIL_URL)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=15)  # a mail server that hangs must not hold a worker
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Resync <alerts@resync.localhost>")
# The address people open Resync at: links in alert messages (emails, Slack, webhooks) start with it.
RESYNC_PUBLIC_URL = env.str("RESYNC_PUBLIC_URL", default="http://127.0.0.1:8000")

# Credentials are encrypted with MultiFernet: the first key encrypts, every key decrypts, so keys rotate by
# prepending a new one. Without RESYNC_ENCRYPTION_KEYS a local key file is generated (development only).
RESYNC_ENCRYPTION_KEYS = env.list("RESYNC_ENCRYPTION_KEYS", default=[])
RESYNC_ENCRYPTION_KEY_FILE = VAR_DIR / "encryption.key"

# Delays of the in-request retry of ephemeral HTTP failures (seed 000: 2 s, 4 s, 8 s, then give up).
RESYNC_HTTP_RETRY_DELAYS = env.list("RESYNC_HTTP_RETRY_DELAYS", cast=float, default=[2, 4, 8])
RESYNC_HTTP_TIMEOUT = env.float("RESYNC_HTTP_TIMEOUT", default=15.0)
# The longest Retry-After a sync waits for between two write calls of one batch; a longer one fails the rest of
# the batch and leaves the wait to the retry schedule, so a worker is not held asleep for minutes.
RESYNC_INLINE_RETRY_AFTER_MAX = env.int("RESYNC_INLINE_RETRY_AFTER_MAX", default=10)
# A run or batch whose heartbeat is older than this is taken to belong to a dead worker.
RESYNC_HEARTBEAT_STALE_SECONDS = env.int("RESYNC_HEARTBEAT_STALE_SECONDS", default=120)
# How many pages a run's reader keeps staged ahead of the workers processing them (syncs.engine.batches): enough
# to keep every worker busy, few enough that the staged records stay a small, bounded table.
RESYNC_READ_AHEAD = env.int("RESYNC_READ_AHEAD", default=4)
# Tenant-supplied URLs may not point at private or loopback addresses (SSRF), except where this says so
# (development against local test servers).
RESYNC_ALLOW_PRIVATE_URLS = env.bool("RESYNC_ALLOW_PRIVATE_URLS", default=False)
# The sandbox vendor API is served by Resync itself (integrations.sandbox_api): sandbox connections call it at this
# address. In-process (tests, and workers started by tests) the views are called without a socket.
RESYNC_SANDBOX_URL = env.str("RESYNC_SANDBOX_URL", default="http://127.0.0.1:8000")
RESYNC_SANDBOX_IN_PROCESS = env.bool("RESYNC_SANDBOX_IN_PROCESS", default=False)

Q_CLUSTER = {
    "name": "resync",
    "orm": "default",
    "workers": env.int("RESYNC_WORKERS", default=2),
    # A run's reader is one task and may take hours; a dead worker is noticed by its heartbeat and the reaper
    # within minutes, so the broker's own redelivery is only a last resort. retry must exceed timeout, or a slow
    # task is delivered a second time while the first still runs.
    "timeout": 4 * 3600,
    "retry": 4 * 3600 + 600,
    # The database holds the truth about attempts; django-q2's own limit has had bugs (#298, #303).
    "max_attempts": 1,
    "catch_up": False,
    # The pusher takes tasks off the broker before a worker is free to run them; a small local queue leaves the
    # rest to an idle cluster instead of holding them behind this cluster's long tasks.
    "queue_limit": env.int("RESYNC_WORKERS", default=2),
    "poll": 0.5,
    "ack_failures": True,
    "save_limit": 1000,
    "label": "Workers",
}
# The broker is django-q2's ORM broker on the database unless RESYNC_BROKER_URL names a Redis server. Redis hands a
# task out without a receipt: a worker killed mid-task loses it, and the reaper re-queues the run from the
# database (its queued or stale-heartbeat state) within RESYNC_HEARTBEAT_STALE_SECONDS plus a minute.
if broker_url := env.str("RESYNC_BROKER_URL", default=""):
    del Q_CLUSTER["orm"]
    Q_CLUSTER["redis"] = broker_url

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "syncs.events.JsonFormatter"},
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "json": {"class": "logging.StreamHandler", "formatter": "json"},
        "plain": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "loggers": {
        "resync": {"handlers": ["json"], "level": env.str("RESYNC_LOG_LEVEL", default="INFO"), "propagate": False},
        "django_q": {"handlers": ["plain"], "level": "WARNING", "propagate": False},
    },
}
