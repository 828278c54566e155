"""Encryption at rest: what the keyset costs the archive's publish step and a restore, and memory.

Each measurement runs in a fresh interpreter on one file of random bytes (content does not change
AES-GCM's speed): the archive's step after a download is verified is, with a keyset, Tink's
encryption into a second staged file and its publication, without one the publication alone;
a restore is `read_plaintext` (decrypt or copy, hashing) into a file. Peak memory is VmHWM.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import hashlib, json, os, sys, time
from pathlib import Path
from audian_pipeline.audio.crypto import create_keyset, load_cipher
from audian_pipeline.audio.retrieve import read_plaintext
from audian_pipeline.storage import Store

def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

work, mib, encrypted = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
work.mkdir(parents=True, exist_ok=True)
source, hashed = work / "staged.wav", hashlib.sha256()
with open(source, "wb") as f:
    for _ in range(mib):
        block = os.urandom(1024 * 1024)
        hashed.update(block)
        f.write(block)
digest = hashed.hexdigest()
archive = Store(work / "archive", "AUDIAN_ARCHIVE_URL")
cipher = None
if encrypted:
    create_keyset(work / "keyset.json")
    cipher = load_cipher(work / "keyset.json")
before = peak()
t0 = time.perf_counter()
key = "audio/2026/01/01/rec_bench.wav" + (".tink" if encrypted else "")
if cipher is not None:
    sealed = work / "sealed.partial"
    cipher.encrypt_file(source, sealed, "rec_bench")
    source.unlink()
    archive.publish_file(sealed, key)
else:
    archive.publish_file(source, key)
archive_s = time.perf_counter() - t0
row = {"recording_id": "rec_bench", "path": archive.url_of(key), "key_id": cipher.key_id if cipher else None}
t0 = time.perf_counter()
with open(work / "restored.wav", "wb") as sink:
    found = read_plaintext(row, sink, cipher)
restore_s = time.perf_counter() - t0
print(json.dumps({"bytes": found.bytes, "archive_seconds": archive_s, "restore_seconds": restore_s,
                  "peak_before": before, "peak": peak(), "sha_ok": digest == found.sha256}))
"""


def measure(workdir: Path, mib: int) -> dict[str, dict]:
    """{"plaintext": {...}, "encrypted": {...}} for one file of `mib` MiB, each in a fresh interpreter."""
    found = {}
    for name, flag in (("plaintext", "0"), ("encrypted", "1")):
        done = subprocess.run([sys.executable, "-c", _CHILD, str(workdir / f"encryption-{name}"), str(mib), flag],
                              capture_output=True, text=True, check=True, timeout=600)
        found[name] = json.loads(done.stdout.strip().splitlines()[-1])
    return found
