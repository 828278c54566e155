"""How one day of each lake table is synced: plain Python, one module per table, no Dagster."""
