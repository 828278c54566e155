"""Who talks when in an emulated recording, and speech-like sound to carry it.

Every recording the emulator's account makes is a conversation with a script it knows, so the
pipeline's speech analytics can be checked against ground truth (`talk_segments`). The script
lives on a grid of 720 ms cells: in each cell the caller talks or not, and the callee talks or
not. A file is the concatenation of per-cell clips, each encoded once per process and format
(see `audio.py`), so a recording of any length costs no encoding of its own: 720 ms is a
whole number of MP3 frames at 8 and 16 kHz (576 samples) and of 20 ms Opus packets.

What a talking cell sounds like: three syllables, each a voiced tone (glottal harmonics at the
speaker's pitch, falling through the syllable, shaped by the formants of a vowel) under a
syllable envelope with a short noise burst for a consonant. The first 150 ms of every cell
are quiet: that is where LAME's 1105-sample start-up (138 ms at 8 kHz) lands when a cell's
clip is decoded, so a clip joins its neighbours without cutting a syllable. Every cell, talking
or not, carries a faint noise floor, as a phone line does.

The scripts are turns with pauses between them and some overlap: a turn is one or more talk
spurts with breaths between them; the next speaker may start a cell or two early (overlap) or
after a pause; a long turn may hear a one-cell backchannel ("mm-hm") from the listener.

Determinism: the script comes from a hash of the recording id and duration; the samples use
integer arithmetic only (a sine table, integer phase), and the few floats (formant gains) are
IEEE arithmetic without library functions, so the PCM is the same on every machine.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

CELL_MS = 720
LEAD_MS = 150
"""Quiet start of every cell: a talk segment starts this long after its first cell."""
TAIL_MS = 20
"""Quiet end of every cell: a talk segment ends this long before its last cell does."""
VARIANTS = 4
"""Different syllable clips per speaker, so a long turn is not one clip repeated."""
CONTENTS = ("tones", "conversation", "caller", "callee", "silence")
"""What a file holds: `tones` is the original looped clip (no script); `conversation` both
parties (stereo: caller left, callee right; mono: mixed); `caller` / `callee` that party only;
`silence` the line's noise floor and nobody talking."""
SPEAKERS = ("caller", "callee")

_CALLER, _CALLEE = 1, 2  # bits of a cell's kind
_SINE_BITS = 12
_TABLE = 1 << _SINE_BITS
_SINE = np.array([round(32767 * math.sin(2 * math.pi * i / _TABLE)) for i in range(_TABLE)], dtype=np.int64)
_PITCH_HZ = (118, 196)  # caller, callee
_VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410))
_BANDWIDTHS = (90, 110, 170)
_TOP_HZ = 3600  # telephone band: no harmonic above this
_SYLLABLES_MS = ((150, 320), (340, 510), (530, 700))
_CONSONANT_MS = 30
_NOISE_FLOOR_SHIFT = 10  # hash noise >> 10: about -60 dBFS


@dataclass(frozen=True, slots=True)
class TalkSegment:
    """One stretch of one speaker talking, in seconds from the start of the file."""

    channel: int
    speaker: str
    start: float
    end: float


def cell_count(duration: int) -> int:
    return -(-duration * 1000 // CELL_MS)


def cell_samples(sample_rate: int) -> int:
    return sample_rate * CELL_MS // 1000


@lru_cache(maxsize=1024)
def script(recording_id: str, duration: int, content: str) -> bytes:
    """One byte per cell: bits 0-1 who talks (1 caller, 2 callee), bits 2-3 the clip variant."""
    n = cell_count(duration)
    seed = int.from_bytes(hashlib.sha256(f"script\x1f{recording_id}\x1f{duration}".encode()).digest()[:8], "big")
    rng = random.Random(seed)
    kinds = bytearray(n) if content == "silence" else _turns(rng, n)
    mask = {"caller": _CALLER, "callee": _CALLEE}.get(content, _CALLER | _CALLEE)
    offset = seed % VARIANTS
    return bytes((kind & mask) | (((i + offset) % VARIANTS) << 2) for i, kind in enumerate(kinds))


def _turns(rng: random.Random, n: int) -> bytearray:
    kinds = bytearray(n)
    at, speaker = rng.randrange(3), rng.randrange(2)
    while at < n:
        draw = rng.random()
        length = rng.randint(2, 8) if draw < 0.7 else rng.randint(9, 20) if draw < 0.95 else rng.randint(21, 45)
        end = min(at + length, n)
        _talk(rng, kinds, at, end, 1 << speaker)
        if length >= 8 and rng.random() < 0.4:  # the listener's backchannel, over the talker
            kinds[rng.randrange(at + 2, end - 1) if end - at > 3 else at] |= 1 << (1 - speaker)
        gap = -rng.randint(1, 2) if rng.random() < 0.15 else rng.randint(0, 3)
        at, speaker = max(end + gap, at + 1), 1 - speaker
    return kinds


def _talk(rng: random.Random, kinds: bytearray, start: int, end: int, bit: int) -> None:
    """Talk spurts of 2-8 cells from start to end, a one-cell breath between some of them."""
    at = start
    while at < end:
        spurt = min(rng.randint(2, 8), end - at)
        for i in range(at, at + spurt):
            kinds[i] |= bit
        at += spurt + (1 if rng.random() < 0.5 else 0)


def talk_segments(recording_id: str, duration: int, content: str, channels: int) -> list[TalkSegment]:
    """The ground truth: every stretch each speaker talks, on the channel that carries them.

    Stereo puts the caller on channel 0 and the callee on channel 1; mono carries both on 0."""
    if content == "tones":
        raise ValueError("a `tones` file has no script: it loops one clip")
    cells = script(recording_id, duration, content)
    segments = []
    for index, speaker in enumerate(SPEAKERS):
        bit = 1 << index
        start = None
        for i, code in enumerate([*cells, 0]):
            if code & bit and start is None:
                start = i
            elif not code & bit and start is not None:
                begin = (start * CELL_MS + LEAD_MS) / 1000
                end = min((i * CELL_MS - TAIL_MS) / 1000, float(duration))
                if end > begin:
                    segments.append(TalkSegment(index if channels == 2 else 0, speaker, begin, end))
                start = None
    return sorted(segments, key=lambda s: (s.start, s.channel))


@lru_cache(maxsize=None)
def cell_pcm(code: int, sample_rate: int, channels: int) -> np.ndarray:
    """int16 samples of one cell, shape (cell_samples, channels): stereo caller|callee, mono both."""
    kind, variant = code & 3, code >> 2
    voices = [_speaker_clip(s, variant, sample_rate) if kind & (1 << s) else None for s in range(2)]
    length = cell_samples(sample_rate)
    if channels == 2:
        tracks = [v if v is not None else np.zeros(length, dtype=np.int64) for v in voices]
    else:
        tracks = [sum((v for v in voices if v is not None), np.zeros(length, dtype=np.int64))]
    out = np.stack([t + _noise(f"floor\x1f{code}\x1f{c}", length) for c, t in enumerate(tracks)], axis=1)
    return np.clip(out, -32768, 32767).astype(np.int16)


def _noise(key: str, length: int) -> np.ndarray:
    raw = np.frombuffer(hashlib.shake_256(key.encode()).digest(2 * length), dtype="<i2")
    return raw.astype(np.int64) >> _NOISE_FLOOR_SHIFT


@lru_cache(maxsize=None)
def _speaker_clip(speaker: int, variant: int, sample_rate: int) -> np.ndarray:
    """One cell of one speaker talking: three syllables after the quiet lead."""
    rng = random.Random(f"voice\x1f{speaker}\x1f{variant}")
    out = np.zeros(cell_samples(sample_rate), dtype=np.int64)
    for number, (start_ms, end_ms) in enumerate(_SYLLABLES_MS):
        pitch = _PITCH_HZ[speaker] * rng.randint(90, 112) // 100
        vowel = _VOWELS[rng.randrange(len(_VOWELS))]
        start, end = start_ms * sample_rate // 1000, end_ms * sample_rate // 1000
        key = f"consonant\x1f{speaker}\x1f{variant}\x1f{number}\x1f{sample_rate}"
        out[start:end] = _syllable(pitch, vowel, end - start, sample_rate, key)
    return out


def _syllable(pitch: int, vowel: tuple[int, ...], length: int, sample_rate: int, key: str) -> np.ndarray:
    """A voiced syllable whose pitch falls by 15%, under an attack/release envelope."""
    n = np.arange(length, dtype=np.int64)
    start_step = pitch * _TABLE * 65536 // sample_rate  # table steps per sample, Q16
    step = start_step - (start_step * 15 // 100) * n // length
    phase = np.cumsum(step)
    tone = np.zeros(length, dtype=np.int64)
    for harmonic, amplitude in enumerate(_harmonic_amplitudes(pitch, vowel, sample_rate), start=1):
        tone += amplitude * _SINE[((phase * harmonic) >> 16) % _TABLE]
    voiced = (tone >> 12) * _envelope(length, sample_rate) >> 15
    burst = _CONSONANT_MS * sample_rate // 1000
    noise = np.frombuffer(hashlib.shake_256(key.encode()).digest(2 * burst), dtype="<i2").astype(np.int64)
    voiced[:burst] += (noise >> 3) * np.arange(burst, 0, -1) // burst
    return voiced


def _envelope(length: int, sample_rate: int) -> np.ndarray:
    """Q15 gain: a 25 ms raised-cosine attack, a 50 ms release, full in between."""
    attack, release = 25 * sample_rate // 1000, 50 * sample_rate // 1000
    env = np.full(length, 32767, dtype=np.int64)
    env[:attack] = _rise(attack)
    env[length - release:] = _rise(release)[::-1]
    return env


def _rise(length: int) -> np.ndarray:
    k = np.arange(length, dtype=np.int64)
    return (32767 - _SINE[(k * _TABLE // (2 * length) + _TABLE // 4) % _TABLE]) // 2


@lru_cache(maxsize=None)
def _harmonic_amplitudes(pitch: int, vowel: tuple[int, ...], sample_rate: int) -> tuple[int, ...]:
    """Q12 amplitudes of the harmonics under the telephone band, summing to about 0.4 full scale:
    a glottal source falling with frequency, lifted where the vowel's formants resonate."""
    top = min(_TOP_HZ, sample_rate * 9 // 20)
    gains = []
    harmonic = 1
    while harmonic * pitch < top:
        f = harmonic * pitch
        offsets = [(f - formant) / width for formant, width in zip(vowel, _BANDWIDTHS, strict=True)]
        resonance = sum(1.0 / (1.0 + d * d) for d in offsets)  # no pow(): IEEE arithmetic only
        gains.append((0.05 + resonance) / (1.0 + harmonic / 6.0))
        harmonic += 1
    total = sum(gains)
    return tuple(round(1600 * g / total) for g in gains)
