"""Timelines and LSNs: history files as PostgreSQL reads them, LSNs as PostgreSQL writes them. Pure.

The history file of timeline T lists its ancestry, one line per ancestor (``timeline<TAB>switch LSN<TAB>reason``);
the last line names T's parent P and the LSN S where T branched off.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Histories", "HistoryEntry", "format_lsn", "parse_history", "parse_lsn"]

_HISTORY_LINE = re.compile(r"(\d+)\s+([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})(?:\s+(.*))?")


def parse_lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One line of a history file: ``timeline`` ended at ``switch_lsn``, where its successor began."""

    timeline: int
    switch_lsn: int
    reason: str = ""


def parse_history(text: str) -> tuple[HistoryEntry, ...]:
    """Parse a timeline history file as PostgreSQL reads it (readTimeLineHistory); raise ValueError."""
    entries: list[HistoryEntry] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _HISTORY_LINE.fullmatch(line)
        if match is None:
            raise ValueError(f"line {number} is not 'timeline<TAB>LSN<TAB>reason'")
        timeline = int(match[1])
        if timeline == 0 or (entries and timeline <= entries[-1].timeline):
            raise ValueError(f"line {number}: timeline IDs must be positive and increasing")
        entries.append(HistoryEntry(timeline, parse_lsn(f"{match[2]}/{match[3]}"), (match[4] or "").strip()))
    if not entries:
        raise ValueError("it holds no timeline entry")
    return tuple(entries)


# timeline -> its parsed history file, or why it could not be read or parsed
Histories = Mapping[int, "tuple[HistoryEntry, ...] | str"]
