"""The webhook events store: written by the receiver (`audian-pipeline webhooks`), outside any
run, and read by `recording_events`, `recording_audio` (the checksums) and the sensor. Declared
here so the graph shows where those reads come from."""

import dagster as dg

webhook_events = dg.AssetSpec(
    "webhook_events",
    group_name="lake",
    kinds={"sqlite", "postgres"},
    description=(
        "Signed webhook events Audian delivered, stored by the receiver before it answered 2xx and "
        "de-duplicated by webhook-id (AUDIAN_EVENTS_DB: SQLite at <AUDIAN_DATA_DIR>/events/events.sqlite3 "
        "by default, or Postgres). Produced by "
        "`audian-pipeline webhooks`, not by a run: the only source of each file's sha256 and of "
        "failure reasons."
    ),
    metadata={"producer": "audian-pipeline webhooks (the receiver)"},
)
