"""Typed models of Audian's payloads: the one place that reads Audian's JSON.

Everything past this module sees attributes, never dict keys. A payload that does not fit
(missing field, wrong type, unknown status) raises `MalformedResponse` naming the field, so a
bad answer is recorded with its reason instead of being half-written to the lake.

Until a recording is `completed` Audian has no file for it, so the file's fields (`file_size`,
and in the detail `file_format`, `bitrate`, `sample_rate`, `channels`) and `duration` may be
null: they read `None` here. Once it is completed they are required, since the archive
verifies the download against them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Any, Mapping

RECORDING_STATUSES = (
    "initiated",
    "recording",
    "paused",
    "stopped",
    "processing",
    "completed",
    "failed",
)
FILE_FORMATS = ("mp3", "wav", "opus")
PARTICIPANTS = ("all", "caller", "callee")
CALL_DIRECTIONS = ("inbound", "outbound")
CALL_STATUSES = ("completed", "no-answer", "busy", "failed")
EVENT_TYPES = (
    "recording.started",
    "recording.stopped",
    "recording.completed",
    "recording.failed",
)
EVENT_TIME_FIELD = {
    "recording.started": "started_at",
    "recording.stopped": "stopped_at",
    "recording.completed": "completed_at",
    "recording.failed": "failed_at",
}


class MalformedResponse(ValueError):
    """Audian answered with something that is not what its API promises."""


def format_timestamp(value: datetime) -> str:
    """ISO-8601 UTC with a Z, to the second, as Audian writes them."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: Any, field: str = "timestamp") -> datetime:
    if not isinstance(value, str):
        raise MalformedResponse(f"{field} is not an ISO-8601 string: {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedResponse(f"{field} is not an ISO-8601 timestamp: {value!r}") from None
    if parsed.tzinfo is None:
        raise MalformedResponse(f"{field} has no time zone: {value!r}")
    return parsed.astimezone(timezone.utc)


def _field(payload: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(payload, Mapping):
        raise MalformedResponse(f"{what} is not a JSON object")
    if name not in payload:
        raise MalformedResponse(f"{what} has no field {name!r}")
    value = payload[name]
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise MalformedResponse(f"{what}.{name} has the wrong type: {type(value).__name__}")
    return value


def _optional(payload: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    if payload.get(name) is None:
        return None
    return _field(payload, name, kind, what)


def _until_completed(payload: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    """A field Audian may send as null before the recording is completed, and must send after.
    Null is not absent: a missing field is still a broken answer."""
    if payload.get("status") != "completed" and name in payload and payload[name] is None:
        return None
    return _field(payload, name, kind, what)


def _choice(payload: Mapping[str, Any], name: str, allowed: tuple[str, ...], what: str) -> str:
    value = _field(payload, name, str, what)
    if value not in allowed:
        raise MalformedResponse(f"{what}.{name} is {value!r}, not one of {', '.join(allowed)}")
    return value


def _id(payload: Mapping[str, Any], name: str, what: str) -> str:
    value = _field(payload, name, str, what)
    if not value:
        raise MalformedResponse(f"{what}.{name} is empty")
    return value


@dataclass(frozen=True, slots=True)
class RecordingSummary:
    """A recording as the list endpoint gives it."""

    recording_id: str
    call_id: str
    duration: int | None
    """Seconds; None while Audian does not know it yet (still recording)."""
    file_size: int | None
    """Bytes; None while Audian has no file (not completed)."""
    status: str
    created_at: datetime

    @classmethod
    def from_api(cls, payload: Mapping[str, Any]) -> "RecordingSummary":
        what = "recording"
        status = _choice(payload, "status", RECORDING_STATUSES, what)
        return cls(
            recording_id=_id(payload, "recording_id", what),
            call_id=_id(payload, "call_id", what),
            duration=_until_completed(payload, "duration", int, what),
            file_size=_until_completed(payload, "file_size", int, what),
            status=status,
            created_at=parse_timestamp(_field(payload, "created_at", str, what), "recording.created_at"),
        )

    def listed_fields(self) -> tuple:
        """The fields whose change means the stored detail may be stale."""
        return (self.recording_id, self.call_id, self.duration, self.file_size, self.status, self.created_at)


@dataclass(frozen=True, slots=True)
class Recording(RecordingSummary):
    """A recording as `GET /v2/recordings/{id}` gives it: the list fields and the file's."""

    file_format: str | None
    bitrate: int | None
    sample_rate: int | None
    channels: int | None
    """The file's fields: None until processing has produced the file."""
    completed_at: datetime | None

    @classmethod
    def from_api(cls, payload: Mapping[str, Any]) -> "Recording":
        what = "recording"
        summary = RecordingSummary.from_api(payload)
        completed = _optional(payload, "completed_at", str, what)
        return cls(
            **{f.name: getattr(summary, f.name) for f in fields(RecordingSummary)},
            file_format=_file_format(payload, what),
            bitrate=_until_completed(payload, "bitrate", int, what),
            sample_rate=_until_completed(payload, "sample_rate", int, what),
            channels=_until_completed(payload, "channels", int, what),
            completed_at=parse_timestamp(completed, "recording.completed_at") if completed else None,
        )


def _file_format(payload: Mapping[str, Any], what: str) -> str | None:
    if _until_completed(payload, "file_format", str, what) is None:
        return None
    return _choice(payload, "file_format", FILE_FORMATS, what)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of the recordings list, with the paging the server actually applied."""

    items: list[RecordingSummary]
    total: int
    limit: int
    offset: int
    has_more: bool

    @classmethod
    def from_api(cls, payload: Mapping[str, Any]) -> "Page":
        data = _field(payload, "data", list, "list answer")
        pagination = _field(payload, "pagination", dict, "list answer")
        page = cls(
            items=[RecordingSummary.from_api(item) for item in data],
            total=_field(pagination, "total", int, "pagination"),
            limit=_field(pagination, "limit", int, "pagination"),
            offset=_field(pagination, "offset", int, "pagination"),
            has_more=_field(pagination, "has_more", bool, "pagination"),
        )
        if page.limit <= 0:
            raise MalformedResponse(f"pagination.limit is {page.limit}; paging cannot advance")
        return page


@dataclass(frozen=True, slots=True)
class Call:
    """A call as `GET /v2/calls/{call_id}` gives it."""

    call_id: str
    from_number: str
    to_number: str
    direction: str
    status: str
    call_flow_id: str | None
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime
    duration: int

    @classmethod
    def from_api(cls, payload: Mapping[str, Any]) -> "Call":
        what = "call"
        answered = _optional(payload, "answered_at", str, what)
        return cls(
            call_id=_id(payload, "call_id", what),
            from_number=_field(payload, "from", str, what),
            to_number=_field(payload, "to", str, what),
            direction=_choice(payload, "direction", CALL_DIRECTIONS, what),
            status=_choice(payload, "status", CALL_STATUSES, what),
            call_flow_id=_optional(payload, "call_flow_id", str, what),
            started_at=parse_timestamp(_field(payload, "started_at", str, what), "call.started_at"),
            answered_at=parse_timestamp(answered, "call.answered_at") if answered else None,
            ended_at=parse_timestamp(_field(payload, "ended_at", str, what), "call.ended_at"),
            duration=_field(payload, "duration", int, what),
        )


@dataclass(frozen=True, slots=True)
class RecordingEvent:
    """One webhook event. `occurred_at` is the event's own time (started_at, failed_at, ...)."""

    event: str
    recording_id: str
    call_id: str
    occurred_at: datetime
    reason: str | None = None
    checksum_sha256: str | None = None
    download_url: str | None = None
    file_size: int | None = None
    duration: int | None = None
    file_format: str | None = None

    @classmethod
    def from_api(cls, payload: Mapping[str, Any]) -> "RecordingEvent":
        event = _choice(payload, "event", EVENT_TYPES, "event")
        data = _field(payload, "data", dict, "event")
        what = f"{event}.data"
        time_field = EVENT_TIME_FIELD[event]
        checksum = None
        if event == "recording.completed":
            raw = _field(data, "checksum", dict, what)
            if _field(raw, "algorithm", str, f"{what}.checksum").lower() != "sha256":
                raise MalformedResponse(f"{what}.checksum.algorithm is not sha256")
            checksum = _field(raw, "value", str, f"{what}.checksum").lower()
            if len(checksum) != 64 or any(c not in "0123456789abcdef" for c in checksum):
                raise MalformedResponse(f"{what}.checksum.value is not a sha256 hex digest")
        return cls(
            event=event,
            recording_id=_id(data, "recording_id", what),
            call_id=_id(data, "call_id", what),
            occurred_at=parse_timestamp(_field(data, time_field, str, what), f"{what}.{time_field}"),
            reason=_field(data, "reason", str, what) if event == "recording.failed" else None,
            checksum_sha256=checksum,
            download_url=_optional(data, "download_url", str, what),
            file_size=_optional(data, "file_size", int, what),
            duration=_optional(data, "duration", int, what),
            file_format=_optional(data, "file_format", str, what),
        )
