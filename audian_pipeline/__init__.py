"""audian_pipeline: a verified, analyst-ready copy of an Audian account's call recordings.

Audian deletes every recording 30 days after it was created. This package lists, downloads,
verifies and archives them before that happens, and loads DuckDB tables and reports on them.
"""

__version__ = "0.1.0"
