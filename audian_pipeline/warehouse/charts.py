"""One chart per report, drawn offline: a Vega-Lite spec over the view's frame, rendered to PNG by
vl-convert (Vega compiled into the wheel; no browser, display or network).

PNG rather than SVG because the Dagster UI shows markdown images only from `data:image/png`
inside its sanitised markdown, and the same bytes then serve `report --html`.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import pandas as pd
import vl_convert

from audian_pipeline.warehouse.summaries import is_missing

WIDTH, HEIGHT = 640, 240
SCALE = 2
"""Pixels per CSS pixel for pages that can size an image (`report --html`): sharp on dense screens.
The Dagster UI's markdown cannot size one and shows it pixel for pixel, so it gets scale 1."""

MIB = 1024 * 1024
NOT_VERIFIED, VERIFIED_OR_NO_AUDIO = "not verified in the archive", "verified, or no audio"


def chart_png(view: str, frame: pd.DataFrame, scale: int = SCALE) -> bytes:
    return bytes(vl_convert.vegalite_to_png(chart_spec(view, frame), scale=scale))


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels, read from the PNG's IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def markdown_image(png: bytes, alt: str) -> str:
    """The chart inline in markdown, for Dagster's metadata (no file or server to point at)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def chart_spec(view: str, frame: pd.DataFrame) -> dict[str, Any]:
    try:
        layer = _CHARTS[view](frame)
    except KeyError:
        raise KeyError(f"no chart for {view!r}") from None
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "width": WIDTH, "height": HEIGHT, "background": "white",
        "config": {"view": {"stroke": None}, "axis": {"labelFontSize": 11, "titleFontSize": 12},
                   "title": {"fontSize": 14, "anchor": "start"}},
        **layer,
    }


def _values(frame: pd.DataFrame, columns: dict[str, str]) -> list[dict[str, Any]]:
    """Rows as JSON-able dicts, renamed; days as ISO strings, missing numbers as null."""
    out = []
    for record in frame[list(columns)].to_dict("records"):
        out.append({columns[k]: _json(v) for k, v in record.items()})
    return out


def _json(value: Any) -> Any:
    if is_missing(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return float(value) if not isinstance(value, (int, str)) else value


def _day_axis(field: str = "day") -> dict[str, Any]:
    return {"field": field, "type": "ordinal", "title": None, "axis": {"labelAngle": -45}}


def _durations(frame: pd.DataFrame) -> dict[str, Any]:
    data = frame.assign(hours=frame["total_duration_s"].fillna(0).astype(float) / 3600)
    return {
        "title": "Recorded hours per day, by file format",
        "data": {"values": _values(data, {"day": "day", "file_format": "format", "hours": "hours"})},
        "mark": "bar",
        "encoding": {"x": _day_axis(), "y": {"aggregate": "sum", "field": "hours", "type": "quantitative",
                                             "title": "hours recorded"},
                     "color": {"field": "format", "type": "nominal", "title": "format"}},
    }


def _failure_reasons(frame: pd.DataFrame) -> dict[str, Any]:
    failed = frame[frame["failed_recordings"] > 0]
    days = _values(frame.drop_duplicates("day"), {"day": "day"})
    return {
        "title": "Failed recordings per day, by reason",
        "layer": [
            # every day on the axis, failures or not, so a quiet day shows as no bar rather than no day
            {"data": {"values": days}, "mark": {"type": "tick", "opacity": 0}, "encoding": {"x": _day_axis()}},
            {"data": {"values": _values(failed, {"day": "day", "reason": "reason", "failed_recordings": "failed"})},
             "mark": "bar",
             "encoding": {"x": _day_axis(), "y": {"field": "failed", "type": "quantitative", "aggregate": "sum",
                                                  "title": "failed recordings"},
                          "color": {"field": "reason", "type": "nominal", "title": "reason"}}},
        ],
    }


def _storage_quota(frame: pd.DataFrame) -> dict[str, Any]:
    data = frame.assign(held_mib=frame["bytes_held"].astype(float) / MIB)
    quota_mib = float(frame["quota_bytes"].iloc[0]) / MIB if len(frame) else 0.0
    now = f"{float(frame['pct_of_quota'].iloc[-1]):.2f}% of the quota now" if len(frame) else "no days"
    area = {"data": {"values": _values(data, {"day": "day", "held_mib": "held"})},
            "mark": {"type": "area", "line": True, "opacity": 0.6},
            "encoding": {"x": _day_axis(), "y": {"field": "held", "type": "quantitative", "title": "MiB held"}}}
    layers = [area]
    if len(frame) and data["held_mib"].max() >= quota_mib / 2:  # the quota line only where it does not flatten
        quota = {"values": [{"quota": quota_mib, "label": f"quota {quota_mib:,.0f} MiB"}]}
        layers += [
            {"data": quota, "mark": {"type": "rule", "color": "firebrick"},
             "encoding": {"y": {"field": "quota", "type": "quantitative"}}},
            {"data": quota, "mark": {"type": "text", "color": "firebrick", "align": "left", "dx": 4, "dy": -8,
                                     "x": 0},
             "encoding": {"y": {"field": "quota", "type": "quantitative"}, "text": {"field": "label"}}},
        ]
    return {"title": f"Bytes held at Audian, end of each day ({now})", "layer": layers}


def _retention_expiry(frame: pd.DataFrame) -> dict[str, Any]:
    long = pd.concat([
        frame.assign(state=NOT_VERIFIED, n=frame["not_verified"]),
        frame.assign(state=VERIFIED_OR_NO_AUDIO, n=frame["recordings"] - frame["not_verified"]),
    ])
    return {
        "title": "Recordings Audian deletes in the next 7 days",
        "data": {"values": _values(long, {"expiry_day": "day", "state": "state", "n": "recordings"})},
        "mark": "bar",
        "encoding": {
            "x": _day_axis(), "y": {"field": "recordings", "type": "quantitative", "aggregate": "sum",
                                    "title": "recordings expiring"},
            "color": {"field": "state", "type": "nominal", "title": None,
                      "scale": {"domain": [NOT_VERIFIED, VERIFIED_OR_NO_AUDIO], "range": ["#d62728", "#9ecae1"]}},
        },
    }


def _conversation(frame: pd.DataFrame) -> dict[str, Any]:
    long = pd.concat([
        frame.assign(measure="dead air", pct=frame["dead_air_pct"]),
        frame.assign(measure="overlap", pct=frame["overlap_pct"]),
    ])
    return {
        "title": "Dead air and overlap, % of the time recorded, by call direction",
        "data": {"values": _values(long, {"day": "day", "direction": "direction", "measure": "measure", "pct": "pct"})},
        "mark": {"type": "line", "point": True},
        "encoding": {
            "x": _day_axis(), "y": {"field": "pct", "type": "quantitative", "title": "% of time recorded"},
            "color": {"field": "direction", "type": "nominal", "title": "direction"},
            # A legend title of null makes vl-convert fail ("SVG has an invalid size") on a view
            # with no rows yet: name it.
            "strokeDash": {"field": "measure", "type": "nominal", "title": "measure"},
        },
    }


DISPOSAL_STATES = ["disposed", "due", "upcoming"]


def _disposals(frame: pd.DataFrame) -> dict[str, Any]:
    return {
        "title": "Archived recordings disposed of, due (held or waiting) and upcoming, per day",
        "data": {"values": _values(frame, {"day": "day", "state": "state", "recording_id": "recording"})},
        "mark": "bar",
        "encoding": {
            "x": _day_axis(), "y": {"aggregate": "count", "type": "quantitative", "title": "recordings"},
            "color": {"field": "state", "type": "nominal", "title": "state",
                      "scale": {"domain": DISPOSAL_STATES, "range": ["#7f7f7f", "#d62728", "#9ecae1"]}},
        },
    }


_CHARTS = {
    "report_durations": _durations,
    "report_failure_reasons": _failure_reasons,
    "report_storage_quota": _storage_quota,
    "report_retention_expiry": _retention_expiry,
    "report_conversation": _conversation,
    "report_disposals": _disposals,
}
