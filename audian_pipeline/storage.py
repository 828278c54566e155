"""Where the lake and the archive live: a local directory or `s3://bucket/prefix`, one interface.

Local roots keep the POSIX promises of `lake/files.py`: write beside, fsync, rename into place.
S3 has no rename (a "move" is copy-then-delete, readers see both or neither), so on S3 every
object appears whole under its final key in one step: a small object (a Parquet partition) as a
single PUT of bytes built in memory, a large one (a recording) as a multipart upload from a
local spool file, which S3 makes visible only when it completes. Nothing is ever deleted in
order to be written again, so a reader never finds a key missing or half written.

Built on s3fs (fsspec over botocore), chosen after trying each candidate on SeaweedFS:
- it reads the standard AWS set-up as the AWS CLI does (`AWS_ENDPOINT_URL[_S3]`, keys,
  `AWS_PROFILE`, `AWS_REGION`); pyarrow 26's `S3FileSystem` ignores `AWS_ENDPOINT_URL`;
- `put_file(..., mode="create")` sends `If-None-Match: *` on a single PUT and on the completion
  of a multipart upload alike, and aborts the upload on an error; obstore's create mode was
  silently ignored on a multipart put, pyarrow has no conditional write;
- it is an fsspec file system, which DuckDB's `register_filesystem` reads in place (DuckDB's
  own httpfs cannot be installed offline).
Its writable `open()` (like pyarrow's output stream) completes a partial object when the writer
raises, so this module never writes through a stream: only whole bytes or a finished file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import fsspec

from audian_pipeline.lake.files import atomic_writer, data_dir_error, fsync_path, publish
from audian_pipeline.settings import SettingError

PART_BYTES = 8 * 1024 * 1024
PARTS_IN_FLIGHT = 1
"""s3fs reads `max_concurrency` parts into memory at a time, and botocore holds more per part
while it signs and sends: its default (10 parts of 50 MiB) held 456 MiB for a 524 MB recording;
measured on a 500 MiB upload, 4 parts of 8 MiB add 65 MiB, 2 add 38 MiB, 1 adds 16 MiB. One
part at a time per file: the archive already uploads several files at once (its download
concurrency), and the benchmark's 500 MB recording must stay under 200 MB."""


class StorageError(SettingError):
    """The object store refused or could not be reached; the message names the setting, never a secret."""


class Store:
    """One root (the lake's or the archive's), addressed by keys relative to it ("a/b.parquet")."""

    def __init__(self, url: str | Path, setting: str) -> None:
        self.setting = setting
        text = str(url)
        self.is_s3 = text.startswith("s3://")
        if self.is_s3:
            parts = urlsplit(text)
            if not parts.netloc:
                raise SettingError(f"{setting}={text} names no bucket: use s3://bucket or s3://bucket/prefix")
            self.root = f"{parts.netloc}/{parts.path.strip('/')}".rstrip("/")
            self.url = f"s3://{self.root}"
        else:
            self.root = str(Path(text).expanduser().resolve())
            self.url = self.root
        self._fs: fsspec.AbstractFileSystem | None = None

    def __repr__(self) -> str:
        return f"Store({self.setting}={self.url})"

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The file system, made on first use: a run reads the AWS variables of its own process."""
        if self._fs is None:
            self._fs = _s3() if self.is_s3 else fsspec.filesystem("file")
        return self._fs

    # ---- addressing ----------------------------------------------------------------------------
    def path(self, key: str) -> str:
        """The key as the file system names it ("bucket/prefix/key" or an absolute path)."""
        return f"{self.root}/{key}" if key else self.root

    def url_of(self, key: str) -> str:
        """Where a person (or DuckDB, once `register` ran) finds the key: s3://… or a local path."""
        return f"{self.url}/{key}" if key else self.url

    def local(self, key: str = "") -> Path:
        """The local path of a key; only for a local root (renames, fsyncs, file-level checks)."""
        assert not self.is_s3, "a local path of an S3 key was asked for"
        return Path(self.path(key))

    # ---- reading -------------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        if not self.is_s3:
            return self.local(key).is_file()
        with self.errors(key):
            return bool(self.fs.exists(self.path(key)))

    def read_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is none under the key."""
        if not self.is_s3:
            path = self.local(key)
            return path.read_bytes() if path.is_file() else None
        with self.errors(key):
            try:
                return bytes(self.fs.cat_file(self.path(key)))
            except FileNotFoundError:
                return None

    def size(self, key: str) -> int:
        with self.errors(key):
            return int(self.fs.size(self.path(key)))

    def keys(self, pattern: str) -> list[str]:
        """Keys matching a glob relative to the root ("recordings/date=*/data.parquet"), sorted."""
        with self.errors(pattern):
            found = self.fs.glob(self.path(pattern))
        prefix = self.root.rstrip("/") + "/"
        return sorted(str(p)[len(prefix):] for p in found if str(p).startswith(prefix))

    def keys_under(self, prefix: str) -> list[str]:
        """Every object's key under a prefix ("audio"), at any depth, sorted."""
        with self.errors(prefix):
            found = self.fs.find(self.path(prefix))
        root = self.root.rstrip("/") + "/"
        return sorted(str(p)[len(root):] for p in found if str(p).startswith(root))

    def download(self, key: str, target: Path) -> None:
        """Copy the object to a local file (the caller's spool), streaming."""
        with self.errors(key):
            self.fs.get_file(self.path(key), str(target))

    # ---- writing -------------------------------------------------------------------------------
    def write_bytes(self, key: str, data: bytes) -> None:
        """Replace the object whole: a rename into place locally, one PUT on S3."""
        if not self.is_s3:
            target = self.local(key)
            try:
                with atomic_writer(target) as handle:
                    handle.write(data)
            except OSError as exc:
                raise data_dir_error(exc, target) from None
            return
        with self.errors(key):
            self.fs.pipe_file(self.path(key), data)

    def publish_file(self, source: Path, key: str) -> None:
        """Move a complete, verified local file to the key, visible only once whole.

        On S3 a conditional create (`If-None-Match: *`): an object already there was published
        by an earlier run that was killed before it wrote the manifest, and is kept when its size
        agrees (a recording's bytes never change); one of another size is replaced whole."""
        if not self.is_s3:
            publish(source, self.local(key))
            return
        with self.errors(key):
            try:
                self._upload(source, key, mode="create")
            except OSError as exc:
                if _s3_code(exc) != "PreconditionFailed" and "pre-condition" not in str(exc).lower():
                    raise
                if self.fs.size(self.path(key)) != source.stat().st_size:
                    self._upload(source, key)
        source.unlink(missing_ok=True)

    def put_aside(self, source: Path, key: str) -> None:
        """Move a local file to the key, replacing what is there (quarantine: not a recording)."""
        if not self.is_s3:
            target = self.local(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
            fsync_path(target.parent)
            return
        with self.errors(key):
            self._upload(source, key)
        source.unlink(missing_ok=True)

    def _upload(self, source: Path, key: str, mode: str = "overwrite") -> None:
        """One PUT, or a multipart upload (aborted on error) that S3 shows only once complete."""
        self.fs.put_file(str(source), self.path(key), mode=mode, chunksize=PART_BYTES, max_concurrency=PARTS_IN_FLIGHT)

    def delete(self, key: str) -> None:
        if not self.is_s3:
            self.local(key).unlink(missing_ok=True)
            return
        with self.errors(key), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(key))

    # ---- checks and errors ---------------------------------------------------------------------
    def check_writable(self) -> None:
        """Write and delete a probe under the root, so a run fails at start, not half way, on a
        missing bucket, wrong credentials, an unreachable endpoint or a prefix it may not write."""
        key = ".write-check"
        if not self.is_s3:
            try:
                self.local().mkdir(parents=True, exist_ok=True)
                self.local(key).write_bytes(b"")
                self.local(key).unlink()
            except OSError as exc:
                raise SettingError(f"{self.setting}={self.url} is not a writable directory ({exc.strerror}); "
                                   f"point {self.setting} at a directory this user can write.") from None
            return
        self.write_bytes(key, b"")
        self.delete(key)

    @contextlib.contextmanager
    def errors(self, key: str) -> Iterator[None]:
        """Any failure of the store becomes one line naming the setting and the likely fix."""
        try:
            yield
        except StorageError:
            raise
        except Exception as exc:
            if not _store_failure(exc):
                raise
            raise StorageError(self._explain(exc, key)) from None

    def _explain(self, exc: Exception, key: str) -> str:
        text = f"{_s3_code(exc)} {exc}"
        where = f"{self.setting}={self.url}"
        fix = ("check AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the "
               "bucket's policy, then run again: what was already stored is unchanged")
        if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
            cause = f"the bucket {self.root.split('/')[0]!r} does not exist"
        elif any(s in text for s in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "NoCredentials",
                                     "Unable to locate credentials")):
            cause = "the credentials were refused (wrong or missing AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
        elif isinstance(exc, PermissionError) or "AccessDenied" in text or "Forbidden" in text:
            cause = f"access denied writing or reading {key!r} under it"
        elif any(s in text for s in ("Could not connect", "Connect timeout", "connect", "Name or service")):
            cause = "the S3 endpoint could not be reached"
        else:
            cause = f"the object store failed ({type(exc).__name__})"
        return f"{where}: {cause}; {fix}."


def _s3_code(exc: BaseException) -> str:
    """S3's error code (NoSuchBucket, SignatureDoesNotMatch…) of the botocore error s3fs wrapped."""
    seen: BaseException | None = exc
    while seen is not None:
        code = (getattr(seen, "response", None) or {}).get("Error", {}).get("Code")
        if code:
            return str(code)
        seen = seen.__cause__ or seen.__context__
    return ""


def _store_failure(exc: Exception) -> bool:
    """OSError (s3fs's translation of S3 answers) or botocore's and aiohttp's own errors (no
    credentials, endpoint unreachable); anything else is a bug of ours and stays itself."""
    if isinstance(exc, OSError):
        return True
    return type(exc).__module__.split(".")[0] in ("botocore", "aiobotocore", "aiohttp")


def _s3() -> fsspec.AbstractFileSystem:
    """A fresh S3 file system from the standard AWS variables; no listing cache, since other
    processes write the same prefixes, and short retries so an unreachable endpoint fails fast."""
    import s3fs  # imported here: a local-only deployment never pays for botocore's import

    return s3fs.S3FileSystem(
        skip_instance_cache=True, use_listings_cache=False,
        config_kwargs={"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 3, "mode": "standard"}},
    )


LAKE_SETTING, ARCHIVE_SETTING = "AUDIAN_LAKE_URL", "AUDIAN_ARCHIVE_URL"


def lake_at(where: Path | Store) -> Store:
    """The lake: a Store as resolved from AUDIAN_LAKE_URL, or a data directory, whose `lake/`
    folder is the default (what local callers and most tests pass)."""
    return where if isinstance(where, Store) else Store(Path(where) / "lake", LAKE_SETTING)


def archive_at(where: Path | Store) -> Store:
    """The archive: a Store as resolved from AUDIAN_ARCHIVE_URL, or a data directory (the default root)."""
    return where if isinstance(where, Store) else Store(where, ARCHIVE_SETTING)
