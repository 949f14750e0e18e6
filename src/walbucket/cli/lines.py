"""The lines walbucket writes to stderr, PostgreSQL's server log: one per command, control characters escaped.

Imports only the exception tree: the fast path (entry.py) writes these lines too.
"""

from __future__ import annotations

from walbucket.core.errors import WalbucketError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["describe_get", "describe_push", "failure_lines", "mib", "printable", "size", "success_line"]


# Control characters, and the line breaks str.splitlines() knows beyond them: a name holding one must not split a
# log line or forge another in PostgreSQL's server log.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))} | {c: f"\\u{c:04x}" for c in (0x2028, 0x2029)}


def printable(text: str) -> str:
    """``text`` with every control character written as an escape (a newline becomes the four characters ``\\x0a``)."""
    return text.translate(_ESCAPES)


def failure_lines(subject: str, exc: BaseException, code: int, elapsed: float | None = None) -> list[str]:
    """The lines a failed command writes to stderr (PostgreSQL's server log): the error, then a HINT if any.

    ``elapsed`` (seconds since the command started) shows how long it tried: an outage fails after the retry budget.
    Control characters (from a file name, say) are escaped: each line stays one line.
    """
    ending = f"(exit {code})" if elapsed is None else f"(exit {code} after {elapsed:.3f}s)"
    if not isinstance(exc, WalbucketError):
        return [printable(f"walbucket {subject}: ERROR: internal error: {exc!r} {ending}")]
    lines = [f"walbucket {subject}: ERROR: {exc.message} {ending}"]
    if exc.hint:
        lines.append(f"HINT: {exc.hint}")
    return [printable(line) for line in lines]


def success_line(subject: str, line: str, elapsed: float) -> str:
    return printable(f"walbucket {subject}: {line} in {elapsed:.3f}s")


def mib(size: int) -> str:
    """A file's size in a command's line: ``16.0 MiB``, or bytes below 64 KiB."""
    return f"{size / (1 << 20):.1f} MiB" if size >= 1 << 16 else f"{size} bytes"


def size(n: int) -> str:
    """A size in a report: the largest unit it reaches."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


def _mib(size: object) -> str:
    return mib(size) if isinstance(size, int) else ""


def describe_push(result: dict[str, Any]) -> str:
    if result.get("from_spool"):
        return f"{result['outcome']} (stored ahead by the async worker)"
    size = _mib(result.get("size"))
    if result.get("outcome") == "duplicate":
        return f"already archived with identical content (duplicate), {size} via the async worker"
    stored = _mib(result.get("stored"))
    return f"archived {size} as {stored} via the async worker"


def describe_get(result: dict[str, Any]) -> tuple[str, int]:
    if result.get("status") == "missing":
        return "not in the archive", 1
    source = "the prefetch spool" if result.get("from_spool") else "the async worker"
    return f"restored {_mib(result.get('size'))} from {source}", 0
