"""Paging one time window of the recordings list, exactly, at a cost proportional to the window.

The list is newest first and offset-paged, and offsets drift: a recording created while we
page shifts every later item down, one deleted shifts them up. `list_window` therefore

1. asks `since=end, limit=1` for how many recordings are newer than the window (`total`), and
   starts paging `since=start` right there instead of paging past newer days;
2. overlaps consecutive pages by one item, so each page must begin at or above the last
   item already taken (the anchor). A page that begins below the anchor means items moved up
   (deletions) and something may have been skipped: step back and ask again. Items at or
   above the anchor are ones already seen (insertions): skip them. Ordering, not offsets,
   decides what is new, so drift makes neither duplicates nor gaps;
3. checks what the server sends: strictly descending order and `created_at >= since`. If that
   promise is broken, or the anchor keeps escaping, it falls back to a plain scan of every
   page from offset 0, repeated until `total` holds still across one scan.

With the server's applied limit L, a quiet window of n recordings costs 1 + ceil(n / (L - 1))
list calls (at most ceil(n / L) + 3 for the windows a day has).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from audian_pipeline.client.models import Page, RecordingSummary

Key = tuple[datetime, str]


class PagingError(RuntimeError):
    """The list could not be read consistently, even by a plain scan."""


class ListsRecordings(Protocol):
    def list_page(self, *, since: datetime | None = None, limit: int = 200, offset: int = 0) -> Page: ...


@dataclass
class WindowListing:
    """The recordings of [start, end), newest first, and what reading them took."""

    recordings: list[RecordingSummary]
    list_calls: int = 0
    corrections: int = 0
    plain_scan: bool = False
    applied_limit: int = 0
    api_total: int = 0
    """`total(since=start) - total(since=end)` as last seen: the API's own count for the window."""
    notes: list[str] = field(default_factory=list)


def key(item: RecordingSummary) -> Key:
    return (item.created_at, item.recording_id)


class _OrderBroken(Exception):
    pass


class WindowPager:
    """Reads one window; a new instance per window (it holds the paging state)."""

    def __init__(self, client: ListsRecordings, start: datetime, end: datetime, limit: int = 200,
                 max_corrections: int = 25) -> None:
        if end <= start:
            raise ValueError("window end must be after its start")
        self.client, self.start, self.end = client, start, end
        self.limit, self.max_corrections = limit, max_corrections
        self.result = WindowListing(recordings=[])

    def _page(self, since: datetime, offset: int, limit: int | None = None) -> Page:
        page = self.client.list_page(since=since, limit=limit or self.limit, offset=offset)
        self.result.list_calls += 1
        if limit is None:
            self.result.applied_limit = page.limit
        return page

    def run(self) -> WindowListing:
        try:
            self._anchored()
        except _OrderBroken as why:
            self.result.notes.append(f"fell back to a plain scan: {why}")
            self._plain_scan()
        return self.result

    def _check(self, page: Page) -> None:
        keys = [key(i) for i in page.items]
        if any(a <= b for a, b in zip(keys, keys[1:])):
            raise _OrderBroken("the page is not in descending (created_at, recording_id) order")
        if any(i.created_at < self.start for i in page.items):
            raise _OrderBroken("the page holds recordings older than `since`")

    def _anchored(self) -> None:
        newer = self._page(self.end, 0, limit=1).total
        anchor: Key = (self.end, "")  # every key >= this is newer than the window
        offset = max(newer - 1, 0)
        taken: dict[str, RecordingSummary] = {}
        while True:
            page = self._page(self.start, offset)
            self._check(page)
            items = page.items
            if offset > 0 and (not items or key(items[0]) < anchor):
                offset = self._correct(max(offset - (page.limit - 1), 0), "items moved up (deletions)")
                continue
            fresh = [i for i in items if key(i) < anchor]
            for item in fresh:
                taken.setdefault(item.recording_id, item)
            if items:
                anchor = min(anchor, key(items[-1]))
            self.result.api_total = page.total - newer
            if not page.has_more:
                break
            if len(items) <= 1:
                offset = self._correct(offset + 1, "a page too short to advance")
                continue
            offset += len(items) - 1
        self.result.recordings = sorted(taken.values(), key=key, reverse=True)

    def _correct(self, offset: int, why: str) -> int:
        self.result.corrections += 1
        if self.result.corrections > self.max_corrections:
            raise _OrderBroken(f"{self.result.corrections} corrections while paging ({why})")
        return offset

    def _plain_scan(self, attempts: int = 3) -> None:
        self.result.plain_scan = True
        for _ in range(attempts):
            seen: dict[str, RecordingSummary] = {}
            offset, totals = 0, set()
            while True:
                page = self._page(self.start, offset)
                totals.add(page.total)
                for item in page.items:
                    if self.start <= item.created_at < self.end:
                        seen.setdefault(item.recording_id, item)
                offset += len(page.items)
                if not page.has_more or not page.items:
                    break
            if len(totals) == 1:
                self.result.recordings = sorted(seen.values(), key=key, reverse=True)
                self.result.api_total = len(self.result.recordings)
                return
        raise PagingError(
            f"the recordings list kept changing during {attempts} full scans of "
            f"{self.start:%Y-%m-%d %H:%M}..{self.end:%Y-%m-%d %H:%M}; run again when Audian is quieter"
        )


def list_window(client: ListsRecordings, start: datetime, end: datetime, limit: int = 200) -> WindowListing:
    """Every recording with start <= created_at < end, each exactly once."""
    return WindowPager(client, start, end, limit).run()
