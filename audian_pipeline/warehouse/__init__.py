"""The DuckDB warehouse analysts query: loaded from the lake, published by atomic swap, with
the report views of `sql/reports/`. See `load.py` for why it is built beside and swapped in."""
