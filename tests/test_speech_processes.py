"""AUDIAN_SPEECH_PROCESSES: a day's recordings analysed on a pool of spawned processes give exactly
the rows one process gives, from a real encrypted archive filled by real downloads, and the pool
starts inside a Celery prefork child (billiard) as well as in a plain process."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg

from audian_pipeline.audio.crypto import create_keyset, load_cipher
from audian_pipeline.defs.recording_audio import recording_audio
from audian_pipeline.defs.recording_speech import recording_speech
from audian_pipeline.defs.recordings import recordings
from audian_pipeline.defs.resources import AudianResource, LakeResource
from audian_pipeline.lake.parquet import read_rows, to_table, write_partition
from audian_pipeline.lake.tables import RECORDING_AUDIO, RECORDING_SPEECH
from audian_pipeline.settings import DEMO_API_KEY
from audian_pipeline.sync import recording_speech as recording_speech_sync

from test_audio_archive import account_with_webhooks

CHECKOUT = Path(__file__).resolve().parents[1]
TIMING_COLUMNS = ("analysed_at",)


def _speech_run(data_dir: Path, day, keyset: Path, processes: int) -> tuple[dict[str, dict], dict]:
    """The day's recording_speech analysed afresh with `processes`; its rows and its day's metadata."""
    shutil.rmtree(data_dir / "lake" / RECORDING_SPEECH.name, ignore_errors=True)
    lake = LakeResource(data_dir=str(data_dir), archive_keyset=str(keyset), speech_processes=processes)
    result = dg.materialize([recording_speech], resources={"lake": lake}, partition_key=day.isoformat())
    assert result.success
    rows = {r["recording_id"]: {k: v for k, v in r.items() if k not in TIMING_COLUMNS}
            for r in read_rows(data_dir, RECORDING_SPEECH, day)}
    return rows, result.get_asset_materialization_events()[0].materialization.metadata


def _replace_with_noise(data_dir: Path, day, victim: dict, keyset: Path) -> None:
    """The victim's archived object becomes encrypted noise whose sha256 the manifest records: it
    decrypts and checks out, and is not audio."""
    noise = data_dir / "noise.bin"
    noise.write_bytes(os.urandom(20_000))
    load_cipher(keyset).encrypt_file(noise, Path(victim["path"]), victim["recording_id"])
    digest = hashlib.sha256(noise.read_bytes()).hexdigest()
    manifest = [{**r, "sha256": digest} if r["recording_id"] == victim["recording_id"] else r
                for r in read_rows(data_dir, RECORDING_AUDIO, day)]
    write_partition(data_dir, RECORDING_AUDIO, day, to_table(RECORDING_AUDIO, manifest))


def test_a_day_on_two_processes_gives_exactly_the_rows_of_one(fresh_emulator, data_dir, tmp_path, monkeypatch):
    keyset = tmp_path / "keyset.json"
    create_keyset(keyset)
    with account_with_webhooks(fresh_emulator, data_dir, seed=151, days=2, per_day=12, max_duration=30) as emu:
        day = emu.account.now().date() - timedelta(days=1)
        archived = dg.materialize(
            [recordings, recording_audio],
            resources={"audian": AudianResource(api_url=emu.api_url, api_key=DEMO_API_KEY),
                       "lake": LakeResource(data_dir=str(data_dir), archive_keyset=str(keyset))},
            partition_key=day.isoformat())
        assert archived.success
    verified = [r for r in read_rows(data_dir, RECORDING_AUDIO, day) if r["outcome"] == "verified"]
    assert len(verified) > 2 * 2 + 2, "too few recordings for the pool to start"
    assert all(r["key_id"] is not None for r in verified)
    undecodable, unreadable = verified[0], verified[1]
    _replace_with_noise(data_dir, day, undecodable, keyset)
    Path(unreadable["path"]).unlink()

    # a test day is minutes of audio: below what makes a pool pay, which the pool is told to ignore
    monkeypatch.setattr(recording_speech_sync, "MIN_AUDIO_SECONDS_PER_PROCESS", 0.0)
    one, one_metadata = _speech_run(data_dir, day, keyset, processes=1)
    two, two_metadata = _speech_run(data_dir, day, keyset, processes=2)

    assert two == one
    assert one[undecodable["recording_id"]]["outcome"] == "undecodable"
    assert one[unreadable["recording_id"]]["outcome"] == "unreadable"
    assert sum(r["outcome"] == "analysed" for r in one.values()) == len(verified) - 2
    assert (one_metadata["speech_processes"].value, two_metadata["speech_processes"].value) == (1, 2)
    assert two_metadata["run_speech_processes"].value == 2


BILLIARD_CHILD = r"""
import sys
import time
from pathlib import Path

import billiard

sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
from benchmarks.bench_speech import DAY, write_day
from audian_pipeline.sync.recording_speech import AnalysisPool, analyse_day


def analyse_the_day(data_dir):
    with AnalysisPool(2, min_audio_seconds=0) as pool:
        found = analyse_day(Path(data_dir), DAY, pool=pool)
    return found.processes, found.outcomes


if __name__ == "__main__":
    write_day(Path(sys.argv[2]), DAY, recordings=6, seconds=5)
    with billiard.Pool(1) as workers:  # what Celery's prefork pool runs a task in: a daemonic billiard child
        print(*workers.apply(analyse_the_day, (sys.argv[2],)))
"""


def test_the_pool_starts_inside_a_celery_prefork_child(tmp_path):
    script = tmp_path / "prefork.py"
    script.write_text(BILLIARD_CHILD)
    done = subprocess.run([sys.executable, str(script), str(CHECKOUT), str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["2", "{'analysed':", "6}"]


ORPHANED = r"""
import multiprocessing
import sys
import time
import time
from pathlib import Path

sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
from benchmarks.bench_speech import DAY, write_day
from audian_pipeline.sync.recording_speech import AnalysisPool, analyse_day

if __name__ == "__main__":
    write_day(Path(sys.argv[2]), DAY, recordings=6, seconds=5)
    with AnalysisPool(2, min_audio_seconds=0) as pool:
        analyse_day(Path(sys.argv[2]), DAY, pool=pool)
        print(*[p.pid for p in multiprocessing.active_children()], flush=True)
        time.sleep(600)
"""


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_the_analysers_exit_when_the_step_process_is_killed(tmp_path):
    script = tmp_path / "orphaned.py"
    script.write_text(ORPHANED)
    step = subprocess.Popen([sys.executable, str(script), str(CHECKOUT), str(tmp_path / "data")],
                            stdout=subprocess.PIPE, text=True)
    try:
        analysers = [int(pid) for pid in step.stdout.readline().split()]
    finally:
        step.kill()
        step.wait(30)
    assert len(analysers) >= 2
    for _ in range(300):
        if not any(_running(pid) for pid in analysers):
            break
        time.sleep(0.1)
    assert not any(_running(pid) for pid in analysers), "analysers outlived the step's process"
