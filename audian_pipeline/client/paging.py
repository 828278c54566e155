"""Paging one time window of the recordings list, exactly, at a cost proportional to the window.

The list is newest first and offset-paged, and offsets drift: a recording created while we
page lands at the top and pushes every later item down; one deleted above our place pulls
them up. The API has no cursor, so offsets are only aims; the keys (created_at,
recording_id) decide what is new. `list_window`

1. asks `since=end, limit=1` how many recordings are newer than the window, and starts paging
   `since=start` right there instead of paging past newer days;
2. aims each page to overlap what is already covered (every key at or above the anchor, the
   lowest key taken) by `overlap` items. A page that begins at or above the anchor is
   contiguous with it: its items below the anchor are new, those above are already taken or
   newer than the window, so drift makes neither duplicates nor gaps;
3. learns how the list moves at its place: each accepted page shows where the first
   uncovered item went since the last one, and the next page is aimed where it should be by
   then, with an overlap as wide as the recent misjudgements (at most half a page). A page
   that begins below the anchor (deletions pulled the list up further than the overlap) may
   have skipped something: it is discarded and asked again above, with a wider overlap;
4. checks what the server sends: strictly descending keys and `created_at >= since`. If that
   promise is broken it falls back to a plain scan of every page from offset 0, repeated
   until `total` holds still across one scan.

The answer that first reaches the window also gives the API's own count of it
(`api_total`: that answer's `total` minus the offset of the window's first item). It comes
from one answer, so a recording created meanwhile cannot skew it, as it skews two counting
calls made one after the other.

With the server's applied limit L, a quiet window of n recordings costs 1 + ceil(n / (L - 1))
list calls. Under churn a page is discarded only when the list moved by more than the overlap
between two calls; `PagingError` ends a window whose list keeps moving by more than half a page per
call (`max_misses` discarded pages in a row) or that exceeds its call budget, with nothing stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Protocol

from audian_pipeline.client.models import Page, RecordingSummary

Key = tuple[datetime, str]
QUIET = "run again when Audian is quieter"


class PagingError(RuntimeError):
    """The list changed too fast to be read exactly, or broke its order and never held still."""


class ListsRecordings(Protocol):
    def list_page(self, *, since: datetime | None = None, limit: int = 200, offset: int = 0) -> Page: ...


@dataclass
class WindowListing:
    """The recordings of [start, end), newest first, and what reading them took."""

    recordings: list[RecordingSummary]
    list_calls: int = 0
    corrections: int = 0
    """Pages discarded because the list moved by more than the overlap between two calls."""
    plain_scan: bool = False
    applied_limit: int = 0
    api_total: int = 0
    """The API's own count of the window, from the one answer that first reached it."""
    notes: list[str] = field(default_factory=list)


def key(item: RecordingSummary) -> Key:
    return (item.created_at, item.recording_id)


class _OrderBroken(Exception):
    pass


@dataclass
class _Aim:
    """Where the next page should begin, learned from where the earlier ones landed.

    `head` is the offset of the first uncovered item in the last accepted answer. Churn moves
    it between calls: `drift` is how far per call (an average, + down, - up) and `spread` how
    far short of the aim pages have lately been landing. A page begins `overlap` items above
    the expected head, enough to absorb that spread, and never more than half a page."""

    head: int
    calls: int = 0
    """List calls since the last accepted answer."""
    expected: int = 0
    drift: float = 0.0
    spread: float = 0.0
    overlap: int = 1

    def __post_init__(self) -> None:
        self.expected = self.head

    def offset(self) -> int:
        return max(self.expected - self.overlap, 0)

    def landed(self, found: int, head: int, limit: int) -> None:
        """An accepted page found the head at offset `found`; its last item ends at `head`."""
        self.drift = (self.drift + (found - self.head) / self.calls) / 2
        self.spread = (3 * self.spread + max(0, self.expected - found)) / 4
        self.head, self.calls = head, 0
        self.expected = head + round(self.drift)
        self._fit_overlap(limit)

    def missed(self, above: int, limit: int) -> None:
        """A page began below the anchor: the head is now above offset `above`."""
        self.drift = min(self.drift, 0.0, (above - self.head) / self.calls)
        self.spread = max(2 * self.spread, self.overlap)
        self.expected = above + round(self.drift)
        self._fit_overlap(limit)

    def _fit_overlap(self, limit: int) -> None:
        self.overlap = min(1 + math.ceil(2 * self.spread), max(1, (limit - 1) // 2))


class WindowPager:
    """Reads one window; a new instance per window (it holds the paging state)."""

    def __init__(self, client: ListsRecordings, start: datetime, end: datetime, limit: int = 200,
                 max_misses: int = 16) -> None:
        if end <= start:
            raise ValueError("window end must be after its start")
        self.client, self.start, self.end = client, start, end
        self.limit, self.max_misses = limit, max_misses
        self.result = WindowListing(recordings=[])
        self._taken: dict[str, RecordingSummary] = {}
        self._anchor: Key = (end, "")  # every key >= this is covered: taken, or newer than the window
        self._aim = _Aim(head=0)
        self._misses = 0
        self._counted = False

    def _page(self, since: datetime, offset: int, limit: int | None = None) -> Page:
        page = self.client.list_page(since=since, limit=limit or self.limit, offset=offset)
        self.result.list_calls += 1
        self._aim.calls += 1
        if limit is None:
            self.result.applied_limit = page.limit
        return page

    def run(self) -> WindowListing:
        try:
            self._keyed()
        except _OrderBroken as why:
            self.result.notes.append(f"fell back to a plain scan: {why}")
            self._plain_scan()
        return self.result

    def _check(self, page: Page) -> None:
        keys = [key(i) for i in page.items]
        if any(a <= b for a, b in pairwise(keys)):
            raise _OrderBroken("the page is not in descending (created_at, recording_id) order")
        if any(i.created_at < self.start for i in page.items):
            raise _OrderBroken("the page holds recordings older than `since`")
        if page.has_more and page.limit < 2:
            raise _OrderBroken(f"the server pages by {page.limit}, too few to overlap pages")

    def _keyed(self) -> None:
        self._aim = _Aim(head=self._page(self.end, 0, limit=1).total)
        while True:
            offset = self._aim.offset()
            page = self._page(self.start, offset)
            self._check(page)
            if offset > 0 and not (page.items and key(page.items[0]) >= self._anchor):
                self._missed(page, offset)
                continue
            self._take(page, offset)
            if not page.has_more:
                break
            self._check_budget(page)
        self.result.recordings = sorted(self._taken.values(), key=key, reverse=True)

    def _take(self, page: Page, offset: int) -> None:
        """Keep the items of a contiguous page that are below the anchor: the new ones."""
        items = page.items
        covered = sum(1 for i in items if key(i) >= self._anchor)  # a prefix: the page is descending
        if not self._counted:
            self._count_window(page, offset)
        for item in items[covered:]:
            self._taken.setdefault(item.recording_id, item)
        if covered < len(items):
            self._anchor = key(items[-1])
        self._aim.landed(offset + covered, offset + len(items), page.limit)
        self._misses = 0

    def _missed(self, page: Page, offset: int) -> None:
        """Deletions pulled the list up by more than the overlap: something may lie between."""
        self.result.corrections += 1
        self._misses += 1
        if self._misses > self.max_misses:
            raise PagingError(
                f"the recordings list of {self._window()} moved by more than half a page between list calls "
                f"{self._misses} times in a row; {QUIET}"
            )
        self._aim.missed(min(offset, page.total), page.limit)

    def _count_window(self, page: Page, offset: int) -> None:
        """The API's count of the window, once a page shows where the window begins."""
        newer = sum(1 for i in page.items if i.created_at >= self.end)
        if newer < len(page.items) or not page.has_more:
            self.result.api_total = page.total - (offset + newer)
            self._counted = True

    def _check_budget(self, page: Page) -> None:
        """Four times a quiet window's cost, plus slack: churn that costs more is not converging."""
        window = self.result.api_total if self._counted else page.total
        budget = 16 + 4 * (1 + math.ceil(window / max(page.limit - 1, 1)))
        if self.result.list_calls > budget:
            raise PagingError(
                f"reading the recordings of {self._window()} took {self.result.list_calls} list calls "
                f"(budget {budget}) because the list kept changing under it; {QUIET}"
            )

    def _window(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M}..{self.end:%Y-%m-%d %H:%M}"

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
            f"the recordings list kept changing during {attempts} full scans of {self._window()}; {QUIET}")


def list_window(client: ListsRecordings, start: datetime, end: datetime, limit: int = 200) -> WindowListing:
    """Every recording with start <= created_at < end, each exactly once."""
    return WindowPager(client, start, end, limit).run()
