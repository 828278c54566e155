-- pipeline_settings: one row written by every load; the report views read "now" and the quota from here, not from now(),
-- so a report is reproducible: the same warehouse file always gives the same answer.
CREATE TABLE pipeline_settings (
    as_of               TIMESTAMPTZ NOT NULL,  -- "now" for every report: when the load ran, unless the loader was given one
    storage_quota_bytes BIGINT      NOT NULL,  -- AUDIAN_STORAGE_QUOTA_BYTES at load time
    show_phone_numbers  BOOLEAN     NOT NULL,  -- AUDIAN_SHOW_PHONE_NUMBERS=1 at load time: calls holds full numbers
    loaded_at           TIMESTAMPTZ NOT NULL,  -- wall clock when this warehouse file was published
    schema_version      VARCHAR     NOT NULL,  -- hash of sql/tables/*.sql; a change makes the next load rebuild in full
    archive_retention_days INTEGER             -- AUDIAN_ARCHIVE_RETENTION_DAYS at load time; NULL: archive kept forever
);
COMMENT ON TABLE pipeline_settings IS 'One row: as_of ("now" for the reports), the storage quota and how phone numbers are shown.';
