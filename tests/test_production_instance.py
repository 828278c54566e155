"""dagster_home/production/dagster.yaml: the Dagster instance on Postgres that the webserver, the
daemon and the Celery workers share, loaded from the checkout's own file against a real Postgres."""

from __future__ import annotations

import shutil
import subprocess
from datetime import date
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from audian_pipeline.defs.recording_events import recording_events
from audian_pipeline.defs.resources import LakeResource

from dbservers import PRODUCTION_YAML


@pytest.fixture
def production_home(tmp_path: Path, postgres_url: str, monkeypatch) -> Path:
    """A DAGSTER_HOME holding the checkout's production dagster.yaml; DAGSTER_PG_URL names psycopg2."""
    monkeypatch.setenv("DAGSTER_PG_URL", postgres_url.replace("postgresql://", "postgresql+psycopg2://"))
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PRODUCTION_YAML, home / "dagster.yaml")
    return home


def test_the_production_instance_keeps_runs_in_postgres_with_queue_and_pool_limits(
    production_home: Path, data_dir: Path, postgres_url: str
):
    instance = dg.DagsterInstance.from_config(str(production_home))
    concurrency = instance.get_concurrency_config()
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    assert concurrency.run_queue_config.max_concurrent_runs == 8
    assert concurrency.pool_config.default_pool_limit == 4

    day = date(2026, 11, 18)
    result = dg.materialize([recording_events], resources={"lake": LakeResource(data_dir=str(data_dir))},
                            partition_key=day.isoformat(), instance=instance)
    assert result.success

    elsewhere = dg.DagsterInstance.from_config(str(production_home))  # the daemon's or a worker's view
    assert elsewhere.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
    [record] = elsewhere.fetch_materializations(dg.AssetKey("recording_events"), limit=5).records
    assert record.partition_key == day.isoformat()
    with psycopg2.connect(postgres_url) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM runs WHERE run_id = %s", (result.run_id,))
        assert cursor.fetchone() == (1,)


def test_the_production_yaml_is_tracked_by_git():
    """`dagster_home/*` is ignored (runs, logs, schedules); the production config must not be."""
    checkout = PRODUCTION_YAML.parents[2]
    if not (checkout / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "-q", str(PRODUCTION_YAML)], cwd=checkout)
    assert ignored.returncode == 1, "dagster_home/production/dagster.yaml is ignored by .gitignore"
    runs = subprocess.run(["git", "check-ignore", "-q", "dagster_home/production/storage/run.db"], cwd=checkout)
    assert runs.returncode == 0, "what the instance writes beside it must stay ignored"
