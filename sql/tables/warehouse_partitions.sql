-- warehouse_partitions: which lake partition (table, UTC day) is in this warehouse, with how many rows, loaded when.
CREATE TABLE warehouse_partitions (
    table_name     VARCHAR     NOT NULL,
    partition_date DATE        NOT NULL,
    row_count      BIGINT      NOT NULL,
    loaded_at      TIMESTAMPTZ NOT NULL
);
COMMENT ON TABLE warehouse_partitions IS 'One row per lake partition loaded: table, UTC day, rows, when.';
