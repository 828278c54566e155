"""What a person reads first in each report: a sentence or two of headline and a table of at most
`MAX_ROWS` rows in human units (KiB/MiB/GiB, s/min/h, %), computed with pandas from the view's
frame. The full view stays one `--full` or `--csv` away; nothing here is a figure the view does not
already hold, only regrouped (durations per day rather than per day, format and channels;
failures per reason rather than per day and reason).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import pandas as pd

MAX_ROWS = 30
"""A summary shows at most this many rows (the latest), so it fits a screen and the UI."""


@dataclass(frozen=True)
class Summary:
    headline: str
    table: pd.DataFrame
    """Display strings only, in human units; column names say what each is."""
    omitted: int = 0
    """Earlier rows left out to stay within MAX_ROWS."""


# -- units ---------------------------------------------------------------------------------

def is_missing(value: Any) -> bool:
    return value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value))


def human_bytes(value: Any) -> str:
    if is_missing(value):
        return ""
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: Any) -> str:
    """Seconds under 90 s, minutes under 90 min, hours above: each reads at a glance."""
    if is_missing(seconds):
        return ""
    seconds = float(seconds)
    if abs(seconds) < 90:
        return f"{seconds:,.0f} s"
    if abs(seconds) < 90 * 60:
        return f"{seconds / 60:,.1f} min"
    return f"{seconds / 3600:,.1f} h"


def percent(value: Any, digits: int = 1) -> str:
    return "" if is_missing(value) else f"{float(value):,.{digits}f}%"


def count(value: Any) -> str:
    return "" if is_missing(value) else f"{int(value):,}"


def instant(value: Any) -> str:
    if is_missing(value):
        return ""
    return pd.Timestamp(value).tz_convert(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def day(value: Any) -> str:
    return "" if is_missing(value) else pd.Timestamp(value).date().isoformat()


def format_value(value: Any, column: str = "") -> str:
    """One cell of the full view, as text: bytes in KiB/MiB/GiB, instants in UTC."""
    if is_missing(value):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, date):
        return value.isoformat()
    if "bytes" in column and isinstance(value, (int, float, Decimal)):
        return human_bytes(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (float, Decimal)):
        return f"{float(value):,.2f}".rstrip("0").rstrip(".")
    return str(value)


# -- one summary per view ------------------------------------------------------------------

def summarise(view: str, frame: pd.DataFrame) -> Summary:
    try:
        make = _SUMMARIES[view]
    except KeyError:
        raise KeyError(f"no summary for {view!r}") from None
    return make(frame)


def _latest(table: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    omitted = max(len(table) - MAX_ROWS, 0)
    return table.iloc[omitted:].reset_index(drop=True), omitted


def _durations(frame: pd.DataFrame) -> Summary:
    if frame.empty:
        return Summary("No stopped recordings in the warehouse yet.", pd.DataFrame())
    per_day = frame.groupby("day", sort=True).agg(
        recordings=("recordings", "sum"), unknown=("durations_unknown", "sum"),
        total=("total_duration_s", "sum"), longest=("max_duration_s", "max"),
        matched_recorded=("matched_recorded_s", "sum"), matched_call=("matched_call_s", "sum"))
    timed = per_day["recordings"] - per_day["unknown"]
    table = pd.DataFrame({
        "day": [d.isoformat() for d in per_day.index],
        "recordings": per_day["recordings"].map(count).to_numpy(),
        "recorded": per_day["total"].map(human_duration).to_numpy(),
        "mean": (per_day["total"] / timed.where(timed > 0)).map(human_duration).to_numpy(),
        "longest": per_day["longest"].map(human_duration).to_numpy(),
        "of call time": _ratio(per_day["matched_recorded"], per_day["matched_call"]).map(percent).to_numpy(),
    })
    table, omitted = _latest(table)
    total, n_timed = per_day["total"].sum(), timed.sum()
    covered = _ratio(pd.Series([per_day["matched_recorded"].sum()]), pd.Series([per_day["matched_call"].sum()]))[0]
    formats = frame.groupby("file_format")["recordings"].sum().sort_values(ascending=False)
    shares = ", ".join(f"{name} {percent(100 * n / formats.sum(), 0)}" for name, n in formats.items())
    text = (f"{per_day['recordings'].sum():,} stopped recordings over {len(per_day)} days, "
            f"{human_duration(total)} recorded, mean {human_duration(total / n_timed if n_timed else None)}.")
    if not is_missing(covered):
        text += f" Where recording and call are both known, recordings cover {percent(covered)} of the call time."
    return Summary(f"{text} Formats: {shares}.", table, omitted)


def _ratio(part: pd.Series, whole: pd.Series) -> pd.Series:
    return 100 * part.astype(float) / whole.astype(float).where(whole > 0)


def _failure_reasons(frame: pd.DataFrame) -> Summary:
    if frame.empty:
        return Summary("No finished recordings in the warehouse yet.", pd.DataFrame())
    per_day = frame.drop_duplicates("day").set_index("day")
    finished = int(per_day["finished_recordings"].sum())
    failed = int(per_day["failed_all_reasons"].sum())
    failures = frame[frame["failed_recordings"] > 0]
    per_reason = failures.groupby("reason").agg(
        failed=("failed_recordings", "sum"), days=("day", "nunique"), last=("day", "max"),
    ).sort_values(["failed", "last"], ascending=False)
    table = pd.DataFrame({
        "reason": per_reason.index.to_numpy(),
        "failed": per_reason["failed"].map(count).to_numpy(),
        "of finished": (100 * per_reason["failed"] / finished).map(lambda v: percent(v, 2)).to_numpy(),
        "days seen": per_reason["days"].map(count).to_numpy(),
        "last day": per_reason["last"].map(day).to_numpy(),
    })
    table, omitted = _latest(table)
    text = f"{failed:,} of {finished:,} finished recordings failed ({percent(100 * failed / finished, 2)}) " \
           f"over {len(per_day)} days."
    if failed:
        worst = per_day["day_failure_rate_pct"].astype(float).idxmax()
        text += f" Worst day {worst}: {percent(per_day.loc[worst, 'day_failure_rate_pct'], 2)}."
    return Summary(text, table, omitted)


def _storage_quota(frame: pd.DataFrame) -> Summary:
    table = pd.DataFrame({
        "day": frame["day"].map(day),
        "held": frame["bytes_held"].map(human_bytes),
        "of quota": frame["pct_of_quota"].map(lambda v: percent(v, 2)),
        "added": frame["bytes_added"].map(human_bytes),
        "removed": frame["bytes_removed"].map(human_bytes),
        "recordings held": frame["recordings_held"].map(count),
    })
    table, omitted = _latest(table)
    if frame.empty:
        return Summary("No days to measure.", table, omitted)
    now = frame.iloc[-1]
    text = (f"Held at Audian now: {human_bytes(now['bytes_held'])} of {human_bytes(now['quota_bytes'])} "
            f"({percent(now['pct_of_quota'], 2)}). {_projection(now)}")
    if now["recordings_size_unknown"]:
        text += (f" {now['recordings_size_unknown']:,} recordings have no size yet: bytes are a lower bound, "
                 "the date an upper one.")
    return Summary(text, table, omitted)


def _projection(now: pd.Series) -> str:
    if now["projection"] == "projected":
        return (f"Growing {human_bytes(now['recent_daily_growth_bytes'])} a day over the last 7 days: "
                f"full on {day(now['projected_full_on'])}, in {float(now['days_until_full']):,.1f} days.")
    if now["projection"] == "not filling at this rate":
        return (f"Changing {human_bytes(now['recent_daily_growth_bytes'])} a day over the last 7 days: "
                "not filling at this rate.")
    if now["projection"] == "already full":
        return "The quota is full: new recordings fail with quota_exceeded."
    return f"No projection: it {now['projection']}."


def _retention_expiry(frame: pd.DataFrame) -> Summary:
    table = pd.DataFrame({
        "expires on": frame["expiry_day"].map(day),
        "recordings": frame["recordings"].map(count),
        "size": frame["bytes"].map(human_bytes),
        "not verified": frame["not_verified"].map(count),
        "size not verified": frame["bytes_not_verified"].map(human_bytes),
        "first unverified": frame["earliest_unverified_expires_at"].map(instant),
    })
    table, omitted = _latest(table)
    expiring, unverified = int(frame["recordings"].sum()), int(frame["not_verified"].sum())
    text = (f"In the next 7 days Audian deletes {expiring:,} recordings ({human_bytes(frame['bytes'].sum())}); ")
    if unverified:
        deadline = frame["next_unverified_deadline"].dropna().min()
        text += (f"{unverified:,} with audio not verified in the archive "
                 f"({human_bytes(frame['bytes_not_verified'].sum())}), the first gone at {instant(deadline)}.")
    else:
        text += "every one with audio is verified in the archive."
    return Summary(text, table, omitted)


def _conversation(frame: pd.DataFrame) -> Summary:
    if frame.empty:
        return Summary("No recordings analysed for speech yet.", pd.DataFrame())
    table = pd.DataFrame({
        "day": frame["day"].map(day),
        "direction": frame["direction"],
        "analysed": frame["recordings_analysed"].map(count),
        "talk ratio p50": frame["p50_talk_ratio"].map(lambda v: "" if is_missing(v) else f"{float(v):.2f}"),
        "dead air": frame["dead_air_pct"].map(percent),
        "overlap": frame["overlap_pct"].map(percent),
        "longest silence": frame["longest_silence_s"].map(human_duration),
        "in recording": frame["longest_silence_recording_id"].fillna(""),
    })
    table, omitted = _latest(table)
    recorded = frame["recorded_s"].fillna(0).astype(float)
    dead_air = _ratio(pd.Series([(frame["dead_air_pct"].fillna(0) * recorded).sum() / 100]),
                      pd.Series([recorded.sum()]))[0]
    worst = frame.loc[frame["longest_silence_s"].astype(float).idxmax()] if frame["longest_silence_s"].notna().any() \
        else None
    text = (f"{int(frame['recordings_analysed'].sum()):,} recordings analysed over {frame['day'].nunique()} days, "
            f"{human_duration(recorded.sum())} of audio; dead air {percent(dead_air)} of it.")
    if worst is not None:
        text += (f" Longest silence {human_duration(worst['longest_silence_s'])} in "
                 f"{worst['longest_silence_recording_id']} ({day(worst['day'])}, {worst['direction']}).")
    if int(frame["not_analysed"].sum()):
        text += f" {int(frame['not_analysed'].sum()):,} could not be analysed: see recording_speech.reason."
    return Summary(text, table, omitted)


def _disposals(frame: pd.DataFrame) -> Summary:
    if frame.empty:
        return Summary("No archived recording disposed of, due or upcoming (AUDIAN_ARCHIVE_RETENTION_DAYS unset keeps "
                       "them forever).", pd.DataFrame())
    states = ("disposed", "due", "upcoming")
    per_day = frame.pivot_table(index="day", columns="state", values="recording_id", aggfunc="count", fill_value=0)
    per_day = per_day.reindex(columns=list(states), fill_value=0)
    size = frame.groupby("day")["bytes"].sum()
    table = pd.DataFrame({
        "day": per_day.index.map(day),
        **{state: per_day[state].map(count) for state in states},
        "size": size.reindex(per_day.index).map(human_bytes),
    }).reset_index(drop=True)
    table, omitted = _latest(table)
    counts = frame["state"].value_counts()
    text = (f"{int(counts.get('disposed', 0)):,} archived recordings disposed of "
            f"({human_bytes(frame.loc[frame['state'] == 'disposed', 'stored_bytes'].sum())} stored); "
            f"{int(counts.get('due', 0)):,} past the retention but kept (on hold, or awaiting the next run); "
            f"{int(counts.get('upcoming', 0)):,} due within 30 days.")
    return Summary(text, table, omitted)


_SUMMARIES = {
    "report_durations": _durations,
    "report_failure_reasons": _failure_reasons,
    "report_storage_quota": _storage_quota,
    "report_retention_expiry": _retention_expiry,
    "report_conversation": _conversation,
    "report_disposals": _disposals,
}


def key_figures(view: str, frame: pd.DataFrame) -> dict[str, int | float | str | None]:
    """A few numbers per report worth plotting across materialisations in Dagster."""
    if view == "report_durations":
        return {"recordings": int(frame["recordings"].sum()),
                "total_duration_s": int(frame["total_duration_s"].fillna(0).sum())}
    if view == "report_failure_reasons":
        per_day = frame.drop_duplicates("day")
        failed, finished = int(per_day["failed_all_reasons"].sum()), int(per_day["finished_recordings"].sum())
        return {"failed_recordings": failed,
                "failure_rate_pct": round(100 * failed / finished, 2) if finished else 0.0}
    if view == "report_storage_quota":
        if frame.empty:
            return {}
        now = frame.iloc[-1]
        return {"bytes_held": int(now["bytes_held"]), "pct_of_quota": float(now["pct_of_quota"]),
                "projected_full_on": day(now["projected_full_on"]) or None}
    if view == "report_retention_expiry":
        return {"recordings_expiring_7d": int(frame["recordings"].sum()),
                "not_verified_7d": int(frame["not_verified"].sum()),
                "bytes_not_verified_7d": int(frame["bytes_not_verified"].sum())}
    if view == "report_conversation":
        recorded = frame["recorded_s"].fillna(0).astype(float)
        total = float(recorded.sum())
        return {"recordings_analysed": int(frame["recordings_analysed"].sum()),
                "dead_air_pct": round(float((frame["dead_air_pct"].fillna(0) * recorded).sum()) / total, 2)
                if total else None}
    if view == "report_disposals":
        states = frame["state"].value_counts()
        return {f"{state}_recordings": int(states.get(state, 0)) for state in ("disposed", "due", "upcoming")}
    raise KeyError(f"no key figures for {view!r}")
