"""How fast speech analysis runs, beside decoding the same file alone, and its peak memory.

Run alone: `.venv/bin/python tests/benchmarks/bench_speech.py [--minutes 10]`; `run.py` shows the
same figures as its `speech` section. Files are the emulator's conversations (stereo caller |
callee, or mono), written to a temporary directory. Speed is audio seconds per CPU second of
this process (the analysis is one thread: one core), the best of `rounds` runs; decoding alone
reads the file through libsndfile in the analysis's own block size and does nothing else. Peak
memory is each step's VmHWM in a fresh interpreter, on a file `long_minutes` long.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from audian_pipeline.audio.speech import BLOCK_SECONDS, MPEG_FRAME, analyse  # noqa: E402
from audian_pipeline.emulator.audio import AudioSpec, iter_audio  # noqa: E402

CASES = [  # label, format, sample rate, channels, kbps
    ("16 kHz mono WAV", "wav", 16000, 1, 256),
    ("16 kHz stereo MP3", "mp3", 16000, 2, 64),
    ("8 kHz mono MP3", "mp3", 8000, 1, 32),
    ("16 kHz stereo Opus", "opus", 16000, 2, 32),
    ("48 kHz mono Opus", "opus", 48000, 1, 32),
]
GOAL_TIMES_REAL_TIME = 200

_CHILD = r"""
import sys
def peak():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
sys.path.insert(0, sys.argv[3])
from bench_speech import decode_only
from audian_pipeline.audio.speech import analyse
imports = peak()
decode_only(sys.argv[2]) if sys.argv[1] == "decode" else analyse(sys.argv[2])
print(imports, peak())
"""


def write_file(directory: Path, fmt: str, rate: int, channels: int, kbps: int, seconds: int) -> Path:
    spec = AudioSpec(f"rec_bench_{fmt}_{rate}_{channels}", fmt, seconds, rate, channels, kbps, "conversation")
    path = directory / f"{spec.recording_id}_{seconds}.{fmt}"
    with open(path, "wb") as out:
        for chunk in iter_audio(spec):
            out.write(chunk)
    return path


def decode_only(path: str | Path) -> int:
    """Every sample decoded in the analysis's block size, nothing judged: the floor under analysis."""
    samples = 0
    with soundfile.SoundFile(path) as audio:
        unit = math.lcm(audio.samplerate * 30 // 1000, MPEG_FRAME)
        block = unit * max(1, audio.samplerate * BLOCK_SECONDS // unit)
        while len(data := audio.read(block, dtype="int16", always_2d=True)):
            samples += len(data)
    return samples


def _cpu(action, *args) -> float:
    started = time.process_time()
    action(*args)
    return time.process_time() - started


def speeds(directory: Path, minutes: int, rounds: int = 2) -> list[dict]:
    rows = []
    for label, fmt, rate, channels, kbps in CASES:
        seconds = minutes * 60
        path = write_file(directory, fmt, rate, channels, kbps, seconds)
        decode, full = [], []
        for _ in range(rounds):
            decode.append(_cpu(decode_only, path))
            full.append(_cpu(analyse, path))
        rows.append({"label": label, "audio_seconds": seconds, "bytes": path.stat().st_size,
                     "decode_x_real_time": seconds / min(decode), "analysis_x_real_time": seconds / min(full)})
        path.unlink()
    return rows


def peak_memory(directory: Path, long_minutes: int) -> dict:
    """VmHWM of a fresh interpreter after its imports and after the step, for each step."""
    path = write_file(directory, "wav", 16000, 1, 256, long_minutes * 60)
    found = {"file": f"{long_minutes} min 16 kHz mono WAV", "bytes": path.stat().st_size}
    for step in ("decode", "analyse"):
        out = subprocess.run([sys.executable, "-c", _CHILD, step, str(path), str(Path(__file__).parent)],
                             capture_output=True, text=True, check=True).stdout.split()
        found[f"{step}_peak_after_imports"], found[f"{step}_peak"] = int(out[0]), int(out[1])
    path.unlink()
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=10, help="length of each speed test file")
    parser.add_argument("--long-minutes", type=int, default=60, help="length of the peak-memory file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="audian_speech_bench_") as tmp:
        report = {"speeds": speeds(Path(tmp), args.minutes), "memory": peak_memory(Path(tmp), args.long_minutes)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
