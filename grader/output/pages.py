"""The HTML pages' templates (``grader/output/templates``): one jinja2 environment that escapes
everything it is given, so a student's text is always shown as text. Every page is one
self-contained file: no JavaScript, nothing from the network.

The ``markdown`` filter shows a notebook's Markdown (a written question's prompt, a student's
answer) as the notebook shows it, paragraphs, lists and code, while raw HTML in it is escaped
and a link or image it spells stays text: a student's answer still cannot add markup, a
script or a request to the page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markdown_it import MarkdownIt
from markupsafe import Markup

from grader.output.view import local_time

_ENV = Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")),
                   autoescape=True, undefined=StrictUndefined, trim_blocks=True,
                   lstrip_blocks=True)
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).disable(["link", "image", "autolink"])


def markdown(text: str) -> Markup:
    """``text`` (Markdown) as HTML: raw HTML escaped, links and images left as text."""
    return Markup(_MARKDOWN.render(text))


_ENV.filters["markdown"] = markdown
_ENV.filters["local_time"] = local_time  # {{ iso|local_time(course) }}: the course's clock


def render(template: str, **context: Any) -> str:
    """The page ``template`` (a file in grader/output/templates) filled with ``context``."""
    return _ENV.get_template(template).render(**context)
