"""What a downloaded recording really is: format, duration, sample rate and channels.

A download can be an HTML error page, a truncated transfer, or a file in another format than
the API declared, all with a 200 status. The pipeline therefore probes every file before it
archives it and compares the answer with the recording's metadata.

The format is detected from the bytes (magic numbers), never from the file name, and the
stream parameters are read by mutagen from the headers only (the WAV fmt chunk, MPEG frame
headers, the OpusHead and the last Ogg page), so probing a 500 MB file is fast and uses flat
memory. Durations describe the audio actually present: a WAV cut short reports the samples it
holds, an MP3 its size over its bitrate, an Opus file its last complete page.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from mutagen import MutagenError
from mutagen.mp3 import MP3
from mutagen.oggopus import OggOpus, OggOpusInfo
from mutagen.wave import WAVE, WaveStreamInfo

# The API reports whole seconds, and we cannot know whether Audian rounds or truncates, so a
# file may honestly be up to 1 s longer than its reported duration (or shorter, if it rounds
# up). Codec framing adds a little more: an MP3 ends on a whole frame (72 ms at 8 kHz) and an
# encoder may add its start-up delay (about 70 ms for LAME) without a gapless tag. 1.5 s
# allows both with margin while still catching a file that lost a real piece of audio.
DURATION_TOLERANCE_S: float = 1.5

_HEAD_BYTES = 4096
_OPUS_INPUT_RATE_UNSPECIFIED = 48000  # RFC 7845: 0 means "unspecified"; Opus decodes at 48 kHz


@dataclass(frozen=True, slots=True)
class AudioProbe:
    """The stream parameters a decoder would see."""

    file_format: str  # "mp3" | "wav" | "opus"
    duration: float  # seconds
    sample_rate: int  # for Opus: the OpusHead input sample rate
    channels: int


class NotAudio(ValueError):
    """The bytes are not a parseable MP3, WAV or Ogg Opus file; the message says why."""


def probe(path: Path) -> AudioProbe:
    """Detect the format from the bytes and read its stream parameters; raise NotAudio if neither works."""
    path = Path(path)
    with path.open("rb") as handle:
        head = handle.read(_HEAD_BYTES)
    file_format = _sniff(head)
    reader = {"wav": _probe_wav, "mp3": _probe_mp3, "opus": _probe_opus}[file_format]
    try:
        result = reader(path, head)
    except NotAudio:
        raise
    except (MutagenError, struct.error, EOFError, IndexError, ValueError) as exc:
        # mutagen reports malformed input with assorted exception types.
        raise NotAudio(f"{file_format} header could not be parsed: {exc}") from exc
    if result.sample_rate <= 0 or result.channels <= 0:
        raise NotAudio(f"{file_format} header declares {result.sample_rate} Hz and {result.channels} channels")
    return result


def _sniff(head: bytes) -> str:
    """The format the magic numbers announce."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"OggS":
        return "opus"
    if head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    if not head:
        raise NotAudio("the file is empty")
    text = head[:64].lstrip().lower()
    if text.startswith((b"<!doctype", b"<html", b"<?xml", b"{", b"[")):
        raise NotAudio(f"the file is a text document, not audio: {head[:40]!r}")
    raise NotAudio(f"no MP3, WAV or Ogg signature at the start: {head[:16].hex(' ')}")


def _probe_wav(path: Path, head: bytes) -> AudioProbe:
    info = cast(WaveStreamInfo, WAVE(path).info)  # mutagen types FileType.info as None; a loaded file has one
    if info.bits_per_sample <= 0 or info.channels <= 0 or info.sample_rate <= 0:
        raise NotAudio("WAV fmt chunk is empty or invalid")
    span = _wav_data_span(path)
    if span is None:
        raise NotAudio("WAV file has no data chunk")
    offset, declared = span
    present = max(0, min(declared, os.path.getsize(path) - offset))
    block_align = info.channels * ((info.bits_per_sample + 7) // 8)
    return AudioProbe("wav", present // block_align / info.sample_rate, info.sample_rate, info.channels)


def _wav_data_span(path: Path) -> tuple[int, int] | None:
    """(offset, declared size) of the data chunk; mutagen trusts the declared size, truncation needs the offset."""
    with path.open("rb") as handle:
        offset = 12
        while True:
            handle.seek(offset)
            header = handle.read(8)
            if len(header) < 8:
                return None
            chunk_id, size = struct.unpack("<4sI", header)
            if chunk_id == b"data":
                return offset + 8, size
            offset += 8 + size + (size & 1)


def _probe_mp3(path: Path, head: bytes) -> AudioProbe:
    info: Any = MP3(path).info  # MPEGInfo copies layer, sample_rate and channels from a frame at run time
    if info.sketchy:
        raise NotAudio("no run of consecutive valid MPEG audio frames")
    if info.layer != 3:
        raise NotAudio(f"MPEG audio layer {info.layer}, not Layer III (MP3)")
    return AudioProbe("mp3", float(info.length), int(info.sample_rate), int(info.channels))


def _probe_opus(path: Path, head: bytes) -> AudioProbe:
    opus_head = _first_ogg_packet(head)
    if not opus_head.startswith(b"OpusHead"):
        raise NotAudio(f"Ogg stream is not Opus (first packet starts {opus_head[:8]!r})")
    if len(opus_head) < 19:
        raise NotAudio("OpusHead packet is truncated")
    input_rate = struct.unpack_from("<I", opus_head, 12)[0] or _OPUS_INPUT_RATE_UNSPECIFIED
    info = cast(OggOpusInfo, OggOpus(path).info)
    return AudioProbe("opus", max(0.0, float(info.length)), int(input_rate), int(info.channels))


def _first_ogg_packet(head: bytes) -> bytes:
    """The first packet of the first Ogg page (the codec's identification header)."""
    if len(head) < 27:
        raise NotAudio("Ogg page header is truncated")
    count = head[26]
    lacing = head[27 : 27 + count]
    if len(lacing) < count:
        raise NotAudio("Ogg segment table is truncated")
    size = 0
    for value in lacing:
        size += value
        if value < 255:
            break
    body = head[27 + count : 27 + count + size]
    if len(body) < size:
        raise NotAudio("first Ogg packet is truncated")
    return body
