"""How fast speech analysis runs, beside decoding the same file alone, and its peak memory.

Run alone: `.venv/bin/python tests/benchmarks/bench_speech.py [--minutes 10]`; `run.py` shows the
same figures as its `speech` section. Files are the emulator's conversations (stereo caller |
callee, or mono), written to a temporary directory. Speed is audio seconds per CPU second of
this process (the analysis is one thread: one core), the best of `rounds` runs; decoding alone
reads the file through libsndfile in the analysis's own block size and does nothing else. Peak
memory is each step's VmHWM in a fresh interpreter, on a file `long_minutes` long. A day is a
hand-made verified day of conversations analysed by `analyse_day` with 1 process and with N
(AUDIAN_SPEECH_PROCESSES' default: the CPUs this process may use), in audio seconds per second of
wall time, pool start-up included, and per CPU second of the processes that analysed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from audian_pipeline.audio.speech import BLOCK_SECONDS, MPEG_FRAME, analyse  # noqa: E402
from audian_pipeline.emulator.audio import AudioSpec, iter_audio  # noqa: E402
from audian_pipeline.lake.parquet import to_table, write_partition  # noqa: E402
from audian_pipeline.lake.tables import RECORDING_AUDIO, RECORDING_SPEECH  # noqa: E402
from audian_pipeline.sync.recording_speech import AnalysisPool, analyse_day  # noqa: E402

CASES = [  # label, format, sample rate, channels, kbps
    ("16 kHz mono WAV", "wav", 16000, 1, 256),
    ("16 kHz stereo MP3", "mp3", 16000, 2, 64),
    ("8 kHz mono MP3", "mp3", 8000, 1, 32),
    ("16 kHz stereo Opus", "opus", 16000, 2, 32),
    ("48 kHz mono Opus", "opus", 48000, 1, 32),
]
GOAL_TIMES_REAL_TIME = 200
DAY = date(2026, 1, 15)

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


def write_day(data_dir: Path, day: date, recordings: int, seconds: int) -> None:
    """A day of verified plaintext recordings in `data_dir`'s archive and lake, every format of
    CASES in turn, as recording_audio leaves them for recording_speech."""
    manifest = []
    for i in range(recordings):
        _, fmt, rate, channels, kbps = CASES[i % len(CASES)]
        spec = AudioSpec(f"rec_day_{i:05d}", fmt, seconds, rate, channels, kbps, "conversation")
        path = data_dir / "audio" / f"{spec.recording_id}.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(iter_audio(spec)))
        created = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(seconds=i)
        manifest.append({"recording_id": spec.recording_id, "created_at": created, "outcome": "verified",
                         "path": str(path), "bytes": path.stat().st_size, "probed_format": fmt, "attempts": 1,
                         "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    write_partition(data_dir, RECORDING_AUDIO, day, to_table(RECORDING_AUDIO, manifest))


def day_speeds(directory: Path, recordings: int, seconds: int, processes: int | None = None) -> list[dict]:
    """The same day analysed afresh with 1 process and with `processes` (default: one per CPU)."""
    write_day(directory, DAY, recordings, seconds)
    rows = []
    for n in (1, processes or len(os.sched_getaffinity(0))):
        shutil.rmtree(directory / "lake" / RECORDING_SPEECH.name, ignore_errors=True)
        started = time.monotonic()
        with AnalysisPool(n, min_audio_seconds=0) as pool:
            found = analyse_day(directory, DAY, pool=pool)
        wall = time.monotonic() - started
        rows.append({"processes": found.processes, "recordings": found.analysed, "audio_seconds": found.audio_seconds,
                     "wall_seconds": round(wall, 2), "x_real_time": found.audio_seconds / wall,
                     "x_real_time_per_cpu": found.times_real_time})
    return rows


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
    parser.add_argument("--day-recordings", type=int, default=40, help="recordings of the day analysed by 1 and N")
    parser.add_argument("--day-seconds", type=int, default=240, help="length of each of the day's recordings")
    parser.add_argument("--processes", type=int, default=None, help="N (default: the CPUs this process may use)")
    parser.add_argument("--day-only", action="store_true", help="measure only the day on 1 and N processes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="audian_speech_bench_") as tmp:
        report = {"day": day_speeds(Path(tmp) / "day", args.day_recordings, args.day_seconds, args.processes)}
        if not args.day_only:
            report |= {"speeds": speeds(Path(tmp), args.minutes), "memory": peak_memory(Path(tmp), args.long_minutes)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
