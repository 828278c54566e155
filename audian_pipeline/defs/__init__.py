"""The Dagster objects, autoloaded by `audian_pipeline.definitions` with `dg.load_from_defs_folder`:
one module per lake table (named like it), the warehouse and its reports, the resources, the
schedule and the sensor. Domain logic lives outside, in plain Python."""
