"""Speech analytics against the emulator's ground truth: the emulator's conversations are real
audio files from a script it knows, and the analysis must recover the script's measures from
the decoded audio alone, for every format and both channel layouts."""

from __future__ import annotations

import hashlib
import io
import random

import pytest
import soundfile

from audian_pipeline.audio.speech import Detector, Measures, Undecodable, analyse, measure
from audian_pipeline.emulator.audio import SUPPORTED, AudioSpec, bitrate_for, file_size, iter_audio
from audian_pipeline.emulator.conversation import CELL_MS, LEAD_MS, script

DETECTOR = Detector()
LAYOUTS = [(2, "conversation"), (1, "conversation"), (1, "caller"), (1, "callee")]


def _layouts_per_format() -> list[tuple[str, int, int, int, str]]:
    cases = []
    for fmt, info in SUPPORTED.items():
        for i, (channels, content) in enumerate(LAYOUTS):
            rate = info["sample_rates"][i % 2]
            kbps = bitrate_for(fmt, rate, channels)
            cases.append((fmt, rate, channels, kbps, content))
    return cases


CASES = _layouts_per_format()


def _bytes(spec: AudioSpec) -> bytes:
    return b"".join(iter_audio(spec))


def _truth(spec: AudioSpec) -> Measures:
    per_channel: list[list[tuple[float, float]]] = [[] for _ in range(spec.channels)]
    for segment in spec.talk_segments():
        per_channel[segment.channel].append((segment.start, segment.end))
    return measure(per_channel, spec.duration, DETECTOR.min_silence_ms / 1000)


def _close(found: float | None, truth: float | None) -> bool:
    """Within 10% of the truth, or within 1 s of it."""
    assert found is not None and truth is not None
    return abs(found - truth) <= max(0.1 * truth, 1.0)


@pytest.mark.parametrize("fmt,rate,channels,kbps,content", CASES, ids=lambda v: str(v))
def test_conversation_file_is_the_size_announced_and_decodes(fmt: str, rate: int, channels: int, kbps: int,
                                                              content: str) -> None:
    for duration in (1, 18, 31):  # 18 s is a whole number of cells: the stream needs its spare cell
        spec = AudioSpec(f"rec_size_{duration}", fmt, duration, rate, channels, kbps, content)
        data = _bytes(spec)
        assert len(data) == file_size(spec)
        decoded, decoded_rate = soundfile.read(io.BytesIO(data), dtype="int16", always_2d=True)
        assert decoded.shape[1] == channels and abs(len(decoded) / decoded_rate - duration) < 0.04


@pytest.mark.parametrize("fmt,rate,channels,kbps,content", CASES, ids=lambda v: str(v))
def test_measures_match_the_script(fmt: str, rate: int, channels: int, kbps: int, content: str) -> None:
    spec = AudioSpec(f"rec_truth_{fmt}_{channels}_{content}", fmt, 150, rate, channels, kbps, content)
    found = analyse(io.BytesIO(_bytes(spec))).measures
    truth = _truth(spec)
    assert truth.speech_seconds > 20, "the script should have people talking"
    for got, want in zip(found.channel_speech_seconds, truth.channel_speech_seconds, strict=True):
        assert _close(got, want), (found, truth)
    assert _close(found.silence_seconds, truth.silence_seconds), (found, truth)
    assert _close(found.longest_silence_seconds, truth.longest_silence_seconds), (found, truth)
    assert _close(found.longest_monologue_seconds, truth.longest_monologue_seconds), (found, truth)
    if channels == 2:
        assert truth.overlap_seconds and truth.turns and truth.turns > 10
        assert _close(found.overlap_seconds, truth.overlap_seconds), (found, truth)
        assert abs(found.turns - truth.turns) <= 0.2 * truth.turns, (found, truth)
        assert _close(found.talk_ratio, truth.talk_ratio)
    else:
        assert found.overlap_seconds is found.turns is found.talk_ratio is None


def test_stereo_puts_the_caller_left_and_the_callee_right() -> None:
    spec = AudioSpec("rec_sides", "wav", 60, 8000, 2, 256, "conversation")
    caller_only = AudioSpec("rec_sides", "wav", 60, 8000, 2, 256, "caller")
    both = analyse(io.BytesIO(_bytes(spec))).measures
    left = analyse(io.BytesIO(_bytes(caller_only))).measures
    assert both.channel_speech_seconds[1] > 5
    assert _close(left.channel_speech_seconds[0], both.channel_speech_seconds[0])
    assert left.channel_speech_seconds[1] == 0 and left.overlap_seconds == 0


@pytest.mark.parametrize("fmt,rate,channels,kbps", [("mp3", 8000, 1, 32), ("opus", 48000, 2, 32)])
def test_a_dead_line_is_all_silence(fmt: str, rate: int, channels: int, kbps: int) -> None:
    spec = AudioSpec("rec_dead_line", fmt, 40, rate, channels, kbps, "silence")
    assert spec.talk_segments() == []
    found = analyse(io.BytesIO(_bytes(spec)))
    assert found.measures.speech_seconds == 0 and found.measures.turns in (0, None)
    assert found.measures.silence_share == pytest.approx(1.0, abs=0.01)
    assert found.measures.longest_silence_seconds == pytest.approx(40, abs=0.1)


@pytest.mark.parametrize("data", [
    random.Random(5).randbytes(50_000),
    b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>",
    b"",
], ids=["random", "html", "empty"])
def test_undecodable_input_names_its_reason(data: bytes) -> None:
    with pytest.raises(Undecodable, match="not decodable audio") as caught:
        analyse(io.BytesIO(data))
    assert "\n" not in str(caught.value)


def test_the_reason_is_the_same_whichever_file_object_reads_the_bytes(tmp_path) -> None:
    """A reason is kept in the lake beside the file's sha256: the same bytes must give the same
    words, whether read from memory, a spool file or a path, in this process or another."""
    data = random.Random(5).randbytes(50_000)
    (tmp_path / "noise.wav").write_bytes(data)
    reasons = set()
    with open(tmp_path / "noise.wav", "rb") as handle:
        for source in (io.BytesIO(data), handle, tmp_path / "noise.wav"):
            with pytest.raises(Undecodable) as caught:
                analyse(source)
            reasons.add(str(caught.value))
    assert len(reasons) == 1, reasons


def test_a_rate_the_detector_does_not_take_is_refused_in_one_line(tmp_path) -> None:
    path = tmp_path / "cd.wav"
    soundfile.write(path, [0.0] * 44100, 44100)
    with pytest.raises(Undecodable, match="sample rate 44100 Hz"):
        analyse(path)


def test_measures_of_hand_made_segments() -> None:
    caller = [(0.0, 10.0), (4.0, 5.0), (20.0, 30.0)]
    callee = [(6.0, 7.0), (9.0, 14.0), (30.1, 31.0)]  # a backchannel, a turn over the caller's end, a quick reply
    m = measure([caller, callee], 40.0, 0.3)
    assert m.channel_speech_seconds == (20.0, 6.9)
    assert m.overlap_seconds == pytest.approx(2.0)  # 6-7 and 9-10
    # caller 0-10, callee 9-14, caller 20-30, callee 30.1-31: the backchannel at 6-7 takes no turn
    assert m.turns == 4
    assert m.longest_monologue_seconds == 10.0
    assert m.longest_silence_seconds == 9.0  # 31-40
    assert m.silence_seconds == pytest.approx(40 - 25.0)  # the 0.1 s between 30 and 30.1 is no silence
    assert m.talk_ratio == pytest.approx(20 / 26.9, abs=1e-4)
    mono = measure([caller], 40.0, 0.3)
    assert mono.turns is None and mono.overlap_seconds is None and mono.longest_monologue_seconds == 10.0


def test_script_is_deterministic_and_talk_starts_after_the_lead() -> None:
    assert script("rec_a", 300, "conversation") == script("rec_a", 300, "conversation")
    assert script("rec_a", 300, "conversation") != script("rec_b", 300, "conversation")
    for segment in AudioSpec("rec_a", "wav", 300, 8000, 2, 256, "conversation").talk_segments():
        assert round(segment.start * 1000 - LEAD_MS) % CELL_MS == 0


def test_original_tones_are_byte_for_byte_what_they_were() -> None:
    """A spec without a content is today's looped clip; WAV bytes depend on nothing but our code."""
    spec = AudioSpec("rec_abc123", "wav", 5, 16000, 2, 512)
    assert spec.content == "tones"
    assert hashlib.sha256(_bytes(spec)).hexdigest() == (
        "bb449d5fda38e21bc77bb7aa11f6023416da7177934900babd2f2203066f2263"
    )
