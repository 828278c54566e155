"""Typed errors of the Audian client. Each message says what happened and what to do.

No message ever holds the API key or a signed download URL (a credential for 24 hours): the
client builds every message itself and raises `from None`, so nothing from requests or
urllib3 (which print full URLs) is chained into Dagster's event log.
"""

from __future__ import annotations

from audian_pipeline.client.models import MalformedResponse

__all__ = [
    "AudianError",
    "Unauthorized",
    "NotFound",
    "QuotaExceeded",
    "RateLimited",
    "InvalidRequest",
    "ServerError",
    "Unreachable",
    "StorageError",
    "MalformedResponse",
]


class AudianError(Exception):
    """Base of every error the client raises."""

    status: int | None = None

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Unauthorized(AudianError):
    """401: the key is missing, wrong or revoked."""


class NotFound(AudianError):
    """404: the recording or call does not exist, was deleted, or is past 30-day retention."""


class QuotaExceeded(AudianError):
    """429 quota_exceeded: the account's storage is full; retrying does not help."""


class RateLimited(AudianError):
    """429 rate_limited that outlasted every retry."""


class InvalidRequest(AudianError):
    """400: the request itself is wrong (a bug on our side, or an unsupported format)."""


class ServerError(AudianError):
    """5xx that outlasted every retry."""


class Unreachable(AudianError):
    """No HTTP answer at all (refused, DNS, timeout) after every retry."""


class StorageError(AudianError):
    """The storage host refused or broke a download (403 expired or tampered URL, cut stream)."""
