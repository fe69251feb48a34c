"""Settings of the flag service, read from the environment (see docs/configuration.md).

With no variable set the service runs on the embedded default: SQLite and an in-process
cache. A malformed variable stops start-up with one line naming it, never a traceback.
"""

import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent

ENVIRONMENTS = ("development", "staging", "production")


def _fail(variable: str, problem: str) -> None:
    """Stop start-up with one readable line; SystemExit prints no traceback."""
    raise SystemExit(f"configuration error: {variable}: {problem}")


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def _env_bool(name: str, default: bool) -> bool:
    raw = _env(name)
    if not raw:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    _fail(name, f"expected true or false, got {raw!r}")
    return default


def _env_int(name: str, default: int) -> int:
    raw = _env(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        _fail(name, f"expected an integer, got {raw!r}")
    return default


def _env_list(name: str) -> list[str]:
    return [item.strip() for item in _env(name).split(",") if item.strip()]


NODE_ENV = _env("NODE_ENV", "development")
if NODE_ENV not in ENVIRONMENTS:
    _fail("NODE_ENV", f"unknown value {NODE_ENV!r} (expected one of {', '.join(ENVIRONMENTS)})")

# Staging is run like production: same secrets required, same transport security.
PRODUCTION_LIKE = NODE_ENV in ("staging", "production")
# Django's debug pages show settings and source: only when asked for, never production-like.
DEBUG = False if PRODUCTION_LIKE else _env_bool("DEBUG", default=False)
TESTING = "pytest" in sys.modules


def _installation_secret(path: Path) -> str:
    """This installation's own random secret, made on first start, readable by its owner only.

    Written to a temporary file and linked into place, so workers starting together all read
    the one that won; nothing published in the source signs anything.
    """
    import secrets

    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(secrets.token_urlsafe(48))
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass  # another process made it first: use theirs
    finally:
        temporary.unlink()
    return path.read_text().strip()


SECRET_KEY = _env("SECRET_KEY")
JWT_SECRET = _env("JWT_SECRET")
SECRET_KEY_FILE = Path(_env("SECRET_KEY_FILE") or BASE_DIR / "var" / "secret-key")
if PRODUCTION_LIKE:
    if not JWT_SECRET:
        _fail("JWT_SECRET", f"must be set when NODE_ENV={NODE_ENV} (the key that signs API tokens)")
    if len(JWT_SECRET) < 32:
        _fail("JWT_SECRET", "must be at least 32 characters long")
    SECRET_KEY = SECRET_KEY or JWT_SECRET
elif not (SECRET_KEY and JWT_SECRET):
    try:
        _secret = _installation_secret(SECRET_KEY_FILE)
    except OSError as error:
        _fail("SECRET_KEY_FILE", f"cannot read or create {SECRET_KEY_FILE} ({error.strerror})")
    # Two keys from one secret: a leaked session key does not sign API tokens.
    import hashlib

    SECRET_KEY = SECRET_KEY or hashlib.sha256(f"django:{_secret}".encode()).hexdigest()
    JWT_SECRET = JWT_SECRET or hashlib.sha256(f"jwt:{_secret}".encode()).hexdigest()

PORT = _env_int("PORT", 3000)

ALLOWED_HOSTS = _env_list("ALLOWED_HOSTS") or (
    ["*"] if PRODUCTION_LIKE else ["localhost", "127.0.0.1", "[::1]", "testserver"]
)
CSRF_TRUSTED_ORIGINS = _env_list("CSRF_TRUSTED_ORIGINS")

ADMIN_ENABLED = _env_bool("ADMIN_ENABLED", default=True)

# /metrics answers loopback and private peers; anyone else needs this bearer token.
METRICS_TOKEN = _env("METRICS_TOKEN")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "flags",
    "evaluation",
    "integrations",
]

MIDDLEWARE = [
    # First, so it times every request and tags it with its request id (docs/deployment.md).
    "flagsite.requestlog.RequestLogMiddleware",
    # A store outage is a 503 naming the store; any other error under the API a JSON 500.
    "flagsite.failures.FailureMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Admin pages: a Content-Security-Policy (flagsite/csp.py).
    "flagsite.csp.AdminContentSecurityPolicyMiddleware",
    # Evaluation: each API key's rate, counted locally and summed in the shared cache.
    "flagsite.throttling.KeyRateLimitMiddleware",
    # Failed logins: the lockout answer (flagsite.throttling.lockout_response).
    "axes.middleware.AxesMiddleware",
    # Last: keeps the chain above synchronous, one thread hop per request under ASGI.
    "flagsite.boundary.SyncBoundaryMiddleware",
]

ROOT_URLCONF = "flagsite.urls"

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

WSGI_APPLICATION = "flagsite.wsgi.application"
ASGI_APPLICATION = "flagsite.asgi.application"

# --- Store -----------------------------------------------------------------------------

DB_URL = _env("DB_URL")


def _database(url: str) -> dict[str, Any]:
    if not url:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "var" / "flags.sqlite3"}
    if not url.startswith(("postgres://", "postgresql://", "sqlite://")):
        _fail("DB_URL", "expected postgres://user:pass@host:5432/db or sqlite:///path")
    try:
        config = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    except Exception as error:  # the library raises several types for bad URLs
        _fail("DB_URL", f"cannot parse it ({error})")
    if config["ENGINE"].endswith("postgresql") and not config.get("NAME"):
        _fail("DB_URL", "names no database (postgres://user:pass@host:5432/DATABASE)")
    if config["ENGINE"].endswith("postgresql"):
        # An unreachable server must fail a request fast (503), not hold it for minutes.
        config.setdefault("OPTIONS", {}).setdefault("connect_timeout", 2)
    return dict(config)


DATABASES = {"default": _database(DB_URL)}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # SQLite under several threads: wait for the write lock instead of failing at once.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    # Transactions take the write lock when they begin, so a read-then-write transaction
    # waits for another writer instead of failing at once with "database is locked".
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache -----------------------------------------------------------------------------

REDIS_URL = _env("REDIS_URL")
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    _fail("REDIS_URL", "expected redis://host:6379/0 (or rediss:// for TLS)")

CACHE_PREFIX = _env("CACHE_PREFIX", "flags")

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": CACHE_PREFIX,
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "SOCKET_CONNECT_TIMEOUT": 0.5,
                "SOCKET_TIMEOUT": 0.5,
            },
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "flags",
            "KEY_PREFIX": CACHE_PREFIX,
        }
    }
# Login lockouts and API rate limits count here: the shared cache, or each process's memory
# while the shared cache is unreachable (flagsite/limits_cache.py).
CACHES["limits"] = {"BACKEND": "flagsite.limits_cache.FallbackCache", "LOCATION": "default"}

# --- Authentication --------------------------------------------------------------------

# Who authenticates people is decided with single sign-on, below (AUTHENTICATION_BACKENDS).
AXES_HANDLER = "axes.handlers.cache.AxesCacheHandler"  # the shared cache: across instances
AXES_CACHE = "limits"
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]  # either one, counted separately
AXES_FAILURE_LIMIT = _env_int("LOGIN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = timedelta(seconds=_env_int("LOGIN_LOCKOUT_SECONDS", 900))
AXES_LOCKOUT_CALLABLE = "flagsite.throttling.lockout_response"
AXES_ENABLED = AXES_FAILURE_LIMIT > 0
AXES_VERBOSE = False
if not REDIS_URL:
    # The embedded default's cache is per process: counts hold per worker, not across them.
    SILENCED_SYSTEM_CHECKS = ["axes.W001"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

CORS_ALLOWED_ORIGINS = _env_list("ALLOWED_ORIGINS")
for _origin in CORS_ALLOWED_ORIGINS:
    if not _origin.startswith(("http://", "https://")) or _origin.count("/") > 2:
        _fail("ALLOWED_ORIGINS", f"{_origin!r} is not an origin like https://app.example.com")
CORS_ALLOW_HEADERS = ("accept", "authorization", "content-type", "if-none-match", "x-api-key")
CORS_EXPOSE_HEADERS = ("etag",)

# --- Transport security ----------------------------------------------------------------

if PRODUCTION_LIKE:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = _env_int("HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    # Behind TLS termination the app redirects plain HTTP; probes stay reachable over HTTP.
    SECURE_SSL_REDIRECT = _env_bool("HTTPS_REDIRECT", default=False)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]

# --- Static files (served by the app itself through WhiteNoise) ------------------------

STATIC_URL = "static/"
STATIC_ROOT = Path(_env("STATIC_ROOT")) if _env("STATIC_ROOT") else BASE_DIR / "var" / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION_LIKE
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = not PRODUCTION_LIKE
if not PRODUCTION_LIKE:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Logging ---------------------------------------------------------------------------

LOG_LEVEL = _env("LOG_LEVEL", "INFO").upper()
LOG_FORMAT = _env("LOG_FORMAT", "json" if PRODUCTION_LIKE else "text")
if LOG_FORMAT not in ("json", "text"):
    _fail("LOG_FORMAT", f"expected json or text, got {LOG_FORMAT!r}")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {
            "()": "flagsite.logs.TextFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s: %(message)s",
        },
        "json": {"()": "flagsite.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- REST API --------------------------------------------------------------------------

REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "flags.api.pagination.Pagination",
    # DRF's three, plus the store's limits on what a body may hold (flags/api/parsers.py).
    "DEFAULT_PARSER_CLASSES": [
        "flags.api.parsers.JSONParser",
        "flags.api.parsers.FormParser",
        "flags.api.parsers.MultiPartParser",
    ],
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "flags.api.schema.AutoSchema",
    "EXCEPTION_HANDLER": "flags.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # Per person (and per address before login), counted in the shared cache.
    "DEFAULT_THROTTLE_CLASSES": [
        "flagsite.throttling.UserRateThrottle",
        "flagsite.throttling.AnonRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": _env("API_RATE_USER", "1200/minute"),
        "anon": _env("API_RATE_ANON", "120/minute"),
    },
}
for _name, _rate in REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"].items():
    _count, _, _period = _rate.partition("/")
    if not _count.isdigit() or _period not in ("second", "minute", "hour", "day"):
        _fail(f"API_RATE_{_name.upper()}", f"expected N/second|minute|hour|day, got {_rate!r}")

# Evaluation requests per API key per window across instances; 0 turns the limit off.
EVALUATION_RATE_LIMIT = _env_int("EVALUATION_RATE_LIMIT", 100_000)
EVALUATION_RATE_WINDOW = max(1, _env_int("EVALUATION_RATE_WINDOW", 60))
EVALUATION_RATE_SYNC = max(0, _env_int("EVALUATION_RATE_SYNC", 1))

SIMPLE_JWT = {
    "SIGNING_KEY": JWT_SECRET,
    "ALGORITHM": "HS256",
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=_env_int("JWT_ACCESS_MINUTES", 15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=_env_int("JWT_REFRESH_DAYS", 7)),
    "UPDATE_LAST_LOGIN": True,
    # Each refresh returns a new refresh token; the one used is blacklisted (flags.api.auth).
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    # Tokens carry a digest of the password hash: a password change revokes them all.
    "CHECK_REVOKE_TOKEN": True,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Feature flag service API",
    "DESCRIPTION": "Manage projects, flags and rollouts; evaluate flags (native and OFREP).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # The docs UI is served from this server, not from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "evaluation.openapi.add_evaluation_paths",
    ],
    "ENUM_NAME_OVERRIDES": {
        "ApiKeyKindEnum": "flags.models.ApiKey.Kind",
        "RoleEnum": "flags.models.Membership.Role",
        "FlagTypeEnum": "flags.models.Flag.Type",
        "GuardActionEnum": "flags.models.RolloutGuard.Action",
    },
}

# --- Safe rollouts (docs/safe-rollouts.md) ----------------------------------------------

# Approvals a change request needs (from people other than its author).
CHANGE_REQUEST_APPROVALS = _env_int("CHANGE_REQUEST_APPROVALS", 1)
# A flag serving one variant to everyone (or not evaluated) this many days is listed as stale.
STALE_FLAG_DAYS = _env_int("STALE_FLAG_DAYS", 30)
# Each process flushes its exposure counters this often; 0 only on demand (the tests).
EXPOSURE_FLUSH_SECONDS = _env_int("EXPOSURE_FLUSH_SECONDS", 0 if TESTING else 10)
# Events and first unit exposures waiting in Redis per environment, at most; past it the
# events endpoint answers 503 until the drain catches up (docs/experiments.md).
EVENTS_MAX_BACKLOG = _env_int("EVENTS_MAX_BACKLOG", 500_000)

# Request bodies above this size are refused with 413 before they are parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = _env_int("MAX_BODY_BYTES", 1024 * 1024)

# --- Integrations: single sign-on, webhooks, triggers (docs/integrations.md) -------------

OIDC_ISSUER = _env("OIDC_ISSUER")
OIDC_CLIENT_ID = _env("OIDC_CLIENT_ID")
OIDC_CLIENT_SECRET = _env("OIDC_CLIENT_SECRET")
OIDC_SCOPES = _env("OIDC_SCOPES", "openid email profile")
OIDC_GROUPS_CLAIM = _env("OIDC_GROUPS_CLAIM", "groups")
OIDC_ROLE_MAP = _env("OIDC_ROLE_MAP")
OIDC_SUPERUSER_GROUPS = _env_list("OIDC_SUPERUSER_GROUPS")
OIDC_PROVIDER_NAME = _env("OIDC_PROVIDER_NAME", "single sign-on")
LOCAL_LOGIN = _env_bool("LOCAL_LOGIN", default=True)
WEBHOOK_TIMEOUT_SECONDS = _env_int("WEBHOOK_TIMEOUT_SECONDS", 5)
WEBHOOK_MAX_ATTEMPTS = _env_int("WEBHOOK_MAX_ATTEMPTS", 8)
WEBHOOK_RETRY_SECONDS = _env_int("WEBHOOK_RETRY_SECONDS", 10)
WEBHOOK_DISABLE_AFTER = _env_int("WEBHOOK_DISABLE_AFTER", 15)
WEBHOOK_PRIVATE_TARGETS = _env_bool("WEBHOOK_PRIVATE_TARGETS", default=not PRODUCTION_LIKE)
TRIGGER_RATE_PER_MINUTE = _env_int("TRIGGER_RATE_PER_MINUTE", 10)

try:
    from integrations.conf import ConfigurationError, sso_settings

    _login = sso_settings(
        issuer=OIDC_ISSUER,
        client_id=OIDC_CLIENT_ID,
        client_secret=OIDC_CLIENT_SECRET,
        scopes=OIDC_SCOPES,
        role_map_text=OIDC_ROLE_MAP,
        local_login=LOCAL_LOGIN,
        production_like=PRODUCTION_LIKE,
    )
except ConfigurationError as error:
    _fail(error.variable, error.problem)
# django-axes first: a locked-out username or address is refused before a password is hashed.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    *_login["AUTHENTICATION_BACKENDS"],
]
