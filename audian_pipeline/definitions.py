"""Every asset, check, schedule, sensor and resource of audian_pipeline, for `dagster dev`
(`workspace.yaml`) and `dagster asset materialize -m audian_pipeline.definitions`."""

from __future__ import annotations

import os

import dagster as dg

from audian_pipeline.assets.audio import recording_audio
from audian_pipeline.assets.calls import calls
from audian_pipeline.assets.events import recording_events
from audian_pipeline.assets.recordings import recordings
from audian_pipeline.assets.warehouse import report_assets as _report_assets
from audian_pipeline.assets.warehouse import warehouse
from audian_pipeline.client.resource import AudianResource
from audian_pipeline.lake.resource import LakeResource
from audian_pipeline.schedules import daily_job, daily_schedule
from audian_pipeline.sensors import audio_archive_job, recording_completed_sensor
from audian_pipeline.settings import DEFAULT_API_URL, DEMO_API_KEY
from audian_pipeline.warehouse.resource import WarehouseResource

partitioned_assets = [recordings, recording_events, calls, recording_audio, warehouse]
"""Every asset on the shared daily partitions, in dependency order."""
report_assets = list(_report_assets)


def _env(name: str, default: str) -> str | dg.EnvVar:
    """`dg.EnvVar` when the variable is set (resolved at launch, never shown in the UI), else
    the local default: the embedded emulator's address and demo key, which are not secrets."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def resources(api_url: str | None = None) -> dict:
    """The resources from the environment; `api_url` overrides AUDIAN_API_URL (the demo's emulator)."""
    return {
        "audian": AudianResource(api_url=api_url or _env("AUDIAN_API_URL", DEFAULT_API_URL),
                                 api_key=_env("AUDIAN_API_KEY", DEMO_API_KEY)),
        "lake": LakeResource(data_dir=_env("AUDIAN_DATA_DIR", "./data")),
        "warehouse_settings": WarehouseResource.from_env(),
    }


defs = dg.Definitions(
    assets=[*partitioned_assets, *report_assets],
    jobs=[audio_archive_job, daily_job],
    schedules=[daily_schedule],
    sensors=[recording_completed_sensor],
    resources=resources(),
)
