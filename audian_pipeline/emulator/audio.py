"""Deterministic synthesis of real recording files (MP3, WAV, Ogg Opus) for the emulator.

The pipeline verifies what it downloads with independent decoders, so the emulator must
serve real audio whose headers agree with the metadata the API reports. Accounts hold tens of
thousands of recordings, some hours long, so the design keeps three costs small:

* `file_size` is arithmetic. It never builds the file: it uses a per-format "seed" (the
  encoded frames or packets of a short clip, made once per process and cached) and the
  lengths of a few small headers.
* `iter_audio` streams. WAV repeats a PCM block derived from the recording id; MP3 repeats
  the seed's CBR frames behind an ID3v2 tag; Opus re-muxes the seed's packets into Ogg pages
  built one at a time. Memory stays flat whatever the duration.
* `AudioCache` writes each file once, atomically, with its sha256 beside it.

What is heard is the spec's `content`. The default, `tones`, is the original: a short clip
looped (its bytes are unchanged since before contents existed). The account's recordings are
conversations instead (`conversation.py`): a script of 720 ms cells, each cell's clip encoded
once per process and format, and a file the concatenation of its script's clips, so it is just
as cheap to stream and to size, and every recording carries ground-truth talk segments.

How each format is made, and why it decodes as declared:

* WAV: RIFF, PCM 16-bit little-endian, 44-byte canonical header. The samples are "speech-like"
  syllables (harmonic tones under a Hann envelope) whose pitches come from a hash of the
  recording id, computed with integer arithmetic only, so they are identical on every machine.
* MP3: LAME (lameenc) encodes a seed clip CBR at the declared bitrate and rate (MPEG-2 at
  16 kHz, MPEG-2.5 at 8 kHz) with no Xing/Info frame. Every supported bitrate makes
  72 * bitrate / sample_rate an integer, so LAME never sets the padding bit and every frame
  has the same length. The stream is looped at the seed's first frame, whose main_data_begin
  is 0 (it borrows nothing from the bit reservoir), so each loop decodes cleanly; a loop seam
  is heard as the encoder's ~70 ms start-up. An ID3v2.4 tag carries the recording id.
* Opus: libsndfile (soundfile) encodes a seed clip (20 ms packets, VBR at the target bitrate).
  Its packets are re-muxed per RFC 7845: an OpusHead page (pre-skip from the seed's header,
  input rate = the declared sample rate), an OpusTags page naming the recording id, then
  audio pages of a fixed number of packets. Granule positions count 48 kHz samples including
  the pre-skip; the last page is end-trimmed to exactly pre-skip + duration * 48000. The Ogg
  serial number is derived from the recording id.

Duration tolerances achieved (decoded length versus `AudioSpec.duration`):

* WAV: exact (duration * sample_rate frames).
* Opus: exact by the granule position (mutagen, libsndfile honour pre-skip and end trim).
* MP3: the frame count is rounded to the nearest whole frame, so the stream length is within
  half a frame: 18 ms at 16 kHz, 36 ms at 8 kHz. mutagen's size/bitrate estimate and the
  samples mpg123 (libsndfile) decodes both equal that stream length exactly; libsndfile's
  up-front `frames` estimate also counts the ID3 tag's bytes, about 45 ms more at 16 kbps.

Determinism: the same spec gives the same bytes on every run. No timestamps are written; the
OpusTags vendor string is a constant of this module rather than the libopus version string.
The encoded frames and packets depend on the encoder build (LAME 3.100 in lameenc, libopus in
libsndfile's wheel), so byte identity across machines holds for the same pinned wheels; the
WAV bytes depend on nothing but this module.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
import threading
import weakref
import zlib
from dataclasses import dataclass
from functools import lru_cache
from io import BytesIO
from itertools import islice
from pathlib import Path
from typing import Iterator

import lameenc
import numpy as np
import soundfile

from audian_pipeline.emulator.conversation import (
    CONTENTS,
    TalkSegment,
    cell_pcm,
    cell_samples,
    script,
    talk_segments,
)
from audian_pipeline.lake.files import atomic_writer

# Bump when the bytes produced for a spec change, so caches on disk are not reused.
SYNTH_VERSION = 1

SUPPORTED: dict[str, dict] = {
    "mp3": {
        "sample_rates": (8000, 16000),
        "channels": (1, 2),
        # 72 * kbps * 1000 / sample_rate is an integer for each: CBR frames without padding.
        "bitrates": {8000: (16, 32, 64), 16000: (32, 64, 128)},
        "default_bitrate": {8000: 32, 16000: 64},
    },
    "wav": {
        "sample_rates": (8000, 16000),
        "channels": (1, 2),
        "bits_per_sample": 16,
        # bitrate is implied: sample_rate * 16 * channels / 1000
    },
    "opus": {
        "sample_rates": (16000, 48000),  # the OpusHead input rate; granules always count 48 kHz
        "channels": (1, 2),
        "bitrates": (24, 32, 64),
        "default_bitrate": 32,
    },
}

_CONTENT_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "opus": "audio/ogg"}
_MAX_ID_BYTES = 1024
_SEED_SECONDS = 6
_WAV_HEADER_BYTES = 44
_MP3_SAMPLES_PER_FRAME = 576  # MPEG-2 and MPEG-2.5 Layer III
_OPUS_RATE = 48000
_OPUS_VENDOR = b"audian-emulator"
_SEED_LOCK = threading.RLock()


@dataclass(frozen=True, slots=True)
class AudioSpec:
    """Everything that determines a recording file's bytes. Validated on construction."""

    recording_id: str
    file_format: str  # "mp3" | "wav" | "opus"
    duration: int  # whole seconds, >= 1
    sample_rate: int
    channels: int  # 1 or 2
    bitrate: int  # kbps
    content: str = "tones"
    """What is heard (see `conversation.CONTENTS`). The default is the original looped clip, so a
    spec written before conversations existed still gives the same bytes."""

    def __post_init__(self) -> None:
        _validate(self)

    def talk_segments(self) -> list[TalkSegment]:
        """Ground truth of who talks when, per channel (stereo: caller 0, callee 1)."""
        return talk_segments(self.recording_id, self.duration, self.content, self.channels)


def _validate(spec: AudioSpec) -> None:
    if not isinstance(spec.recording_id, str) or not spec.recording_id:
        raise ValueError("recording_id must be a non-empty string")
    if len(spec.recording_id.encode()) > _MAX_ID_BYTES:
        raise ValueError(f"recording_id is longer than {_MAX_ID_BYTES} bytes")
    if not _is_int(spec.duration) or spec.duration < 1:
        raise ValueError(f"duration must be a whole number of seconds >= 1, not {spec.duration!r}")
    if spec.content not in CONTENTS:
        raise ValueError(f"content must be one of {', '.join(CONTENTS)}, not {spec.content!r}")
    expected = bitrate_for(spec.file_format, spec.sample_rate, spec.channels, spec.bitrate)
    if spec.bitrate != expected:
        raise ValueError(
            f"{spec.file_format} at {spec.sample_rate} Hz x {spec.channels} has bitrate {expected} kbps, "
            f"not {spec.bitrate}"
        )
    if spec.file_format == "wav" and _wav_data_bytes(spec) > 0xFFFFFFFF - 36:
        raise ValueError(f"a {spec.duration} s WAV would exceed the 4 GiB RIFF limit")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def bitrate_for(file_format: str, sample_rate: int, channels: int, requested_kbps: int | None = None) -> int:
    """The bitrate (kbps) a file of this format will have.

    WAV's is fixed by PCM (sample_rate * 16 * channels / 1000), so a request is ignored.
    MP3 and Opus take the request if it is supported, the documented default if None.
    """
    info = SUPPORTED.get(file_format)
    if info is None:
        raise ValueError(f"unsupported file_format {file_format!r}; expected one of {', '.join(SUPPORTED)}")
    if not _is_int(sample_rate) or sample_rate not in info["sample_rates"]:
        raise ValueError(f"{file_format} supports sample rates {info['sample_rates']}, not {sample_rate!r}")
    if not _is_int(channels) or channels not in info["channels"]:
        raise ValueError(f"{file_format} supports channels {info['channels']}, not {channels!r}")
    if file_format == "wav":
        return sample_rate * 16 * channels // 1000
    allowed = info["bitrates"][sample_rate] if file_format == "mp3" else info["bitrates"]
    if requested_kbps is None:
        default = info["default_bitrate"]
        return default[sample_rate] if isinstance(default, dict) else default
    if not _is_int(requested_kbps) or requested_kbps not in allowed:
        raise ValueError(
            f"{file_format} at {sample_rate} Hz supports bitrates {allowed} kbps, not {requested_kbps!r}"
        )
    return requested_kbps


def content_type(file_format: str) -> str:
    """The Content-Type a download of this format is served with."""
    try:
        return _CONTENT_TYPES[file_format]
    except KeyError:
        raise ValueError(f"unsupported file_format {file_format!r}") from None


def file_size(spec: AudioSpec) -> int:
    """The exact byte length of the file `iter_audio(spec)` yields, without building it."""
    if spec.file_format == "wav":
        return _WAV_HEADER_BYTES + _wav_data_bytes(spec)
    if spec.file_format == "mp3":
        seed = _mp3_seed(spec.sample_rate, spec.channels, spec.bitrate)
        return len(_id3_tag(spec.recording_id)) + _mp3_frame_count(spec) * seed.frame_bytes
    return _opus_size(spec)


def iter_audio(spec: AudioSpec, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """Stream the whole file in chunks of about `chunk_size` bytes; memory does not grow with duration."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    if spec.file_format == "wav":
        return _iter_wav(spec, chunk_size)
    if spec.file_format == "mp3":
        return _iter_mp3(spec, chunk_size)
    return _iter_opus(spec, chunk_size)


# ---- helpers shared by the formats --------------------------------------------------------


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()


def _repeat(block: bytes, total: int, chunk_size: int) -> Iterator[bytes]:
    """The first `total` bytes of `block` repeated forever, as chunks of `chunk_size` bytes."""
    period = len(block)
    window = memoryview(block * (chunk_size // period + 2))  # any chunk fits from any phase
    phase = 0
    while total > 0:
        n = min(chunk_size, total)
        yield bytes(window[phase : phase + n])
        phase = (phase + n) % period
        total -= n


_SINE_BITS = 12
_SINE = np.array(
    [round(32767 * math.sin(2 * math.pi * i / (1 << _SINE_BITS))) for i in range(1 << _SINE_BITS)],
    dtype=np.int64,
)
_HARMONIC_Q8 = (256, 150, 100, 70, 45, 30)  # amplitude of harmonic h, 1/256 units


def _voice(key: bytes, sample_rate: int, seconds: int) -> np.ndarray:
    """A mono int16 clip of 250 ms "syllables": a noise burst, then a voiced harmonic tone.

    Pitch, pauses and noise come from `key`. Integer arithmetic only (a sine table, integer
    phase, hash bytes as noise), so every machine computes the same samples. Each syllable
    ends at zero, so the clip loops without a click. The noise onsets give codecs something
    to spend bits on, so VBR Opus lands near its target bitrate.
    """
    syllable, onset = sample_rate // 4, sample_rate // 25
    count = seconds * 4
    params = hashlib.shake_256(key).digest(2 * count)
    noise = np.frombuffer(hashlib.shake_256(key + b"noise").digest(2 * onset * count), dtype="<i2")
    noise = noise.astype(np.int64).reshape(count, onset) * np.arange(onset, 0, -1) // onset >> 2
    n = np.arange(syllable, dtype=np.int64)
    table = 1 << _SINE_BITS
    window = (32767 - _SINE[(n * table // syllable + table // 4) % table]) // 2  # Hann, Q15
    out = np.zeros((count, syllable), dtype=np.int64)
    for i in range(count):
        pause, pitch = params[2 * i], params[2 * i + 1]
        if pause % 5 == 0:
            continue
        f0 = 90 + pitch  # Hz
        tone = np.zeros(syllable, dtype=np.int64)
        for h, amp in enumerate(_HARMONIC_Q8, start=1):
            if 2 * h * f0 >= sample_rate * 0.9:
                break
            tone += amp * _SINE[(n * h * f0 * table // sample_rate) % table]
        out[i] = (tone >> 10) * window >> 15
        out[i, :onset] += noise[i]
    return np.clip(out.reshape(-1), -32768, 32767).astype(np.int16)


def _pcm(key: str, sample_rate: int, channels: int, seconds: int) -> np.ndarray:
    """Interleaved int16 samples, shape (frames, channels); a second channel is another voice."""
    voices = [_voice(_digest(key, c), sample_rate, seconds) for c in range(channels)]
    return np.stack(voices, axis=1)


# ---- WAV ---------------------------------------------------------------------------------


def _wav_data_bytes(spec: AudioSpec) -> int:
    return spec.duration * spec.sample_rate * spec.channels * 2


def _wav_header(spec: AudioSpec) -> bytes:
    data = _wav_data_bytes(spec)
    block_align = spec.channels * 2
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + data, b"WAVE",
        b"fmt ", 16, 1, spec.channels, spec.sample_rate, spec.sample_rate * block_align, block_align, 16,
        b"data", data,
    )  # fmt: skip


def _iter_wav(spec: AudioSpec, chunk_size: int) -> Iterator[bytes]:
    yield _wav_header(spec)
    if spec.content != "tones":
        cells = (_wav_cell(code, spec.sample_rate, spec.channels) for code in _script(spec))
        yield from _rechunk(cells, _wav_data_bytes(spec), chunk_size)
        return
    seconds = min(spec.duration, _SEED_SECONDS)
    block = _pcm(f"wav:{spec.recording_id}", spec.sample_rate, spec.channels, seconds).astype("<i2").tobytes()
    yield from _repeat(block, _wav_data_bytes(spec), chunk_size)


@lru_cache(maxsize=None)
def _wav_cell(code: int, sample_rate: int, channels: int) -> bytes:
    return cell_pcm(code, sample_rate, channels).astype("<i2").tobytes()


def _script(spec: AudioSpec) -> bytes:
    """The cells of the spec's script and one quiet cell more: encoders round the length up
    (MP3 to whole frames, Opus by its pre-skip), and the stream is cut at the exact length."""
    return script(spec.recording_id, spec.duration, spec.content) + b"\0"


def _rechunk(blocks: Iterator[bytes], total: int, chunk_size: int) -> Iterator[bytes]:
    """The first `total` bytes of `blocks`, as chunks of about `chunk_size` bytes."""
    pending: list[bytes] = []
    size = 0
    for block in blocks:
        block = block[: total]
        total -= len(block)
        pending.append(block)
        size += len(block)
        if size >= chunk_size or total <= 0:
            yield b"".join(pending)
            pending, size = [], 0
        if total <= 0:
            return
    if pending:
        yield b"".join(pending)


# ---- MP3 ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Mp3Seed:
    frames: bytes  # whole frames, looped from the first
    frame_bytes: int


_MP3_VERSION_BITS = {16000: 0b10, 8000: 0b00}  # MPEG-2, MPEG-2.5
_MP3_BITRATE_INDEX = {8: 1, 16: 2, 24: 3, 32: 4, 40: 5, 48: 6, 56: 7, 64: 8, 80: 9, 96: 10, 112: 11, 128: 12}


def _mp3_seed(sample_rate: int, channels: int, kbps: int) -> _Mp3Seed:
    with _SEED_LOCK:  # threads asking for a new combo at once encode it once
        return _encode_mp3_seed(sample_rate, channels, kbps)


@lru_cache(maxsize=None)
def _encode_mp3_seed(sample_rate: int, channels: int, kbps: int) -> _Mp3Seed:
    """Encode the seed clip once per process and check it is loopable CBR."""
    pcm = _pcm("seed", sample_rate, channels, _SEED_SECONDS)
    stream = _lame(pcm, sample_rate, channels, kbps)
    frame_bytes = 72 * kbps * 1000 // sample_rate
    loop_frames = len(pcm) // _MP3_SAMPLES_PER_FRAME  # drop the flush frames at the end
    _check_mp3_frames(stream, frame_bytes, loop_frames, sample_rate, channels, kbps)
    return _Mp3Seed(frames=stream[: loop_frames * frame_bytes], frame_bytes=frame_bytes)


def _lame(pcm: np.ndarray, sample_rate: int, channels: int, kbps: int) -> bytes:
    """A fresh LAME encode, CBR at `kbps`, flushed: the first frame starts with an empty reservoir."""
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(kbps)
    encoder.set_in_sample_rate(sample_rate)
    encoder.set_out_sample_rate(sample_rate)
    encoder.set_channels(channels)
    encoder.set_quality(2)
    return bytes(encoder.encode(pcm.astype("<i2").tobytes())) + bytes(encoder.flush())


def _check_mp3_frames(stream: bytes, frame_bytes: int, count: int, sample_rate: int, channels: int, kbps: int) -> None:
    """Fail loudly if the encoder did not give the constant, unpadded frames file_size relies on."""
    if len(stream) < count * frame_bytes:
        raise RuntimeError(f"LAME produced {len(stream)} bytes, fewer than {count} frames")
    for i in range(count):
        (header,) = struct.unpack_from(">I", stream, i * frame_bytes)
        fields = (
            header >> 21 == 0x7FF,
            (header >> 19) & 3 == _MP3_VERSION_BITS[sample_rate],
            (header >> 17) & 3 == 0b01,  # Layer III
            (header >> 16) & 1 == 1,  # no CRC: side info starts right after the header
            (header >> 12) & 15 == _MP3_BITRATE_INDEX[kbps],
            (header >> 10) & 3 == 0b10,  # 16000 / 8000 within their MPEG version
            (header >> 9) & 1 == 0,  # no padding
            ((header >> 6) & 3 == 0b11) == (channels == 1),  # mono, or one of the stereo modes
        )
        if not all(fields):
            raise RuntimeError(f"LAME frame {i} has unexpected header {header:08x} ({fields})")
    first = stream[:frame_bytes]
    if stream[4] != 0 or b"Xing" in first or b"Info" in first:
        raise RuntimeError("the seed's first frame is not a self-contained audio frame")


def _mp3_frame_count(spec: AudioSpec) -> int:
    """Frames nearest to the duration (round half up), so the length is within half a frame."""
    samples = spec.duration * spec.sample_rate
    return max(1, (2 * samples + _MP3_SAMPLES_PER_FRAME) // (2 * _MP3_SAMPLES_PER_FRAME))


def _id3_tag(recording_id: str) -> bytes:
    """An ID3v2.4 tag with TXXX:AUDIAN_RECORDING_ID and a title, so each id has distinct bytes."""
    frames = _id3_frame(b"TIT2", f"Audian recording {recording_id}") + _id3_frame(
        b"TXXX", f"AUDIAN_RECORDING_ID\x00{recording_id}"
    )
    return b"ID3\x04\x00\x00" + _synchsafe(len(frames)) + frames


def _id3_frame(frame_id: bytes, text: str) -> bytes:
    body = b"\x03" + text.encode()  # 3 = UTF-8
    return frame_id + _synchsafe(len(body)) + b"\x00\x00" + body


def _synchsafe(value: int) -> bytes:
    return bytes((value >> shift) & 0x7F for shift in (21, 14, 7, 0))


def _iter_mp3(spec: AudioSpec, chunk_size: int) -> Iterator[bytes]:
    seed = _mp3_seed(spec.sample_rate, spec.channels, spec.bitrate)
    yield _id3_tag(spec.recording_id)
    total = _mp3_frame_count(spec) * seed.frame_bytes
    if spec.content == "tones":
        yield from _repeat(seed.frames, total, chunk_size)
        return
    cells = _mp3_cells(spec.sample_rate, spec.channels, spec.bitrate)
    yield from _rechunk((cells[code] for code in _script(spec)), total, chunk_size)


def _mp3_cells(sample_rate: int, channels: int, kbps: int) -> tuple[bytes, ...]:
    with _SEED_LOCK:
        return _encode_mp3_cells(sample_rate, channels, kbps)


_LAME_DELAY = 1105
"""Samples LAME's decoded output lags its input (576 + 529 + 1): the cells are fed this far
ahead, so each decodes in place with its start-up inside the cell's quiet lead."""


@lru_cache(maxsize=None)
def _encode_mp3_cells(sample_rate: int, channels: int, kbps: int) -> tuple[bytes, ...]:
    """Each cell clip encoded alone: its first frame borrows no reservoir bytes, so any cell
    may follow any other, and every cell is a whole number of constant-length frames."""
    frame_bytes = 72 * kbps * 1000 // sample_rate
    frames = cell_samples(sample_rate) // _MP3_SAMPLES_PER_FRAME
    out = []
    for code in range(16):
        pcm = cell_pcm(code, sample_rate, channels)
        ahead = np.concatenate([pcm[_LAME_DELAY:], np.zeros((_LAME_DELAY, channels), dtype=np.int16)])
        stream = _lame(ahead, sample_rate, channels, kbps)
        _check_mp3_frames(stream, frame_bytes, frames, sample_rate, channels, kbps)
        out.append(stream[: frames * frame_bytes])
    return tuple(out)


# ---- Ogg Opus ----------------------------------------------------------------------------

_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def ogg_crc(data: bytes) -> int:
    """Ogg's CRC-32 (poly 0x04C11DB7, MSB first, init 0, no final xor), at zlib speed.

    zlib computes the bit-reflected CRC-32 with inverted init and output. Reflecting every
    input byte, undoing zlib's inversions and reflecting the 32-bit result gives the
    non-reflected CRC with the same polynomial.
    """
    raw = zlib.crc32(data.translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int.from_bytes(raw.to_bytes(4, "little").translate(_BIT_REVERSED), "big")


def ogg_crc_reference(data: bytes) -> int:
    """Bit-by-bit Ogg CRC-32, straight from the specification; slow, for tests."""
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
    return crc


def _ogg_page(body: bytes, lacing: bytes, flags: int, granule: int, serial: int, sequence: int) -> bytes:
    header = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, serial, sequence, 0, len(lacing))
    page = bytearray(header + lacing + body)
    struct.pack_into("<I", page, 22, ogg_crc(bytes(page)))
    return bytes(page)


def _lacing(size: int) -> bytes:
    return b"\xff" * (size // 255) + bytes([size % 255])


@dataclass(frozen=True, slots=True)
class _OpusSeed:
    """The seed's packets and cyclic prefix sums, so sizes of any packet run are arithmetic."""

    pre_skip: int
    samples_per_packet: int  # at 48 kHz
    packets: tuple[bytes, ...]
    lacings: tuple[bytes, ...]
    packets_per_page: int
    payload_prefix: tuple[int, ...]  # payload_prefix[i] = bytes of packets[:i]
    lacing_prefix: tuple[int, ...]

    def run_bytes(self, first: int, count: int) -> int:
        """Payload plus lacing bytes of `count` looped packets starting at index `first`."""
        return self._cumulative(first + count) - self._cumulative(first)

    def _cumulative(self, n: int) -> int:
        loops, rest = divmod(n, len(self.packets))
        full = self.payload_prefix[-1] + self.lacing_prefix[-1]
        return loops * full + self.payload_prefix[rest] + self.lacing_prefix[rest]


_OPUS_FRAME_SAMPLES = (480, 960, 1920, 2880)  # SILK 10/20/40/60 ms, at 48 kHz
_OPUS_HYBRID_SAMPLES = (480, 960)
_OPUS_CELT_SAMPLES = (120, 240, 480, 960)


def _opus_packet_samples(packet: bytes) -> int:
    """Samples (48 kHz) in one Opus packet, from its TOC byte (RFC 6716 section 3.1)."""
    config, code = packet[0] >> 3, packet[0] & 3
    if config < 12:
        per_frame = _OPUS_FRAME_SAMPLES[config & 3]
    elif config < 16:
        per_frame = _OPUS_HYBRID_SAMPLES[config & 1]
    else:
        per_frame = _OPUS_CELT_SAMPLES[config & 3]
    frames = 1 if code == 0 else 2 if code in (1, 2) else packet[1] & 0x3F
    return per_frame * frames


def _ogg_packets(stream: bytes) -> list[bytes]:
    """All packets of a single-stream Ogg file, in order (pages are parsed, CRCs trusted)."""
    packets, pending, offset = [], bytearray(), 0
    while offset < len(stream):
        if stream[offset : offset + 4] != b"OggS":
            raise RuntimeError(f"libsndfile wrote no Ogg page at offset {offset}")
        count = stream[offset + 26]
        lacing = stream[offset + 27 : offset + 27 + count]
        position = offset + 27 + count
        for size in lacing:
            pending += stream[position : position + size]
            position += size
            if size < 255:
                packets.append(bytes(pending))
                pending.clear()
        offset = position
    return packets


def _opus_compression_level(kbps: int, channels: int) -> float:
    """The level at which libsndfile asks libopus for `kbps` in total.

    libsndfile sets int((1 - level) * 250000 + 6000) * channels bps; the half bit per second
    keeps the truncation from landing one below the target.
    """
    per_channel = kbps * 1000 / channels
    return (256_000 - per_channel - 0.5) / 250_000


def _opus_seed(sample_rate: int, channels: int, kbps: int) -> _OpusSeed:
    with _SEED_LOCK:
        return _encode_opus_seed(sample_rate, channels, kbps)


@lru_cache(maxsize=None)
def _encode_opus_seed(sample_rate: int, channels: int, kbps: int) -> _OpusSeed:
    """Encode the seed clip once per process with libopus (via libsndfile) and index its packets."""
    pre_skip, packets = _libopus(_pcm("seed", sample_rate, channels, _SEED_SECONDS), sample_rate, channels, kbps)
    packets = packets[:-2]  # the last packets hold the encoder's flush padding
    spp = _opus_packet_samples(packets[0])
    if any(_opus_packet_samples(p) != spp for p in packets):
        raise RuntimeError("libsndfile's Opus packets differ in duration; the page layout needs them equal")
    return _index_opus_packets(pre_skip, spp, packets)


def _opus_cells(sample_rate: int, channels: int, kbps: int) -> _OpusSeed:
    with _SEED_LOCK:
        return _encode_opus_cells(sample_rate, channels, kbps)


@lru_cache(maxsize=None)
def _encode_opus_cells(sample_rate: int, channels: int, kbps: int) -> _OpusSeed:
    """Each cell clip encoded alone, its packets indexed one cell after another (cell `code` holds
    packets code * per_cell onwards). Not fed ahead as MP3's are: the stream's pre-skip already
    takes off the encoder's look-ahead, so every cell decodes in place."""
    cells = [_libopus(cell_pcm(code, sample_rate, channels), sample_rate, channels, kbps) for code in range(16)]
    spp = _opus_packet_samples(cells[0][1][0])
    per_cell = cell_samples(sample_rate) * (_OPUS_RATE // sample_rate) // spp
    packets = tuple(p for _, cell in cells for p in cell[:per_cell])
    if any(_opus_packet_samples(p) != spp for p in packets) or len({pre for pre, _ in cells}) != 1:
        raise RuntimeError("libsndfile's Opus cells differ in packet duration or pre-skip")
    return _index_opus_packets(cells[0][0], spp, packets)


def _libopus(pcm: np.ndarray, sample_rate: int, channels: int, kbps: int) -> tuple[int, tuple[bytes, ...]]:
    """(pre-skip, audio packets) of one Ogg Opus encode by libsndfile, at about `kbps`."""
    buffer = BytesIO()
    level = _opus_compression_level(kbps, channels)
    with soundfile.SoundFile(
        buffer, "w", samplerate=sample_rate, channels=channels, format="OGG", subtype="OPUS", compression_level=level
    ) as out:
        out.write(pcm)
    head, _tags, *audio = _ogg_packets(buffer.getvalue())
    if not head.startswith(b"OpusHead") or len(head) < 19:
        raise RuntimeError("libsndfile's first Ogg packet is not an OpusHead")
    return struct.unpack_from("<H", head, 10)[0], tuple(audio)


def _index_opus_packets(pre_skip: int, spp: int, packets: tuple[bytes, ...]) -> _OpusSeed:
    lacings = tuple(_lacing(len(p)) for p in packets)
    per_page = max(1, min(_OPUS_RATE // spp, 255 // max(map(len, lacings))))  # ~1 s, <= 255 segments
    payload, lace = [0], [0]
    for packet, lacing in zip(packets, lacings, strict=True):
        payload.append(payload[-1] + len(packet))
        lace.append(lace[-1] + len(lacing))
    return _OpusSeed(pre_skip, spp, packets, lacings, per_page, tuple(payload), tuple(lace))


def _opus_head(seed: _OpusSeed, spec: AudioSpec) -> bytes:
    # version 1, channels, pre-skip, input rate, output gain 0, mapping family 0 (mono/stereo)
    return struct.pack("<8sBBHIhB", b"OpusHead", 1, spec.channels, seed.pre_skip, spec.sample_rate, 0, 0)


def _opus_tags(spec: AudioSpec) -> bytes:
    comments = [f"AUDIAN_RECORDING_ID={spec.recording_id}".encode(), b"ENCODER=" + _OPUS_VENDOR]
    parts = [b"OpusTags", struct.pack("<I", len(_OPUS_VENDOR)), _OPUS_VENDOR, struct.pack("<I", len(comments))]
    for comment in comments:
        parts += [struct.pack("<I", len(comment)), comment]
    return b"".join(parts)


def _opus_serial(recording_id: str) -> int:
    return int.from_bytes(_digest("ogg-serial", recording_id)[:4], "little")


def _opus_packet_count(seed: _OpusSeed, spec: AudioSpec) -> int:
    """Packets needed to cover the pre-skip and the duration; the last page trims the excess."""
    needed = seed.pre_skip + spec.duration * _OPUS_RATE
    return -(-needed // seed.samples_per_packet)


def _opus_source(spec: AudioSpec) -> _OpusSeed:
    if spec.content == "tones":
        return _opus_seed(spec.sample_rate, spec.channels, spec.bitrate)
    return _opus_cells(spec.sample_rate, spec.channels, spec.bitrate)


def _opus_indices(seed: _OpusSeed, spec: AudioSpec) -> Iterator[int]:
    """Which of the source's packets the stream carries, in order: the looped seed, or each
    cell of the script in turn."""
    total = _opus_packet_count(seed, spec)
    if spec.content == "tones":
        loop = len(seed.packets)
        return (i % loop for i in range(total))
    per_cell = len(seed.packets) // 16
    return islice((code * per_cell + k for code in _script(spec) for k in range(per_cell)), total)


def _opus_payload_bytes(seed: _OpusSeed, spec: AudioSpec) -> int:
    """Packet and lacing bytes of the stream, by arithmetic over whole runs of packets."""
    total = _opus_packet_count(seed, spec)
    if spec.content == "tones":
        return seed.run_bytes(0, total)
    per_cell = len(seed.packets) // 16
    cells = _script(spec)
    whole, rest = divmod(total, per_cell)
    size = sum(seed.run_bytes(code * per_cell, per_cell) for code in cells[:whole])
    return size + (seed.run_bytes(cells[whole] * per_cell, rest) if rest else 0)


def _opus_size(spec: AudioSpec) -> int:
    seed = _opus_source(spec)
    packets = _opus_packet_count(seed, spec)
    pages = -(-packets // seed.packets_per_page)
    head = len(_opus_head(seed, spec))
    tags = len(_opus_tags(spec))
    header_pages = 2 * 27 + len(_lacing(head)) + head + len(_lacing(tags)) + tags
    return header_pages + 27 * pages + _opus_payload_bytes(seed, spec)


def _iter_opus(spec: AudioSpec, chunk_size: int) -> Iterator[bytes]:
    seed = _opus_source(spec)
    serial = _opus_serial(spec.recording_id)
    head, tags = _opus_head(seed, spec), _opus_tags(spec)
    yield _ogg_page(head, _lacing(len(head)), 0x02, 0, serial, 0) + _ogg_page(tags, _lacing(len(tags)), 0, 0, serial, 1)
    buffered, size = [], 0
    for page in _opus_audio_pages(seed, spec, serial):
        buffered.append(page)
        size += len(page)
        if size >= chunk_size:
            yield b"".join(buffered)
            buffered, size = [], 0
    if buffered:
        yield b"".join(buffered)


def _opus_audio_pages(seed: _OpusSeed, spec: AudioSpec, serial: int) -> Iterator[bytes]:
    total = _opus_packet_count(seed, spec)
    final_granule = seed.pre_skip + spec.duration * _OPUS_RATE
    stream = _opus_indices(seed, spec)
    sequence, done = 2, 0
    while done < total:
        count = min(seed.packets_per_page, total - done)
        indices = list(islice(stream, count))
        done += count
        last = done == total
        granule = final_granule if last else done * seed.samples_per_packet
        body = b"".join(seed.packets[i] for i in indices)
        lacing = b"".join(seed.lacings[i] for i in indices)
        yield _ogg_page(body, lacing, 0x04 if last else 0, granule, serial, sequence)
        sequence += 1


# ---- cache -------------------------------------------------------------------------------


class AudioCache:
    """Files on disk, each synthesised once, with its sha256 stored beside it.

    Downloads are served from these files (range requests need a real file), and webhooks
    quote the checksum, so hashing must not repeat. Writes go through the project's one
    atomic writer (`lake.files.atomic_writer`: temp file beside it, fsync, rename), so a
    reader never sees a partial file, even across processes; within a process a per-file lock
    makes concurrent requests generate once.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
        self._guard = threading.Lock()

    def ensure(self, spec: AudioSpec) -> tuple[Path, str]:
        """(path of the complete file, its sha256 hex), generating the file if it is absent."""
        path = self.path(spec)
        digest = self._cached_digest(spec, path)
        if digest is not None:
            return path, digest
        with self._lock_for(path.name):
            digest = self._cached_digest(spec, path)
            if digest is None:
                digest = self._generate(spec, path)
                _write_atomic(_sidecar(path), [f"{digest}\n".encode()])
        return path, digest

    def sha256(self, spec: AudioSpec) -> str:
        return self.ensure(spec)[1]

    def path(self, spec: AudioSpec) -> Path:
        """Where the file for `spec` lives: a readable id plus a hash of every field."""
        fields: list[object] = [SYNTH_VERSION, spec.recording_id, spec.file_format, spec.duration,
                                spec.sample_rate, spec.channels, spec.bitrate]
        if spec.content != "tones":  # a tones file keeps the name it had before contents existed
            fields.append(spec.content)
        key = _digest(*fields).hex()[:20]
        readable = re.sub(r"[^A-Za-z0-9_-]", "_", spec.recording_id)[:64]
        return self.directory / f"{readable}-{key}.{spec.file_format}"

    def _lock_for(self, name: str) -> threading.Lock:
        with self._guard:
            lock = self._locks.get(name)
            if lock is None:
                lock = self._locks[name] = threading.Lock()
            return lock

    def _cached_digest(self, spec: AudioSpec, path: Path) -> str | None:
        """The stored sha256 if both files are present and the audio has the right size."""
        try:
            digest = _sidecar(path).read_text().strip()
            complete = path.stat().st_size == file_size(spec)
        except FileNotFoundError:
            return None
        return digest if complete and re.fullmatch(r"[0-9a-f]{64}", digest) else None

    def _generate(self, spec: AudioSpec, path: Path) -> str:
        hasher = hashlib.sha256()

        def hashed() -> Iterator[bytes]:
            for chunk in iter_audio(spec):
                hasher.update(chunk)
                yield chunk

        _write_atomic(path, hashed())
        return hasher.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_atomic(path: Path, chunks: Iterator[bytes] | list[bytes]) -> None:
    with atomic_writer(path) as out:
        for chunk in chunks:
            out.write(chunk)
