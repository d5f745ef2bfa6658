"""The one rule for text a person reads: every name, message or log line that comes from a
submission (or from a library's error about one) is bounded and made inert before it is stored
in a row or shown on a page.

- ``one_line`` for a field that is one line (a name, an exception's class, a row's detail):
  line breaks shown as `` ⏎ ``, every other control character as ``�``, cut to a length with
  a marker;
- ``text_block`` for a field that may hold lines (a check's failure message): line breaks kept
  (``\\n`` only), other control characters replaced, at most so many lines and characters;
- ``csv_cell`` for a cell of a CSV file: one line, and a cell a spreadsheet would run as a
  formula (``= + - @`` after any leading blanks) gets a leading apostrophe;
- ``markdown_inline`` for text inside a Markdown page: one line, what would make code, a link,
  an image, HTML or emphasis (``2*B*I*O``) backslash-escaped, and a leading character that
  would start a heading, a quote or a list too, so nothing becomes markup.
"""

from __future__ import annotations

import re

MARK = "…"  # where a text was cut

NAME_CHARS = 100  # a name a submission chose: an exception's class, a folder
LINE_CHARS = 200  # one line of an error: a cell's exception message, a kernel's last words
DETAIL_CHARS = 400  # a row's detail (what happened to the notebook)
QUOTE_CHARS = 300  # an error quoted inside a check's failure message
MESSAGE_CHARS = 800  # a check's failure message
MESSAGE_LINES = 6
LOG_CHARS = 2000  # the end of a judge's or a kernel's error text
CELL_CHARS = 60  # a cell's first line, naming the cell
ANSWER_CHARS = 20_000  # a written answer (about ten pages); more is cut, and flagged
COMMENT_CHARS = 4_000  # a marker's comment on one answer
FIGURE_BYTES = 2_000_000  # the PNG kept with a written answer; a larger one is left out
ANSWERS_NOTEBOOK_BYTES = 64_000_000  # a submitted file read for its written answers

_BREAKS = re.compile(r"\r\n|[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u200b-\u200f\u202a-\u202e"
                       r"\u2066-\u2069\ufeff]")
_FORMULA = ("=", "+", "-", "@")
_MARKDOWN = re.compile(r"([\\`\[\]<>*_])")  # code, links, images, HTML, emphasis
_MARKDOWN_START = re.compile(r"^(\d*)([#>+\-=|*.)])")  # what a line may start a block with


def clip(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters with the marker last when it is longer."""
    return text if len(text) <= limit else text[:limit - len(MARK)] + MARK


def clip_end(text: str, limit: int) -> str:
    """``text``, or its last ``limit`` characters with the marker first (the end of a log)."""
    return text if len(text) <= limit else MARK + text[len(text) - limit + len(MARK):]


def _inert(text: str) -> str:
    return _CONTROLS.sub("\ufffd", text.replace("\t", " "))


def one_line(text: str, limit: int = LINE_CHARS) -> str:
    """``text`` on one line: line breaks shown as `` ⏎ ``, other control characters as ``�``
    (tabs as spaces), cut to ``limit`` characters with a marker."""
    # cut first: a megabyte of text costs nothing more than its first ``limit`` characters
    return clip(_inert(_BREAKS.sub(" ⏎ ", text[:4 * limit + 16])), limit)


def text_block(text: str, lines: int = MESSAGE_LINES, limit: int = MESSAGE_CHARS) -> str:
    """``text`` with its line breaks kept (``\\n``) and other control characters replaced: the
    first ``lines`` lines (stripped at the ends), cut to ``limit`` characters, with a marker
    where anything was left out."""
    kept = _BREAKS.sub("\n", text[:4 * limit + 16]).strip().split("\n")
    shown = "\n".join(_inert(line.rstrip()) for line in kept[:lines])
    return clip(shown + (f"\n{MARK}" if len(kept) > lines else ""), limit)


def first_line(text: str, limit: int = LINE_CHARS) -> str:
    """The first non-blank line of ``text``, stripped, as ``one_line`` makes it."""
    for line in _BREAKS.split(text[:4 * limit + 16]):
        if line.strip():
            return one_line(line.strip(), limit)
    return ""


def last_line(text: str, limit: int = LINE_CHARS) -> str:
    """The last non-blank line of ``text``, stripped, as ``one_line`` makes it."""
    for line in reversed(_BREAKS.split(text[-(4 * limit + 16):])):
        if line.strip():
            return one_line(line.strip(), limit)
    return ""


def csv_cell(value: object) -> object:
    """A CSV cell's value: text on one line (``one_line`` of any length up to LOG_CHARS), a
    leading apostrophe before a formula (``= + - @`` after any blanks); anything else as is."""
    if not isinstance(value, str):
        return value
    cell = one_line(value, LOG_CHARS)
    return "'" + cell if cell.lstrip().startswith(_FORMULA) else cell


def markdown_inline(text: str, limit: int = DETAIL_CHARS) -> str:
    """Text for a Markdown page: ``one_line``, with what Markdown would read as markup
    escaped (code, links, images, inline HTML, and a block's first character)."""
    escaped = _MARKDOWN.sub(r"\\\1", one_line(text, limit)).lstrip()
    return _MARKDOWN_START.sub(r"\1\\\2", escaped)


def markdown_block(text: str) -> str:
    """Text shown as-is in a Markdown page: a fenced block no line of ``text`` can close."""
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}text\n{text}\n{fence}"
