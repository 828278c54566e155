"""Contract variations: answers Audian's contract allows that a friendly emulator never gives.

With every variation off (the default) the emulator answers exactly as before, byte for byte,
so seeded accounts, audio and tests stay reproducible. `Variations.realistic()` turns them all
on, deterministic from the seed like everything else:

- `nulls`: `file_size` is null until a recording is completed (failed ones never get a file),
  `duration` while it is still being recorded, and the detail's `file_format`, `bitrate`,
  `sample_rate` and `channels` until processing has produced the file;
- `extra_fields`: fields the contract does not name, in list items, details, paging and calls;
- `settling`: that share of past days' completed recordings is still `processing` at the
  starting clock and completes `settle_seconds` later, so a second run of the same day finds
  it changed;
- `expire_after_cut`: a signed URL whose download the storage host cut is expired by the time
  the client resumes, and every `GET /download` hands out a new URL, so the client must fetch
  a fresh one to resume;
- `unsafe_ids`: that share of past days gets one extra completed recording whose ID is not a
  safe file name (see `account.UNSAFE_IDS`).

Rate limiting (`429` with `Retry-After`) is a fault already: `REALISTIC_FAULTS` pairs it, and
cut downloads for `expire_after_cut` to act on, with these variations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from audian_pipeline.emulator.faults import FaultConfig

STILL_RECORDING = ("initiated", "recording", "paused")
FILE_FIELDS = ("file_format", "bitrate", "sample_rate", "channels")


@dataclass(frozen=True)
class Variations:
    """Which contract variations the emulator serves; rates in [0, 1]."""

    nulls: bool = False
    extra_fields: bool = False
    settling: float = 0.0
    settle_seconds: int = 600
    expire_after_cut: bool = False
    unsafe_ids: float = 0.0

    def __post_init__(self) -> None:
        for name in ("settling", "unsafe_ids"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"variation rate {name} must be between 0 and 1 (got {getattr(self, name)})")
        if self.settle_seconds < 1:
            raise ValueError("settle_seconds must be at least 1")

    @classmethod
    def realistic(cls) -> "Variations":
        """Every variation on, as the end-to-end variation test and `--contract-variations` run them."""
        return cls(nulls=True, extra_fields=True, settling=0.08, expire_after_cut=True, unsafe_ids=0.3)

    def to_dict(self) -> dict:
        return asdict(self)

    # ---- answer shapes -------------------------------------------------------------------
    def list_item(self, item: dict, participant: str) -> dict:
        """A list item as served: nulls where the recording has no file yet, extra fields."""
        if self.nulls:
            _null_until_done(item, ())
        if self.extra_fields:
            item.update(participant=participant, links={"self": f"/v2/recordings/{item['recording_id']}"})
        return item

    def detail(self, item: dict, participant: str) -> dict:
        if self.nulls:
            _null_until_done(item, FILE_FIELDS)
        if self.extra_fields:
            item.update(participant=participant, transcription=None, storage_region="us-east-1")
        return item

    def list_answer(self, answer: dict) -> dict:
        if self.extra_fields:
            answer["pagination"]["next_offset"] = answer["pagination"]["offset"] + len(answer["data"])
            answer["request_id"] = f"req_{answer['pagination']['offset']:08x}"
        return answer

    def call(self, answer: dict) -> dict:
        if self.extra_fields:
            answer.update(tags=[], recording_enabled=True)
        return answer


def _null_until_done(item: dict[str, Any], file_fields: tuple[str, ...]) -> None:
    status = item["status"]
    if status != "completed":
        item["file_size"] = None
        for name in file_fields:
            item[name] = None
    if status in STILL_RECORDING:
        item["duration"] = None


REALISTIC_FAULTS = FaultConfig(rate_limited=0.04, retry_after_seconds=1, cut=0.1)
"""The faults that go with `Variations.realistic()`: `429 rate_limited` with `Retry-After`, and
downloads cut often enough that some URLs expire before their resume."""
