"""The atomic-write helpers, where two processes write the same lake at once."""

from __future__ import annotations

import os
import time

from audian_pipeline.lake.files import TEMP_PREFIX, remove_stale_temporaries


def test_a_temporary_that_vanishes_while_stale_ones_are_swept_is_no_error(tmp_path):
    """Another run renames its temporary into place between our listing and our look at it. A
    dangling link is exactly that state, held still: listed, but gone when looked at."""
    (tmp_path / f"{TEMP_PREFIX}renamed-meanwhile.partial").symlink_to(tmp_path / "no-such-file")
    stale = tmp_path / f"{TEMP_PREFIX}left-by-a-killed-run.partial"
    stale.write_bytes(b"half")
    an_hour_ago = time.time() - 3700
    os.utime(stale, (an_hour_ago, an_hour_ago))
    fresh = tmp_path / f"{TEMP_PREFIX}still-being-written.partial"
    fresh.write_bytes(b"x")

    assert remove_stale_temporaries(tmp_path) == 1
    assert not stale.exists() and fresh.exists()
