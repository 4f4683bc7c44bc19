"""Calcrooms settings: one module, driven by the environment.

Every knob is read here through the small typed helpers below, which fail loudly on a value they
cannot parse. With nothing set, the app runs on a laptop: SQLite under var/, the in-memory channel
layer and presence store (one process only). Set DATABASE_URL and REDIS_URL (or REDIS_SENTINELS) to
run several processes on several hosts.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from realtime.redis import sentinel_options, sentinel_url  # imports nothing of Django
from rooms.calculator import MAX_EXPRESSION_LENGTH  # pure: imports nothing of Django

BASE_DIR = Path(__file__).resolve().parent.parent
logger = logging.getLogger("calcrooms")


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_bool(name: str, default: bool = False) -> bool:
    value = env_str(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), not {value!r}")


def env_float(name: str, default: float) -> float:
    value = env_str(name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}") from None


def env_int(name: str, default: int) -> int:
    value = env_str(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = env_str(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", False)

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if SECRET_KEY is None:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is required when DJANGO_DEBUG is off. "
            "Set it to a long random string, or set DJANGO_DEBUG=1 for local development."
        )
    SECRET_KEY = "calcrooms-insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list(
    "DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
# The origins (scheme, host and port) the site is served on: cookie sockets from any other are
# refused (project/origins.py). Debug: `make run`'s own; otherwise https on each allowed host.
_PORT = env_str("PORT", "8000")
ALLOWED_ORIGINS = env_list(
    "DJANGO_ALLOWED_ORIGINS",
    [f"http://127.0.0.1:{_PORT}", f"http://localhost:{_PORT}", f"http://[::1]:{_PORT}"]
    if DEBUG
    else [f"https://{host.lstrip('.')}" for host in ALLOWED_HOSTS if host != "*"],
)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "csp",
    "allauth",
    "allauth.account",
    "accounts",
    "rooms",
    "presence",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "project.hygiene.RejectUnstorableInput",  # NUL / lone surrogates: 400, never a 500
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "project.outage.DatabaseOutage",  # PostgreSQL down: 503 (session and user loaded here)
    "accounts.tokens.BearerTokenMiddleware",  # Authorization: Bearer <personal access token>
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "project.metrics_view.CountDatabaseErrors",  # last: sees a view's database error first
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"

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

# --- Database -----------------------------------------------------------------------------------
# Under ASGI every database_sync_to_async call may land on a different thread; persistent
# connections would leak one per thread, so connections are closed after each unit of work.
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool(
        "DATABASE_POOL", True
    ):
        # psycopg's pool: a "closed" connection goes back to the pool instead of the server, so
        # each unit of work skips the connect (bench/catchup: socket open to caught up ~2x faster).
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1,
            "max_size": env_int("DATABASE_POOL_MAX_SIZE", 10),
            # A request during an outage waits this long for a connection, then answers 503.
            "timeout": env_float("DATABASE_POOL_TIMEOUT_SECONDS", 2),
        }
        # Django hands the pool `check=ConnectionPool.check_connection`: every connection is
        # tried (one empty query) before it is given out, so the ones a restart broke are
        # replaced instead of failing once each.
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
        # psycopg_pool retries a failed connect (and re-checks after a broken connection) with a
        # doubling delay, 1 s, 2 s, 4 s, ..., and has no setting for it: after a 10 s outage it
        # next tried 5 s after PostgreSQL was back. Retry at a steady short interval instead.
        from psycopg_pool.base import AttemptWithBackoff

        AttemptWithBackoff.INITIAL_DELAY = env_float("DATABASE_POOL_RETRY_SECONDS", 0.2)
        AttemptWithBackoff.DELAY_BACKOFF = 1.0
else:
    (BASE_DIR / "var").mkdir(exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": BASE_DIR / "var" / "calcrooms.sqlite3",
            "CONN_MAX_AGE": 0,
            # IMMEDIATE takes the write lock when a transaction starts, so concurrent writers queue
            # instead of failing with "database is locked" half-way through.
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# While the database is down every route answers 503 with this Retry-After (project/outage.py).
DATABASE_OUTAGE_RETRY_AFTER_SECONDS = env_int("DATABASE_OUTAGE_RETRY_AFTER_SECONDS", 5)

# --- Redis: channel layer, presence, throttles ----------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
# Or a Sentinel-managed Redis (docs/operations.md, "Redis Sentinel"): the Sentinels as
# host:port,host:port and the master's name; every pool then asks them where the master is.
REDIS_SENTINELS = env_list("REDIS_SENTINELS", [])
REDIS_SENTINEL_MASTER = env_str("REDIS_SENTINEL_MASTER", "mymaster")
REDIS_SENTINEL_PASSWORD = env_str("REDIS_SENTINEL_PASSWORD")  # the Sentinels' own
REDIS_SENTINEL_MASTER_PASSWORD = env_str("REDIS_SENTINEL_MASTER_PASSWORD")  # master and replicas'
REDIS_SENTINEL_DB = env_int("REDIS_SENTINEL_DB", 0)
try:
    REDIS_SENTINEL_OPTIONS = sentinel_options(
        REDIS_SENTINELS,
        master=REDIS_SENTINEL_MASTER,
        sentinel_password=REDIS_SENTINEL_PASSWORD,
        password=REDIS_SENTINEL_MASTER_PASSWORD,
        db=REDIS_SENTINEL_DB,
    )
except ValueError as exc:
    raise ImproperlyConfigured(f"REDIS_SENTINELS: {exc}") from None
if REDIS_SENTINEL_OPTIONS:
    if REDIS_URL:
        raise ImproperlyConfigured("Set REDIS_URL or REDIS_SENTINELS, not both.")
    # A description no client opens (redis+sentinel://...): code that reads REDIS_URL sees Redis
    # configured, and anything that opened it without realtime.redis would fail loudly.
    REDIS_URL = sentinel_url(REDIS_SENTINEL_OPTIONS)
REDIS_CONFIGURED = bool(REDIS_URL)
REDIS_KEY_PREFIX = env_str("REDIS_KEY_PREFIX", "calcrooms")
CHANNEL_LAYER_CAPACITY = env_int("CHANNEL_LAYER_CAPACITY", 100)
CHANNEL_LAYER_GROUP_EXPIRY_SECONDS = env_int("CHANNEL_LAYER_GROUP_EXPIRY_SECONDS", 86400)
# Every Redis pool of a process (layer, presence, throttles) per event loop: at most this many
# connections (a burst waits for one, up to the timeout), and this many kept open when idle.
REDIS_MAX_CONNECTIONS = env_int("REDIS_MAX_CONNECTIONS", 50)
REDIS_MAX_IDLE_CONNECTIONS = env_int("REDIS_MAX_IDLE_CONNECTIONS", 4)
REDIS_POOL_TIMEOUT_SECONDS = env_float("REDIS_POOL_TIMEOUT_SECONDS", 20)

if REDIS_CONFIGURED:
    CHANNEL_LAYERS = {
        "default": {
            # channels-redis's core layer on bounded pools that wait instead of failing and close
            # idle connections past a few (realtime/layer.py).
            "BACKEND": "realtime.layer.BoundedRedisChannelLayer",
            "CONFIG": {
                # redis-py 8 defaults to a 5 s socket timeout, which kills the layer's idle
                # blocking receives; None waits as long as the socket stays open.
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": None,
                        # A burst (thousands of sockets closing at once) waits for these
                        # instead of opening a connection, and a file descriptor, per socket.
                        "max_connections": REDIS_MAX_CONNECTIONS,
                        "max_idle": REDIS_MAX_IDLE_CONNECTIONS,
                        "pool_timeout": REDIS_POOL_TIMEOUT_SECONDS,
                        "client_name": f"{REDIS_KEY_PREFIX}:layer",
                        **REDIS_SENTINEL_OPTIONS,
                    }
                ],
                "prefix": f"{REDIS_KEY_PREFIX}:asgi",
                "capacity": CHANNEL_LAYER_CAPACITY,
                "group_expiry": CHANNEL_LAYER_GROUP_EXPIRY_SECONDS,
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {
                "capacity": CHANNEL_LAYER_CAPACITY,
                "group_expiry": CHANNEL_LAYER_GROUP_EXPIRY_SECONDS,
            },
        }
    }
    if "pytest" not in sys.modules:
        logger.warning(
            "Neither REDIS_URL nor REDIS_SENTINELS is set: using the in-memory channel layer and "
            "presence store. This serves ONE process only; set one of them to run more than one."
        )

# Django's cache: allauth counts login attempts in it, so with Redis the limits hold across every
# process and survive restarts; the embedded default keeps them in this process's memory.
if REDIS_CONFIGURED:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": f"{REDIS_KEY_PREFIX}:cache",
        }
    }
    if REDIS_SENTINEL_OPTIONS:  # Django's RedisCache opens a URL; this one asks the Sentinels
        CACHES["default"]["BACKEND"] = "project.cache.SentinelRedisCache"
        CACHES["default"]["OPTIONS"] = dict(REDIS_SENTINEL_OPTIONS)

# --- Product timings and limits (DESIGN.md) -------------------------------------------------------
PRESENCE_HEARTBEAT_SECONDS = env_float("PRESENCE_HEARTBEAT_SECONDS", 10)
PRESENCE_TTL_SECONDS = env_float("PRESENCE_TTL_SECONDS", 30)
PRESENCE_BROADCAST_INTERVAL_SECONDS = env_float("PRESENCE_BROADCAST_INTERVAL_SECONDS", 1)
# Each room's tick, once per room per process: presence sweep, access re-check (at most 5 s).
ROOM_TICK_SECONDS = env_float("ROOM_TICK_SECONDS", 2)
if not 0 < ROOM_TICK_SECONDS <= 5:
    raise ImproperlyConfigured("ROOM_TICK_SECONDS must be more than 0 and at most 5")
TYPING_EXPIRY_SECONDS = env_float("TYPING_EXPIRY_SECONDS", 5)
TYPING_MIN_INTERVAL_SECONDS = env_float("TYPING_MIN_INTERVAL_SECONDS", 1)
SYNC_INTERVAL_SECONDS = env_float("SYNC_INTERVAL_SECONDS", 20)
# Threads of their own that store entries (PostgreSQL only: SQLite takes one writer at a time).
# Each holds a pooled connection while it stores: keep it under DATABASE_POOL_MAX_SIZE.
ENTRY_STORE_THREADS = env_int(
    "ENTRY_STORE_THREADS",
    4 if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" else 0,
)
# Threads of their own for the reads a socket's handshake waits for (realtime/reads.py; PostgreSQL
# only). Each holds a pooled connection while it reads: the shared database thread, the store
# threads and these together stay under DATABASE_POOL_MAX_SIZE, with room for HTTP requests.
DATABASE_READ_THREADS = env_int(
    "DATABASE_READ_THREADS",
    3 if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" else 0,
)
# A socket whose client has not read what waited for it (its outbox full) for this long is closed
# with 1013; it reconnects and catches up. Until then, entries are dropped for it alone.
WS_BEHIND_CLOSE_SECONDS = env_float("WS_BEHIND_CLOSE_SECONDS", 30)
# Socket submissions waiting for (or in) one store thread at most; past it, `unavailable` at once
# (the page sends it again with backoff) instead of a queue that grows to seconds.
ENTRY_STORE_QUEUE_LIMIT = env_int("ENTRY_STORE_QUEUE_LIMIT", 32)
# A store thread whose last turn began with a submission that had waited longer than this is
# late: while it is, new submissions for it are answered `unavailable` at once (as past the
# limit above), so what is accepted is stored within about this, whatever the load offered.
ENTRY_STORE_WAIT_TARGET_SECONDS = env_float("ENTRY_STORE_WAIT_TARGET_SECONDS", 0.1)
# A room's socket submissions that waited while its store thread was busy are stored together,
# at most this many in one transaction (1: each in a transaction of its own).
ENTRY_STORE_BATCH_MAX = env_int("ENTRY_STORE_BATCH_MAX", 32)
# A socket frame whose handling takes longer is counted (calcrooms_slow_handlers_total) and logged.
SLOW_HANDLER_SECONDS = env_float("SLOW_HANDLER_SECONDS", 0.5)
EXPRESSION_MAX_LENGTH = MAX_EXPRESSION_LENGTH  # the calculator's own bound: one number
EXPRESSION_BUCKET_CAPACITY = env_int("EXPRESSION_BUCKET_CAPACITY", 10)
EXPRESSION_BUCKET_REFILL_PER_SECOND = env_float("EXPRESSION_BUCKET_REFILL_PER_SECOND", 1)
WS_MAX_FRAME_BYTES = 64 * 1024
WS_ABUSE_LIMIT = env_int("WS_ABUSE_LIMIT", 30)
WS_ABUSE_WINDOW_SECONDS = env_float("WS_ABUSE_WINDOW_SECONDS", 60)
WS_MAX_SOCKETS_PER_USER = env_int("WS_MAX_SOCKETS_PER_USER", 20)  # across every process
ROOM_PAGE_ENTRIES = 50
# What the page does on its own (sent to it with the room's config; room.js has no constants).
TYPING_SEND_INTERVAL_SECONDS = env_float("TYPING_SEND_INTERVAL_SECONDS", 2)
RECONNECT_CAP_SECONDS = env_float("RECONNECT_CAP_SECONDS", 10)
RECONNECT_MIN_SECONDS = env_float("RECONNECT_MIN_SECONDS", 1)
# No frame at all for this long and the page takes its socket for dead (the `sync` frame, every
# SYNC_INTERVAL_SECONDS, is the heartbeat): it reconnects and catches up.
CONNECTION_DEAD_AFTER_SECONDS = env_float("CONNECTION_DEAD_AFTER_SECONDS", 25)
if CONNECTION_DEAD_AFTER_SECONDS <= SYNC_INTERVAL_SECONDS:
    raise ImproperlyConfigured(
        "CONNECTION_DEAD_AFTER_SECONDS must be more than SYNC_INTERVAL_SECONDS"
    )
# An expression answered `rate_limited` or `unavailable` is sent again after a jittered backoff.
RESEND_MIN_SECONDS = env_float("RESEND_MIN_SECONDS", 1)
RESEND_CAP_SECONDS = env_float("RESEND_CAP_SECONDS", 10)
ENTRIES_DEFAULT_LIMIT = 100
ENTRIES_MAX_LIMIT = 500
INVITE_MAX_AGE_SECONDS = env_int("INVITE_MAX_AGE_SECONDS", 7 * 86400)
# Abuse that costs the abuser: rooms one person may create in any hour, and the room list's page.
ROOMS_PER_HOUR = env_int("ROOMS_PER_HOUR", 10)
ROOM_LIST_PAGE_SIZE = env_int("ROOM_LIST_PAGE_SIZE", 50)

# --- The server process's garbage collector (project/collector.py) -------------------------------
# CPython's defaults are 700,10,10 (GC_THRESHOLDS=700,10,10 and GC_FREEZE=0 put them back).
GC_FREEZE = env_bool("GC_FREEZE", True)
_gc_thresholds = env_list("GC_THRESHOLDS", ["50000", "20", "10"])
try:
    GC_THRESHOLDS = tuple(int(value) for value in _gc_thresholds)
    if len(GC_THRESHOLDS) != 3 or min(GC_THRESHOLDS) < 1:
        raise ValueError
except ValueError:
    raise ImproperlyConfigured(
        f"GC_THRESHOLDS must be three whole numbers of at least 1, not {_gc_thresholds!r}"
    ) from None

# --- Metrics (/metrics: project/metrics_view.py, realtime/metrics.py) ----------------------------
# With a token, only `Authorization: Bearer <METRICS_TOKEN>` is served (401 otherwise); without
# one, only these client addresses or networks (empty: nobody, 403). Multiprocess mode is
# prometheus_client's own: PROMETHEUS_MULTIPROC_DIR, read from the environment at start.
METRICS_TOKEN = env_str("METRICS_TOKEN")
METRICS_ALLOWED_IPS = env_list("METRICS_ALLOWED_IPS", [])
for _network in METRICS_ALLOWED_IPS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"METRICS_ALLOWED_IPS: {_network!r} is not an address or a network"
        ) from None

# --- Accounts (django-allauth) --------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
ACCOUNT_LOGIN_METHODS = {"username", "email"}
ACCOUNT_SIGNUP_FIELDS = ["username*", "email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = env_str("ACCOUNT_EMAIL_VERIFICATION", "optional")
ACCOUNT_LOGOUT_ON_GET = False
ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "/"
ACCOUNT_LOGOUT_REDIRECT_URL = "/accounts/login/"
# Personal access tokens (accounts/tokens.py): active ones per person, and how often a token's
# "last used" time is written (a busy script costs reads, not a write per request).
ACCESS_TOKENS_PER_USER_MAX = env_int("ACCESS_TOKENS_PER_USER_MAX", 50)
ACCESS_TOKEN_LAST_USED_INTERVAL_SECONDS = env_float("ACCESS_TOKEN_LAST_USED_INTERVAL_SECONDS", 60)

EMAIL_BACKEND = env_str(
    "DJANGO_EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
DEFAULT_FROM_EMAIL = env_str("DJANGO_DEFAULT_FROM_EMAIL", "calcrooms@localhost")

# --- Static files, i18n, security -----------------------------------------------------------------
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Where collectstatic gathers them for a web server in front (deploy/nginx/calcrooms.conf).
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT", str(BASE_DIR / "var" / "static")))
# Serve static files from the ASGI app itself (one process, no separate web server needed).
SERVE_STATIC = env_bool("DJANGO_SERVE_STATIC", True)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Content-Security-Policy (django-csp): scripts, styles and connections from this origin only, no
# inline script or style, no framing. 'self' covers the page's own ws:/wss: socket (CSP 3).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
        "base-uri": [SELF],
        "object-src": [NONE],
    }
}
# HSTS on every response served over TLS (behind a proxy: uvicorn's --proxy-headers takes the
# scheme from X-Forwarded-Proto); off in debug.
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 0 if DEBUG else 365 * 86400)
SECURE_REFERRER_POLICY = "same-origin"

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# LOG_FORMAT=json: every line on stderr is one JSON object (project/logs.py), the app's, Django's,
# uvicorn's and Python warnings alike; the default is the plain human message.
LOG_FORMAT = env_str("LOG_FORMAT", "human")
if LOG_FORMAT not in ("human", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be human or json, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "human": {"format": "%(message)s"},
        "json": {"()": "project.logs.JsonFormatter"},
    },
    # A database outage is no bug: lines about it keep their error but not a traceback.
    "filters": {"outage": {"()": "project.outage.OutageWithoutTraceback"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["outage"],
        }
    },
    "loggers": {
        name: {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")}
        for name in ("calcrooms", "accounts", "rooms", "presence", "realtime")
    }
    | {
        # Server errors with their traceback, whatever DEBUG says (Django's own default only
        # mails them to ADMINS when DEBUG is off, and there are none).
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
        # The pool warns on every failed reconnect (several a second during an outage); the
        # outage itself is one line from project/outage.py when it starts and one when it ends.
        "psycopg.pool": {"handlers": ["console"], "level": "ERROR", "propagate": False},
    },
}
if LOG_FORMAT == "json":
    # Everyone else's lines too: uvicorn configured its loggers before it loaded the app (their
    # levels, from --log-level, stay), Django's and the warnings' defaults print plain text.
    # Each line once: the loggers with a handler of their own do not pass it on to the root's.
    for _config in LOGGING["loggers"].values():
        _config["propagate"] = False
    LOGGING["root"] = {"handlers": ["console"], "level": "WARNING"}
    logging.captureWarnings(True)  # warnings.warn(...) as records of "py.warnings"
    LOGGING["loggers"] |= {
        name: {"handlers": ["console"], "propagate": False}
        for name in ("uvicorn", "uvicorn.access", "py.warnings")
    }
    LOGGING["loggers"]["django"] = {
        "handlers": ["console"],
        "level": "INFO" if DEBUG else "WARNING",
        "propagate": False,
    }

EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
