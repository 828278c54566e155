"""The data directory as a Dagster resource."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from audian_pipeline.settings import SettingError


class LakeResource(dg.ConfigurableResource):
    """AUDIAN_DATA_DIR: the lake, the audio archive, the events store and the warehouse."""

    data_dir: str

    @property
    def path(self) -> Path:
        return Path(self.data_dir).resolve()

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
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
