"""What `audian-pipeline run` and `demo` print while they work: one line per asset and day range,
retries and failed checks as they happen, and Dagster's own log (every event, tracebacks too)
in a file whose path is printed, rather than 130-character-prefixed lines on the terminal."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Iterator

import dagster as dg

_SHOWN_METADATA = ("rows", "files_downloaded", "outcomes", "full_rebuild", "recordings")
"""Figures a person wants beside a finished step, where the step reports them: the run's totals
(`run_rows`, ...) for a partitioned step, whose plain names hold one day's figures."""


def log_path(data_dir: Path) -> Path:
    """A new log file per command, under AUDIAN_DATA_DIR/logs."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return data_dir / "logs" / f"run-{stamp}.log"


class ProgressHandler(logging.Handler):
    """Turns Dagster's event records into the few lines a person reads."""

    def __init__(self, out: IO[str], day_range: str) -> None:
        super().__init__(logging.DEBUG)  # Dagster logs its step events at DEBUG
        self.out, self.day_range = out, day_range
        self.started: dict[str, float] = {}
        self.materialized: dict[str, dict[str, Any]] = {}
        self.outcomes: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "dagster_meta", {}).get("dagster_event")
        if event is None:
            return
        step = event.step_key or ""
        kind = event.event_type_value
        if kind == "STEP_START":
            self.started[step] = time.monotonic()
        elif kind == "ASSET_MATERIALIZATION":
            metadata = event.event_specific_data.materialization.metadata
            self.materialized[step] = {name: (metadata.get(f"run_{name}") or metadata[name]).value
                                       for name in _SHOWN_METADATA if f"run_{name}" in metadata or name in metadata}
        elif kind == "STEP_SUCCESS":
            seconds = time.monotonic() - self.started.get(step, time.monotonic())
            figures = self.materialized.get(step, {})
            if isinstance(figures.get("outcomes"), dict):
                self.outcomes.update(figures["outcomes"])
            shown = "  ".join(f"{k}={_short(v)}" for k, v in figures.items())
            self._line(f"  {step:<26} {self.day_range:<23} {seconds:6.1f} s  {shown}")
        elif kind == "STEP_UP_FOR_RETRY":
            self._line(f"  {step:<26} retrying: {_cause(event)}")
        elif kind == "STEP_FAILURE":
            self._line(f"  {step:<26} failed (below)")
        elif kind == "ASSET_CHECK_EVALUATION" and not event.event_specific_data.passed:
            data = event.event_specific_data
            self._line(f"  {step:<26} check {data.check_name} failed: {data.description or ''}".rstrip(": "))

    def _line(self, text: str) -> None:
        print(text[:160], file=self.out, flush=True)


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items()) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


_WRAPPERS = ("RetryRequestedFromPolicy", "Failure")
"""Dagster's wrappers around our own error (see defs.retries): the cause says what happened."""


def error_line(error: Any) -> str | None:
    """One line from a serialised error: the innermost of our own, without its class path."""
    while error is not None and error.cause is not None and (
            error.cls_name.startswith("Dagster") or error.cls_name in _WRAPPERS):
        error = error.cause
    if error is None:
        return None
    message = error.message.strip().splitlines()[0] if error.message.strip() else error.cls_name
    prefix, _, rest = message.partition(": ")
    return rest if rest and " " not in prefix and "." in prefix else message


def _cause(event: dg.DagsterEvent) -> str:
    return error_line(getattr(event.event_specific_data, "error", None)) or "see the log file"


def progress_logger(log_file: Path, day_range: str, out: IO[str] | None = None) -> dg.LoggerDefinition:
    """A Dagster logger: every record to `log_file`, the progress lines to `out` (stdout)."""

    @dg.logger(config_schema=None, description="progress on the terminal, everything in the run's log file")
    def _progress(init_context: dg.InitLoggerContext) -> logging.Logger:
        log = logging.getLogger(f"audian_pipeline.run.{init_context.run_id}")
        log.setLevel(logging.DEBUG)
        log.propagate = False
        for old in list(log.handlers):  # Dagster may initialise a run's loggers more than once
            log.removeHandler(old)
            old.close()
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file)
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(to_file)
        log.addHandler(ProgressHandler(out or sys.stdout, day_range))
        return log

    return _progress


@contextlib.contextmanager
def python_logs_to(log_file: Path, mute_terminal: bool = True) -> Iterator[None]:
    """Python's own log records during a run (urllib3's retry warnings, our INFO lines) go to the
    run's log file too, and, unless `mute_terminal` is off (--debug), only there."""
    root = logging.getLogger()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(log_file)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    terminals = [h for h in root.handlers if type(h) is logging.StreamHandler] if mute_terminal else []
    mute = logging.Filter("\0")  # a filter that matches no logger's name passes nothing
    for handler in terminals:
        handler.addFilter(mute)
    root.addHandler(to_file)
    try:
        yield
    finally:
        root.removeHandler(to_file)
        to_file.close()
        for handler in terminals:
            handler.removeFilter(mute)
