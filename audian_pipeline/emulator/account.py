"""A deterministic Audian account: calls, recordings and their life cycle, built from a seed.

The account is the emulator's single source of truth. Everything the API serves (lists,
details, downloads, webhooks) is derived from it at the emulator's clock, so the same seed
and clock always give the same answers, and tests can compare the pipeline's output with
`Account` directly.

A recording's life, relative to its `created_at` (the moment recording started):
initiated (1 s) -> recording (duration, with a pause for some) -> stopped (5 s) ->
processing (20-90 s) -> completed or failed. It is deleted 30 days after `created_at`.
`duration` reads 0 until the recording stops and `file_size` 0 until it completes, so a
recording listed early changes later; with the `nulls` variation (see `variations.py`) they
read null instead, as the contract also allows.
"""

from __future__ import annotations

import bisect
import hashlib
import random
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Iterable

from audian_pipeline.emulator.audio import AudioSpec, bitrate_for, file_size
from audian_pipeline.settings import RETENTION_DAYS

if TYPE_CHECKING:
    from audian_pipeline.emulator.variations import Variations

RETENTION = timedelta(days=RETENTION_DAYS)
FAILURE_REASONS = ("storage_error", "quota_exceeded", "encoding_error", "no_audio")
FORMAT_WEIGHTS = (("mp3", 0.6), ("wav", 0.15), ("opus", 0.25))
PARTICIPANT_WEIGHTS = (("all", 0.6), ("caller", 0.2), ("callee", 0.2))
SAMPLE_RATES = {"mp3": (8000, 16000), "wav": (8000, 16000), "opus": (16000, 48000)}
DEFAULT_BITRATE = {"mp3": 64, "opus": 32}
FAILURE_RATE = 0.06
SILENT_PER_MILLE = 25
TERMINAL_STATES = ("completed", "failed")
UNSAFE_IDS = ("../rec_escape", "rec_dots.in.name", "rec%2F..%2Fpasswd", "rec_with/slash")
"""IDs a careless pipeline would turn into a path outside its archive, or into another URL
(variation `unsafe_ids`). The client refuses to put those with `/` or `%` into a URL."""


def utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(microsecond=0)


def stable_hash(*parts: object) -> int:
    """A hash that is the same on every run (Python's hash() is salted per process)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass(slots=True)
class CallRecord:
    call_id: str
    from_number: str
    to_number: str
    direction: str
    status: str
    call_flow_id: str | None
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    duration: int

    def to_api(self, now: datetime) -> dict:
        ended = self.ended_at if self.ended_at and self.ended_at <= now else None
        return {
            "call_id": self.call_id,
            "from": self.from_number,
            "to": self.to_number,
            "direction": self.direction,
            "status": self.status if ended else "in-progress",
            "call_flow_id": self.call_flow_id,
            "started_at": iso(self.started_at),
            "answered_at": iso(self.answered_at) if self.answered_at else None,
            "ended_at": iso(ended) if ended else None,
            "duration": self.duration if ended else 0,
        }


@dataclass(slots=True)
class RecordingRecord:
    """A recording and its whole timeline; `status_at(now)` says what the API shows."""

    recording_id: str
    call_id: str
    created_at: datetime
    file_format: str
    participant: str
    sample_rate: int
    channels: int
    bitrate: int
    duration: int
    outcome: str  # "completed" | "failed"
    failure_reason: str | None
    pause_seconds: int
    processing_seconds: int
    file_size: int = 0
    deleted_at: datetime | None = None
    stopped_by_api: datetime | None = field(default=None)  # live recordings only
    paused_by_api: bool = False

    @property
    def stopped_at(self) -> datetime:
        if self.stopped_by_api is not None:
            return self.stopped_by_api
        return self.created_at + timedelta(seconds=1 + self.duration + self.pause_seconds)

    @property
    def finished_at(self) -> datetime:
        """When processing ends: completed_at or failed_at."""
        return self.stopped_at + timedelta(seconds=5 + self.processing_seconds)

    @property
    def expires_at(self) -> datetime:
        return self.created_at + RETENTION

    @property
    def spec(self) -> AudioSpec:
        return AudioSpec(
            recording_id=self.recording_id,
            file_format=self.file_format,
            duration=self.duration,
            sample_rate=self.sample_rate,
            channels=self.channels,
            bitrate=self.bitrate,
            content=self.content,
        )

    @property
    def content(self) -> str:
        """What the file holds: the conversation (both parties), or one party for `caller` and
        `callee`; a few recordings are dead lines where nobody speaks. Drawn from the id, so it
        takes nothing from the account's random stream."""
        if stable_hash("silence", self.recording_id) % 1000 < SILENT_PER_MILLE:
            return "silence"
        return "conversation" if self.participant == "all" else self.participant

    def visible_at(self, now: datetime) -> bool:
        if self.created_at > now or now >= self.expires_at:
            return False
        return self.deleted_at is None or self.deleted_at > now

    def status_at(self, now: datetime) -> str:
        elapsed = (now - self.created_at).total_seconds()
        if elapsed < 1 and self.stopped_by_api is None:  # record/start answers "recording" at once
            return "initiated"
        if now < self.stopped_at:
            if self.paused_by_api:
                return "paused"
            middle = 1 + self.duration / 2
            if self.pause_seconds and middle <= elapsed < middle + self.pause_seconds:
                return "paused"
            return "recording"
        if now < self.stopped_at + timedelta(seconds=5):
            return "stopped"
        if now < self.finished_at:
            return "processing"
        return self.outcome

    def to_list_item(self, now: datetime) -> dict:
        status = self.status_at(now)
        stopped = status not in ("initiated", "recording", "paused")
        return {
            "recording_id": self.recording_id,
            "call_id": self.call_id,
            "duration": self.duration if stopped else 0,
            "file_size": self.file_size if status == "completed" else 0,
            "status": status,
            "created_at": iso(self.created_at),
        }

    def to_detail(self, now: datetime) -> dict:
        item = self.to_list_item(now)
        item.update(
            file_format=self.file_format,
            bitrate=self.bitrate,
            sample_rate=self.sample_rate,
            channels=self.channels,
            completed_at=iso(self.finished_at) if item["status"] == "completed" else None,
        )
        return item

    def sort_key(self) -> tuple[datetime, str]:
        return (self.created_at, self.recording_id)


def iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _weighted(rng: random.Random, choices: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


class Clock:
    """The emulator's time: frozen at an instant (tests) or running with the wall clock."""

    def __init__(self, start: datetime | None = None, frozen: bool | None = None) -> None:
        self._frozen = (start is not None) if frozen is None else frozen
        self._start = utc(start or datetime.now(timezone.utc))
        self._wall_start = datetime.now(timezone.utc)
        self._offset = timedelta(0)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            base = self._start if self._frozen else self._start + (datetime.now(timezone.utc) - self._wall_start)
            return utc(base + self._offset)

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._offset += timedelta(seconds=seconds)
        return self.now()


class Account:
    """Calls and recordings of one account, generated from `seed`, kept sorted for paging."""

    def __init__(
        self,
        seed: int = 7,
        days: int = 35,
        per_day: int = 40,
        clock: Clock | None = None,
        max_duration: int = 1200,
        variations: Variations | None = None,
    ) -> None:
        self.seed = seed
        self.clock = clock or Clock()
        self.max_duration = max_duration
        self._lock = threading.RLock()
        self.recordings: dict[str, RecordingRecord] = {}
        self.calls: dict[str, CallRecord] = {}
        self._sorted: list[RecordingRecord] = []  # newest first
        self._keys: list[tuple[float, str]] = []  # negated sort keys, ascending, for bisect
        self._counter = 0
        self._deletions = 0
        self._generate(days, per_day)
        if variations is not None:
            self._settle_later(variations.settling, variations.settle_seconds)
            self._add_unsafe_ids(variations.unsafe_ids, days)
        self._reindex()

    # ---- generation -------------------------------------------------------------------
    def _generate(self, days: int, per_day: int) -> None:
        now = self.clock.now()
        start_of_today = now.replace(hour=0, minute=0, second=0)
        rng = random.Random(self.seed)
        for day_index in range(days, -1, -1):
            day_start = start_of_today - timedelta(days=day_index)
            day_seconds = 86400 if day_index else int((now - day_start).total_seconds())
            count = per_day if day_index else per_day * day_seconds // 86400
            for _ in range(count):
                created = day_start + timedelta(seconds=rng.randrange(max(day_seconds, 1)))
                self._add_call_with_recordings(rng, created)
        self._add_every_live_state(rng, now)

    def _add_every_live_state(self, rng: random.Random, now: datetime) -> None:
        """A recording in each in-flight state at the clock, so every state is served."""
        # (seconds before now it was created, duration, pause, processing) -> state at now
        shapes = {
            "initiated": (0, 120, 0, 60),
            "recording": (30, 120, 0, 60),
            "paused": (62, 120, 20, 60),
            "stopped": (63, 60, 0, 60),
            "processing": (96, 60, 0, 60),
        }
        for state, (ago, duration, pause, processing) in shapes.items():
            created = now - timedelta(seconds=ago)
            call = self._make_call(rng, created)
            self.calls[call.call_id] = call
            rec = self._make_recording(rng, call.call_id, created, duration=duration)
            rec.pause_seconds, rec.processing_seconds = pause, processing
            if rec.outcome == "completed":
                rec.file_size = file_size(rec.spec)
            call.ended_at = rec.stopped_at + timedelta(seconds=3)
            call.duration = int((call.ended_at - call.started_at).total_seconds())
            self.recordings[rec.recording_id] = rec
            assert rec.status_at(now) == state, (state, rec.status_at(now))

    def _roll(self, *key: object) -> float:
        """A draw in [0, 1) from the seed and `key` alone, so it takes nothing from the account's
        random stream: turning a variation on changes no other recording."""
        return (stable_hash(self.seed, *key) % 1_000_000) / 1_000_000

    def _settle_later(self, rate: float, seconds: int) -> None:
        """That share of past days' completed recordings is still processing now and completes
        `seconds` later (variation `settling`)."""
        now = self.clock.now()
        start_of_today = now.replace(hour=0, minute=0, second=0)
        for rec in self.recordings.values():
            stopped = rec.stopped_at + timedelta(seconds=5)
            if (rate and rec.outcome == "completed" and rec.created_at < start_of_today and stopped <= now
                    and self._roll("settle", rec.recording_id) < rate):
                rec.processing_seconds = int((now - stopped).total_seconds()) + seconds

    def _add_unsafe_ids(self, rate: float, days: int) -> None:
        """On that share of past days, one more completed recording whose ID is no safe file name
        (variation `unsafe_ids`); its created_at is a second no other recording has."""
        start_of_today = self.clock.now().replace(hour=0, minute=0, second=0)
        taken = {r.created_at for r in self.recordings.values()}
        for day_index in range(days, 0, -1):
            day = (start_of_today - timedelta(days=day_index)).date()
            if not rate or self._roll("unsafe", day) >= rate:
                continue
            rng = random.Random(stable_hash(self.seed, "unsafe", day))
            created = start_of_today - timedelta(days=day_index) + timedelta(seconds=rng.randrange(86000))
            while created in taken:
                created += timedelta(seconds=1)
            taken.add(created)
            call = self._make_call(rng, created)
            rid = f"{UNSAFE_IDS[stable_hash(self.seed, day) % len(UNSAFE_IDS)]}_{day:%Y%m%d}"
            rec = self._make_recording(rng, call.call_id, created, outcome="completed", recording_id=rid)
            call.ended_at = rec.stopped_at + timedelta(seconds=3)
            call.duration = int((call.ended_at - call.started_at).total_seconds())
            self.calls[call.call_id] = call
            self.recordings[rid] = rec

    def _new_id(self, prefix: str, rng: random.Random) -> str:
        return f"{prefix}_{rng.getrandbits(64):016x}"

    def _add_call_with_recordings(self, rng: random.Random, created: datetime) -> None:
        call = self._make_call(rng, created)
        self.calls[call.call_id] = call
        n_recordings = 2 if rng.random() < 0.08 else 1
        at = created
        for _ in range(n_recordings):
            rec = self._make_recording(rng, call.call_id, at)
            self.recordings[rec.recording_id] = rec
            at = rec.stopped_at + timedelta(seconds=rng.randrange(5, 60))
        call.ended_at = max(call.ended_at or at, at)
        call.duration = int((call.ended_at - call.started_at).total_seconds())

    def _make_call(self, rng: random.Random, recording_start: datetime) -> CallRecord:
        direction = "inbound" if rng.random() < 0.55 else "outbound"
        ring = rng.randrange(2, 25)
        started = recording_start - timedelta(seconds=ring)
        support_line = f"+1415555{rng.randrange(1000, 10000):04d}"
        customer = f"+1{rng.randrange(201, 990)}555{rng.randrange(1000, 10000):04d}"
        return CallRecord(
            call_id=self._new_id("call", rng),
            from_number=customer if direction == "inbound" else support_line,
            to_number=support_line if direction == "inbound" else customer,
            direction=direction,
            status="completed",
            call_flow_id=self._new_id("cf", rng) if direction == "inbound" else None,
            started_at=started,
            answered_at=recording_start,
            ended_at=None,
            duration=0,
        )

    def _make_recording(
        self,
        rng: random.Random,
        call_id: str,
        created: datetime,
        *,
        file_format: str | None = None,
        duration: int | None = None,
        sample_rate: int | None = None,
        channels: int | None = None,
        outcome: str | None = None,
        recording_id: str | None = None,
    ) -> RecordingRecord:
        file_format = file_format or _weighted(rng, FORMAT_WEIGHTS)
        participant = _weighted(rng, PARTICIPANT_WEIGHTS)
        sample_rate = sample_rate or rng.choice(SAMPLE_RATES[file_format])
        channels = channels or (2 if participant == "all" and rng.random() < 0.5 else 1)
        if duration is None:
            duration = int(min(self.max_duration, max(3, rng.lognormvariate(3.9, 0.9))))
        outcome = outcome or ("failed" if rng.random() < FAILURE_RATE else "completed")
        rec = RecordingRecord(
            recording_id=recording_id or self._new_id("rec", rng),
            call_id=call_id,
            created_at=created,
            file_format=file_format,
            participant=participant,
            sample_rate=sample_rate,
            channels=channels,
            bitrate=bitrate_for(file_format, sample_rate, channels, DEFAULT_BITRATE.get(file_format)),
            duration=duration,
            outcome=outcome,
            failure_reason=rng.choice(FAILURE_REASONS) if outcome == "failed" else None,
            pause_seconds=rng.randrange(5, 30) if rng.random() < 0.1 else 0,
            processing_seconds=rng.randrange(20, 90),
        )
        if rec.outcome == "completed":
            rec.file_size = file_size(rec.spec)
        return rec

    # ---- index --------------------------------------------------------------------------
    def _reindex(self) -> None:
        with self._lock:
            ordered = sorted(self.recordings.values(), key=RecordingRecord.sort_key, reverse=True)
            self._sorted = ordered
            self._keys = [(-r.created_at.timestamp(), _neg(r.recording_id)) for r in ordered]

    def _insert(self, rec: RecordingRecord) -> None:
        key = (-rec.created_at.timestamp(), _neg(rec.recording_id))
        index = bisect.bisect_left(self._keys, key)
        self._keys.insert(index, key)
        self._sorted.insert(index, rec)

    # ---- queries ------------------------------------------------------------------------
    def now(self) -> datetime:
        return self.clock.now()

    def visible(self, now: datetime | None = None, since: datetime | None = None) -> list[RecordingRecord]:
        """Listed recordings (newest first) with created_at >= since, at `now`."""
        now = now or self.now()
        with self._lock:
            lo = bisect.bisect_left(self._keys, (-now.timestamp(), ""))
            hi = len(self._keys)
            if since is not None:
                hi = bisect.bisect_right(self._keys, (-since.timestamp(), "\U0010ffff" * 40))
            window = self._sorted[lo:hi]
        return [r for r in window if r.visible_at(now)]

    def page(self, now: datetime, since: datetime | None, offset: int, limit: int) -> tuple[list[RecordingRecord], int]:
        """One page of the list and its total. Without deletions by API the listed window is a
        contiguous slice of the sorted index, so a page costs O(limit), not O(account)."""
        with self._lock:
            if self._deletions == 0:
                lo = bisect.bisect_left(self._keys, (-now.timestamp(), ""))
                hi = bisect.bisect_left(self._keys, (-(now - RETENTION).timestamp(), ""))
                if since is not None:
                    hi = min(hi, bisect.bisect_right(self._keys, (-since.timestamp(), "\U0010ffff" * 40)))
                hi = max(hi, lo)
                return self._sorted[lo + offset: min(lo + offset + limit, hi)], hi - lo
        matching = self.visible(now, since)
        return matching[offset: offset + limit], len(matching)

    def get_recording(self, recording_id: str, now: datetime | None = None) -> RecordingRecord | None:
        rec = self.recordings.get(recording_id)
        if rec is None or not rec.visible_at(now or self.now()):
            return None
        return rec

    def recordings_of_day(self, day: datetime) -> list[RecordingRecord]:
        """Every recording ever created that UTC day, deleted ones included (ground truth)."""
        end = day + timedelta(days=1)
        return sorted(
            (r for r in self.recordings.values() if day <= r.created_at < end),
            key=RecordingRecord.sort_key,
            reverse=True,
        )

    # ---- mutations ----------------------------------------------------------------------
    def delete(self, recording_id: str) -> RecordingRecord | None:
        with self._lock:
            rec = self.get_recording(recording_id)
            if rec is None:
                return None
            rec.deleted_at = self.now()
            self._deletions += 1
            return rec

    def create_recordings(self, count: int, rng_key: str = "drift", call_id: str | None = None,
                          **overrides) -> list[RecordingRecord]:
        """New recordings created now (offset drift, a live call, or a test asking for a file)."""
        with self._lock:
            self._counter += 1
            rng = random.Random(stable_hash(self.seed, rng_key, self._counter))
            now = self.now()
            made = []
            for _ in range(count):
                if call_id is None:
                    call = self._make_call(rng, now)
                    call.ended_at = now + timedelta(seconds=(overrides.get("duration") or 60) + 120)
                    self.calls[call.call_id] = call
                rec = self._make_recording(rng, call_id or call.call_id, now, **overrides)
                self.recordings[rec.recording_id] = rec
                self._insert(rec)
                made.append(rec)
        return made

    def start_live_recording(self, call_id: str, file_format: str) -> RecordingRecord:
        """record/start: a recording whose stop is decided by a later record/stop call."""
        with self._lock:
            (rec,) = self.create_recordings(1, rng_key=f"live-{call_id}", call_id=call_id, file_format=file_format)
            rec.stopped_by_api = self.now() + timedelta(days=3650)
            return rec

    def stop_live_recording(self, rec: RecordingRecord) -> None:
        with self._lock:
            now = self.now()
            rec.duration = max(1, int((now - rec.created_at).total_seconds()) - 1)
            rec.stopped_by_api = now
            rec.paused_by_api = False
            if rec.outcome == "completed":
                rec.file_size = file_size(rec.spec)

    def events_due(
        self, until: datetime, since: datetime | None = None
    ) -> Iterable[tuple[datetime, str, RecordingRecord]]:
        """(time, event type, recording) for every webhook event in (since, until]."""
        for rec in self.recordings.values():
            if rec.stopped_by_api and rec.stopped_by_api > until:
                times = [(rec.created_at + timedelta(seconds=1), "recording.started")]
            else:
                times = [
                    (rec.created_at + timedelta(seconds=1), "recording.started"),
                    (rec.stopped_at, "recording.stopped"),
                    (rec.finished_at, f"recording.{rec.outcome}"),
                ]
            for when, kind in times:
                if when <= until and (since is None or when > since) and when < rec.expires_at:
                    yield when, kind, rec


def _neg(text: str) -> str:
    """A string whose ascending order is `text`'s descending order (for ids of equal length)."""
    return "".join(chr(0x10FFFF - ord(c)) for c in text)

