"""The environment settings every command and resource reads, validated in one place.

A wrong setting must fail at start with a message that names the variable and says how to
fix it; a secret's value must never appear in that message.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

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

RETENTION_DAYS = 30


class SettingError(ValueError):
    """A setting is missing or malformed; the message names it and the fix."""


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


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(f"{name} must be a whole number (got {raw!r}).") from None
    if value <= 0:
        raise SettingError(f"{name} must be greater than zero (got {value}).")
    return value


@dataclass(frozen=True)
class Settings:
    api_url: str
    api_key: str
    data_dir: Path
    webhook_secret: str
    storage_quota_bytes: int

    def __repr__(self) -> str:  # never print secrets, even by accident
        return (
            f"Settings(api_url={self.api_url!r}, data_dir={str(self.data_dir)!r}, "
            f"storage_quota_bytes={self.storage_quota_bytes}, api_key=<redacted>, "
            "webhook_secret=<redacted>)"
        )

    __str__ = __repr__

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        return cls(
            api_url=check_api_url(env.get("AUDIAN_API_URL") or DEFAULT_API_URL),
            api_key=check_api_key(env.get("AUDIAN_API_KEY", DEMO_API_KEY)),
            data_dir=Path(env.get("AUDIAN_DATA_DIR") or "./data").resolve(),
            webhook_secret=check_webhook_secret(
                env.get("AUDIAN_WEBHOOK_SECRET") or DEMO_WEBHOOK_SECRET
            ),
            storage_quota_bytes=_positive_int(
                "AUDIAN_STORAGE_QUOTA_BYTES",
                env.get("AUDIAN_STORAGE_QUOTA_BYTES") or str(DEFAULT_STORAGE_QUOTA_BYTES),
            ),
        )
