"""The code location: every Dagster object under `audian_pipeline/defs/`, autoloaded.

`workspace.yaml`, `dagster asset materialize -m audian_pipeline.definitions`, `dg` and the
`audian-pipeline` commands all load this module. The loader finds the project through
`audian_pipeline/dg.toml`, which ships inside the package, so an installed wheel (with no
pyproject.toml anywhere near it) loads exactly as the checkout does.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import dagster as dg


@cache
def load() -> dg.Definitions:
    """Loaded once per process; the runner and the tests share it with Dagster's loader."""
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)


@dg.definitions
def defs() -> dg.Definitions:
    return load()
