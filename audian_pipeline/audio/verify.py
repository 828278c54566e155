"""Where a recording is verified: is this file exactly Audian's recording, and real audio?

A file joins the archive only with the outcome `verified`: its size is the API's `file_size`,
its sha256 is the checksum of the `recording.completed` webhook, and it parses as the declared
format with the API's duration (within DURATION_TOLERANCE_S), and its sample rate and channels
where Audian's detail gave them. A recording described by its `recording.completed` webhook
instead (`recordings.detail_source = 'webhook'`) has none to compare: the probe's own figures are
then the recorded ones, while size, sha256, format and duration are checked all the same. Every
other outcome says what is wrong, so a person can tell a corrupt download from a recording
Audian has not finished describing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from audian_pipeline.audio.probe import DURATION_TOLERANCE_S, AudioProbe, NotAudio, probe

OUTCOMES = {
    "verified": "size, sha256, format, duration (and sample rate and channels where Audian gave them) all "
                "agree; archived",
    "no_checksum_yet": "everything else agrees, but no recording.completed webhook has brought the "
                       "checksum yet; kept aside and verified on a later run, never trusted",
    "checksum_mismatch": "the bytes differ from the webhook's sha256 (corrupted in transit or at rest)",
    "size_mismatch": "the byte count differs from the API's file_size",
    "not_audio": "the bytes are not a parseable MP3, WAV or Ogg Opus file",
    "format_mismatch": "real audio, but not the declared format, sample rate or channels",
    "duration_mismatch": "real audio of the declared format whose length disagrees with the API's",
    "gone": "Audian answered 404: deleted or past retention before it was archived",
    "download_failed": "the download kept failing (cut, refused, 5xx); retried on the next run",
    "not_completed": "the recording is not completed at Audian (processing or failed): nothing to download",
    "unsafe_id": "the recording_id cannot be a file name; nothing written, see the reason",
}
"""Every outcome a manifest row can carry, with what it means."""

RETRYABLE = {"no_checksum_yet", "checksum_mismatch", "size_mismatch", "not_audio", "format_mismatch",
             "duration_mismatch", "download_failed", "not_completed"}
"""Outcomes that a later run tries again; `verified`, `gone` and `unsafe_id` are final."""


@dataclass(frozen=True, slots=True)
class Expected:
    """What Audian says the file is."""

    file_size: int
    sha256: str | None
    file_format: str
    duration: int
    sample_rate: int | None
    channels: int | None


@dataclass(frozen=True, slots=True)
class Verification:
    outcome: str
    reason: str
    probe: AudioProbe | None = None

    @property
    def verified(self) -> bool:
        return self.outcome == "verified"


def verify(path: Path, size: int, sha256: str, expected: Expected) -> Verification:
    """Judge a complete download. `size` and `sha256` were measured while it streamed."""
    if size != expected.file_size:
        return Verification("size_mismatch", f"{size} bytes, the API says {expected.file_size}")
    if expected.sha256 is not None and sha256 != expected.sha256:
        return Verification("checksum_mismatch", f"sha256 {sha256[:12]}… is not the webhook's {expected.sha256[:12]}…")
    try:
        found = probe(path)
    except NotAudio as exc:
        return Verification("not_audio", str(exc))
    problem = _stream_problem(found, expected)
    if problem:
        return Verification(*problem, probe=found)
    if expected.sha256 is None:
        return Verification("no_checksum_yet", "waiting for the recording.completed webhook's checksum", found)
    return Verification("verified", "", found)


def _stream_problem(found: AudioProbe, expected: Expected) -> tuple[str, str] | None:
    if found.file_format != expected.file_format:
        return "format_mismatch", f"the bytes are {found.file_format}, the API says {expected.file_format}"
    if expected.sample_rate and found.sample_rate != expected.sample_rate:
        return "format_mismatch", f"{found.sample_rate} Hz, the API says {expected.sample_rate} Hz"
    if expected.channels and found.channels != expected.channels:
        return "format_mismatch", f"{found.channels} channel(s), the API says {expected.channels}"
    if abs(found.duration - expected.duration) > DURATION_TOLERANCE_S:
        return "duration_mismatch", (f"{found.duration:.2f} s of audio, the API says {expected.duration} s "
                                     f"(tolerance {DURATION_TOLERANCE_S} s)")
    return None
