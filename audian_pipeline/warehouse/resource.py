"""The warehouse's own settings as a Dagster resource: the quota the storage report compares
against, and whether `calls` may hold full phone numbers."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Mapping

import dagster as dg

from audian_pipeline.settings import DEFAULT_STORAGE_QUOTA_BYTES, SettingError, Settings

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


class WarehouseResource(dg.ConfigurableResource):
    """AUDIAN_STORAGE_QUOTA_BYTES and AUDIAN_SHOW_PHONE_NUMBERS, as the warehouse load uses them.

    Both are written into the warehouse's `pipeline_settings` row at each load, so a report
    read later says which quota it compared against and whether numbers were masked."""

    storage_quota_bytes: int = DEFAULT_STORAGE_QUOTA_BYTES
    show_phone_numbers: bool = False
    as_of: str | None = None
    """ISO instant the reports are computed at; None (the default) means the time of the load.
    Set it to reproduce a report, or to read an emulator whose clock is frozen."""

    def as_of_datetime(self) -> datetime | None:
        if self.as_of is None:
            return None
        value = datetime.fromisoformat(self.as_of.replace("Z", "+00:00"))
        if value.tzinfo is None:
            raise SettingError(f"WarehouseResource.as_of needs a time zone, e.g. {self.as_of}Z")
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "WarehouseResource":
        env = os.environ if environ is None else environ
        quota = Settings.from_env(dict(env)).storage_quota_bytes
        return cls(storage_quota_bytes=quota, show_phone_numbers=show_phone_numbers_from_env(env))
