"""The environment settings every command and resource reads, validated in one place.

A wrong setting must fail at start with a message that names the variable and says how to
fix it; a secret's value must never appear in that message.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from audian_pipeline.lake import paths

DEMO_API_KEY = "audian_demo_key_0123456789abcdef"
"""The key the embedded emulator accepts unless AUDIAN_API_KEY says otherwise."""

DEMO_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"audian-emulator-demo-secret-32by").decode()
"""The Standard Webhooks secret the emulator signs with unless AUDIAN_WEBHOOK_SECRET is set."""

DEFAULT_API_PORT = 8443
DEFAULT_STORAGE_PORT = 8444
DEFAULT_WEBHOOKS_PORT = 8090
DEFAULT_API_URL = f"http://127.0.0.1:{DEFAULT_API_PORT}"
DEFAULT_STORAGE_QUOTA_BYTES = 50 * 1024**3
"""50 GiB: Audian does not report the quota, so the quota report needs the user to set it."""

DEFAULT_DATA_DIR = "./data"
RETENTION_DAYS = 30


class SettingError(ValueError):
    """A setting is missing or malformed; the message names it and the fix."""


class RangeError(ValueError):
    """Days that no run can cover (--end before --start, outside the partitions); the message
    says which days can."""


def check_api_url(value: str, name: str = "AUDIAN_API_URL") -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingError(
            f"{name} must be an http(s) base URL such as {DEFAULT_API_URL} or "
            f"https://api.audian.com:8443 (got {value!r})."
        )
    if parts.path.rstrip("/").endswith("/v2"):
        raise SettingError(
            f"{name} is the base URL without /v2: the client adds /v2 itself "
            f"(set it to {value.rstrip('/')[:-3]!r})."
        )
    return value.rstrip("/")


def check_api_key(value: str, name: str = "AUDIAN_API_KEY") -> str:
    if not value or not value.strip():
        raise SettingError(f"{name} is empty: set it to your Audian API key.")
    if value != value.strip() or any(c.isspace() for c in value) or not value.isprintable():
        raise SettingError(
            f"{name} contains whitespace or control characters: copy the key again without "
            "quotes, spaces or a trailing newline."
        )
    return value


def check_webhook_secret(value: str, name: str = "AUDIAN_WEBHOOK_SECRET") -> str:
    if not value.startswith("whsec_"):
        raise SettingError(
            f"{name} must be a Standard Webhooks secret of the form whsec_<base64>, as shown "
            "in Audian's webhook settings."
        )
    try:
        raw = base64.b64decode(value[len("whsec_"):], validate=True)
    except (binascii.Error, ValueError):
        raise SettingError(f"{name}: the part after whsec_ is not valid base64.") from None
    if len(raw) < 16:
        raise SettingError(f"{name}: the secret is shorter than 16 bytes; use the full secret.")
    return value


def positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(f"{name} must be a whole number (got {raw!r}).") from None
    if value <= 0:
        raise SettingError(f"{name} must be greater than zero (got {value}).")
    return value


def check_events_db(value: str, name: str = "AUDIAN_EVENTS_DB") -> str:
    """A path (SQLite, made absolute) or a postgresql:// URL; the URL's password never reaches a message."""
    if "://" not in value:
        return str(Path(value).resolve())
    parts = urlsplit(value)
    if parts.scheme not in ("postgresql", "postgres"):
        raise SettingError(
            f"{name} must be a file path (SQLite) or a postgresql://user:password@host:port/database URL "
            f"(got a {parts.scheme}:// URL)."
        )
    if not parts.hostname or not parts.path.strip("/"):
        raise SettingError(
            f"{name} needs a host and a database, as in postgresql://user:password@host:5432/audian."
        )
    return value


def env_value(name: str, default: str, environ: Mapping[str, str] | None = None) -> str:
    """A setting as the process sees it now: the variable when set and not empty, else the default.

    Called when a run, sensor tick or command starts, never at import: a variable set only in
    the launch environment counts, and a bad one fails what uses it, not the code location."""
    env = os.environ if environ is None else environ
    return env.get(name) or default


class Settings:
    """The settings a command reads, each validated when the command first uses it, so a bad
    receiver-only secret fails `audian-pipeline webhooks` and nothing else."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if environ is None else environ

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        return cls(environ)

    def __repr__(self) -> str:  # never print secrets, even by accident
        return f"Settings(data_dir={str(self.data_dir)!r}, api_key=<redacted>, webhook_secret=<redacted>)"

    __str__ = __repr__

    @property
    def api_url(self) -> str:
        return check_api_url(env_value("AUDIAN_API_URL", DEFAULT_API_URL, self._env))

    @property
    def api_key(self) -> str:
        return check_api_key(self._env.get("AUDIAN_API_KEY", DEMO_API_KEY))

    @property
    def data_dir(self) -> Path:
        return Path(env_value("AUDIAN_DATA_DIR", DEFAULT_DATA_DIR, self._env)).resolve()

    @property
    def events_db(self) -> str:
        """AUDIAN_EVENTS_DB: a path (SQLite, the default under the data dir) or a postgresql:// URL."""
        default = str(paths.events_db(self.data_dir))
        return check_events_db(env_value("AUDIAN_EVENTS_DB", default, self._env))

    @property
    def webhook_secret(self) -> str:
        return check_webhook_secret(env_value("AUDIAN_WEBHOOK_SECRET", DEMO_WEBHOOK_SECRET, self._env))

    @property
    def storage_quota_bytes(self) -> int:
        return positive_int("AUDIAN_STORAGE_QUOTA_BYTES",
                            env_value("AUDIAN_STORAGE_QUOTA_BYTES", str(DEFAULT_STORAGE_QUOTA_BYTES), self._env))


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def show_phone_numbers_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """AUDIAN_SHOW_PHONE_NUMBERS: `1` lets the warehouse hold full numbers; unset or `0` masks them."""
    env = os.environ if environ is None else environ
    raw = env.get("AUDIAN_SHOW_PHONE_NUMBERS", "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise SettingError(
        f"AUDIAN_SHOW_PHONE_NUMBERS must be 1 (show full phone numbers in the warehouse) or 0 (mask them; "
        f"the default), got {raw!r}."
    )


EXECUTORS = ("in_process", "celery")


def executor_from_env(environ: Mapping[str, str] | None = None) -> str:
    """AUDIAN_EXECUTOR: `in_process` (the default: every step in the run's own process) or
    `celery` (each step a task for the `audian-pipeline worker` processes)."""
    env = os.environ if environ is None else environ
    value = (env.get("AUDIAN_EXECUTOR") or "in_process").strip().lower()
    if value not in EXECUTORS:
        raise SettingError(f"AUDIAN_EXECUTOR must be in_process (the default) or celery (got {value!r}).")
    return value


def celery_urls(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(broker, result backend) of the Celery executor. The backend defaults to the broker: one
    Redis serves both. Runs and workers must read the same values, so both come from here."""
    env = os.environ if environ is None else environ
    broker = env.get("AUDIAN_CELERY_BROKER_URL", "").strip()
    if not broker:
        raise SettingError("AUDIAN_EXECUTOR=celery needs AUDIAN_CELERY_BROKER_URL, the Redis the workers listen "
                           "on, e.g. redis://redis-host:6379/0.")
    backend = env.get("AUDIAN_CELERY_BACKEND_URL", "").strip() or broker
    for name, url in (("AUDIAN_CELERY_BROKER_URL", broker), ("AUDIAN_CELERY_BACKEND_URL", backend)):
        if urlsplit(url).scheme not in ("redis", "rediss"):
            raise SettingError(f"{name} must be a redis:// or rediss:// URL, e.g. redis://redis-host:6379/0 "
                               f"(got a {urlsplit(url).scheme or 'schemeless'} value).")
    return broker, backend


def check_dagster_pg_url(environ: Mapping[str, str] | None = None) -> None:
    """DAGSTER_PG_URL, when set, names psycopg2: dagster-postgres runs on it, and SQLAlchemy 2.1
    would pick psycopg 3 for a plain postgresql:// URL and fail with "No module named 'psycopg'"."""
    env = os.environ if environ is None else environ
    scheme = urlsplit(env.get("DAGSTER_PG_URL", "")).scheme
    if scheme in ("postgresql", "postgres"):
        raise SettingError("DAGSTER_PG_URL must name its driver: postgresql+psycopg2://user:password@host:5432/dagster "
                           "(dagster-postgres runs on psycopg2).")
