"""The resources every asset, check and sensor uses, and their one binding.

Each field that comes from the environment is left unset here and read from its variable when
a run (or sensor tick) starts, in the process that runs it, then validated in
`setup_for_execution` with a message that names the setting and the fix. So importing the
definitions never fails on a bad setting, a variable set only where runs launch counts, and no
value (the API key least of all) is frozen at import or shown in the UI. Tests and deployments
that prefer explicit values pass them, or `dg.EnvVar(...)`, as fields.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import dagster as dg
import requests
from pydantic import PrivateAttr

from audian_pipeline.audio.crypto import KEYSET_SETTING, ArchiveCipher, cipher_from_env
from audian_pipeline.client.client import AudianClient
from audian_pipeline.client.limits import DEFAULT_MAX_CONCURRENCY, RedisRequestLimiter, RequestLimiter
from audian_pipeline.defs.partitions import check_partitions_start
from audian_pipeline.lake.account import AccountIdentity, audian_identity, claim, emulator_identity
from audian_pipeline.lake.paths import events_db
from audian_pipeline.settings import (
    DEFAULT_API_URL,
    DEFAULT_DATA_DIR,
    DEFAULT_STORAGE_QUOTA_BYTES,
    DEMO_API_KEY,
    SettingError,
    check_api_key,
    check_api_url,
    check_events_db,
    env_value,
    positive_int,
    show_phone_numbers_from_env,
)
from audian_pipeline.storage import ARCHIVE_SETTING, LAKE_SETTING, Store

RETENTION_SETTING = "AUDIAN_ARCHIVE_RETENTION_DAYS"
SPEECH_PROCESSES_SETTING = "AUDIAN_SPEECH_PROCESSES"


class AudianResource(dg.ConfigurableResource):
    """Audian's API: AUDIAN_API_URL (default: the embedded emulator) and AUDIAN_API_KEY (a secret;
    default: the emulator's demo key). A bad URL or key fails the run at start, naming the setting."""

    api_url: str | None = None
    api_key: str | None = None
    detail_concurrency: int = 16
    """Concurrent `GET /v2/recordings/{id}` and `GET /v2/calls/{id}` calls over the pooled session."""
    download_concurrency: int = 4
    """Concurrent downloads (each streams to disk; memory stays flat)."""
    list_limit: int = 200
    retries: int = 6
    max_concurrency: int | None = None
    """AUDIAN_API_MAX_CONCURRENCY: requests in flight to Audian from every worker together (in
    Redis when AUDIAN_CELERY_BROKER_URL is set, else in this process); see `client/limits.py`."""

    _client: AudianClient | None = PrivateAttr(default=None)

    def resolved_api_url(self) -> str:
        return check_api_url(self.api_url or env_value("AUDIAN_API_URL", DEFAULT_API_URL))

    def _resolved_api_key(self) -> str:
        if self.api_key is not None:
            return check_api_key(self.api_key)
        return check_api_key(env_value("AUDIAN_API_KEY", DEMO_API_KEY))

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.resolved_api_url()
        self._resolved_api_key()
        for name in ("detail_concurrency", "download_concurrency", "list_limit"):
            if getattr(self, name) < 1:
                raise SettingError(f"AudianResource.{name} must be at least 1 (got {getattr(self, name)}).")
        self.resolved_max_concurrency()

    def resolved_max_concurrency(self) -> int:
        if self.max_concurrency is not None:
            return positive_int("AUDIAN_API_MAX_CONCURRENCY", str(self.max_concurrency))
        return positive_int("AUDIAN_API_MAX_CONCURRENCY",
                            env_value("AUDIAN_API_MAX_CONCURRENCY", str(DEFAULT_MAX_CONCURRENCY)))

    def _limiter(self) -> RequestLimiter:
        broker = env_value("AUDIAN_CELERY_BROKER_URL", "")
        if broker:
            return RedisRequestLimiter(self.resolved_max_concurrency(), broker)
        return RequestLimiter(self.resolved_max_concurrency())

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def account_identity(self) -> AccountIdentity | None:
        """Which account this API serves (see `lake/account.py`); None when the API cannot be
        reached, in which case the run's first API call fails with the client's own message.

        Asks `GET /_emulator/account` without the key: the emulator answers its parameters,
        anything else (Audian's 404 or 401) means a real account."""
        url = self.resolved_api_url()
        try:
            answer = requests.get(url + "/_emulator/account", timeout=10, allow_redirects=False)
        except requests.RequestException:
            return None
        try:
            parameters = answer.json()["emulator_account"] if answer.status_code == 200 else None
        except (ValueError, KeyError, TypeError):
            parameters = None
        if isinstance(parameters, dict):
            return emulator_identity(parameters)
        return audian_identity(url, self._resolved_api_key())

    def get_client(self) -> AudianClient:
        if self._client is None:
            self._client = AudianClient(
                self.resolved_api_url(),
                self._resolved_api_key(),
                retries=self.retries,
                pool_size=max(self.detail_concurrency, self.download_concurrency) * 2,
                limiter=self._limiter(),
            )
        return self._client


class LakeResource(dg.ConfigurableResource):
    """AUDIAN_DATA_DIR (default ./data): the warehouse, the events store, logs and spool files, and
    the default home of the lake (AUDIAN_LAKE_URL) and the archive (AUDIAN_ARCHIVE_URL), either of
    which may be s3://bucket/prefix; each is checked writable at run start, naming its setting.
    Also where a bad AUDIAN_PARTITIONS_START surfaces, since every partitioned run starts this
    resource and the partitions themselves must load whatever the variable says. And
    AUDIAN_SPEECH_PROCESSES, since the step that reads it (recording_speech) reads only the lake."""

    data_dir: str | None = None
    lake_url: str | None = None
    """AUDIAN_LAKE_URL; S3 endpoint and credentials come from the standard AWS variables."""
    archive_url: str | None = None
    """AUDIAN_ARCHIVE_URL; often another bucket than the lake's, with its own policy."""
    events_db: str | None = None
    """The webhook events store, AUDIAN_EVENTS_DB: a path (SQLite) or a postgresql:// URL;
    default <data dir>/events/events.sqlite3. The assets and the sensor read it from here."""
    delete_at_audian: bool | None = None
    """AUDIAN_DELETE_AT_AUDIAN (0 or 1, default 0): delete each recording at Audian once its
    archived copy is read back and re-verified (the `audian_deletions` asset)."""
    archive_keyset: str | None = None
    """AUDIAN_ARCHIVE_KEYSET: path of the Tink keyset that encrypts the archive (a secret: only
    the path is ever shown); unset, the archive is plaintext and recording_audio warns so."""
    archive_retention_days: int | None = None
    """AUDIAN_ARCHIVE_RETENTION_DAYS: days an archived recording is kept after its created_at,
    then disposed of by `archive_disposals`; unset (the default) keeps it forever."""
    speech_processes: int | None = None
    """AUDIAN_SPEECH_PROCESSES: processes that analyse a day's recordings for `recording_speech`;
    default one per CPU this process may use; 1 analyses in the step's own process."""

    @property
    def path(self) -> Path:
        return Path(self.data_dir or env_value("AUDIAN_DATA_DIR", DEFAULT_DATA_DIR)).resolve()

    def lake_store(self) -> Store:
        """AUDIAN_LAKE_URL: a directory or s3://bucket/prefix; default <data dir>/lake."""
        return Store(self.lake_url or env_value(LAKE_SETTING, str(self.path / "lake")), LAKE_SETTING)

    def archive_store(self) -> Store:
        """AUDIAN_ARCHIVE_URL: a directory or s3://bucket/prefix; default the data dir (audio/, quarantine/)."""
        return Store(self.archive_url or env_value(ARCHIVE_SETTING, str(self.path)), ARCHIVE_SETTING)

    def archive_cipher(self) -> ArchiveCipher | None:
        return cipher_from_env(self.archive_keyset if self.archive_keyset is not None
                               else env_value(KEYSET_SETTING, ""))

    def deletes_at_audian(self) -> bool:
        if self.delete_at_audian is not None:
            return self.delete_at_audian
        raw = env_value("AUDIAN_DELETE_AT_AUDIAN", "0").strip()
        if raw not in ("0", "1"):
            raise SettingError(f"AUDIAN_DELETE_AT_AUDIAN must be 1 (delete each recording at Audian once its archived "
                               f"copy is re-verified) or 0 (keep them; the default), got {raw!r}.")
        return raw == "1"

    def retention_days(self) -> int | None:
        """AUDIAN_ARCHIVE_RETENTION_DAYS, or None: keep every archived recording forever."""
        return _optional_positive(self.archive_retention_days, RETENTION_SETTING,
                                  "Set it to a number of days, or unset it to keep archived recordings forever.")

    def analysis_processes(self) -> int:
        """AUDIAN_SPEECH_PROCESSES, or the CPUs this process may use (its affinity, not the machine's)."""
        chosen = _optional_positive(self.speech_processes, SPEECH_PROCESSES_SETTING,
                                    "Set it to how many processes analyse a day's recordings (1: in the step's "
                                    "own process), or unset it for one per CPU.")
        if chosen is not None:
            return chosen
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    def events_location(self) -> str:
        return check_events_db(self.events_db or env_value("AUDIAN_EVENTS_DB", str(events_db(self.path))))

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        check_partitions_start()
        self.events_location()
        self.archive_cipher()
        self.deletes_at_audian()
        self.retention_days()
        self.analysis_processes()
        path = self.path
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write-check"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise SettingError(
                f"AUDIAN_DATA_DIR={path} is not a writable directory ({exc.strerror}); "
                "point AUDIAN_DATA_DIR at a directory this user can write."
            ) from None
        for store in (self.lake_store(), self.archive_store()):
            store.check_writable()

    def claim_account(self, audian: AudianResource) -> None:
        """Refuse to write one account's data into another's lake (see `lake/account.py`).
        Every asset that reads the API calls this before its first write."""
        identity = audian.account_identity()
        if identity is not None:
            claim(self.path, identity)


class WarehouseResource(dg.ConfigurableResource):
    """AUDIAN_STORAGE_QUOTA_BYTES (default 50 GiB) and AUDIAN_SHOW_PHONE_NUMBERS (default 0), as
    the warehouse load uses them. Both are written into the warehouse's `pipeline_settings` row
    at each load, so a report read later says which quota it compared against and whether
    numbers were masked."""

    storage_quota_bytes: int | None = None
    show_phone_numbers: bool | None = None
    as_of: str | None = None
    """ISO instant the reports are computed at; None (the default) means the time of the load.
    Set it to reproduce a report, or to read an emulator whose clock is frozen."""

    def quota_bytes(self) -> int:
        if self.storage_quota_bytes is not None:
            return positive_int("AUDIAN_STORAGE_QUOTA_BYTES", str(self.storage_quota_bytes))
        return positive_int("AUDIAN_STORAGE_QUOTA_BYTES",
                            env_value("AUDIAN_STORAGE_QUOTA_BYTES", str(DEFAULT_STORAGE_QUOTA_BYTES)))

    def phone_numbers_shown(self) -> bool:
        return self.show_phone_numbers if self.show_phone_numbers is not None else show_phone_numbers_from_env()

    def as_of_datetime(self) -> datetime | None:
        if self.as_of is None:
            return None
        value = datetime.fromisoformat(self.as_of.replace("Z", "+00:00"))
        if value.tzinfo is None:
            raise SettingError(f"WarehouseResource.as_of needs a time zone, e.g. {self.as_of}Z")
        return value

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.quota_bytes()
        self.phone_numbers_shown()
        self.as_of_datetime()


@dg.definitions
def resources() -> dg.Definitions:
    """Bound once, every field from the environment at launch (see the module's docstring)."""
    return dg.Definitions(resources={
        "audian": AudianResource(),
        "lake": LakeResource(),
        "warehouse_settings": WarehouseResource(),
    })


def _optional_positive(explicit: int | None, setting: str, fix: str) -> int | None:
    """A resource field, else its variable; None when neither is set. A bad value fails in one line
    naming the setting, then `fix`."""
    raw = str(explicit) if explicit is not None else env_value(setting, "").strip()
    if not raw:
        return None
    try:
        return positive_int(setting, raw)
    except SettingError as exc:
        raise SettingError(f"{exc} {fix}") from None
