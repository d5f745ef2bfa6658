"""The bounds on text a person reads: every message, name or log line that comes from a
submission, or from a library's error about one, is cut to one of these lengths (characters)
before it is stored in a row or shown on a page, with a marker where it was cut."""

from __future__ import annotations

MARK = "…"  # where a text was cut

LINE_CHARS = 200  # one line of an error: a cell's exception message, a kernel's last words
QUOTE_CHARS = 300  # an error quoted inside a check's failure message
MESSAGE_CHARS = 800  # a check's failure message
MESSAGE_LINES = 6
LOG_CHARS = 2000  # the end of a judge's or a kernel's error text
CELL_CHARS = 60  # a cell's first line, naming the cell
ANSWER_CHARS = 20_000  # a written answer (about ten pages); more is cut, and flagged
COMMENT_CHARS = 4_000  # a marker's comment on one answer
FIGURE_BYTES = 2_000_000  # the PNG kept with a written answer; a larger one is left out
ANSWERS_NOTEBOOK_BYTES = 64_000_000  # a submitted file read for its written answers


def clip(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters with the marker last when it is longer."""
    return text if len(text) <= limit else text[:limit - len(MARK)] + MARK


def clip_end(text: str, limit: int) -> str:
    """``text``, or its last ``limit`` characters with the marker first (the end of a log)."""
    return text if len(text) <= limit else MARK + text[len(text) - limit + len(MARK):]


def first_line(text: str, limit: int = LINE_CHARS) -> str:
    """The first non-blank line of ``text``, stripped and clipped to ``limit``."""
    lines = text.strip().splitlines()
    return clip(lines[0].strip(), limit) if lines else ""


def last_line(text: str, limit: int = LINE_CHARS) -> str:
    """The last non-blank line of ``text``, stripped and clipped to ``limit``."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return clip(lines[-1], limit) if lines else ""


def clip_lines(text: str, lines: int = MESSAGE_LINES, limit: int = MESSAGE_CHARS) -> str:
    """The first ``lines`` lines of ``text`` (stripped), clipped to ``limit`` characters."""
    kept = text.strip().splitlines()
    shown = "\n".join(kept[:lines]) + (f"\n{MARK}" if len(kept) > lines else "")
    return clip(shown, limit)
