"""The HTML pages' templates (``grader/output/templates``): one jinja2 environment that escapes
everything it is given, so a student's text is always shown as text. Every page is one
self-contained file: no JavaScript, nothing from the network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

_ENV = Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")),
                   autoescape=True, undefined=StrictUndefined, trim_blocks=True,
                   lstrip_blocks=True)


def render(template: str, **context: Any) -> str:
    """The page ``template`` (a file in grader/output/templates) filled with ``context``."""
    return _ENV.get_template(template).render(**context)
