"""The emulator's synthetic recordings are real audio, exactly as large as announced, and stable.

Everything here uses the real encoders and independent decoders (libsndfile via soundfile,
mutagen): the point is that a file the emulator serves decodes as the metadata says.
"""

from __future__ import annotations

import hashlib
import io
import random
import struct
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Iterator

import mutagen
import pytest
import soundfile
from mutagen.mp3 import MP3

from audian_pipeline.audio.probe import DURATION_TOLERANCE_S, NotAudio, probe
from audian_pipeline.emulator.audio import (
    SUPPORTED,
    AudioCache,
    AudioSpec,
    bitrate_for,
    content_type,
    file_size,
    iter_audio,
    ogg_crc,
    ogg_crc_reference,
)

# Half an MP3 frame at 8 kHz; WAV and Opus are exact.
SYNTH_TOLERANCE_S = {"wav": 0.0, "opus": 0.0, "mp3": 288 / 8000}


def _combos() -> list[tuple[str, int, int, int]]:
    combos = []
    for fmt, info in SUPPORTED.items():
        for rate in info["sample_rates"]:
            for channels in info["channels"]:
                if fmt == "wav":
                    bitrates = [bitrate_for(fmt, rate, channels)]
                else:
                    bitrates = info["bitrates"][rate] if fmt == "mp3" else info["bitrates"]
                combos += [(fmt, rate, channels, kbps) for kbps in bitrates]
    return combos


COMBOS = _combos()
ONE_PER_FORMAT = [("mp3", 16000, 1, 64), ("wav", 16000, 1, 256), ("opus", 16000, 1, 32)]


def _spec(fmt: str, rate: int, channels: int, kbps: int, duration: int = 5, rid: str = "rec_abc123") -> AudioSpec:
    return AudioSpec(rid, fmt, duration, rate, channels, kbps)


def _bytes(spec: AudioSpec, chunk_size: int = 1 << 20) -> bytes:
    return b"".join(iter_audio(spec, chunk_size))


def _write(tmp_path: Path, data: bytes, name: str = "download.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("fmt,rate,channels,kbps", COMBOS, ids=lambda v: str(v))
def test_every_combo_decodes_as_declared(tmp_path: Path, fmt: str, rate: int, channels: int, kbps: int) -> None:
    duration = 3 + len(fmt) + channels  # 6..7 s, varies the tail of the seed loop
    spec = _spec(fmt, rate, channels, kbps, duration)
    data = _bytes(spec, chunk_size=4096)
    assert len(data) == file_size(spec)

    # The extension is deliberately wrong: detection must come from the bytes.
    path = _write(tmp_path, data, "download.bin")
    decoded, decoded_rate = soundfile.read(io.BytesIO(data), dtype="int16", always_2d=True)
    assert decoded.shape[1] == channels
    assert abs(len(decoded) / decoded_rate - duration) <= SYNTH_TOLERANCE_S[fmt] + 1e-9
    assert abs(decoded).max() > 1000, "the file should sound like something, not silence"

    header = mutagen.File(_write(tmp_path, data, f"copy.{fmt}")).info
    assert header.channels == channels
    if fmt == "opus":
        # libsndfile decodes Opus at the input rate it finds in OpusHead; check the header itself.
        assert struct.unpack_from("<I", data, 28 + 12)[0] == rate
        assert decoded_rate == rate
    else:
        assert header.sample_rate == rate == decoded_rate

    found = probe(path)
    assert (found.file_format, found.sample_rate, found.channels) == (fmt, rate, channels)
    assert abs(found.duration - duration) <= SYNTH_TOLERANCE_S[fmt] + 1e-9
    assert abs(found.duration - duration) < DURATION_TOLERANCE_S


def test_mp3_is_cbr_layer3_with_id_tag() -> None:
    spec = _spec("mp3", 8000, 1, 16, duration=4, rid="rec_mp3")
    audio = MP3(io.BytesIO(_bytes(spec)))
    assert audio.info.layer == 3 and audio.info.version == 2.5 and audio.info.bitrate == 16000
    assert audio.tags["TXXX:AUDIAN_RECORDING_ID"].text == ["rec_mp3"]


def test_opus_stream_structure() -> None:
    spec = _spec("opus", 16000, 2, 32, duration=4, rid="rec_opus")
    data = _bytes(spec)
    pages = list(_ogg_pages(data))
    assert pages[0]["packet"].startswith(b"OpusHead") and pages[0]["flags"] == 0x02
    assert pages[1]["packet"].startswith(b"OpusTags") and b"AUDIAN_RECORDING_ID=rec_opus" in pages[1]["packet"]
    assert pages[-1]["flags"] == 0x04
    assert len({p["serial"] for p in pages}) == 1
    assert [p["sequence"] for p in pages] == list(range(len(pages)))
    pre_skip = struct.unpack_from("<H", pages[0]["packet"], 10)[0]
    assert pages[-1]["granule"] == pre_skip + 4 * 48000
    granules = [p["granule"] for p in pages[2:]]
    assert granules == sorted(granules)
    for page in pages:
        assert page["crc"] == ogg_crc_reference(page["raw_without_crc"])


def _ogg_pages(data: bytes) -> Iterator[dict]:
    offset = 0
    while offset < len(data):
        assert data[offset : offset + 4] == b"OggS"
        flags, granule, serial, sequence, crc, count = struct.unpack_from("<xBqIIIB", data, offset + 4)
        lacing = data[offset + 27 : offset + 27 + count]
        end = offset + 27 + count + sum(lacing)
        raw = bytearray(data[offset:end])
        raw[22:26] = b"\0\0\0\0"
        first = data[offset + 27 + count : offset + 27 + count + lacing[0]]
        yield dict(flags=flags, granule=granule, serial=serial, sequence=sequence, crc=crc,
                   packet=first, raw_without_crc=bytes(raw))  # fmt: skip
        offset = end


DISTINCT_CASES = [("mp3", 8000, 1, 64), ("wav", 8000, 2, 256), ("opus", 48000, 1, 32)]


@pytest.mark.parametrize("fmt,rate,channels,kbps", DISTINCT_CASES)
def test_deterministic_and_distinct_per_recording(fmt: str, rate: int, channels: int, kbps: int) -> None:
    one = _bytes(_spec(fmt, rate, channels, kbps, rid="rec_one"))
    again = _bytes(_spec(fmt, rate, channels, kbps, rid="rec_one"), chunk_size=777)
    other = _bytes(_spec(fmt, rate, channels, kbps, rid="rec_two"))
    assert one == again
    assert one != other
    assert hashlib.sha256(one).hexdigest() != hashlib.sha256(other).hexdigest()


def test_wav_header_is_canonical_pcm16() -> None:
    spec = _spec("wav", 16000, 2, 512, duration=3)
    data = _bytes(spec)
    fields = struct.unpack_from("<4sI4s4sIHHIIHH4sI", data)
    assert fields == (b"RIFF", len(data) - 8, b"WAVE", b"fmt ", 16, 1, 2, 16000, 64000, 4, 16, b"data", len(data) - 44)


def test_rejects_unsupported_combinations() -> None:
    with pytest.raises(ValueError, match="sample rates"):
        AudioSpec("rec", "mp3", 5, 44100, 1, 64)
    with pytest.raises(ValueError, match="bitrates"):
        AudioSpec("rec", "mp3", 5, 8000, 1, 128)
    with pytest.raises(ValueError, match="bitrate 256"):
        AudioSpec("rec", "wav", 5, 16000, 1, 64)
    with pytest.raises(ValueError, match="file_format"):
        AudioSpec("rec", "flac", 5, 16000, 1, 64)
    with pytest.raises(ValueError, match="channels"):
        AudioSpec("rec", "opus", 5, 16000, 3, 32)
    with pytest.raises(ValueError, match="duration"):
        AudioSpec("rec", "opus", 0, 16000, 1, 32)
    assert bitrate_for("wav", 8000, 1, 64) == 128
    assert bitrate_for("mp3", 16000, 1) == 64 and bitrate_for("opus", 48000, 2) == 32
    assert [content_type(f) for f in ("mp3", "wav", "opus")] == ["audio/mpeg", "audio/wav", "audio/ogg"]


@pytest.mark.parametrize("length", [0, 1, 3, 4, 27, 255, 256, 1000, 4096, 65536])
def test_ogg_crc_fast_path_matches_reference(length: int) -> None:
    data = random.Random(length).randbytes(length)
    assert ogg_crc(data) == ogg_crc_reference(data)


def test_ogg_crc_known_value() -> None:
    # CRC-32/MPEG-2 differs only by init/xorout; with init 0 and no xorout "123456789" gives 0x89A1897F.
    assert ogg_crc_reference(b"123456789") == 0x89A1897F
    assert ogg_crc(b"123456789") == 0x89A1897F


def test_file_size_is_cheap() -> None:
    specs = [_spec(f, r, c, k, duration=60 + i, rid=f"rec_{i}") for i, (f, r, c, k) in enumerate(COMBOS * 40)]
    for spec in specs[: len(COMBOS)]:
        file_size(spec)  # warm the per-format seeds
    start = time.perf_counter()
    for spec in specs:
        file_size(spec)
    per_call = (time.perf_counter() - start) / len(specs)
    assert per_call < 200e-6


def test_cache_matches_stream_and_is_reused(tmp_path: Path) -> None:
    cache = AudioCache(tmp_path / "cache")
    spec = _spec("opus", 16000, 1, 32, duration=3, rid="rec/../odd id")
    path, digest = cache.ensure(spec)
    assert path.parent == tmp_path / "cache"
    assert digest == hashlib.sha256(_bytes(spec)).hexdigest()
    assert path.stat().st_size == file_size(spec)
    mtime = path.stat().st_mtime_ns
    assert cache.ensure(spec) == (path, digest)
    assert cache.sha256(spec) == digest
    assert path.stat().st_mtime_ns == mtime, "a second call must not rewrite the file"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_cache_regenerates_a_damaged_file(tmp_path: Path) -> None:
    cache = AudioCache(tmp_path)
    spec = _spec("wav", 8000, 1, 128, duration=2)
    path, digest = cache.ensure(spec)
    path.write_bytes(path.read_bytes()[:100])
    assert cache.ensure(spec) == (path, digest)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


class CountingCache(AudioCache):
    """The real cache, counting how many times it synthesises a file."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.generated = 0

    def _generate(self, spec: AudioSpec, path: Path) -> str:
        self.generated += 1
        return super()._generate(spec, path)


def test_cache_generates_once_under_concurrency(tmp_path: Path) -> None:
    cache = CountingCache(tmp_path)
    spec = _spec("mp3", 16000, 2, 128, duration=7, rid="rec_concurrent")
    barrier = threading.Barrier(8)
    results: list[tuple[Path, str]] = []

    def worker() -> None:
        barrier.wait()
        results.append(cache.ensure(spec))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.generated == 1
    assert len(set(results)) == 1 and len(results) == 8
    path, digest = results[0]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest == hashlib.sha256(_bytes(spec)).hexdigest()


# ---- the pipeline's probe on things that are not audio -----------------------------------


def test_probe_rejects_random_bytes(tmp_path: Path) -> None:
    data = random.Random(7).randbytes(64 * 1024)
    with pytest.raises(NotAudio):
        probe(_write(tmp_path, data))


@pytest.mark.parametrize("magic", [b"ID3\x04\x00\x00", b"\xff\xfb", b"RIFF\0\0\0\0WAVE", b"OggS"])
def test_probe_rejects_random_bytes_behind_a_magic_number(tmp_path: Path, magic: bytes) -> None:
    data = magic + random.Random(11).randbytes(64 * 1024)
    with pytest.raises(NotAudio):
        probe(_write(tmp_path, data))


def test_probe_rejects_html_error_page(tmp_path: Path) -> None:
    page = b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>\n"
    with pytest.raises(NotAudio, match="text"):
        probe(_write(tmp_path, page, "rec.mp3"))


def test_probe_rejects_empty_file(tmp_path: Path) -> None:
    with pytest.raises(NotAudio):
        probe(_write(tmp_path, b""))


@pytest.mark.parametrize("fmt,rate,channels,kbps", ONE_PER_FORMAT)
@pytest.mark.parametrize("keep", [2, 12, 30, 40])  # all inside the first header
def test_probe_rejects_truncated_header(
    tmp_path: Path, fmt: str, rate: int, channels: int, kbps: int, keep: int
) -> None:
    data = _bytes(_spec(fmt, rate, channels, kbps, duration=2))
    with pytest.raises(NotAudio):
        probe(_write(tmp_path, data[:keep]))


@pytest.mark.parametrize("fmt,rate,channels,kbps", ONE_PER_FORMAT)
def test_probe_reports_the_audio_left_in_a_cut_download(
    tmp_path: Path, fmt: str, rate: int, channels: int, kbps: int
) -> None:
    data = _bytes(_spec(fmt, rate, channels, kbps, duration=10))
    found = probe(_write(tmp_path, data[: len(data) // 2]))
    assert found.file_format == fmt
    assert 3.0 <= found.duration <= 7.0  # about half; VBR Opus need not split evenly by bytes
    assert 10 - found.duration > DURATION_TOLERANCE_S, "the pipeline's duration check catches it"


def test_probe_rejects_ogg_vorbis(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    soundfile.write(buffer, [0.0] * 8000, 8000, format="OGG", subtype="VORBIS")
    with pytest.raises(NotAudio, match="not Opus"):
        probe(_write(tmp_path, buffer.getvalue()))


@pytest.mark.slow
def test_long_wav_streams_in_flat_memory() -> None:
    spec = AudioSpec("rec_long", "wav", 30 * 60, 16000, 1, 256)
    tracemalloc.start()
    try:
        total = 0
        hasher = hashlib.sha256()
        for chunk in iter_audio(spec):
            total += len(chunk)
            hasher.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == file_size(spec) == 44 + 30 * 60 * 16000 * 2
    assert peak < 20 * 1024 * 1024
